"""How `nodefleet build` runs and what it keeps between runs: the options a caller gives it (BuildOptions), and the
record of node use, node platforms and helper builders in the state dir (BuildRecord), locked against other builds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodefleet import fleet
from nodefleet.errors import NodefleetError
from nodefleet.state import try_lock

RECORD_VERSION = 1
# How long a healthy node of a platform waits for a preferred node that has not answered yet: long enough for a
# responsive host, short enough that a partitioned one (which costs its whole connect timeout) is routed around.
HEALTH_GRACE = 1.5

Progress = fleet.Progress


@dataclass(frozen=True)
class BuildOptions:
    """How a build runs; the defaults suit the command line."""

    parallel: int | None = None
    state_dir: Path | None = None
    health_grace: float = HEALTH_GRACE
    # (label, line): buildx's progress lines, labelled with the platform when several builds run at once.
    progress: Progress = fleet.quiet
    # nodefleet's own steps ("arm64-1 unreachable, building linux/arm64 on arm64-2").
    notice: Callable[[str], None] = lambda _message: None
    # Let buildx write to our stdout (an output `-`).
    inherit_stdout: bool = False


class BuildRecord:
    """`<builder>-build.json` in the state dir: when each node last started a build (for balancing), what each
    host's node is (platform, worker platforms by container id), and the config each helper builder was made with."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_suffix(".lock")

    def load(self) -> dict[str, Any]:
        """The record, or an empty one."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            data = None
        if not isinstance(data, dict):
            data = {"version": RECORD_VERSION}
        for key in ("nodes", "helpers", "gateways"):  # gateways: the helper builders behind nodefleet.gateway
            data.setdefault(key, {})
        return data

    def _save(self, data: Mapping[str, Any]) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
        tmp.replace(self.path)

    @contextlib.asynccontextmanager
    async def update(self, wait: float = 120.0) -> AsyncIterator[dict[str, Any]]:
        """Hold the record's lock (other nodefleet builds wait), yield the record, save it on the way out."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + wait
            while not try_lock(fd):
                if time.monotonic() > deadline:
                    raise NodefleetError(f"another nodefleet build holds {self.lock_path}")
                await asyncio.sleep(0.05)
            data = self.load()
            yield data
            self._save(data)
        finally:
            os.close(fd)
