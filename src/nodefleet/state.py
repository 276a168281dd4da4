"""nodefleet's own small state under one folder: one atomic private writer, one file lock usable from sync and
async code (shared or exclusive, never blocking the event loop), and the files of each builder in a folder of its
own, so that no builder's name can collide with another's files."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from nodefleet.errors import LockError

STATE_VERSION = 1
_POLL = 0.05


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """$NODEFLEET_STATE_DIR, else $XDG_STATE_HOME/nodefleet, else ~/.local/state/nodefleet."""
    env = os.environ if environ is None else environ
    if env.get("NODEFLEET_STATE_DIR"):
        return Path(env["NODEFLEET_STATE_DIR"])
    base = Path(env["XDG_STATE_HOME"]) if env.get("XDG_STATE_HOME") else Path.home() / ".local" / "state"
    return base / "nodefleet"


def write_private(path: Path, data: bytes) -> None:
    """Write a file that only its owner can read (0600 from its creation, never wider), atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_private_json(path: Path, document: Any) -> None:
    """write_private of a JSON document, in a private folder."""
    private_dir(path.parent)
    write_private(path, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode())


def private_dir(path: Path) -> Path:
    """Create a folder, and each missing parent, only its owner can enter (mkdir's `parents` would make the parents
    with the umask's mode); an existing folder is left as it is."""
    if not path.is_dir():
        if not path.parent.is_dir():
            private_dir(path.parent)
        path.mkdir(mode=0o700, exist_ok=True)
    return path


class FileLock:
    """An flock on a file: exclusive (one holder) or shared (many holders, no exclusive one). Waiting polls without
    blocking: `hold` sleeps (for sync code), `hold_async` awaits (for the event loop). `on_wait` is told once, when
    the lock is not free at once, what is being waited for."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what

    def _open(self) -> int:
        private_dir(self.path.parent)
        return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)

    def _try(self, fd: int, shared: bool) -> bool:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _waiting(self, wait: float, shared: bool) -> str:
        mode = "shared" if shared else "exclusive"
        return f"waiting up to {wait:g} s for {self.what} ({mode} lock {self.path})"

    def _tries(self, fd: int, wait: float, shared: bool, on_wait: Callable[[str], None] | None) -> Iterator[float]:
        """Try the lock until it is taken, yielding how long to pause between tries (the caller sleeps or awaits);
        tells `on_wait` once when it is not free at once, and raises LockError after `wait` seconds."""
        deadline = time.monotonic() + wait
        told = False
        while not self._try(fd, shared):
            if time.monotonic() >= deadline:
                raise LockError(f"{self.what} still running after {wait:g} s (lock {self.path}); try again later")
            if on_wait is not None and not told:
                on_wait(self._waiting(wait, shared))
                told = True
            yield _POLL

    @contextlib.contextmanager
    def hold(
        self, wait: float, *, shared: bool = False, on_wait: Callable[[str], None] | None = None
    ) -> Iterator[None]:
        """Hold the lock in sync code, waiting up to `wait` seconds."""
        fd = self._open()
        try:
            for pause in self._tries(fd, wait, shared, on_wait):
                time.sleep(pause)
            yield
        finally:
            os.close(fd)

    @contextlib.asynccontextmanager
    async def hold_async(
        self, wait: float, *, shared: bool = False, on_wait: Callable[[str], None] | None = None
    ) -> AsyncIterator[None]:
        """Hold the lock in async code, waiting up to `wait` seconds without blocking the event loop."""
        fd = self._open()
        try:
            for pause in self._tries(fd, wait, shared, on_wait):
                await asyncio.sleep(pause)
            yield
        finally:
            os.close(fd)

    def try_hold(self) -> int | None:
        """Take the exclusive lock without waiting: the open descriptor to close to release it, or None."""
        fd = self._open()
        if self._try(fd, shared=False):
            return fd
        os.close(fd)
        return None


class JsonRecord:
    """A JSON document in a private file, changed under its own lock (`update`), read without it (`load`)."""

    def __init__(self, path: Path, what: str, sections: tuple[str, ...] = ()) -> None:
        self.path = path
        self.sections = sections
        self.lock = FileLock(path.with_suffix(".lock"), what)

    def load(self) -> dict[str, Any]:
        """The document, or an empty one; every section is a dict."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            data = None
        if not isinstance(data, dict):
            data = {"version": STATE_VERSION}
        for key in self.sections:
            if not isinstance(data.get(key), dict):
                data[key] = {}
        return data

    @contextlib.asynccontextmanager
    async def update(self, wait: float = 120.0) -> AsyncIterator[dict[str, Any]]:
        """Hold the record's lock, yield the document, save it on the way out."""
        async with self.lock.hold_async(wait):
            data = self.load()
            yield data
            write_private_json(self.path, data)


class BuilderState:
    """The files of one builder, in `<state dir>/builders/<builder>/`: its lock, the record of what `up` applied
    to each node, backups of buildx's builder file, the generated buildkitd.toml (and `nodes/<node>.buildkitd.toml`
    for nodes with a cache budget), the build and helper records."""

    def __init__(self, state_dir: Path, builder: str) -> None:
        self.root = state_dir
        self.builder = builder
        self.dir = state_dir / "builders" / builder
        self.record_file = self.dir / "record.json"
        self.backup_dir = self.dir / "backups"
        self.buildkitd_config = self.dir / "buildkitd.toml"
        self.node_config_dir = self.dir / "nodes"
        self.lock = FileLock(self.dir / "builder.lock", f"another nodefleet up, down or build on builder {builder}")
        self.build_record = JsonRecord(self.dir / "build.json", f"another nodefleet build of {builder}", ("nodes",))
        self.helper_record = JsonRecord(
            self.dir / "helpers.json", f"another nodefleet command on {builder}", ("helpers", "gateways")
        )

    def adopt_legacy(self) -> None:
        """Move this builder's files from the flat layout of nodefleet before 0.2 (`<builder>.json`,
        `<builder>-build.json`, `backups/<builder>.*.json` in the state folder) into its folder, once: without them,
        `up` would take every node's config as unknown and recreate its container, and builds would refuse their own
        helper builders as not nodefleet's."""
        record = self.root / f"{self.builder}.json"
        if record.is_file() and not self.record_file.exists():
            private_dir(self.dir)
            record.replace(self.record_file)
        build = self.root / f"{self.builder}-build.json"
        old: dict[str, Any] = {"builder": ""}
        if build.is_file():
            old = JsonRecord(build, "", ("nodes", "helpers", "gateways")).load()
        # `<builder>-build.json` may also be the `up` record of a builder named `<builder>-build`: that one names its
        # builder, a build record does not.
        if "builder" not in old:
            if not self.build_record.path.exists():
                write_private_json(self.build_record.path, {"version": STATE_VERSION, "nodes": old["nodes"]})
            if not self.helper_record.path.exists():
                helpers = {
                    kind: {
                        name: {**entry, "node": name.split("--", 1)[1]}
                        for name, entry in old[kind].items()
                        if isinstance(entry, dict) and name.startswith(f"{self.builder}--")
                    }
                    for kind in ("helpers", "gateways")
                }
                write_private_json(self.helper_record.path, {"version": STATE_VERSION, **helpers})
            build.unlink()
        for backup in sorted((self.root / "backups").glob(f"{self.builder}.*.json")):
            private_dir(self.backup_dir)
            backup.replace(self.backup_dir / backup.name)
        (self.root / f"{self.builder}-buildkitd.toml").unlink(missing_ok=True)

    def load_digests(self) -> dict[str, str] | None:
        """Config digests `up` applied to each node of the builder, by node name; None when there is no readable
        record (never made, lost or damaged): the caller must not take that as "nothing applied"."""
        try:
            data = json.loads(self.record_file.read_text())
        except (OSError, ValueError):
            return None
        nodes = data.get("nodes") if isinstance(data, dict) else None
        if not isinstance(nodes, dict):
            return None
        return {str(name): str(info.get("config_digest", "")) for name, info in nodes.items() if isinstance(info, dict)}

    def save_digests(self, digests: Mapping[str, str]) -> None:
        """Record what was applied, atomically."""
        write_private_json(
            self.record_file,
            {
                "version": STATE_VERSION,
                "builder": self.builder,
                "nodes": {name: {"config_digest": digest} for name, digest in sorted(digests.items())},
            },
        )

    def forget(self) -> None:
        """Remove the builder's records (after `down`). The lock files stay: removing a lock file another process
        may be opening would split the lock in two."""
        for path in (self.record_file, self.build_record.path, self.helper_record.path, self.buildkitd_config):
            path.unlink(missing_ok=True)
        if self.node_config_dir.is_dir():
            for path in self.node_config_dir.glob("*.buildkitd.toml"):
                path.unlink(missing_ok=True)

    def node_config(self, node: str) -> Path:
        """The buildkitd.toml of one node with a config of its own (a cache budget)."""
        return self.node_config_dir / f"{node}.buildkitd.toml"
