"""SSH edge cases against a real in-process asyncssh server."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import asyncssh
import pytest

from nodefleet.errors import AuthError, CommandError, HostKeyError, TransientSSHError
from nodefleet.ssh import HostKeyPolicy, SSHTarget, open_session

from .conftest import Server


async def test_login_and_run(ssh_server: Server) -> None:
    ssh_server.trust()
    async with await open_session(ssh_server.target()) as session:
        result = await session.run("echo hello; echo oops >&2; exit 3", timeout=5)
    assert (result.stdout, result.stderr, result.exit_status) == ("hello\n", "oops\n", 3)


async def test_stdin_reaches_the_command(ssh_server: Server) -> None:
    ssh_server.trust()
    async with await open_session(ssh_server.target()) as session:
        result = await session.run("tr a-z A-Z", timeout=5, stdin=b"quiet\n")
    assert result.stdout == "QUIET\n"


async def test_unknown_host_key_is_refused_by_default(ssh_server: Server) -> None:
    with pytest.raises(HostKeyError, match=r"is not in .*known_hosts.*--accept-new-host-keys"):
        await open_session(ssh_server.target())
    assert not ssh_server.known_hosts.exists()


async def test_accept_new_records_the_key_0600_then_connects(ssh_server: Server) -> None:
    async with await open_session(ssh_server.target(), policy=HostKeyPolicy.ACCEPT_NEW) as session:
        assert (await session.run("echo ok", timeout=5)).stdout == "ok\n"
    assert ssh_server.known_hosts.stat().st_mode & 0o777 == 0o600
    recorded = ssh_server.known_hosts.read_text()
    assert f"[127.0.0.1]:{ssh_server.port} ssh-ed25519 " in recorded
    # A second connection with the strict policy trusts the recorded key.
    async with await open_session(ssh_server.target()):
        pass


@pytest.mark.parametrize("policy", list(HostKeyPolicy))
async def test_changed_host_key_is_always_refused_naming_the_line(ssh_server: Server, policy: HostKeyPolicy) -> None:
    ssh_server.trust(asyncssh.generate_private_key("ssh-ed25519"))
    before = ssh_server.known_hosts.read_text()
    with pytest.raises(HostKeyError, match=rf"does NOT match known_hosts \({ssh_server.known_hosts}:1\)"):
        await open_session(ssh_server.target(), policy=policy)
    assert ssh_server.known_hosts.read_text() == before


async def test_wrong_key_is_an_auth_error_and_not_retried(ssh_server: Server, tmp_path: Path) -> None:
    ssh_server.trust()
    other = tmp_path / "other_key"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(other))
    started = time.monotonic()
    with pytest.raises(AuthError, match=r"login refused for tester@127\.0\.0\.1"):
        await open_session(ssh_server.target(identity_file=other), attempts=5)
    assert time.monotonic() - started < 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_refused_is_retried_then_reported(ssh_server: Server) -> None:
    target = ssh_server.target(port=_free_port())
    started = time.monotonic()
    with pytest.raises(TransientSSHError, match="cannot connect"):
        await open_session(target, attempts=3)
    # Three attempts with jittered backoff, well within the budget.
    assert time.monotonic() - started < target.connect_timeout * 3


async def test_silent_server_costs_at_most_the_budget(silent_target: SSHTarget) -> None:
    started = time.monotonic()
    with pytest.raises(TransientSSHError):
        await open_session(silent_target, attempts=3, budget=1.5)
    assert time.monotonic() - started < 3.5


async def test_a_silent_host_says_how_long_it_was_given(silent_target: SSHTarget) -> None:
    with pytest.raises(TransientSSHError, match=r"timed out or dropped \(no answer within 1 s\)$"):
        await open_session(silent_target, attempts=1)


async def test_command_timeout(ssh_server: Server) -> None:
    ssh_server.trust()
    async with await open_session(ssh_server.target()) as session:
        with pytest.raises(CommandError, match=r"timed out after 0\.5 s"):
            await session.run("sleep-forever", timeout=0.5)


async def test_stream_a_file_to_a_command(ssh_server: Server, tmp_path: Path) -> None:
    ssh_server.trust()
    source = tmp_path / "blob"
    source.write_bytes(b"x" * (3 << 20))
    async with await open_session(ssh_server.target()) as session:
        result = await session.write_stream("wc -c", source, timeout=10)
    assert result.stdout.strip() == str(3 << 20)


async def test_many_sessions_at_once(ssh_server: Server) -> None:
    ssh_server.trust()

    async def one(index: int) -> str:
        async with await open_session(ssh_server.target(name=f"h{index}")) as session:
            return (await session.run(f"echo {index}", timeout=5)).stdout.strip()

    results = await asyncio.gather(*(one(i) for i in range(20)))
    assert results == [str(i) for i in range(20)]


async def test_openssh_config_alias_user_port_and_identity(
    ssh_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host given only as an alias gets HostName, User, Port and IdentityFile from ~/.ssh/config."""
    ssh_server.trust()
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(
        f"Host buildbox\n  HostName 127.0.0.1\n  User tester\n  Port {ssh_server.port}\n"
        f"  IdentityFile {ssh_server.client_key_path}\n  UserKnownHostsFile {ssh_server.known_hosts}\n"
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    from nodefleet.ssh import SSHTarget

    target = SSHTarget("alias", "buildbox", connect_timeout=2)
    async with await open_session(target) as session:
        assert (await session.run("echo via-config", timeout=5)).stdout == "via-config\n"


async def test_proxyjump_from_openssh_config(
    ssh_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ProxyJump in ~/.ssh/config is honoured: the session is tunnelled through the jump host."""
    ssh_server.trust()
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    common = (
        f"  User tester\n  IdentityFile {ssh_server.client_key_path}\n  UserKnownHostsFile {ssh_server.known_hosts}\n"
    )
    (home / ".ssh" / "config").write_text(
        f"Host jump\n  HostName 127.0.0.1\n  Port {ssh_server.port}\n{common}"
        f"Host inner\n  HostName 127.0.0.1\n  Port {ssh_server.port}\n  ProxyJump jump\n{common}"
    )
    monkeypatch.setenv("HOME", str(home))
    from nodefleet.ssh import SSHTarget

    async with await open_session(SSHTarget("inner", "inner", connect_timeout=3)) as session:
        assert (await session.run("echo tunnelled", timeout=5)).stdout == "tunnelled\n"
    assert ssh_server.tunnels, "the connection did not go through the jump host"
