"""Security promises over real SSH: host-key checking cannot be switched off, no secret reaches nodefleet's
output, and what nodefleet writes is private to its owner."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import sys
from pathlib import Path

import asyncssh
import pytest

from nodefleet.errors import HostKeyError
from nodefleet.ssh import HostKeyPolicy, open_session

from .conftest import Server

REPO = Path(__file__).resolve().parents[2]

# ~/.ssh/config settings that make OpenSSH itself accept any host key; none of them may change nodefleet's mind.
LAX_CONFIGS = {
    "strict-no": "Host *\n  StrictHostKeyChecking no\n",
    "strict-accept-new": "Host *\n  StrictHostKeyChecking accept-new\n",
    "known-hosts-dev-null": "Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n",
    "known-hosts-none": "Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile none\n",
}


def _home(tmp_path: Path, config: str) -> Path:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    (home / ".ssh" / "config").write_text(config)
    return home


def _line(server: Server, key: asyncssh.SSHKey) -> str:
    return f"[127.0.0.1]:{server.port} {key.export_public_key().decode().strip()}\n"


@pytest.mark.parametrize("config", sorted(LAX_CONFIGS))
async def test_lax_openssh_config_does_not_accept_an_unknown_key(
    ssh_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: str
) -> None:
    monkeypatch.setenv("HOME", str(_home(tmp_path, LAX_CONFIGS[config])))
    # No known_hosts in the inventory: nodefleet reads the OpenSSH user's files, and still refuses.
    with pytest.raises(HostKeyError, match=r"host key of 127\.0\.0\.1"):
        await open_session(ssh_server.target(known_hosts=None), attempts=1)
    with pytest.raises(HostKeyError):
        await open_session(ssh_server.target(), attempts=1)  # the inventory's known_hosts, not written yet
    assert not (tmp_path / "home" / ".ssh" / "known_hosts").exists()


@pytest.mark.parametrize("policy", list(HostKeyPolicy))
@pytest.mark.parametrize("config", sorted(LAX_CONFIGS))
async def test_lax_openssh_config_does_not_accept_a_changed_key(
    ssh_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: str, policy: HostKeyPolicy
) -> None:
    home = _home(tmp_path, LAX_CONFIGS[config])
    monkeypatch.setenv("HOME", str(home))
    old = _line(ssh_server, asyncssh.generate_private_key("ssh-ed25519"))
    user_known_hosts = home / ".ssh" / "known_hosts"
    user_known_hosts.write_text(old)
    ssh_server.known_hosts.write_text(old)
    for target in (ssh_server.target(known_hosts=None), ssh_server.target()):
        with pytest.raises(HostKeyError):
            await open_session(target, policy=policy, attempts=1)
    assert user_known_hosts.read_text() == old
    assert ssh_server.known_hosts.read_text() == old


async def test_proxyjump_hop_without_known_hosts_is_refused(
    ssh_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ssh_server.trust()
    common = f"  User tester\n  IdentityFile {ssh_server.client_key_path}\n"
    home = _home(
        tmp_path,
        f"Host jump\n  HostName 127.0.0.1\n  Port {ssh_server.port}\n{common}  UserKnownHostsFile none\n"
        f"Host inner\n  HostName 127.0.0.1\n  Port {ssh_server.port}\n  ProxyJump jump\n{common}"
        f"  UserKnownHostsFile {ssh_server.known_hosts}\n",
    )
    monkeypatch.setenv("HOME", str(home))
    from nodefleet.ssh import SSHTarget

    with pytest.raises(HostKeyError, match="UserKnownHostsFile none"):
        await open_session(SSHTarget("inner", "inner", connect_timeout=2), attempts=1)
    assert not ssh_server.tunnels, "nodefleet went through a jump host whose key it cannot check"


async def test_dev_null_known_hosts_in_the_inventory_trusts_nobody(ssh_server: Server) -> None:
    for policy in HostKeyPolicy:
        with pytest.raises(HostKeyError):
            await open_session(ssh_server.target(known_hosts=Path("/dev/null")), policy=policy, attempts=1)


def test_no_inventory_key_switches_host_key_checking_off(tmp_path: Path) -> None:
    from nodefleet.errors import InventoryError
    from nodefleet.inventory import load_inventory

    for table, key, value in [
        ("defaults", "strict_host_key_checking", "false"),
        ("defaults", "host_key_checking", "false"),
        ("defaults", "StrictHostKeyChecking", '"no"'),
        ("defaults", "accept_new_host_keys", "true"),
        ("defaults", "insecure", "true"),
        ("defaults", "known_hosts", "false"),
        ("defaults", "known_hosts", '""'),
        ("hosts", "known_hosts", '"/dev/null"'),
        ("hosts", "strict_host_key_checking", "false"),
        ("hosts", "host_key", '"any"'),
    ]:
        path = tmp_path / "inventory.toml"
        prefix = f"[defaults]\n{key} = {value}\n" if table == "defaults" else ""
        extra = f"{key} = {value}\n" if table == "hosts" else ""
        path.write_text(f'{prefix}[[hosts]]\nname = "a"\naddress = "10.231.0.11"\n{extra}')
        with pytest.raises(InventoryError):
            load_inventory(path)


def test_no_command_line_option_switches_host_key_checking_off() -> None:
    from click.testing import CliRunner

    from nodefleet.cli import cli

    runner = CliRunner()
    texts = [runner.invoke(cli, [*command, "--help"]).output for command in (["up"], ["status"], ["down"], ["build"])]
    options = {word for text in texts for word in re.findall(r"--[a-z][a-z-]+", text)}
    suspicious = {option for option in options if re.search(r"host-?key|known|strict|insecure|verify", option)}
    assert suspicious == {"--accept-new-host-keys"}, suspicious


def test_product_code_never_disables_host_key_checking() -> None:
    """A static guard: no asyncssh call without known_hosts, no OpenSSH option that trusts any key."""
    forbidden = [
        re.compile(r"known_hosts\s*=\s*None"),
        re.compile(r'"known_hosts"\]\s*=\s*None'),
        # OpenSSH options as nodefleet would pass them (`-o Name=value`)
        re.compile(r"StrictHostKeyChecking\s*=\s*(no|off|accept-new)", re.IGNORECASE),
        re.compile(r"UserKnownHostsFile\s*=\s*(/dev/null|none)", re.IGNORECASE),
        re.compile(r"HostKeyAlgorithms"),
    ]
    source = REPO / "src" / "nodefleet"
    paths = sorted(source.rglob("*.py"))
    assert any(path.parent != source for path in paths)  # the packages' modules too, not the top level alone
    for path in paths:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            code = line.split("#", 1)[0]
            for pattern in forbidden:
                assert not pattern.search(code), f"{path.relative_to(source)}:{number}: {line.strip()}"


# ---------------------------------------------------------------------------------------------- the CLI end to end


async def _cli(*args: str, env: dict[str, str], timeout: float = 60) -> tuple[int, str, str]:
    """Run the real command line while this event loop keeps serving the in-process SSH server."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nodefleet",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        env={**os.environ, **env},
        cwd=REPO,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    return process.returncode if process.returncode is not None else -1, out.decode(), err.decode()


def _inventory(path: Path, server: Server, *, known_hosts: Path | None, identity: Path, registries: str = "") -> Path:
    known = f'known_hosts = "{known_hosts}"\n' if known_hosts is not None else ""
    path.write_text(
        f'[builder]\nname = "sectest"\n[defaults]\nuser = "tester"\nidentity_file = "{identity}"\n{known}'
        f'connect_timeout = 2\n[[hosts]]\nname = "local"\naddress = "127.0.0.1"\nport = {server.port}\n{registries}'
    )
    return path


def _env(tmp_path: Path, home: Path) -> dict[str, str]:
    return {
        "HOME": str(home),
        "NODEFLEET_STATE_DIR": str(tmp_path / "state"),
        "BUILDX_CONFIG": str(tmp_path / "buildx"),
        "DOCKER_CONFIG": str(tmp_path / "docker"),
        "SSH_AUTH_SOCK": "",
    }


@pytest.mark.parametrize("config", ["known-hosts-none", "known-hosts-dev-null"])
async def test_cli_refuses_an_unknown_host_under_a_lax_openssh_config(
    ssh_server: Server, tmp_path: Path, config: str, client_env: dict[str, str]
) -> None:
    home = _home(tmp_path, LAX_CONFIGS[config])
    inventory = _inventory(
        tmp_path / "inventory.toml", ssh_server, known_hosts=None, identity=ssh_server.client_key_path
    )
    for command in ("status", "up", "down"):
        code, out, err = await _cli(command, "--json", "-i", str(inventory), env={**_env(tmp_path, home), **client_env})
        assert code == 1, (command, out, err)
        (host,) = [host for host in json.loads(out)["hosts"] if host["name"] == "local"]
        assert host["status"] == "failed"
        assert "host key of 127.0.0.1" in (host["error"] or ""), host


async def test_no_secret_in_logs_json_or_errors(ssh_server: Server, tmp_path: Path, client_env: dict[str, str]) -> None:
    """A key passphrase and registry credentials never reach nodefleet's stdout or its -vv log."""
    ssh_server.trust()
    passphrase = "pp-Sekret-7f3a9c"
    password = "reg-Pa55word-41d2"
    token = "ghp_TokenValue0123456789"
    encrypted = tmp_path / "id_encrypted"
    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(str(encrypted), format_name="pkcs8-pem", passphrase=passphrase)
    encrypted.chmod(0o600)
    docker = tmp_path / "docker"
    docker.mkdir()
    auth = base64.b64encode(f"ci-user:{password}".encode()).decode()
    (docker / "config.json").write_text(
        json.dumps({"auths": {"127.0.0.1:5443": {"auth": auth}, "10.231.0.1:5443": {"identitytoken": token}}})
    )
    home = _home(tmp_path, "")
    env = {**_env(tmp_path, home), **client_env, "NF_SECRET": password}
    secrets = [passphrase, password, token, auth, encrypted.read_text().splitlines()[1]]
    registries = '[registries."127.0.0.1:5443"]\ninsecure = true\n'
    runs = []
    for identity in (encrypted, ssh_server.client_key_path):
        inventory = _inventory(
            tmp_path / "inventory.toml",
            ssh_server,
            known_hosts=ssh_server.known_hosts,
            identity=identity,
            registries=registries,
        )
        for args in (
            ["-vv", "up", "--json"],
            ["-vv", "status", "--json"],
            ["-vv", "status"],
            ["-vv", "down", "--json"],
            ["-vv", "build", "--json", "--secret", "id=tok,env=NF_SECRET", "--platform", "linux/amd64", "."],
            ["-vv", "build", "--secret", "id=tok,env=NF_SECRET", "."],
        ):
            code, out, err = await _cli(*args, "-i", str(inventory), env=env)
            runs.append((identity.name, args, code, out, err))
    for name, args, code, out, err in runs:
        assert code in {1, 2}, (name, args, out, err)  # the session has no Docker engine: every command fails
        assert "Traceback" not in err, err
        for secret in secrets:
            assert secret not in out and secret not in err, (name, args, secret)
    # The encrypted key's failure is one line naming the file, not its contents.
    encrypted_status = next(out for name, args, _, out, _ in runs if name == encrypted.name and "status" in args)
    assert f"cannot use identity_file {encrypted}" in encrypted_status


# ---------------------------------------------------------------------------------------------- private files


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


async def test_known_hosts_recorded_on_first_use_is_private(ssh_server: Server, tmp_path: Path) -> None:
    previous = os.umask(0)  # the modes come from nodefleet, not from a careful umask
    try:
        known_hosts = tmp_path / "new" / "ssh" / "known_hosts"
        target = ssh_server.target(known_hosts=known_hosts)
        async with await open_session(target, policy=HostKeyPolicy.ACCEPT_NEW):
            pass
    finally:
        os.umask(previous)
    assert _mode(known_hosts) == 0o600
    assert _mode(known_hosts.parent) == 0o700


async def test_state_files_written_by_the_cli_are_private(
    ssh_server: Server, tmp_path: Path, client_env: dict[str, str]
) -> None:
    ssh_server.trust()
    inventory = _inventory(
        tmp_path / "inventory.toml",
        ssh_server,
        known_hosts=ssh_server.known_hosts,
        identity=ssh_server.client_key_path,
        registries=f'[registries."127.0.0.1:5443"]\nca_file = "{tmp_path / "ca.crt"}"\n',
    )
    (tmp_path / "ca.crt").write_text("not a real CA\n")
    env = {**_env(tmp_path, _home(tmp_path, "")), **client_env}
    state = tmp_path / "state"
    seen: set[Path] = set()
    previous = os.umask(0)
    try:
        for command in ("up", "status", "down"):
            await _cli(command, "--json", "-i", str(inventory), env=env)
            # After each command: `down` forgets the builder's files (its buildkitd.toml too), so they are looked at
            # while they are there.
            assert _mode(state) == 0o700
            files = [path for path in state.rglob("*") if path.is_file()]
            seen.update(files)
            for path in files:
                assert _mode(path) == 0o600, (command, path)
            for folder in [path for path in state.rglob("*") if path.is_dir()]:
                assert _mode(folder) == 0o700, (command, folder)
    finally:
        os.umask(previous)
    assert state / "builders" / "sectest" / "buildkitd.toml" in seen, seen
