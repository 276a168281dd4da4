"""Pure planning of the builder: which node pins which platform, and what must change in buildx's store, as
table-testable data (the changes, the node specs, the argv that carries them out)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from nodefleet.buildx.argv import leave_argv, rm_argv
from nodefleet.buildx.nodes import DIGEST_OPT, NodeSpec, node_spec
from nodefleet.buildx.store import StoredBuilder, StoredNode
from nodefleet.inventory import Host


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
    # The node leaves the builder and joins it again: the only way to drop a pin buildx keeps on an update.
    rejoin: bool = False


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


def diff_node(
    desired: NodeSpec, stored: StoredNode, recorded_digest: str | None, taken: frozenset[str] = frozenset()
) -> NodeChange:
    """Compare one desired node with the stored one. The config digest `up` applied is nodefleet's record's, else
    the one kept in buildx's store with the node (DIGEST_OPT). `taken`: the platforms the desired nodes pin."""
    reasons: list[str] = []
    recreate = False
    # A pin no desired node takes over (the host is another machine now, say): buildx would keep routing that
    # platform here, and only leaving and joining again drops it.
    stale = tuple(platform for platform in stored.platforms if platform not in taken)
    if not desired.platforms and stale:
        reasons.append(f"pinned {','.join(stored.platforms)} -> - (no other node takes {','.join(stale)})")
    if stored.endpoint != desired.endpoint:
        reasons.append(f"endpoint {stored.endpoint} -> {desired.endpoint}")
        recreate = True
    # A standby (no pins wanted) loses a stale pin when the primary takes it; buildx cannot unpin otherwise.
    if desired.platforms and set(stored.platforms) != set(desired.platforms):
        reasons.append(f"pinned {','.join(stored.platforms) or '-'} -> {','.join(desired.platforms)}")
    if _without_digest(stored.driver_opts) != _without_digest(desired.all_driver_opts()):
        reasons.append("driver options changed")
        recreate = True
    applied = recorded_digest if recorded_digest is not None else stored.driver_opts.get(DIGEST_OPT)
    if applied is not None and applied != desired.config_digest:
        reasons.append("buildkitd config changed")
        recreate = True
    elif applied is None and desired.config_digest:
        # Not set up by nodefleet (or by a version that kept no digest with the node, and its record was lost):
        # re-apply so the config is known to be in place.
        reasons.append("buildkitd config not recorded")
        recreate = True
    if not reasons:
        return NodeChange(desired.name, Action.KEEP)
    return NodeChange(
        desired.name, Action.UPDATE, tuple(reasons), recreate, rejoin=not desired.platforms and bool(stale)
    )


def _without_digest(opts: Mapping[str, str]) -> dict[str, str]:
    """Driver options but the config digest, which is compared on its own."""
    return {key: value for key, value in opts.items() if key != DIGEST_OPT}


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
    taken = frozenset(platform for spec in desired for platform in spec.platforms)
    if stored is not None:  # unreachable nodes keep their pins (see desired_specs)
        taken |= {platform for node in stored.nodes if node.name in keep for platform in node.platforms}
    for spec in desired:
        current = stored.node(spec.name) if stored is not None else None
        if current is None:
            action = Action.ADD if builder_exists else Action.CREATE
            changes.append(NodeChange(spec.name, action, ("new node",), recreate=True))
            builder_exists = True
        else:
            changes.append(diff_node(spec, current, recorded_digests.get(spec.name), taken))
    return changes


@dataclass(frozen=True)
class Member:
    """A host as planning sees it: its platform (None when not known this run) and whether it answered."""

    host: Host
    platform: str | None
    ready: bool
    # The host's own buildkitd config and its digest (a cache budget); None: the builder's.
    config: tuple[Path | None, str] | None = None


def desired_specs(
    members: Sequence[Member], stored: StoredBuilder | None, config: Path | None, digest: str
) -> dict[str, NodeSpec]:
    """The node every ready host should be, pins included.

    Pins go to the first host of each platform among the nodes the builder will have after this run. A host that
    is in the builder but unreachable now keeps its pins: moving them to its standby would need a builder change,
    which is refused while a node is unreachable, and would fail the healthy standby."""
    after: list[tuple[str, tuple[str, ...]]] = []
    for member in members:
        node = stored.node(member.host.name) if stored else None
        if not member.ready and node is None:
            continue  # not in the builder after this run
        if member.platform:
            after.append((member.host.name, (member.platform,)))
        else:
            after.append((member.host.name, node.platforms if node else ()))
    pins = assign_pins(after)
    return {
        member.host.name: node_spec(member.host, pins.get(member.host.name, ()), *(member.config or (config, digest)))
        for member in members
        if member.ready
    }


def plan_up(
    members: Sequence[Member],
    stored: StoredBuilder | None,
    recorded_digests: Mapping[str, str],
    config: Path | None,
    digest: str,
) -> tuple[list[NodeChange], dict[str, NodeSpec]]:
    """The changes `up` makes and the specs of the ready hosts; hosts that did not answer stay untouched."""
    specs = desired_specs(members, stored, config, digest)
    keep = frozenset(member.host.name for member in members if not member.ready)
    return plan_builder(list(specs.values()), stored, recorded_digests, keep), specs


def removal_argv(builder: str, changes: Sequence[NodeChange], stored: StoredBuilder | None) -> list[list[str]]:
    """The buildx commands that carry out the removals: the whole builder when every node goes (buildx cannot
    leave its last node), else `--leave` per node, which contacts no host."""
    removals = [change.node for change in changes if change.action is Action.REMOVE]
    if stored is not None and removals and len(removals) == len(stored.nodes):
        return [rm_argv(builder, keep_state=True, keep_daemon=True)]
    return [leave_argv(builder, node) for node in removals]


def edits(changes: Sequence[NodeChange]) -> list[NodeChange]:
    """The changes that create, add or update a node: each is one `create` (with `--append` once the builder
    exists, see create_argv)."""
    return [change for change in changes if change.action in {Action.CREATE, Action.ADD, Action.UPDATE}]


def kept_digests(
    recorded: Mapping[str, str] | None, changes: Sequence[NodeChange], specs: Mapping[str, NodeSpec]
) -> dict[str, str]:
    """The record with every node this run keeps as it is: a kept node has the spec's config in place (its record
    or its digest in buildx's store said so), so a lost, damaged or incomplete record (an `up` killed before it
    wrote it) is whole again without touching any node."""
    digests = dict(recorded or {})
    for change in changes:
        if change.action is Action.KEEP and change.node in specs:
            digests[change.node] = specs[change.node].config_digest
    return digests
