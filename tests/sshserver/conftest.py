"""A real asyncssh server in-process, on 127.0.0.1, whose sessions run commands in a local shell."""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

from nodefleet.client import MIN_BUILDX, Client, parse_buildx_version
from nodefleet.ssh import SSHTarget

# A client the fleet commands accept, for a machine without a docker CLI with buildx: the sshserver tier is about SSH
# edge cases, not about the local tools (the e2e tier checks those for real, never stubbed).
STUB_CLIENT = Client(docker="27.0.0-stub", buildx="v0.13.0", openssh="OpenSSH_stub")
STUB_DOCKER = """#!/bin/sh
# A docker CLI whose buildx plugin answers `version` (nodefleet's client check) and nothing else: every other
# command goes to the real docker CLI, if any, which fails as it would without a fleet.
case "$1 $2" in
  "buildx version") echo "github.com/docker/buildx v0.13.0 stub"; exit 0 ;;
  "version --format") echo "27.0.0-stub"; exit 0 ;;
esac
[ -n "$REAL_DOCKER" ] && exec "$REAL_DOCKER" "$@"
echo "docker: '$1' is not a docker command (sshserver stub)" >&2
exit 1
"""


@functools.cache
def real_client() -> bool:
    """True when this machine has the docker CLI with a buildx plugin and ssh, as nodefleet requires."""
    if shutil.which("docker") is None or shutil.which("ssh") is None:
        return False
    try:
        answer = subprocess.run(
            ["docker", "buildx", "version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    version = parse_buildx_version(answer.stdout) if answer.returncode == 0 else None
    return version is not None and version >= MIN_BUILDX


@pytest.fixture
def local_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process fleet commands see a usable local client: the real one when this machine has it, else a stub."""
    if real_client():
        return

    async def stub(timeout: float = 30.0, *, versions: bool = True) -> Client:
        return STUB_CLIENT

    monkeypatch.setattr("nodefleet.fleet.work.check_client", stub)
    monkeypatch.setattr("nodefleet.build.command.check_client", stub)


@pytest.fixture
def client_env(tmp_path: Path) -> dict[str, str]:
    """Environment for the command line in a subprocess: PATH with a docker CLI that has buildx (a stub shadowing
    the real CLI's missing plugin when this machine has none)."""
    if real_client():
        return {}
    folder = tmp_path / "client-bin"
    folder.mkdir()
    docker = folder / "docker"
    docker.write_text(STUB_DOCKER)
    docker.chmod(0o755)
    return {"PATH": f"{folder}:{os.environ['PATH']}", "REAL_DOCKER": shutil.which("docker") or ""}


async def _shell_session(process: asyncssh.SSHServerProcess[bytes]) -> None:
    """Run the requested command with /bin/sh, feeding stdin and returning output and exit status."""
    command = process.command or "true"
    if command.startswith("sleep-forever"):
        await asyncio.sleep(3600)
    if command == "docker system dial-stdio":
        # Stands for the engine's API stream: every byte sent comes straight back, until end of input.
        while data := await process.stdin.read(65536):
            process.stdout.write(data)
            await process.stdout.drain()
        process.exit(0)
        return
    child = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # Sessions see an engine that is not there, whatever this machine runs.
        env={**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"},
    )
    assert child.stdin is not None

    async def forward_stdin() -> None:
        assert child.stdin is not None
        try:
            while data := await process.stdin.read(65536):
                child.stdin.write(data)
                await child.stdin.drain()
        except (asyncssh.Error, ConnectionError):
            pass
        child.stdin.close()

    feeder = asyncio.ensure_future(forward_stdin())
    out, err = await asyncio.gather(child.stdout.read(), child.stderr.read())  # type: ignore[union-attr]
    await child.wait()
    feeder.cancel()
    process.stdout.write(out)
    process.stderr.write(err)
    process.exit(child.returncode or 0)


@dataclass
class Server:
    port: int
    host_key: asyncssh.SSHKey
    client_key_path: Path
    known_hosts: Path
    acceptor: asyncssh.SSHAcceptor
    tunnels: list[tuple[str, int]]

    def target(self, **overrides: object) -> SSHTarget:
        values: dict[str, object] = {
            "name": "local",
            "address": "127.0.0.1",
            "user": "tester",
            "port": self.port,
            "identity_file": self.client_key_path,
            "known_hosts": self.known_hosts,
            "connect_timeout": 2.0,
        }
        values.update(overrides)
        return SSHTarget(**values)  # type: ignore[arg-type]

    def trust(self, key: asyncssh.SSHKey | None = None) -> None:
        line = f"[127.0.0.1]:{self.port} {(key or self.host_key).export_public_key().decode().strip()}\n"
        self.known_hosts.write_text(line)


StartServer = Callable[..., "asyncio.Future[Server]"]


@pytest.fixture
async def ssh_server(tmp_path: Path) -> AsyncIterator[Server]:
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key_path = tmp_path / "id_ed25519"
    client_key.write_private_key(str(client_key_path))
    client_key_path.chmod(0o600)
    authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())
    tunnels: list[tuple[str, int]] = []

    class JumpFriendlyServer(asyncssh.SSHServer):
        """Allows direct TCP/IP forwarding to itself only, so it can serve as a ProxyJump host in tests."""

        def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> bool:
            tunnels.append((dest_host, dest_port))
            return dest_host in {"127.0.0.1", "localhost"}

    acceptor = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_factory=JumpFriendlyServer,
        server_host_keys=[host_key],
        authorized_client_keys=authorized,
        process_factory=_shell_session,
        encoding=None,
    )
    port = acceptor.sockets[0].getsockname()[1]
    server = Server(port, host_key, client_key_path, tmp_path / "known_hosts", acceptor, tunnels)
    yield server
    acceptor.close()
    await acceptor.wait_closed()


@pytest.fixture
def silent_target() -> Iterator[SSHTarget]:
    """A host that accepts TCP and never speaks SSH (connect timeout 1 s)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        yield SSHTarget("silent", "127.0.0.1", port=listener.getsockname()[1], connect_timeout=1.0)
    finally:
        listener.close()
