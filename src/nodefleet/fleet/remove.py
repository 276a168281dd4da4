"""Removing nodes from their hosts: the BuildKit container (and volume) of a node that left the builder, and the
node's gateway helper in nodefleet's private buildx store (shared by `up`, for hosts gone from the inventory, and
`down`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from nodefleet.buildx.argv import rm_argv
from nodefleet.buildx.gateway import Gateway, buildx_environment
from nodefleet.buildx.helpers import GATEWAYS, HELPERS, helper_name, recorded_helpers
from nodefleet.buildx.nodes import container_name
from nodefleet.buildx.store import StoredBuilder, builders_sharing, instance_file
from nodefleet.fanout import each, guarded
from nodefleet.fleet.plan import Action, NodeChange
from nodefleet.fleet.work import FleetOptions
from nodefleet.host.ops import remove_node_container
from nodefleet.inventory import Inventory
from nodefleet.results import HostResult, HostStatus
from nodefleet.runner import run_local
from nodefleet.state import BuilderState
from nodefleet.target import SSHTarget, target_from_endpoint

if TYPE_CHECKING:
    from nodefleet.ssh import Session


async def remove_hosts(
    inventory: Inventory,
    options: FleetOptions,
    state: BuilderState,
    stored: StoredBuilder | None,
    changes: Sequence[NodeChange],
    notes: list[str],
) -> list[HostResult]:
    """Remove the BuildKit container and volume of nodes that left the builder from their hosts."""
    jobs: list[tuple[SSHTarget, HostResult]] = []
    results = []
    for change in changes:
        node = stored.node(change.node) if stored is not None and change.action is Action.REMOVE else None
        if node is None:
            continue
        target = target_from_endpoint(inventory, node.name, node.endpoint)
        result = HostResult(
            node.name, target.address if target else node.endpoint, status=HostStatus.REMOVED, action="remove"
        )
        results.append(result)
        if target is not None:
            jobs.append((target, result))
    await clean_hosts(inventory, options, state, keep_shared(inventory, options, state, jobs, notes), keep_state=False)
    return results


def keep_shared(
    inventory: Inventory,
    options: FleetOptions,
    state: BuilderState,
    jobs: Sequence[tuple[SSHTarget, HostResult]],
    notes: list[str],
) -> list[tuple[SSHTarget, HostResult]]:
    """The jobs whose node's container no other builder on this machine lists. A container (and its cache volume)
    that another builder lists is kept, with a note saying which builder and how to remove it anyway (--force);
    with --force it goes, and the note says which builder still lists it."""
    own = {inventory.builder, *recorded_helpers(state, HELPERS)}
    kept = []
    for target, result in jobs:
        others = builders_sharing(target.name, target.address, own)
        if not others:
            kept.append((target, result))
            continue
        if options.force:
            kept.append((target, result))
            notes.append(
                f"{target.name}: BuildKit container {container_name(target.name)} and its cache removed (--force) "
                f"although builder {', '.join(others)} also lists node {target.name} on {target.address}"
            )
            continue
        result.action = "keep"
        notes.append(
            f"{target.name}: BuildKit container {container_name(target.name)} and its cache kept: builder "
            f"{', '.join(others)} also lists node {target.name} on {target.address} (`nodefleet down --force` removes "
            "them anyway)"
        )
    return kept


async def clean_hosts(
    inventory: Inventory,
    options: FleetOptions,
    state: BuilderState,
    jobs: Sequence[tuple[SSHTarget, HostResult]],
    *,
    keep_state: bool,
) -> None:
    """Remove each node's container (and, unless keep_state, its volume) from its host, every host on its own."""

    async def clean(job: tuple[SSHTarget, HostResult]) -> None:
        target, result = job
        started = time.monotonic()
        try:
            await _clean_remote(target, inventory, options, state, keep_state=keep_state)
        finally:
            result.seconds = time.monotonic() - started

    def fail(job: tuple[SSHTarget, HostResult], message: str) -> None:
        job[1].fail(f"left the builder, but its BuildKit container could not be removed: {message}")

    await each(options.limit(inventory), jobs, clean, fail, lambda job: job[0].name)


async def _clean_remote(
    target: SSHTarget, inventory: Inventory, options: FleetOptions, state: BuilderState, *, keep_state: bool
) -> None:
    from nodefleet.ssh import open_session  # see load_ssh_stack

    async with await open_session(target, policy=options.host_key_policy, attempts=2) as session:
        await forget_gateway_helper(session, inventory, state, target.name)
        await remove_node_container(
            session, target.name, keep_state=keep_state, timeout=inventory.defaults.command_timeout
        )


async def forget_gateway_helper(session: Session, inventory: Inventory, state: BuilderState, node: str) -> None:
    """Drop the node's gateway helper (nodefleet.buildx.gateway) from nodefleet's private buildx store. `buildx rm`
    connects to the node, so the node's door is served over `session` meanwhile; a build serving it now keeps it.
    A failure here is not the host's: the helper only answers during a build, and the next `down` tries again."""
    env = buildx_environment(state.root)
    name = helper_name(inventory.builder, node)
    if name not in state.helper_record.load()[GATEWAYS] or not instance_file(name, env).exists():
        return
    gateway = Gateway.for_node(state.root, inventory.builder, node)

    async def forget() -> None:
        if await gateway.start():
            gateway.open(session)
            argv = rm_argv(name, keep_state=True, keep_daemon=True)
            await run_local(argv, timeout=inventory.defaults.command_timeout, env=env, check=False)

    try:
        await guarded(node, forget(), lambda _message: None)
    finally:
        await gateway.close()
    if not instance_file(name, env).exists():
        async with state.helper_record.update() as record:
            record[GATEWAYS].pop(name, None)
