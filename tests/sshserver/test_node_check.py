"""`check_node` (nodefleet.build.checks: the health check `nodefleet build` runs) over real SSH, against a stub
docker CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nodefleet.build.checks import check_node
from nodefleet.fleet.down import down
from nodefleet.fleet.status import status
from nodefleet.fleet.work import FleetOptions
from nodefleet.host.cache import ProbeCache
from nodefleet.inventory import load_inventory

from .conftest import Server

CONTAINER_ID = "c0ffee" * 10 + "abcd"
STARTED_AT = "2026-12-04T10:00:00.123456789Z"
WORKERS = '[{"id":"w1","platforms":[{"architecture":"amd64","os":"linux"},{"architecture":"386","os":"linux"}]}]'


def _inventory(ssh_server: Server, tmp_path: Path, host_extra: str = "") -> Path:
    """One host, the in-process SSH server, with the test's key and known_hosts."""
    path = tmp_path / "inventory.toml"
    path.write_text(
        f'[defaults]\nuser = "tester"\nidentity_file = "{ssh_server.client_key_path}"\n'
        f'known_hosts = "{ssh_server.known_hosts}"\nconnect_timeout = 2\n'
        f'[[hosts]]\nname = "local"\naddress = "127.0.0.1"\nport = {ssh_server.port}\n{host_extra}'
    )
    return path


def _stub_docker(folder: Path, state: str) -> None:
    folder.mkdir(exist_ok=True)
    docker = folder / "docker"
    docker.write_text(
        "#!/bin/sh\n"
        # The probe's inspect format: state, id, start time, image, the state volume's folder.
        f'[ "$1" = inspect ] && {{ echo "{state} {CONTAINER_ID} {STARTED_AT} moby/buildkit:stub"; exit 0; }}\n'
        '[ "$1 $4 $5" = "exec debug info" ] && { echo "BuildKit: github.com/moby/buildkit v0.13.2 abc"; exit 0; }\n'
        f"[ \"$1 $4 $5\" = 'exec debug workers' ] && {{ echo '{WORKERS}'; exit 0; }}\n"
        "exit 1\n"
    )
    docker.chmod(0o755)


@pytest.mark.parametrize(("state", "healthy"), [("running", True), ("exited", False)])
async def test_check_node_judges_a_running_container_by_its_workers(
    ssh_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state: str, healthy: bool
) -> None:
    ssh_server.trust()
    _stub_docker(tmp_path / "bin", state)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")  # the server's sessions inherit it
    path = _inventory(ssh_server, tmp_path, 'platforms = ["linux/amd64"]\n')
    inventory = load_inventory(path)
    cache = ProbeCache(tmp_path / "state")
    check = await check_node(inventory, inventory.hosts[0], cache)
    try:
        assert check.healthy is healthy, check.result
        # NodeCheck no longer carries the container id: the check keeps the running container it judged (its id and
        # start time) in the probe cache, so that the next check does not ask its BuildKit again.
        instance = cache.instance(f"127.0.0.1:{ssh_server.port} buildx_buildkit_local")
        if healthy:
            assert instance == f"{CONTAINER_ID} {STARTED_AT}"
            assert check.worker_platforms == ("linux/amd64", "linux/386")
            assert check.result.native_platform == "linux/amd64"
            assert check.result.buildkit == "v0.13.2"
            assert check.session is not None  # a healthy node's session is handed over, open
        else:
            assert instance is None
            assert f"is {state}" in (check.result.error or "")
            assert check.session is None
    finally:
        if check.session is not None:
            await check.session.close()


async def test_down_says_in_one_line_why_a_container_could_not_be_removed(
    ssh_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session has no engine: the host is failed (not falsely removed), with the engine's own words."""
    ssh_server.trust()
    monkeypatch.setenv("BUILDX_CONFIG", str(tmp_path / "buildx"))
    path = _inventory(ssh_server, tmp_path)
    report = await down(load_inventory(path), FleetOptions(state_dir=tmp_path / "state"))
    (host,) = report.hosts
    assert report.exit_code == 1 and host.status == "failed"
    assert host.error is not None and "\n" not in host.error
    assert "Cannot connect to the Docker daemon" in host.error, host.error
    assert "docker rm" not in host.error  # the reason, not the script


async def test_status_with_an_unreadable_builder_file_says_so_and_changes_nothing(
    ssh_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_client: None
) -> None:
    ssh_server.trust()
    monkeypatch.setenv("BUILDX_CONFIG", str(tmp_path / "buildx"))
    instance = tmp_path / "buildx" / "instances" / "nodefleet"
    instance.parent.mkdir(parents=True)
    instance.write_text('{"Name": "nodefleet", "Nodes": [ garbage')
    path = _inventory(ssh_server, tmp_path)
    report = await status(load_inventory(path), FleetOptions(state_dir=tmp_path / "state"))
    assert report.exit_code == 1
    (note,) = report.notes
    assert note.startswith(f"{instance}: ") and "`nodefleet up` restores it from nodefleet's backup" in note
    assert instance.read_text() == '{"Name": "nodefleet", "Nodes": [ garbage'


async def test_a_session_closed_without_exit_status_is_a_lost_connection_in_one_line(tmp_path: Path) -> None:
    """sshd killed mid-command: the channel closes with no exit status. That is a lost connection (worth a retry
    elsewhere), not `exit 255` with the whole remote script in the message."""
    import asyncssh

    from nodefleet.errors import CommandError, TransientSSHError
    from nodefleet.ssh import SSHTarget, open_session

    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    (tmp_path / "id").write_bytes(client_key.export_private_key())
    (tmp_path / "id").chmod(0o600)

    def vanish(process: asyncssh.SSHServerProcess[bytes]) -> None:
        process.close()  # no exit status, no signal: what the client sees when the server process dies

    acceptor = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        authorized_client_keys=asyncssh.import_authorized_keys(client_key.export_public_key().decode()),
        process_factory=vanish,
    )
    port = acceptor.sockets[0].getsockname()[1]
    (tmp_path / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key.export_public_key().decode()}")
    target = SSHTarget("gone", "127.0.0.1", "tester", port, tmp_path / "id", tmp_path / "known_hosts", 2.0)
    try:
        async with await open_session(target) as session:
            with pytest.raises(
                TransientSSHError, match=r"^gone: connection lost running a command \(no exit status\)$"
            ):
                await session.run("echo one\necho two\n", timeout=5, check=True)
    finally:
        acceptor.close()
    message = str(CommandError("echo one\n  echo two\n", None, "timed out after 5 s"))
    assert message == "`echo one …` failed: timed out after 5 s"
