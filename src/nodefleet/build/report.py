"""What `nodefleet build` reports: one PlatformResult per platform (with each Attempt on a node), the node checks
and the pushed index, and the versioned JSON document `--json` prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nodefleet.build.output import FailureKind
from nodefleet.errors import exit_code
from nodefleet.results import HostResult, envelope


@dataclass
class Attempt:
    """One run of buildx for a platform on a node."""

    node: str
    status: str = "running"
    seconds: float = 0.0
    error: str | None = None
    error_kind: FailureKind | None = None

    def as_json(self) -> dict[str, Any]:
        """Stable JSON keys."""
        return {
            "node": self.node,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "error": self.error,
            "error_kind": self.error_kind.value if self.error_kind else None,
        }


@dataclass
class PlatformResult:
    """What happened to one platform; `status` is built, failed, cancelled, refused, skipped, pending, or not built
    (another platform was refused, so nothing was built)."""

    platform: str
    node: str | None = None
    node_platform: str | None = None
    target: str | None = None  # bake: the target this result is of
    emulated: bool = False
    status: str = "pending"
    seconds: float = 0.0
    steps: int | None = None
    cached_steps: int | None = None
    manifest_digest: str | None = None
    error: str | None = None
    error_kind: FailureKind | None = None
    attempts: list[Attempt] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """Stable JSON keys."""
        return {
            "platform": self.platform,
            "target": self.target,
            "node": self.node,
            "node_platform": self.node_platform,
            "mode": "emulated" if self.emulated else "native",
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "steps": self.steps,
            "cached_steps": self.cached_steps,
            "manifest_digest": self.manifest_digest,
            # What buildx pushed (by digest): with it the user can make the index again when nodefleet could not.
            "pushed_digest": self.metadata.get("containerimage.digest"),
            "error": self.error,
            "error_kind": self.error_kind.value if self.error_kind else None,
            "attempts": [attempt.as_json() for attempt in self.attempts],
        }


@dataclass
class BuildReport:
    """What `nodefleet build` did: one result per platform, the node checks, the pushed index."""

    builder: str
    platforms: list[PlatformResult] = field(default_factory=list)
    command: str = "build"
    indexes: list[dict[str, Any]] = field(default_factory=list)  # bake: one pushed index per target
    nodes: list[HostResult] = field(default_factory=list)
    names: tuple[str, ...] = ()
    index_digest: str | None = None
    pushed: bool = False
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    failure: str | None = None

    @property
    def ok(self) -> bool:
        """True when every platform was built (and pushed and assembled, when asked)."""
        return (
            self.failure is None
            and bool(self.platforms)
            and all(result.status in {"built", "skipped"} for result in self.platforms)
            and any(result.status == "built" for result in self.platforms)
        )

    @property
    def exit_code(self) -> int:
        """0 when everything was built, 1 otherwise."""
        return exit_code(self.ok)

    def as_json(self) -> dict[str, Any]:
        """The versioned JSON document `--json` prints."""
        return {
            **envelope(self.command, self.builder, ok=self.ok, seconds=self.seconds),
            "platforms": [result.as_json() for result in self.platforms],
            "pushed": {"names": list(self.names), "index_digest": self.index_digest} if self.pushed else None,
            "nodes": [node.as_json() for node in self.nodes],
            "failure": self.failure,
            "notes": list(self.notes),
            **({"indexes": list(self.indexes), "makespan": round(self.seconds, 3)} if self.command == "bake" else {}),
        }
