"""`nodefleet build`: every platform built natively on a healthy node of its own, in parallel, then one index.

Each platform gets one `docker buildx build` on a single-node builder (`<builder>--<node>`, sharing the node's
BuildKit container and cache), pinned to that platform so buildx's strict first pass routes it and never an
emulating node. Pushes go by digest and `docker buildx imagetools create` assembles the index, so every platform
has its own node, timing, failover and cache ref. buildx reaches each node through nodefleet's own SSH session
(nodefleet.gateway), and is started before the health checks answer, waiting at the node's shut door.

The command line and the argv (nodefleet.buildargs), node choice (nodefleet.routing), reading buildx's output
(nodefleet.buildoutput) and the report (nodefleet.buildreport) are pure and table-tested. The options and the
record are in nodefleet.buildstate, the health checks in nodefleet.buildchecks, running one buildx in
nodefleet.buildrun; this module holds the rest of the I/O: helper builders and gateways, the pushed index.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import shlex
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nodefleet import buildx, fleet
from nodefleet.bootstrap import config_digest
from nodefleet.buildargs import (
    BuildRequest,
    check_outputs,
    imagetools_create_argv,
    imagetools_inspect_argv,
    platform_argv,
    platform_slug,
    progress_mode,
    repository,
)
from nodefleet.buildchecks import Checks
from nodefleet.buildoutput import FailureKind, classify_failure, error_text, index_digests, merge_metadata
from nodefleet.buildreport import Attempt, BuildReport, PlatformResult
from nodefleet.buildrun import Run, run_streaming
from nodefleet.buildstate import BuildOptions, BuildRecord
from nodefleet.errors import CommandError, NodefleetError, UsageError
from nodefleet.gateway import Gateway, buildx_environment, socket_path
from nodefleet.inventory import Inventory
from nodefleet.platforms import same_architecture
from nodefleet.routing import (
    Choice,
    Health,
    NodeView,
    Selection,
    hosts_to_check,
    initial_views,
    native_order,
    retry_node,
    select_nodes,
)
from nodefleet.state import BuilderState, default_state_dir, private_dir

if TYPE_CHECKING:
    from nodefleet.ssh import Session

log = logging.getLogger(__name__)

WATCH_MISSES = 3  # unanswered keepalives, connect_timeout seconds apart, before a building node is given up


@dataclass
class _Early:
    """A platform's buildx started before its node was chosen: it waits at the node's shut door, its output held."""

    node: str
    count: int  # platforms in the build it was started for
    builder: str
    hold: asyncio.Future[bool]
    lost: asyncio.Future[str]
    task: asyncio.Task[Run]

    async def drop(self) -> None:
        """Not used after all: its output is dropped and its buildx stopped."""
        if not self.hold.done():
            self.hold.set_result(False)
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


class _Build:
    """One `nodefleet build` in progress: inventory, request, the record, helper builders."""

    def __init__(self, inventory: Inventory, request: BuildRequest, options: BuildOptions, state_dir: Path) -> None:
        self.inventory = inventory
        self.request = request
        self.options = options
        self.hosts = {host.name: host for host in inventory.enabled_hosts}
        self.record = BuildRecord(fleet.build_record_file(state_dir, inventory.builder))
        self.config = fleet.resolve_buildkitd_config(inventory, BuilderState(state_dir, inventory.builder))
        self.digest = config_digest(self.config)
        self.helper_lock = asyncio.Lock()
        self.abort = asyncio.Event()
        self.views: dict[str, NodeView] = {}
        self.tmp = Path(tempfile.mkdtemp(prefix="nodefleet-build-"))
        self.state_dir = state_dir
        self.gateways: dict[str, Gateway | None] = {}  # None: another build serves that node's door now
        self.gateway_env = buildx_environment(state_dir)
        self.early: dict[str, _Early] = {}  # by platform: buildx started before the checks answered
        self.used: dict[str, tuple[str, Mapping[str, str] | None]] = {}  # node: the builder (and env) it built with
        self.session_lock = asyncio.Lock()

    async def serve(self, node: str) -> Gateway | None:
        """The node's door, served from now on by this build (shut until opened); None when it cannot be."""
        if node not in self.gateways:
            gateway = Gateway.for_node(self.state_dir, self.inventory.builder, node)
            try:
                served = await gateway.start()
            except OSError as exc:
                log.debug("%s: cannot serve its gateway: %s", node, exc)
                served = False
            if not served:
                await gateway.close()
            self.gateways[node] = gateway if served else None
        return self.gateways[node]

    def gateway_spec(self, node: str, platforms: tuple[str, ...]) -> buildx.NodeSpec:
        """The node of its gateway helper: the node as `up` makes it, reached through the door."""
        spec = fleet.node_spec(self.hosts[node], platforms, self.config, self.digest)
        return replace(spec, endpoint=f"unix://{socket_path(self.state_dir, self.inventory.builder, node)}")

    def gateway_ready(self, node: str, platforms: tuple[str, ...], record: Mapping[str, Any]) -> str | None:
        """The node's gateway helper when it is there as this build would make it (so buildx may start at once)."""
        name = fleet.helper_builder_name(self.inventory.builder, node)
        if not platforms:
            return None
        try:
            stored = buildx.read_store(name, self.gateway_env)
        except buildx.CorruptStoreError:
            return None
        current = _up_to_date(stored, self.gateway_spec(node, platforms), record["gateways"].get(name), self.digest)
        return name if current else None

    async def gateway_helper(self, node: str) -> str:
        """The node's gateway helper in nodefleet's private buildx store, made (or made again) when needed; its door
        must be open, as buildx connects when it makes a builder."""
        private_dir(Path(self.gateway_env["BUILDX_CONFIG"]))
        spec = self.gateway_spec(node, self.views[node].platforms)
        return await self._made_helper("gateways", node, spec, self.gateway_env)

    async def session(self, checks: Checks, node: str) -> Session:
        """An open SSH session to the node: the one its health check kept, or a new one."""
        async with self.session_lock:
            session = checks.session(node)
            if session is None:
                interval = self.inventory.defaults.connect_timeout
                target = fleet.ssh_target(self.inventory, self.hosts[node])
                from nodefleet.ssh import open_session  # imported by the checks already

                session = await open_session(target, attempts=2, budget=2 * interval + 1)
                checks.adopt(node, session)
            return session

    async def builder_for(self, node: str, checks: Checks) -> tuple[str, Mapping[str, str] | None]:
        """The builder a platform's buildx uses on `node` (and its environment): the node's gateway helper when this
        build serves its door, else the `ssh://` helper."""
        gateway = await self.serve(node)
        if gateway is not None:
            try:
                gateway.open(await self.session(checks, node))
                self.used[node] = (await self.gateway_helper(node), self.gateway_env)
                return self.used[node]
            except (NodefleetError, OSError) as exc:
                log.debug("%s: gateway helper not usable (%s); using the ssh:// helper", node, exc)
        self.used[node] = (await self.helper(node), None)
        return self.used[node]

    async def close_gateways(self) -> None:
        """Stop every buildx started early that was not used, then stop serving the doors."""
        early = list(self.early.values())
        self.early.clear()
        await asyncio.gather(*(item.drop() for item in early))
        await asyncio.gather(*(gateway.close() for gateway in self.gateways.values() if gateway is not None))

    async def helper(self, node: str) -> str:
        """The node's single-node `ssh://` builder, created (or re-created when the inventory changed) on first use."""
        spec = fleet.node_spec(self.hosts[node], self.views[node].platforms, self.config, self.digest)
        return await self._made_helper("helpers", node, spec, None)

    async def _made_helper(self, kind: str, node: str, spec: buildx.NodeSpec, env: Mapping[str, str] | None) -> str:
        """Builder `<builder>--<node>` as `spec` in the buildx store `env` names, made (or made again when it or the
        config changed); `kind` is its section of the record: helpers (`ssh://`) or gateways (nodefleet.gateway)."""
        name = fleet.helper_builder_name(self.inventory.builder, node)
        async with self.helper_lock, self.record.update() as record:
            stored = buildx.read_store(name, env)
            if _up_to_date(stored, spec, record[kind].get(name), self.digest):
                return name
            if env is None:
                self.options.notice(f"preparing builder {name} (node {node}, sharing its BuildKit container)")
            if stored is not None:
                await buildx.run_local(buildx.rm_argv(name, keep_state=True, keep_daemon=True), timeout=120, env=env)
            timeout = self.inventory.defaults.connect_timeout * 2 + 60
            await buildx.run_local(buildx.create_argv(name, spec, append=False), timeout=timeout, env=env)
            record[kind][name] = {"config_digest": self.digest}
        return name

    async def mark_used(self, nodes: Iterable[str]) -> None:
        """Record that these nodes start a build now (the least recently used goes next)."""
        now = time.time()
        async with self.record.update() as record:
            for node in nodes:
                record["nodes"].setdefault(node, {})["last_used"] = now

    async def remember(self, checks: Iterable[fleet.NodeCheck]) -> None:
        """Record each checked host's platform and its container's worker platforms."""
        async with self.record.update() as record:
            for check in checks:
                if check.result.platform is None:
                    continue
                entry = record["nodes"].setdefault(check.result.name, {})
                entry["platforms"] = [check.result.platform]
                native = check.worker_platforms[0] if check.worker_platforms else None
                if native and not same_architecture(native, check.result.platform):
                    entry.pop("platforms")  # a stale record (the host changed): ask the host next time
                if check.container_id and check.worker_platforms:
                    entry["workers"] = {check.container_id: list(check.worker_platforms)}


def _up_to_date(
    stored: buildx.StoredBuilder | None, spec: buildx.NodeSpec, recorded: Mapping[str, Any] | None, digest: str
) -> bool:
    """A helper builder as this build would make it: in the store as `spec`, recorded as made with this config."""
    return stored is not None and _same_node(stored, spec) and (recorded or {}).get("config_digest") == digest


def _same_node(stored: buildx.StoredBuilder, spec: buildx.NodeSpec) -> bool:
    if stored.driver != buildx.DRIVER or len(stored.nodes) != 1:
        return False
    node = stored.nodes[0]
    return (
        node.name == spec.name
        and node.endpoint == spec.endpoint
        and set(node.platforms) == set(spec.platforms)
        and dict(node.driver_opts) == spec.all_driver_opts()
    )


def _known_workers(record: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    workers: dict[str, tuple[str, ...]] = {}
    for entry in (record.get("nodes") or {}).values():
        for container, platforms in (entry.get("workers") or {}).items():
            workers[str(container)] = tuple(str(platform) for platform in platforms)
    return workers


def _main_pins(builder: str, notes: list[str]) -> dict[str, tuple[str, ...]]:
    try:
        stored = buildx.read_store(builder)
    except buildx.CorruptStoreError as exc:
        notes.append(f"builder {builder}: {exc}")
        return {}
    if stored is None:
        notes.append(f"builder {builder} does not exist yet; `nodefleet up` creates it")
        return {}
    return {node.name: node.platforms for node in stored.nodes}


# ---------------------------------------------------------------------------------------------- I/O: the build


async def build(inventory: Inventory, request: BuildRequest, options: BuildOptions | None = None) -> BuildReport:
    """Build every requested platform natively on the fleet; returns one result per platform."""
    options = options or BuildOptions()
    started = time.monotonic()
    report = BuildReport(inventory.builder)
    if not inventory.enabled_hosts:
        raise UsageError(f"{inventory.path}: no enabled hosts")
    check_outputs(request, len(request.platforms))
    state_dir = options.state_dir or default_state_dir()
    job = _Build(inventory, request, options, state_dir)
    try:
        await _build(job, report)
    finally:
        report.seconds = time.monotonic() - started
        with contextlib.suppress(OSError):
            for path in job.tmp.iterdir():
                path.unlink()
            job.tmp.rmdir()
    return report


async def _build(job: _Build, report: BuildReport) -> None:
    request = job.request
    record = job.record.load()
    pins = _main_pins(job.inventory.builder, report.notes)
    base = initial_views(job.inventory.enabled_hosts, record, pins)
    checks = Checks(job.inventory, job.options, _known_workers(record))
    wanted = set(hosts_to_check(base, request.platforms, request.allow_emulation))
    hint = f"inventory {job.inventory.path}"
    try:
        # buildx first (it waits at the shut doors), then the SSH stack loads while it starts, then the checks.
        await _start_early(job, base, record)
        await fleet.load_ssh_stack()
        checks.start(view for view in base if view.name in wanted)
        selection = await checks.settle(
            base,
            lambda views, grace: select_nodes(
                views, request.platforms, allow_emulation=request.allow_emulation, grace_over=grace, hint=hint
            ),
        )
        await job.remember(checks.checked())
        job.views = {view.name: view for view in checks.views(base)}
        _tell_routing(job, selection)
        report.notes += list(selection.skipped)
        if selection.refused:
            _refuse(report, selection)
            return
        check_outputs(request, len(selection.choices))
        report.platforms = [_result_for(job, choice) for choice in selection.choices]
        await job.mark_used(choice.node for choice in selection.choices)
        await _open_doors(job, checks, selection)
        await _run_split(job, report, selection, checks)
        await job.remember(checks.checked())  # checks that answered during the build, so they are quick next time
    finally:
        report.nodes = checks.results()
        await job.close_gateways()
        await checks.close()


async def _start_early(job: _Build, base: Sequence[NodeView], record: Mapping[str, Any]) -> None:
    """Start each platform's buildx at once on the node it goes to if the checks all pass, through that node's door,
    which opens only once the build has chosen the node: buildx's own start-up then overlaps the checks."""
    request = job.request
    if request.allow_emulation:
        return
    optimistic = [replace(view, health=Health.HEALTHY) for view in base]
    provisional = select_nodes(optimistic, request.platforms, allow_emulation=False, grace_over=True, hint="")
    if provisional.refused or provisional.pending or not provisional.choices:
        return
    count = len(provisional.choices)
    progress, inherit = progress_mode(request, count)
    if inherit:  # buildx writes to the terminal itself: its output cannot be held back
        return
    views = {view.name: view for view in base}
    loop = asyncio.get_running_loop()
    for choice in provisional.choices:
        name = job.gateway_ready(choice.node, views[choice.node].platforms, record)
        if name is None or await job.serve(choice.node) is None:
            continue
        metadata = job.tmp / f"{platform_slug(choice.platform)}-1.json"
        argv = platform_argv(
            request, choice.platform, name, platforms=count, metadata_file=str(metadata), progress=progress
        )
        hold: asyncio.Future[bool] = loop.create_future()
        lost: asyncio.Future[str] = loop.create_future()
        run = run_streaming(
            argv,
            label=choice.platform if count > 1 else "",
            options=job.options,
            stdin=request.stdin,
            inherit_stderr=False,
            abort=job.abort,
            lost=lost,
            env=job.gateway_env,
            hold=hold,
        )
        job.early[choice.platform] = _Early(choice.node, count, name, hold, lost, asyncio.ensure_future(run))


async def _open_doors(job: _Build, checks: Checks, selection: Selection) -> None:
    """The nodes are chosen: drop each buildx started early for another node, open the chosen nodes' doors (a
    buildx waiting there goes on), and turn away what waits at the others' (a retry may still open one)."""
    chosen = {choice.platform: choice.node for choice in selection.choices}
    for platform, early in list(job.early.items()):
        if chosen.get(platform) != early.node or early.count != len(selection.choices):
            del job.early[platform]
            await early.drop()
    for node, gateway in job.gateways.items():
        if gateway is None:
            continue
        if node not in chosen.values():
            gateway.refuse()
            continue
        try:
            gateway.open(await job.session(checks, node))
        except NodefleetError as exc:
            log.debug("%s: no session for its door: %s", node, exc)
            gateway.refuse()


def _tell_routing(job: _Build, selection: Selection) -> None:
    """Say which nodes were passed over and why (down, or not answering within the grace period)."""
    for view in job.views.values():
        if view.health is Health.FAILED:
            job.options.notice(f"{view.name} not used: {view.error}")
    grace = job.options.health_grace
    for choice in selection.choices:
        for view in native_order(job.views.values(), choice.platform):
            if view.name == choice.node:
                break
            if view.health is Health.PENDING:
                job.options.notice(
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


def _result_for(job: _Build, choice: Choice) -> PlatformResult:
    view = job.views.get(choice.node)
    return PlatformResult(
        choice.platform,
        node=choice.node,
        node_platform=view.platforms[0] if view and view.platforms else None,
        emulated=choice.emulated,
    )


async def _run_split(job: _Build, report: BuildReport, selection: Selection, checks: Checks) -> None:
    count = len(selection.choices)
    progress, inherit = progress_mode(job.request, count)
    semaphore = asyncio.Semaphore(job.options.parallel or count)

    async def one(choice: Choice, result: PlatformResult) -> None:
        async with semaphore:
            await _build_platform(job, choice, result, checks, count=count, progress=progress, inherit=inherit)

    await asyncio.gather(*(one(c, r) for c, r in zip(selection.choices, report.platforms, strict=True)))
    if not all(result.status == "built" for result in report.platforms):
        _write_metadata(job, report)
        return
    if job.request.push:
        await _assemble_index(job, report)
    _write_metadata(job, report)


async def _build_platform(
    job: _Build, choice: Choice, result: PlatformResult, checks: Checks, *, count: int, progress: str, inherit: bool
) -> None:
    """Build one platform; an infrastructure failure is retried once on another node of that platform."""
    node = choice.node
    label = choice.platform if count > 1 else ""
    while True:
        attempt = Attempt(node)
        result.attempts.append(attempt)
        result.node = node
        await _attempt(
            job, checks, choice.platform, attempt, result, label=label, count=count, progress=progress, inherit=inherit
        )
        if attempt.status in {"built", "cancelled"}:
            result.status = attempt.status
            result.error = attempt.error
            return
        retry = None
        if attempt.error_kind is FailureKind.INFRASTRUCTURE and len(result.attempts) == 1 and not job.abort.is_set():
            retry = await _next_node(job, choice, checks, exclude={node})
        if retry is None:
            result.status = "failed"
            result.error = attempt.error
            result.error_kind = attempt.error_kind
            job.abort.set()  # as in buildx, one platform failing fails the build: the others stop
            return
        job.options.notice(f"{choice.platform}: {node} failed ({attempt.error_kind}); retrying once on {retry}")
        await job.mark_used([retry])
        node = retry


async def _next_node(job: _Build, choice: Choice, checks: Checks, exclude: set[str]) -> str | None:
    """The node to retry on, once the checks still running have answered (each within its connect timeout)."""
    await checks.wait_for(list(checks.tasks))
    job.views.update((view.name, view) for view in checks.views(list(job.views.values())))
    return retry_node(list(job.views.values()), choice, exclude)


async def _attempt(
    job: _Build,
    checks: Checks,
    platform: str,
    attempt: Attempt,
    result: PlatformResult,
    *,
    label: str,
    count: int,
    progress: str,
    inherit: bool,
) -> None:
    early = job.early.pop(platform, None) if len(result.attempts) == 1 else None
    if early is not None and early.node != attempt.node:
        await early.drop()
        early = None
    env: Mapping[str, str] | None = None
    if early is None:
        try:
            builder, env = await job.builder_for(attempt.node, checks)
        except (NodefleetError, OSError) as exc:
            attempt.status = "failed"
            attempt.error = f"cannot prepare the builder for {attempt.node}: {exc}"
            attempt.error_kind = FailureKind.INFRASTRUCTURE
            return
    else:
        job.used[attempt.node] = (early.builder, job.gateway_env)
    metadata = job.tmp / f"{platform_slug(platform)}-{len(result.attempts)}.json"
    mode = "under emulation (QEMU)" if result.emulated else "natively"
    job.options.notice(f"{platform}: building {mode} on {attempt.node}")
    watch = asyncio.ensure_future(_watch(job, checks, attempt.node))
    try:
        if early is not None:
            watch.add_done_callback(functools.partial(_pass_on, early.lost))
            early.hold.set_result(True)
            run = await early.task
        else:
            argv = platform_argv(
                job.request, platform, builder, platforms=count, metadata_file=str(metadata), progress=progress
            )
            run = await run_streaming(
                argv,
                label=label,
                options=job.options,
                stdin=job.request.stdin,
                inherit_stderr=inherit,
                abort=job.abort,
                lost=watch,
                env=env,
            )
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
    log.debug("%s on %s: exit %s after %.2f s", platform, attempt.node, run.exit_status, run.seconds)
    attempt.seconds = run.seconds
    result.seconds = run.seconds
    if run.counts is not None:
        result.steps, result.cached_steps = run.counts
    if run.exit_status == 0:
        attempt.status = "built"
        with contextlib.suppress(OSError, ValueError):
            result.metadata = json.loads(metadata.read_text())
        return
    if job.abort.is_set():
        attempt.status = "cancelled"
        attempt.error = "stopped: another platform failed"
        return
    attempt.status = "failed"
    if run.lost is not None:
        attempt.error = run.lost
        attempt.error_kind = FailureKind.INFRASTRUCTURE
        return
    attempt.error = error_text(run.lines) or f"docker buildx build exited {run.exit_status}"
    attempt.error_kind = classify_failure(attempt.error)


def _pass_on(target: asyncio.Future[str], source: asyncio.Future[str]) -> None:
    """Give an early buildx's `lost` what the node's watch answered (nothing when the watch was stopped)."""
    if target.done() or source.cancelled():
        return
    error = source.exception()
    if error is not None:
        target.set_exception(error)
    else:
        target.set_result(source.result())


async def _watch(job: _Build, checks: Checks, node: str) -> str:
    """Return when the node stops answering, with what to say. buildx's SSH has no keepalive, so a node cut off
    mid-build would hold its build until TCP gives up; beside each build nodefleet keeps an SSH session to the node
    (the one its health check opened) with keepalives every connect_timeout seconds, and gives the node up after
    WATCH_MISSES unanswered: the attempt fails as an infrastructure error and is retried once on another node."""
    interval = job.inventory.defaults.connect_timeout
    try:
        session = await job.session(checks, node)
    except NodefleetError as exc:
        return f"{node} stopped answering when its build started: {exc}"
    session.keep_alive(interval, WATCH_MISSES)
    await session.wait_lost()
    return f"{node} stopped answering: no SSH answer for {interval * WATCH_MISSES:g} s (keepalives); build stopped"


async def _assemble_index(job: _Build, report: BuildReport) -> None:
    """Put the platforms' pushed images in one index under every name, then read its manifests back."""
    request = job.request
    names = request.image_names
    repo = repository(names[0])
    sources = []
    for result in report.platforms:
        digest = result.metadata.get("containerimage.digest")
        if not digest:
            report.failure = f"{result.platform}: buildx's metadata has no containerimage.digest; nothing to assemble"
            return
        sources.append(f"{repo}@{digest}")
    node = report.platforms[0].node or ""
    helper, env = job.used.get(node) or (await job.helper(node), None)
    job.options.notice(f"assembling the index {', '.join(names)} from {len(sources)} platforms")
    try:
        await _run_logged(job, imagetools_create_argv(helper, names, sources), env)
        inspected = await buildx.run_local(imagetools_inspect_argv(helper, names[0]), timeout=120, env=env)
    except CommandError as exc:
        report.failure = f"assembling the index failed: {exc}"
        return
    report.pushed = True
    report.names = tuple(names)
    report.index_digest, digests = index_digests(inspected.stdout)
    for result in report.platforms:
        result.manifest_digest = digests.get(result.platform)
        if result.manifest_digest is None:
            report.failure = f"the pushed index {names[0]} has no {result.platform} manifest"


async def _run_logged(job: _Build, argv: list[str], env: Mapping[str, str] | None) -> None:
    run = await run_streaming(
        argv,
        label="index",
        options=replace(job.options, inherit_stdout=False),
        stdin=None,
        inherit_stderr=False,
        env=env,
    )
    if run.exit_status != 0:
        raise CommandError(shlex.join(argv), run.exit_status, "\n".join(run.lines))


def _write_metadata(job: _Build, report: BuildReport) -> None:
    request = job.request
    if report.index_digest and request.iidfile:
        Path(request.iidfile).write_text(report.index_digest)
    if not request.metadata_file:
        return
    per_platform = {result.platform: result.metadata for result in report.platforms if result.metadata}
    nodes = {result.platform: result.node or "" for result in report.platforms}
    merged = merge_metadata(per_platform, nodes, index_digest=report.index_digest, names=report.names)
    Path(request.metadata_file).write_text(json.dumps(merged, indent=2) + "\n")
