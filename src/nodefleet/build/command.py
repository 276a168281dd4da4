"""`nodefleet build`: every platform built natively on a healthy node of its own, in parallel, then one index.

The build checks the hosts it needs (nodefleet.build.checks), chooses a node per platform (nodefleet.build.routing,
pure), turns the choices into jobs and runs them (nodefleet.build.schedule), then assembles the pushed index
(nodefleet.build.index). Each platform gets one `docker buildx build` on a single-node helper builder (sharing the
node's BuildKit container and cache), pinned to that platform so buildx's strict first pass routes it and never an
emulating node; buildx reaches the node through nodefleet's own SSH session (nodefleet.build.context), and is
started before the health checks answer, waiting at the node's shut door (nodefleet.build.early).
"""

from __future__ import annotations

import asyncio
import time

from nodefleet.build.checks import Checks
from nodefleet.build.cmdline import BuildRequest, check_outputs
from nodefleet.build.context import Context
from nodefleet.build.early import drop_all, open_doors, start_early
from nodefleet.build.index import assemble_index, write_metadata
from nodefleet.build.options import BuildOptions
from nodefleet.build.report import BuildReport, PlatformResult
from nodefleet.build.routing import Choice, Health, Selection, hosts_to_check, initial_views, native_order, select_nodes
from nodefleet.build.schedule import Job, run_jobs
from nodefleet.buildx.store import CorruptStoreError, read_store
from nodefleet.client import check_client, require_programs
from nodefleet.errors import UsageError
from nodefleet.inventory import Inventory
from nodefleet.state import BuilderState, default_state_dir
from nodefleet.target import load_ssh_stack


async def build(inventory: Inventory, request: BuildRequest, options: BuildOptions | None = None) -> BuildReport:
    """Build every requested platform natively on the fleet; returns one result per platform. The builder's lock
    is held shared: builds run side by side, while `up` and `down` wait for them (and they for `up` and `down`)."""
    options = options or BuildOptions()
    started = time.monotonic()
    report = BuildReport(inventory.builder)
    if not inventory.enabled_hosts:
        raise UsageError(f"{inventory.path}: no enabled hosts")
    check_outputs(request, len(request.platforms))
    state = BuilderState(options.state_dir or default_state_dir(), inventory.builder)
    async with state.lock.hold_async(options.lock_wait, shared=True, on_wait=options.notice):
        state.adopt_legacy()
        ctx = Context(inventory, request, options, state)
        try:
            await _build(ctx, report)
        finally:
            report.seconds = time.monotonic() - started
            ctx.cache.save()
            ctx.remove_tmp()
    return report


async def _build(ctx: Context, report: BuildReport) -> None:
    request = ctx.request
    record = ctx.state.build_record.load()
    base = initial_views(ctx.inventory.enabled_hosts, record, main_pins(ctx.inventory.builder, report.notes))
    checks = Checks(ctx.inventory, ctx.options, ctx.cache)
    wanted = set(hosts_to_check(base, request.platforms, request.allow_emulation))
    hint = f"inventory {ctx.inventory.path}"
    # buildx first (it waits at the shut doors, contacting no host), then the SSH stack loads while it starts and
    # the local tools are checked, then the checks of the hosts.
    require_programs()
    early = await start_early(ctx, base)
    stack = asyncio.ensure_future(load_ssh_stack())
    try:
        await check_client(versions=False)
        await stack
        checks.start(view for view in base if view.name in wanted)
        selection = await checks.settle(
            base,
            lambda views, grace: select_nodes(
                views, request.platforms, allow_emulation=request.allow_emulation, grace_over=grace, hint=hint
            ),
        )
        await ctx.remember(checks.checked())
        ctx.views = {view.name: view for view in checks.views(base)}
        tell_routing(ctx, selection)
        report.notes += list(selection.skipped)
        if selection.refused:
            _refuse(report, selection)
            return
        check_outputs(request, len(selection.choices))
        jobs = [Job(choice, _result_for(ctx, choice)) for choice in selection.choices]
        report.platforms = [job.result for job in jobs]
        await ctx.mark_used(choice.node for choice in selection.choices)
        await open_doors(ctx, checks, selection, early)
        await run_jobs(ctx, jobs, checks, early)
        if request.push and all(result.status == "built" for result in report.platforms):
            await assemble_index(ctx, report)
        write_metadata(ctx, report)
        await ctx.remember(checks.checked())  # checks that answered during the build, so they are quick next time
    finally:
        stack.cancel()
        await asyncio.gather(stack, return_exceptions=True)
        report.nodes = checks.results()
        await drop_all(early)
        await ctx.close_gateways()
        await checks.close()


def main_pins(builder: str, notes: list[str]) -> dict[str, tuple[str, ...]]:
    try:
        stored = read_store(builder)
    except CorruptStoreError as exc:
        notes.append(f"builder {builder}: {exc}")
        return {}
    if stored is None:
        notes.append(f"builder {builder} does not exist yet; `nodefleet up` creates it")
        return {}
    return {node.name: node.platforms for node in stored.nodes}


def tell_routing(ctx: Context, selection: Selection) -> None:
    """Say which nodes were passed over and why (down, or not answering within the grace period)."""
    for view in ctx.views.values():
        if view.health is Health.FAILED:
            ctx.options.notice(f"{view.name} not used: {view.error}")
    grace = ctx.options.health_grace
    for choice in selection.choices:
        for view in native_order(ctx.views.values(), choice.platform):
            if view.name == choice.node:
                break
            if view.health is Health.PENDING:
                ctx.options.notice(
                    f"{view.name} has not answered within {grace:g} s; building {choice.platform} on {choice.node}"
                )


def _refuse(report: BuildReport, selection: Selection) -> None:
    refused = dict(selection.refused)
    report.failure = "; ".join(refused.values())
    report.platforms = [
        PlatformResult(platform, status="refused", error=message) for platform, message in refused.items()
    ]
    report.platforms += [
        PlatformResult(
            choice.platform,
            node=choice.node,
            emulated=choice.emulated,
            status="not built",
            error="another platform was refused",
        )
        for choice in selection.choices
    ]


def _result_for(ctx: Context, choice: Choice) -> PlatformResult:
    view = ctx.views.get(choice.node)
    return PlatformResult(
        choice.platform,
        node=choice.node,
        node_platform=view.platforms[0] if view and view.platforms else None,
        emulated=choice.emulated,
    )
