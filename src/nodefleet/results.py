"""What every command reports: one HostResult per host, host statuses as an enum, the versioned JSON envelope,
and the progress callback the library reports its steps through (it never prints)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

JSON_VERSION = 1

# (who, what): a host or platform and its latest step, for a spinner or labelled progress lines.
Progress = Callable[[str, str], None]


def quiet(_who: str, _what: str) -> None:
    """A Progress that shows nothing."""


class HostStatus(StrEnum):
    """Where a host stands at the end of a command."""

    PENDING = "pending"
    HEALTHY = "healthy"
    FAILED = "failed"
    DISABLED = "disabled"
    REMOVED = "removed"
    PRUNED = "pruned"  # prune: the node's BuildKit cache was pruned
    SKIPPED = "skipped"  # prune: the node could not be reached, or its BuildKit was not running


@dataclass
class HostResult:
    """The outcome for one host."""

    name: str
    address: str
    platform: str | None = None
    pinned: tuple[str, ...] = ()
    role: str = ""
    os: str = ""
    engine: str | None = None
    buildkit: str | None = None
    native_platform: str | None = None
    status: HostStatus = HostStatus.PENDING
    action: str = "none"
    changes: tuple[str, ...] = ()
    error: str | None = None
    seconds: float = 0.0
    disk_free_bytes: int | None = None
    # The disk holding the node's state (Docker's data root), and its BuildKit cache (`status` asks for it).
    disk_size_bytes: int | None = None
    cache_bytes: int | None = None
    cache_reclaimable_bytes: int | None = None
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.status = HostStatus(self.status)  # a plain string from a caller is taken as the status it names

    @property
    def failed(self) -> bool:
        """True when the host failed."""
        return self.status is HostStatus.FAILED

    def fail(self, message: str) -> None:
        """Mark the host failed; the first reason is kept, it is the cause."""
        if not self.failed:
            self.status = HostStatus.FAILED
            self.error = message

    def as_json(self) -> dict[str, Any]:
        """Stable JSON keys for this host."""
        data = asdict(self)
        data["status"] = self.status.value
        data["pinned"] = list(self.pinned)
        data["changes"] = list(self.changes)
        data["warnings"] = list(self.warnings)
        data["seconds"] = round(self.seconds, 3)
        return data


@dataclass
class PruneResult(HostResult):
    """The outcome of `prune` for one node: the bytes BuildKit reclaimed, and the free space of the disk holding the
    node's state before (`disk_free_bytes`) and after the prune."""

    reclaimed_bytes: int | None = None
    disk_free_after_bytes: int | None = None

    @property
    def pruned(self) -> bool:
        """True when the node's cache was pruned."""
        return self.status is HostStatus.PRUNED

    def skip(self, message: str) -> None:
        """The node could not be pruned (unreachable, or no running BuildKit): skipped, with the reason."""
        if self.status is HostStatus.PENDING:
            self.status = HostStatus.SKIPPED
            self.error = message


def envelope(command: str, builder: str, *, ok: bool, seconds: float) -> dict[str, Any]:
    """The keys every command's `--json` document opens with; the command adds its own after them."""
    return {
        "nodefleet_json_version": JSON_VERSION,
        "command": command,
        "builder": builder,
        "ok": ok,
        "seconds": round(seconds, 3),
    }
