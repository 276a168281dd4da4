"""Pure planning of the builder: which node pins which platform, and what must change in buildx's store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from nodefleet.buildx import NodeSpec, StoredBuilder, StoredNode


class Action(StrEnum):
    """What reconciling does to one node."""

    CREATE = "create"  # first node of a builder that does not exist yet
    ADD = "add"  # a new node appended to the builder
    UPDATE = "update"  # an existing node whose settings changed
    KEEP = "keep"  # nothing to do
    REMOVE = "remove"  # a node no longer wanted


@dataclass(frozen=True)
class NodeChange:
    """One planned change, with why it is needed and whether the BuildKit container must be recreated."""

    node: str
    action: Action
    reasons: tuple[str, ...] = ()
    recreate: bool = False


def assign_pins(platforms_by_node: Sequence[tuple[str, tuple[str, ...]]]) -> dict[str, tuple[str, ...]]:
    """Pin each platform on the first node (in inventory order) that builds it.

    buildx lets one platform be pinned on one node only: pinning it elsewhere silently unpins it here. The
    other nodes of that platform join the builder unpinned (standbys); `nodefleet build` reaches them for
    failover and balancing through builders of their own that share the same BuildKit containers.
    """
    taken: set[str] = set()
    pins: dict[str, tuple[str, ...]] = {}
    for node, platforms in platforms_by_node:
        mine = tuple(platform for platform in platforms if platform not in taken)
        taken.update(mine)
        pins[node] = mine
    return pins


def diff_node(desired: NodeSpec, stored: StoredNode, recorded_digest: str | None) -> NodeChange:
    """Compare one desired node with the stored one."""
    reasons: list[str] = []
    recreate = False
    if stored.endpoint != desired.endpoint:
        reasons.append(f"endpoint {stored.endpoint} -> {desired.endpoint}")
        recreate = True
    # A standby (no pins wanted) loses a stale pin when the primary takes it; buildx cannot unpin otherwise.
    if desired.platforms and set(stored.platforms) != set(desired.platforms):
        reasons.append(f"pinned {','.join(stored.platforms) or '-'} -> {','.join(desired.platforms)}")
    if dict(stored.driver_opts) != desired.all_driver_opts():
        reasons.append("driver options changed")
        recreate = True
    if recorded_digest is not None and recorded_digest != desired.config_digest:
        reasons.append("buildkitd config changed")
        recreate = True
    elif recorded_digest is None and desired.config_digest:
        # Not set up by nodefleet (or its record was lost): re-apply so the config is known to be in place.
        reasons.append("buildkitd config not recorded")
        recreate = True
    if not reasons:
        return NodeChange(desired.name, Action.KEEP)
    return NodeChange(desired.name, Action.UPDATE, tuple(reasons), recreate)


def plan_builder(
    desired: Sequence[NodeSpec],
    stored: StoredBuilder | None,
    recorded_digests: Mapping[str, str],
    keep: frozenset[str] = frozenset(),
) -> list[NodeChange]:
    """Plan the changes that turn `stored` into `desired`, removals first.

    `keep` names stored nodes that stay untouched although not desired now (hosts unreachable this run).
    """
    wanted = {spec.name for spec in desired}
    changes: list[NodeChange] = []
    if stored is not None:
        for node in stored.nodes:
            if node.name not in wanted and node.name not in keep:
                changes.append(NodeChange(node.name, Action.REMOVE, ("not in the inventory",), recreate=False))
    # When every stored node goes, the executor removes the whole builder (buildx cannot leave the last node).
    builder_exists = stored is not None and any(node.name in wanted | keep for node in stored.nodes)
    for spec in desired:
        current = stored.node(spec.name) if stored is not None else None
        if current is None:
            action = Action.ADD if builder_exists else Action.CREATE
            changes.append(NodeChange(spec.name, action, ("new node",), recreate=True))
            builder_exists = True
        else:
            changes.append(diff_node(spec, current, recorded_digests.get(spec.name)))
    return changes
