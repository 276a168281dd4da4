"""nodefleet's own small state: a lock per builder, what it applied to each node, backups of buildx's store."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from nodefleet.errors import LockError

STATE_VERSION = 1


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


def private_dir(path: Path) -> Path:
    """Create a folder (and its parents) only its owner can enter; an existing folder is left as it is."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def try_lock(fd: int) -> bool:
    """Take the exclusive flock of an open file without waiting: True when taken, False when another process holds it.

    The callers wait in their own way (a sleep, or an await) until a deadline of their own."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class BuilderState:
    """Files under the state dir for one builder; every file is created 0600 in a 0700 folder."""

    def __init__(self, state_dir: Path, builder: str) -> None:
        self.dir = state_dir
        self.builder = builder
        self.record_file = state_dir / f"{builder}.json"
        self.lock_file = state_dir / f"{builder}.lock"
        self.backup_dir = state_dir / "backups"

    def _ensure_dir(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    @contextlib.contextmanager
    def lock(self, wait: float) -> Iterator[None]:
        """Hold the builder's lock, waiting up to `wait` seconds for another nodefleet run to finish."""
        self._ensure_dir()
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + wait
            while not try_lock(fd):
                if time.monotonic() >= deadline:
                    raise LockError(f"another nodefleet run holds {self.lock_file} (waited {wait:g} s)")
                time.sleep(0.1)
            yield
        finally:
            os.close(fd)

    def load_digests(self) -> dict[str, str]:
        """Config digests nodefleet applied to each node of the builder, by node name."""
        try:
            data = json.loads(self.record_file.read_text())
        except (OSError, ValueError):
            return {}
        nodes = data.get("nodes") if isinstance(data, dict) else None
        if not isinstance(nodes, dict):
            return {}
        return {str(name): str(info.get("config_digest", "")) for name, info in nodes.items() if isinstance(info, dict)}

    def save_digests(self, digests: Mapping[str, str]) -> None:
        """Record what was applied, atomically."""
        self._ensure_dir()
        payload = {
            "version": STATE_VERSION,
            "builder": self.builder,
            "nodes": {name: {"config_digest": digest} for name, digest in sorted(digests.items())},
        }
        tmp = self.record_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2)
        tmp.replace(self.record_file)

    def forget(self) -> None:
        """Remove the record of the builder (after `down`)."""
        self.record_file.unlink(missing_ok=True)


class ProbeCache:
    """Answers that stand until something on the host changes, in probes.json under the state dir:
    - per node, what its BuildKit said (version, worker platforms) with the container instance that said it
      ("<container id> <started at>"). A container that is still the same instance runs the same image, so status
      and up send the instance to the host and skip the `docker exec`s (slow where BuildKit is emulated);
    - per host (its address and SSH host key), its machine (`uname -m`) and userland width with the boot id they
      were read in. A CPU does not change without a reboot, so the host is asked only for its boot id, sparing two
      processes.

    It is a cache: losing it costs one ask, and two runs saving at once can lose an entry, nothing more."""

    LIMIT = 1024

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "probes.json"
        self._sections: dict[str, dict[str, dict[str, Any]]] | None = None
        self._dirty = False

    def _section(self, name: str) -> dict[str, dict[str, Any]]:
        if self._sections is None:
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError):
                data = {}
            self._sections = {}
            for key in ("nodes", "hosts"):
                found = data.get(key) if isinstance(data, dict) else None
                entries = found.items() if isinstance(found, dict) else ()
                self._sections[key] = {str(k): v for k, v in entries if isinstance(v, dict)}
        return self._sections[name]

    def _put(self, section: str, key: str, entry: dict[str, Any]) -> None:
        entries = self._section(section)
        old = entries.get(key)
        if old is None or {k: v for k, v in old.items() if k != "at"} != entry:
            entries[key] = {**entry, "at": time.time()}
            self._dirty = True

    def get(self, key: str) -> tuple[str, str | None, tuple[str, ...]] | None:
        """(instance, BuildKit version, worker platforms) last recorded under `key`, or None."""
        entry = self._section("nodes").get(key)
        if entry is None or not entry.get("instance"):
            return None
        workers = entry.get("workers")
        if not isinstance(workers, list) or not workers:
            return None
        version = entry.get("buildkit")
        return str(entry["instance"]), str(version) if version else None, tuple(str(p) for p in workers)

    def instance(self, key: str) -> str | None:
        """The container instance whose answers are recorded under `key`, if any: the one not to ask again."""
        cached = self.get(key)
        return cached[0] if cached else None

    def put(self, key: str, instance: str, version: str | None, workers: tuple[str, ...]) -> None:
        """Record what the BuildKit of this container instance said."""
        self._put("nodes", key, {"instance": instance, "buildkit": version, "workers": list(workers)})

    def machine(self, key: str) -> tuple[str, str, int | None] | None:
        """(boot id, machine, userland bits) last recorded for the host under `key`, or None."""
        entry = self._section("hosts").get(key)
        if entry is None or not entry.get("boot_id") or not entry.get("machine"):
            return None
        bits = entry.get("userland_bits")
        return str(entry["boot_id"]), str(entry["machine"]), bits if bits in (32, 64) else None

    def put_machine(self, key: str, boot_id: str, machine: str, bits: int | None) -> None:
        """Record a host's machine and userland width, read during the boot `boot_id`."""
        self._put("hosts", key, {"boot_id": boot_id, "machine": machine, "userland_bits": bits})

    def save(self) -> None:
        """Write the cache if it changed (the newest LIMIT entries of each kind); a failure to write is not an error."""
        if not self._dirty or self._sections is None:
            return
        payload: dict[str, Any] = {"version": STATE_VERSION}
        for name, entries in sorted(self._sections.items()):
            newest = sorted(entries.items(), key=lambda item: _stamp(item[1]), reverse=True)
            payload[name] = dict(newest[: self.LIMIT])
        with contextlib.suppress(OSError):
            private_dir(self.path.parent)
            write_private(self.path, json.dumps(payload, indent=1, sort_keys=True).encode())
        self._dirty = False


def _stamp(entry: dict[str, Any]) -> float:
    """When a cache entry was written; 0 for an entry whose time is missing or not a number."""
    value = entry.get("at")
    return float(value) if isinstance(value, int | float) else 0.0
