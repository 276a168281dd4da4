"""Pure reading of what buildx prints and writes: step counts from its progress, why a build failed (and whether
another node may retry it), the pushed index's digests, and one metadata file merged from every platform's."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any

from nodefleet.platforms import join_platform

_STEP_RE = re.compile(r"^#(\d+) \[([^\]]*)\] (\S+)")
_STEP_NAME_RE = re.compile(r"(?:^|\s)\d+/\d+$")
_CACHED_RE = re.compile(r"^#(\d+) CACHED\s*$")


class StepCounter:
    """Counts the Dockerfile steps that run something (FROM only resolves) and those served from cache, from
    buildx's plain progress."""

    def __init__(self) -> None:
        self.steps: set[str] = set()
        self.cached: set[str] = set()

    def feed(self, line: str) -> None:
        """Take one progress line."""
        match = _STEP_RE.match(line)
        if match and _STEP_NAME_RE.search(match.group(2)) and match.group(3).upper() != "FROM":
            self.steps.add(match.group(1))
            return
        cached = _CACHED_RE.match(line)
        if cached:
            self.cached.add(cached.group(1))

    @property
    def counts(self) -> tuple[int, int] | None:
        """(steps, cached steps), or None when no step was seen (quiet or rawjson progress)."""
        if not self.steps:
            return None
        return len(self.steps), len(self.cached & self.steps)


class FailureKind(StrEnum):
    """Why a build failed, which decides whether another node may retry it."""

    DOCKERFILE = "dockerfile"
    INFRASTRUCTURE = "infrastructure"
    OTHER = "other"


_DOCKERFILE_MARKERS = (
    "did not complete successfully",
    "dockerfile parse error",
    "unknown instruction",
    "failed to read dockerfile",
    "failed to compute cache key",
    "failed to calculate checksum",
    "failed to parse stage name",
    "target stage",
    "exit code:",
)
_INFRA_MARKERS = (
    "connection reset",
    "connection refused",
    "connection closed",
    "connection lost",
    "broken pipe",
    "unavailable",
    "failed to dial",
    "error reading from server",
    "transport is closing",
    "no such container",
    "is not running",
    "is restarting",
    "cannot connect to the docker daemon",
    "error during connect",
    "kex_exchange_identification",
    "closed network connection",
    "no route to host",
    "i/o timeout",
    "connection timed out",
    "has exited with exit status 255",
    "context deadline exceeded",
)
_EOF_RE = re.compile(r"\bEOF\b")


def error_text(lines: Iterable[str]) -> str:
    """buildx's own error: its `ERROR:` lines, else the last lines it printed."""
    kept = [line.rstrip() for line in lines if line.strip()]
    errors = [line for line in kept if line.startswith(("ERROR:", "error:"))]
    return "\n".join(errors[-3:]) if errors else "\n".join(kept[-5:])


# A registry that fails (refused, unreachable, denied) while pushing or resolving an image is not the node's fault:
# another node would meet the same registry.
_REGISTRY_MARKERS = (
    "failed to push",
    "failed to resolve source metadata",
    "failed to authorize",
    "failed to fetch oauth token",
    "failed to fetch anonymous token",
    "pull access denied",
)


_DISK_FULL = "no space left on device"


def disk_full(lines: Iterable[str]) -> str | None:
    """The line of a build's output saying the node's disk is full, if any: a RUN step that hits it fails with
    the step's own exit code, which alone would read as a Dockerfile error."""
    return next((line.strip() for line in lines if _DISK_FULL in line.lower()), None)


def classify_failure(error: str) -> FailureKind:
    """A Dockerfile or registry error is never retried; a node or connection fault is retried once on another
    node."""
    lowered = error.lower()
    if any(marker in lowered for marker in _DOCKERFILE_MARKERS):
        return FailureKind.DOCKERFILE
    if any(marker in lowered for marker in _REGISTRY_MARKERS):
        return FailureKind.OTHER
    if any(marker in lowered for marker in _INFRA_MARKERS) or _EOF_RE.search(error):
        return FailureKind.INFRASTRUCTURE
    return FailureKind.OTHER


def index_digests(manifest_json: str) -> tuple[str | None, dict[str, str]]:
    """(index digest, platform -> manifest digest) from `imagetools inspect --format '{{json .Manifest}}'`;
    attestation manifests are left out."""
    try:
        document = json.loads(manifest_json)
    except ValueError:
        return None, {}
    if not isinstance(document, dict):
        return None, {}
    digests: dict[str, str] = {}
    for entry in document.get("manifests") or []:
        annotations = entry.get("annotations") or {}
        if annotations.get("vnd.docker.reference.type") == "attestation-manifest":
            continue
        platform = entry.get("platform") or {}
        parts = [platform.get(key) for key in ("os", "architecture", "variant")]
        if not any(parts) or "unknown" in parts:
            continue
        with contextlib.suppress(ValueError):
            digests[join_platform(*parts)] = str(entry.get("digest"))
    return document.get("digest"), digests


def merge_metadata(
    per_platform: Mapping[str, Mapping[str, Any]],
    nodes: Mapping[str, str],
    *,
    index_digest: str | None,
    names: Sequence[str],
) -> dict[str, Any]:
    """One metadata file for the whole build: buildx's keys for the result, each platform's own under
    `nodefleet.platforms`."""
    merged: dict[str, Any] = {}
    if len(per_platform) == 1 and index_digest is None:
        merged.update(next(iter(per_platform.values())))
    if index_digest is not None:
        merged["containerimage.digest"] = index_digest
        merged["image.name"] = ",".join(names)
    merged["nodefleet.platforms"] = {
        platform: {**metadata, "nodefleet.node": nodes.get(platform)} for platform, metadata in per_platform.items()
    }
    return merged
