"""Pure node choice for `nodefleet build`: which node builds each platform, and why a platform cannot be built.

A platform goes to its least recently used healthy native node; a node that has not answered yet is waited for
within a grace period, a platform with no healthy native node is refused (or, when asked, emulated elsewhere), and
a failed build is retried once on another node. The health checks that feed it are in nodefleet.build.checks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from nodefleet.inventory import Host
from nodefleet.platforms import architecture, same_architecture


class Health(StrEnum):
    """What is known of a node while choosing."""

    UNCHECKED = "unchecked"
    PENDING = "pending"
    HEALTHY = "healthy"
    FAILED = "failed"


@dataclass(frozen=True)
class NodeView:
    """One host as node choice sees it."""

    name: str
    order: int
    platforms: tuple[str, ...] = ()
    health: Health = Health.UNCHECKED
    error: str | None = None
    workers: tuple[str, ...] = ()
    last_used: float = 0.0
    cpus: int | None = None

    def native_for(self, platform: str) -> bool:
        """True when the host builds `platform` natively: one of its platforms is exactly `platform`. Platforms are
        normalized before they get here (normalize_platform spells arm/v8 as arm/v7, arm64/v8 as arm64)."""
        return platform in self.platforms


@dataclass(frozen=True)
class Choice:
    """The node that builds a platform, and whether it emulates it."""

    platform: str
    node: str
    emulated: bool = False


@dataclass(frozen=True)
class Selection:
    """Node choice for every platform, or the platforms refused, or `pending` when more answers are needed."""

    choices: tuple[Choice, ...] = ()
    refused: tuple[tuple[str, str], ...] = ()
    skipped: tuple[str, ...] = ()
    pending: bool = False


def initial_views(
    hosts: Sequence[Host], record: Mapping[str, Any], pins: Mapping[str, tuple[str, ...]]
) -> list[NodeView]:
    """What is known of each host before checking: platforms from the inventory, the builder's pins or the record."""
    nodes = record.get("nodes") or {}
    views = []
    for order, host in enumerate(hosts):
        known = nodes.get(host.name) or {}
        # The main builder's pins come from `nodefleet up`'s facts; the record covers standbys, which pin nothing.
        platforms = tuple(host.platforms) or pins.get(host.name, ()) or tuple(known.get("platforms") or ())
        views.append(
            NodeView(
                name=host.name,
                order=order,
                platforms=platforms,
                last_used=float(known.get("last_used") or 0.0),
            )
        )
    return views


def hosts_to_check(views: Sequence[NodeView], requested: Sequence[str], allow_emulation: bool) -> list[str]:
    """The hosts whose health the build needs: every host by default or when emulation may be needed, else the
    hosts of the requested platforms and those whose platform is not known yet."""
    if not requested or allow_emulation:
        return [view.name for view in views]
    return [view.name for view in views if not view.platforms or set(view.platforms) & set(requested)]


_COMPATIBLE = {"linux/arm64": "linux/arm", "linux/amd64": "linux/386"}


def native_order(views: Iterable[NodeView], platform: str) -> list[NodeView]:
    """Native nodes of a platform, least recently used first (inventory order on ties)."""
    nodes = [view for view in views if view.native_for(platform)]
    return sorted(nodes, key=lambda view: (view.last_used, view.order))


def _decide_native(nodes: Sequence[NodeView], grace_over: bool) -> tuple[NodeView | None, bool]:
    """(the node to use, still waiting): the first healthy node in preference order, waiting for a preferred one
    that has not answered yet until the grace period is over."""
    waiting = False
    for view in nodes:
        if view.health is Health.HEALTHY:
            if waiting and not grace_over:
                return None, True
            return view, False
        if view.health is Health.PENDING:
            waiting = True
    return None, waiting


def emulation_order(views: Iterable[NodeView], platform: str, busy: Mapping[str, int]) -> list[NodeView]:
    """Healthy nodes whose BuildKit can emulate `platform`: same architecture first (arm/v7 for arm/v6), then a
    64-bit relative (arm64 for arm), then the least busy in this build, then least recently used."""

    def rank(view: NodeView) -> tuple[int, int, int, float, int]:
        native = view.platforms[0] if view.platforms else ""
        same = any(same_architecture(own, platform) for own in view.platforms)
        relative = _COMPATIBLE.get(native) == architecture(platform)
        return (0 if same else 1, 0 if relative else 1, busy.get(view.name, 0), view.last_used, view.order)

    able = [
        view
        for view in views
        if view.health is Health.HEALTHY and not view.native_for(platform) and platform in view.workers
    ]
    return sorted(able, key=rank)


def select_nodes(
    views: Sequence[NodeView],
    requested: Sequence[str],
    *,
    allow_emulation: bool,
    grace_over: bool,
    hint: str = "",
) -> Selection:
    """Choose a node for every platform (requested, or by default every platform of a healthy node).

    A platform goes to its least recently used healthy native node. When none is healthy it is refused (fail
    closed), or with `allow_emulation` given to a healthy node whose BuildKit emulates it; a default platform
    whose nodes are all down is skipped with a note instead.
    """
    default = not requested
    if default:
        if any(view.health is Health.PENDING and not view.platforms for view in views):
            return Selection(pending=True)
        requested = _default_platforms(views)
    choices: list[Choice] = []
    refused: list[tuple[str, str]] = []
    skipped: list[str] = []
    busy: dict[str, int] = {}
    for platform in requested:
        nodes = native_order(views, platform)
        chosen, waiting = _decide_native(nodes, grace_over)
        if waiting:
            return Selection(pending=True)
        if chosen is not None:
            choices.append(Choice(platform, chosen.name))
            busy[chosen.name] = busy.get(chosen.name, 0) + 1
            continue
        if any(view.health is Health.PENDING and not view.platforms for view in views):
            # A host whose platform is not known yet (a standby never built on, or the record lost) may be a
            # native node of this platform: wait for its answer (each check is bounded) before refusing.
            return Selection(pending=True)
        if default:
            skipped.append(f"{platform} skipped: {_states(nodes)}")
            continue
        if allow_emulation:
            if any(view.health is Health.PENDING for view in views) and not grace_over:
                return Selection(pending=True)
            able = emulation_order(views, platform, busy)
            if able:
                choices.append(Choice(platform, able[0].name, emulated=True))
                busy[able[0].name] = busy.get(able[0].name, 0) + 1
                continue
        refused.append((platform, refusal_message(platform, views, nodes, allow_emulation, hint)))
    if default and not choices:
        refused.append(("*", _nothing_healthy(views, hint)))
    return Selection(tuple(choices), tuple(refused), tuple(skipped))


def retry_node(views: Sequence[NodeView], choice: Choice, exclude: Iterable[str]) -> str | None:
    """Another healthy node for a platform whose node failed: native for a native build, else one that emulates."""
    excluded = set(exclude)
    others = [view for view in views if view.name not in excluded]
    if choice.emulated:
        able = emulation_order(others, choice.platform, {})
    else:
        able = [view for view in native_order(others, choice.platform) if view.health is Health.HEALTHY]
    return able[0].name if able else None


def _default_platforms(views: Sequence[NodeView]) -> tuple[str, ...]:
    platforms: list[str] = []
    for view in sorted(views, key=lambda v: v.order):
        if view.health is not Health.UNCHECKED:
            platforms += [platform for platform in view.platforms if platform not in platforms]
    return tuple(platforms)


def _states(nodes: Sequence[NodeView]) -> str:
    return ", ".join(f"{view.name} {view.health.value}" + (f" ({view.error})" if view.error else "") for view in nodes)


def _nothing_healthy(views: Sequence[NodeView], hint: str) -> str:
    return f"no healthy node to build on: {_states(views)}" + (f"; {hint}" if hint else "")


def refusal_message(
    platform: str, views: Sequence[NodeView], natives: Sequence[NodeView], allow_emulation: bool, hint: str = ""
) -> str:
    """Why a platform cannot be built natively, which hosts could and their state, and how to add one."""
    add = f"add a {platform} machine as a [[hosts]] entry (name, address) in the inventory and run `nodefleet up`" + (
        f" ({hint})" if hint else ""
    )
    if natives:
        head = f"{platform}: no healthy native node: {_states(natives)}"
        fix = f"bring one back (`nodefleet status` says why, `nodefleet up` repairs it) or {add}"
    else:
        known = ", ".join(f"{view.name} {'/'.join(view.platforms) or 'unknown'}" for view in views)
        head = f"{platform}: no host in the inventory builds it natively (hosts: {known})"
        fix = add
    if allow_emulation:
        return f"{head}; no healthy node can emulate it either (its BuildKit must list {platform}); {fix}"
    return f"{head}. Refusing to emulate it: {fix}, or pass --allow-emulation to build it under QEMU on another node"
