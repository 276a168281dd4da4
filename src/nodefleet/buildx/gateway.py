"""A local door to one node's Docker engine for the buildx processes of one `nodefleet build`.

buildx's `ssh://` endpoint starts an OpenSSH client for every connection it makes (two or more per build), each with
its own key exchange and login. During a build nodefleet already holds a logged-in SSH session to every node it
checked, so it serves each node on a unix socket in its private state folder and relays every connection made there
to `docker system dial-stdio` on the node, over that session: buildx then talks to the engine exactly as through
`ssh://`, without the logins.

The door stays shut until the build has chosen the node (after its health check): a buildx started early waits at
it, and nothing reaches a node that was not chosen. One build serves a node's door at a time (a lock file beside the
socket); a second build at once falls back to the `ssh://` helper builder.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from nodefleet.state import FileLock, private_dir

if TYPE_CHECKING:
    from nodefleet.ssh import Session

log = logging.getLogger(__name__)

DIAL_COMMAND = "docker system dial-stdio"
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on the BSDs


def socket_path(state_dir: Path, builder: str, node: str) -> Path:
    """Where a node's door is served: in the state folder, or in a private temporary folder when that path would be
    too long for a unix socket. The same for every build of this builder and node, so its helper builder is kept."""
    key = hashlib.sha256(f"{state_dir.resolve()}\0{builder}\0{node}".encode()).hexdigest()[:16]
    path = state_dir / "gateways" / f"{key}.sock"
    if len(os.fsencode(path)) <= _MAX_SOCKET_PATH:
        return path
    return Path(tempfile.gettempdir()) / f"nodefleet-{os.getuid()}" / f"{key}.sock"


def buildx_environment(state_dir: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of buildx commands on gateway helpers: nodefleet's private buildx store, so that builders
    whose endpoint only answers during a build never show in the user's `docker buildx ls`."""
    return {**(os.environ if environ is None else environ), "BUILDX_CONFIG": str(state_dir / "buildx")}


class Gateway:
    """One node's door: a unix socket whose connections are relayed to the node once `open` is called."""

    def __init__(self, node: str, path: Path) -> None:
        self.node = node
        self.path = path
        self._session: asyncio.Future[Session] = asyncio.get_running_loop().create_future()
        self._server: asyncio.AbstractServer | None = None
        self._lock_fd: int | None = None
        self._relays: set[asyncio.Task[None]] = set()

    @classmethod
    def for_node(cls, state_dir: Path, builder: str, node: str) -> Gateway:
        """The door of a node of a builder, at its socket_path."""
        return cls(node, socket_path(state_dir, builder, node))

    async def start(self) -> bool:
        """Serve the socket; False (and nothing served) when another build serves this node's door now."""
        directory = private_dir(self.path.parent)
        if directory.stat().st_uid != os.getuid() or directory.stat().st_mode & 0o077:
            log.debug("%s: gateway folder %s is not private; not serving", self.node, directory)
            return False
        fd = FileLock(self.path.with_suffix(".lock"), f"the door of {self.node}").try_hold()
        if fd is None:
            return False
        self._lock_fd = fd
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a build that was killed; the lock says nobody serves it
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        self.path.chmod(0o600)
        return True

    def open(self, session: Session) -> None:
        """Let connections through, over `session` (waiting ones go on at once)."""
        if not self._session.done():
            log.debug("%s: gateway open", self.node)
            self._session.set_result(session)

    def refuse(self) -> None:
        """Turn away the connections waiting now (the node was not chosen); a later `open` (a retry on this node)
        still opens the door."""
        if not self._session.done():
            self._session.cancel()
            self._session = asyncio.get_running_loop().create_future()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._relays.add(task)
        try:
            session = await asyncio.shield(self._session)
            await session.relay(DIAL_COMMAND, reader, writer)
        except asyncio.CancelledError:
            # Refused, or the gateway closing: the connection ends here (a cancelled connection task is reported
            # as an error by asyncio's server, so it ends normally).
            writer.close()
        finally:
            if task is not None:
                self._relays.discard(task)

    async def close(self) -> None:
        """Stop serving, end every relay, and release the socket for the next build."""
        if not self._session.done():
            self._session.cancel()
        if self._server is not None:
            self._server.close()
            # buildx has ended: its connections are closing by themselves; cut those that do not within a second.
            relays = list(self._relays)
            if relays:
                _, slow = await asyncio.wait(relays, timeout=1)
                for task in slow:
                    task.cancel()
                await asyncio.gather(*slow, return_exceptions=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2)
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
