"""The probe cache: answers of hosts and nodes that stand until something on the host changes (probes.json)."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

from nodefleet.state import STATE_VERSION, private_dir, write_private


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
