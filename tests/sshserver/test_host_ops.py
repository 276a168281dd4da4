"""Host operations over a real in-process SSH server, with a stub `docker` on the server's PATH that logs what it
is asked (the sshserver tier: nodefleet's own logic against real SSH; the real engine is the e2e tier's)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nodefleet.errors import CommandError, NodefleetError
from nodefleet.host.ops import ensure_image
from nodefleet.ssh import open_session

from .conftest import Server

STUB = """#!/bin/sh
echo "$*" >> {log}
case "$1 $2" in
  "load -q") cat >/dev/null; touch {loaded}; echo "Loaded image: $IMAGE" ;;
  "image inspect") [ -e {loaded} ] ;;
  "pull -q"*) echo "dial tcp: lookup registry: i/o timeout" >&2; exit 1 ;;
  *) exit 1 ;;
esac
"""


@pytest.fixture
def stub_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "stub-bin"
    bin_dir.mkdir()
    log = tmp_path / "docker.log"
    docker = bin_dir / "docker"
    docker.write_text(STUB.format(log=log, loaded=tmp_path / "loaded"))
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return log


async def test_an_archive_is_loaded_without_trying_a_pull(
    ssh_server: Server, stub_docker: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "buildkit.tar"
    archive.write_bytes(b"x" * 4096)
    ssh_server.trust()
    async with await open_session(ssh_server.target()) as session:
        how = await ensure_image(session, "lab/buildkit:v0.13.2", archive, timeout=10, present=False)
    assert how == "loaded"
    asked = _asked(stub_docker)
    assert not any(line.startswith("pull") for line in asked), asked
    assert asked[0] == "load -q"


async def test_without_an_archive_an_absent_image_is_pulled(ssh_server: Server, stub_docker: Path) -> None:
    ssh_server.trust()
    async with await open_session(ssh_server.target()) as session:
        with pytest.raises(NodefleetError, match=r"cannot pull BuildKit image lab/buildkit:v0\.13\.2: dial tcp"):
            await ensure_image(session, "lab/buildkit:v0.13.2", None, timeout=10, present=False)
    assert _asked(stub_docker) == ["pull -q lab/buildkit:v0.13.2"]


async def test_a_stream_that_times_out_says_so_and_the_session_goes_on(ssh_server: Server, tmp_path: Path) -> None:
    archive = tmp_path / "big.tar"
    archive.write_bytes(
        b"x" * (8 << 20)
    )  # more than the channel's window: the writer waits on a reader that never reads
    ssh_server.trust()
    async with await open_session(ssh_server.target()) as session:
        with pytest.raises(CommandError, match=r"timed out after 1 s sending big\.tar"):
            await session.write_stream("sleep-forever", archive, timeout=1)
        assert (await session.run("echo still here", timeout=5)).stdout == "still here\n"


def _asked(log: Path) -> list[str]:
    """What the stub docker was asked, one line per call."""
    return log.read_text().splitlines()


async def test_key_known_in_finds_the_verified_key_plain_or_hashed(ssh_server: Server, tmp_path: Path) -> None:
    import asyncssh

    ssh_server.trust()
    key = ssh_server.host_key.export_public_key().decode().strip()
    plain = tmp_path / "plain"
    plain.write_text(f"# a comment\n[127.0.0.1]:{ssh_server.port} {key}\n")
    other = tmp_path / "other"
    other.write_text(
        f"[127.0.0.1]:{ssh_server.port} {asyncssh.generate_private_key('ssh-ed25519').export_public_key().decode()}"
    )
    wrong_port = tmp_path / "wrong-port"
    wrong_port.write_text(f"127.0.0.1 {key}\n")
    hashed = tmp_path / "hashed"
    hashed.write_text(_hashed(f"[127.0.0.1]:{ssh_server.port}", key))
    async with await open_session(ssh_server.target()) as session:
        assert session.key_known_in([str(tmp_path / "missing"), str(plain)], "127.0.0.1", ssh_server.port)
        assert session.key_known_in([str(hashed)], "127.0.0.1", ssh_server.port)
        assert not session.key_known_in([str(other), str(wrong_port)], "127.0.0.1", ssh_server.port)
        assert not session.key_known_in([], "127.0.0.1", ssh_server.port)


def _hashed(host: str, key: str) -> str:
    """A known_hosts line hashed as OpenSSH's HashKnownHosts writes it."""
    import base64
    import hashlib
    import hmac
    import os as os_module

    salt = os_module.urandom(20)
    digest = hmac.new(salt, host.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()} {key}\n"


async def test_accept_new_records_the_key_where_the_connection_checks_it(
    ssh_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a known_hosts in the inventory, the connection checks the UserKnownHostsFile ~/.ssh/config names:
    --accept-new-host-keys records the key there, not in ~/.ssh/known_hosts (issue 12, defect 9)."""
    from nodefleet.ssh import HostKeyPolicy

    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    configured = home / "fleet_known_hosts"
    (home / ".ssh" / "config").write_text(f"Host 127.0.0.1\n  UserKnownHostsFile {configured}\n")
    monkeypatch.setenv("HOME", str(home))
    target = ssh_server.target(known_hosts=None)
    async with await open_session(target, policy=HostKeyPolicy.ACCEPT_NEW) as session:
        assert (await session.run("echo ok", timeout=5)).stdout == "ok\n"
    assert f"[127.0.0.1]:{ssh_server.port} ssh-ed25519 " in _read(configured)
    assert not (home / ".ssh" / "known_hosts").exists()
    async with await open_session(target):  # strict now: the key is found where it was recorded
        pass


def _read(path: Path) -> str:
    return path.read_text()
