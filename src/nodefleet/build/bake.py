"""`nodefleet bake`: every target of a bake or compose file, each platform on a healthy native node, the nodes of
a platform sharing its jobs. The same core as `nodefleet build` (checks, routing, node access, the job scheduler
with its retries, the index), with a longer job list: one job per group of linked targets and platform."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from nodefleet.build.bakeargs import BakeRequest
from nodefleet.build.bakefile import (
    BakeJob,
    Definition,
    check_targets,
    job_argv,
    parse_definition,
    plan_jobs,
    target_names,
    target_outputs,
)
from nodefleet.build.checks import Checks
from nodefleet.build.cmdline import BuildRequest
from nodefleet.build.command import main_pins, tell_routing
from nodefleet.build.context import Context
from nodefleet.build.index import IndexFailure, make_index
from nodefleet.build.options import BuildOptions
from nodefleet.build.report import BuildReport, PlatformResult
from nodefleet.build.routing import Choice, Health, NodeView, hosts_to_check, initial_views, native_order, select_nodes
from nodefleet.build.schedule import Job, run_jobs
from nodefleet.build.spread import capacity, spread
from nodefleet.client import check_client, require_programs
from nodefleet.errors import UsageError
from nodefleet.inventory import Inventory
from nodefleet.redact import mask, secret_values
from nodefleet.runner import run_local
from nodefleet.state import BuilderState, default_state_dir
from nodefleet.target import load_ssh_stack


async def read_definition(request: BakeRequest) -> Definition:
    """The definition as buildx resolves it (HCL, JSON or compose; variables, inherits, --set)."""
    result = await run_local(request.print_argv(), timeout=60, check=False)
    if not result.ok:
        lines = [line for line in result.stderr.splitlines() if line.startswith("ERROR")] or result.stderr.splitlines()
        raise UsageError(f"docker buildx bake --print: {(lines or ['failed'])[-1].strip()}")
    return parse_definition(result.stdout, request.cwd)


async def bake(inventory: Inventory, request: BakeRequest, options: BuildOptions | None = None) -> BuildReport:
    """Build every requested target for each of its platforms natively on the fleet; one result per target and
    platform. The builder's lock is held shared, as by `build`."""
    options = options or BuildOptions()
    started = time.monotonic()
    report = BuildReport(inventory.builder, command="bake")
    if not inventory.enabled_hosts:
        raise UsageError(f"{inventory.path}: no enabled hosts")
    require_programs()
    definition = await read_definition(request)
    if request.platforms:
        jobs = plan_jobs(definition, request.platforms, ())
        check_targets(definition, jobs, push=request.push, load=request.load)
    state = BuilderState(options.state_dir or default_state_dir(), inventory.builder)
    async with state.lock.hold_async(options.lock_wait, shared=True, on_wait=options.notice):
        state.adopt_legacy()
        build_request = BuildRequest(".", progress=request.progress, allow_emulation=request.allow_emulation)
        ctx = Context(inventory, build_request, options, state)
        try:
            await _bake(ctx, request, definition, report)
        finally:
            report.seconds = time.monotonic() - started
            ctx.cache.save()
            ctx.remove_tmp()
    return report


async def _bake(ctx: Context, request: BakeRequest, definition: Definition, report: BuildReport) -> None:
    record = ctx.state.build_record.load()
    base = initial_views(ctx.inventory.enabled_hosts, record, main_pins(ctx.inventory.builder, report.notes))
    checks = Checks(ctx.inventory, ctx.options, ctx.cache)
    stack = asyncio.ensure_future(load_ssh_stack())
    try:
        await check_client(versions=False)
        await stack
        wanted = set(hosts_to_check(base, request.platforms, request.allow_emulation or not request.platforms))
        checks.start(view for view in base if view.name in wanted)
        default = await _default_platforms(checks, base, request)
        jobs = plan_jobs(definition, request.platforms, default)
        check_targets(definition, jobs, push=request.push, load=request.load)
        platforms = tuple(dict.fromkeys(job.platform for job in jobs))
        hint = f"inventory {ctx.inventory.path}"
        selection = await checks.settle(
            base,
            lambda views, grace: select_nodes(
                views, platforms, allow_emulation=request.allow_emulation, grace_over=grace, hint=hint
            ),
        )
        await checks.wait_for(list(checks.tasks))  # every node of a platform may take a share: all must answer
        await ctx.remember(checks.checked())
        ctx.views = {view.name: view for view in checks.views(base)}
        tell_routing(ctx, selection)
        if selection.refused:
            report.failure = "; ".join(message for _, message in selection.refused)
            report.platforms = [
                PlatformResult(platform, target=name, status="refused", error=message)
                for platform, message in selection.refused
                for job in jobs
                if job.platform == platform
                for name in job.targets
            ]
            return
        scheduled, limits = await _schedule(ctx, request, definition, jobs, selection.choices)
        report.platforms = [result for job in scheduled for result in (job.result, *job.others)]
        await ctx.mark_used({job.choice.node for job in scheduled})
        await run_jobs(ctx, scheduled, checks, {}, limits)
        await _remember_nodes(ctx, definition, jobs, report)
        await _finish(ctx, request, definition, report)
    finally:
        stack.cancel()
        await asyncio.gather(stack, return_exceptions=True)
        report.nodes = checks.results()
        await ctx.close_gateways()
        await checks.close()


async def _default_platforms(checks: Checks, base: Sequence[NodeView], request: BakeRequest) -> tuple[str, ...]:
    """The platforms a target without platforms builds for: --platform, else every platform of a healthy node."""
    if request.platforms:
        return request.platforms
    await checks.wait_for(list(checks.tasks))
    views = checks.views(base)
    return tuple(dict.fromkeys(p for view in views if view.health is Health.HEALTHY for p in view.platforms))


async def _schedule(
    ctx: Context,
    request: BakeRequest,
    definition: Definition,
    jobs: Sequence[BakeJob],
    choices: Sequence[Choice],
) -> tuple[list[Job], dict[str, int]]:
    """A platform's jobs spread over its healthy native nodes by capacity (an emulated platform goes to the one node
    chosen for it), preferring the node that last built each. The jobs a node takes run as one `buildx bake` of at
    most `max_jobs` of them (BuildKit builds them side by side, as for plain bake, and one client process per node
    leaves the CPUs to BuildKit); a node with more runs its batches one after another."""
    chosen = {choice.platform: choice for choice in choices}
    last = ctx.state.build_record.load().get("bake") or {}
    definition_file = ctx.tmp / "definition.json"
    definition_file.write_text(json.dumps(definition.document))
    platforms_of = {name: sum(1 for job in jobs if name in job.targets) for name in definition.requested}
    scheduled: list[Job] = []
    for platform, choice in chosen.items():
        mine = [job for job in jobs if job.platform == platform]
        natives = [v for v in native_order(ctx.views.values(), platform) if v.health is Health.HEALTHY]
        if choice.emulated or not natives:
            natives = [ctx.views[choice.node]]
        capacities = [capacity(ctx.hosts[view.name], view.cpus) for view in sorted(natives, key=lambda v: v.order)]
        assigned = spread([job.key for job in mine], capacities, last)
        for cap in capacities:
            taken = [job for job in mine if assigned[job.key] == cap.node]
            for start in range(0, len(taken), cap.max_jobs):
                batch = taken[start : start + cap.max_jobs]
                merged = BakeJob(tuple(name for job in batch for name in job.targets), platform)
                argv = functools.partial(_argv, str(definition_file), merged, definition, request, platforms_of)
                results = [
                    PlatformResult(platform, node=cap.node, target=name, emulated=choice.emulated)
                    for name in merged.targets
                ]
                chosen_node = Choice(platform, cap.node, choice.emulated)
                scheduled.append(Job(chosen_node, results[0], argv, merged.key, results[1:], stops_others=False))
    return scheduled, dict.fromkeys((job.choice.node for job in scheduled), 1)


def _argv(
    definition_file: str,
    job: BakeJob,
    definition: Definition,
    request: BakeRequest,
    platforms_of: Mapping[str, int],
    builder: str,
    metadata_file: str,
    _count: int,
    progress: str,
) -> list[str]:
    return job_argv(
        definition_file,
        builder,
        job,
        definition,
        push=request.push,
        load=request.load,
        cache_ref=request.cache_ref,
        passthrough=request.passthrough,
        platforms_of=platforms_of,
        metadata_file=metadata_file,
        progress=progress,
    )


async def _remember_nodes(ctx: Context, definition: Definition, jobs: Sequence[BakeJob], report: BuildReport) -> None:
    """Record the node each group of targets was built on, per platform: the next bake prefers it (its cache is
    there)."""
    built = {(r.target, r.platform): r.node for r in report.platforms if r.status == "built" and r.node}
    async with ctx.state.build_record.update() as record:
        section = record.setdefault("bake", {})
        for job in jobs:
            nodes = {built.get((name, job.platform)) for name in job.targets}
            if len(nodes) == 1 and None not in nodes:
                section[job.key] = nodes.pop()


async def _finish(ctx: Context, request: BakeRequest, definition: Definition, report: BuildReport) -> None:
    """Each target's metadata from its job's, one index per pushed target, the user's metadata file."""
    for result in report.platforms:
        metadata = result.metadata
        if result.target and isinstance(metadata.get(result.target), dict):
            result.metadata = dict(metadata[result.target])
    failed = [r for r in report.platforms if r.status != "built"]
    if failed:
        report.failure = f"{len(failed)} of {len(report.platforms)} target platforms not built"
    for name in definition.requested:
        results = [r for r in report.platforms if r.target == name]
        outputs = target_outputs(definition.targets[name], request.push, request.load)
        if not any(output.push for output in outputs) or any(r.status != "built" for r in results) or not results:
            continue
        names = target_names(definition.targets[name], outputs)
        try:
            digest = await make_index(ctx, names, results)
        except IndexFailure as exc:
            report.failure = f"{name}: {exc}"
            continue
        report.indexes.append({"target": name, "names": list(names), "index_digest": digest})
    if request.metadata_file:
        secrets = secret_values([*request.passthrough, *(w for value in request.sets for w in ("--set", value))])
        _write_metadata(Path(request.metadata_file), definition, report, secrets)


def _write_metadata(path: Path, definition: Definition, report: BuildReport, secrets: Sequence[str]) -> None:
    """One metadata file for the whole bake: per target, its index digest (when pushed) and each platform's own
    metadata under `nodefleet.platforms`."""
    indexes = {index["target"]: index["index_digest"] for index in report.indexes}
    merged: dict[str, object] = {}
    for name in definition.requested:
        platforms = {r.platform: {**r.metadata, "nodefleet.node": r.node} for r in report.platforms if r.target == name}
        entry: dict[str, object] = {"nodefleet.platforms": platforms}
        if indexes.get(name):
            entry["containerimage.digest"] = indexes[name]
        merged[name] = entry
    path.write_text(mask(json.dumps(merged, indent=2), secrets) + "\n")
