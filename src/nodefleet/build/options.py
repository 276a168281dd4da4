"""How a build runs: the options a caller gives `nodefleet build` (BuildOptions)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nodefleet.results import Progress, quiet

# How long a healthy node of a platform waits for a preferred node that has not answered yet: long enough for a
# responsive host, short enough that a partitioned one (which costs its whole connect timeout) is routed around.
HEALTH_GRACE = 1.5


@dataclass(frozen=True)
class BuildOptions:
    """How a build runs; the defaults suit the command line."""

    parallel: int | None = None
    state_dir: Path | None = None
    health_grace: float = HEALTH_GRACE
    # How long a build waits for an `up` or `down` of its builder to finish.
    lock_wait: float = 600.0
    # (label, line): buildx's progress lines, labelled with the platform when several builds run at once.
    progress: Progress = quiet
    # nodefleet's own steps ("arm64-1 unreachable, building linux/arm64 on arm64-2").
    notice: Callable[[str], None] = lambda _message: None
    # Let buildx write to our stdout (an output `-`).
    inherit_stdout: bool = False
