"""buildx's builder store: read it, and back it up and restore it around changes.

nodefleet never writes buildx's state files; it only reads them, and backs them up and restores them around
changes, because buildx's own rollback after a failed append drops every node's pinned platforms.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nodefleet.errors import NodefleetError
from nodefleet.platforms import join_platform
from nodefleet.state import private_dir, write_private


@dataclass(frozen=True)
class StoredNode:
    """A buildx node as buildx's store has it."""

    name: str
    endpoint: str
    platforms: tuple[str, ...]
    driver_opts: Mapping[str, str]


@dataclass(frozen=True)
class StoredBuilder:
    """A builder as buildx's store has it."""

    name: str
    driver: str
    nodes: tuple[StoredNode, ...]

    def node(self, name: str) -> StoredNode | None:
        """The stored node of that name, if any."""
        return next((node for node in self.nodes if node.name == name), None)


def store_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where buildx keeps its state: $BUILDX_CONFIG, else $DOCKER_CONFIG/buildx, else ~/.docker/buildx."""
    env = os.environ if environ is None else environ
    if env.get("BUILDX_CONFIG"):
        return Path(env["BUILDX_CONFIG"])
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"]) / "buildx"
    return Path(env.get("HOME", str(Path.home()))) / ".docker" / "buildx"


def instance_file(builder: str, environ: Mapping[str, str] | None = None) -> Path:
    """The store file of one builder."""
    return store_dir(environ) / "instances" / builder


class CorruptStoreError(NodefleetError):
    """buildx's store file for the builder cannot be read."""


def parse_store(text: str) -> StoredBuilder:
    """Parse a buildx store instance file (a JSON NodeGroup)."""
    try:
        data = json.loads(text)
        nodes = tuple(_parse_stored_node(node) for node in data.get("Nodes") or [])
        return StoredBuilder(name=str(data["Name"]), driver=str(data.get("Driver", "")), nodes=nodes)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptStoreError(f"buildx builder state is not valid: {exc}") from None


def _parse_stored_node(node: Mapping[str, Any]) -> StoredNode:
    platforms = [
        join_platform(platform.get("os"), platform.get("architecture"), platform.get("variant"))
        for platform in node.get("Platforms") or []
    ]
    return StoredNode(
        name=str(node["Name"]),
        endpoint=str(node.get("Endpoint", "")),
        platforms=tuple(platforms),
        driver_opts=dict(node.get("DriverOpts") or {}),
    )


def read_store(builder: str, environ: Mapping[str, str] | None = None) -> StoredBuilder | None:
    """The builder as buildx's store has it, or None when it does not exist."""
    path = instance_file(builder, environ)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return parse_store(text)


def backup_store(builder: str, backup_dir: Path, environ: Mapping[str, str] | None = None) -> Path | None:
    """Copy the builder's store file aside (mode 0600), keeping the five newest copies; None if absent."""
    source = instance_file(builder, environ)
    if not source.exists():
        return None
    private_dir(backup_dir)
    target = backup_dir / f"{builder}.{time.time_ns()}.json"
    write_private(target, source.read_bytes())
    for old in sorted(backup_dir.glob(f"{builder}.*.json"))[:-5]:
        old.unlink(missing_ok=True)
    return target


def restore_store(builder: str, backup: Path | None, environ: Mapping[str, str] | None = None) -> None:
    """Put a backed-up store file back (or remove the builder's file when there was none before)."""
    target = instance_file(builder, environ)
    if backup is None:
        target.unlink(missing_ok=True)
        return
    private_dir(target.parent)
    write_private(target, backup.read_bytes())


def latest_backup(builder: str, backup_dir: Path) -> Path | None:
    """The newest backup of a builder's store file that parses, if any."""
    for candidate in sorted(backup_dir.glob(f"{builder}.*.json"), reverse=True):
        try:
            parse_store(candidate.read_text())
        except (OSError, CorruptStoreError):
            continue
        return candidate
    return None


def builders_sharing(
    node: str, address: str, exclude: Collection[str], environ: Mapping[str, str] | None = None
) -> list[str]:
    """The builders in buildx's store, other than `exclude`, that list a node of this name on a host of this
    address (whatever user or port they log in with): they use the same BuildKit container and state volume there,
    since the driver names both after the node."""
    sharing = []
    try:
        names = sorted(path.name for path in (store_dir(environ) / "instances").iterdir())
    except OSError:
        return []
    for name in names:
        if name in exclude:
            continue
        try:
            stored = read_store(name, environ)
        except (OSError, CorruptStoreError):
            continue
        found = stored.node(node) if stored is not None else None
        if found is not None and urlsplit(found.endpoint).hostname == address.strip("[]").lower():
            sharing.append(name)
    return sharing
