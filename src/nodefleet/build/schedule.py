"""The scheduler at the heart of `nodefleet build`: a build is a list of jobs (what to build, for which platform,
on which chosen node), run at once on healthy native nodes. A job whose node fails with an infrastructure error is
retried once on another node of its platform; a Dockerfile error is not retried, and as in buildx it stops the
other jobs. While a job builds, its node is watched over nodefleet's own SSH session."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nodefleet.build.argv import platform_argv, platform_slug, progress_mode
from nodefleet.build.checks import Checks
from nodefleet.build.context import Context
from nodefleet.build.early import Early
from nodefleet.build.output import FailureKind, classify_failure, disk_full, error_text
from nodefleet.build.report import Attempt, PlatformResult
from nodefleet.build.routing import Choice, retry_node
from nodefleet.build.run import Run, run_streaming
from nodefleet.errors import NodefleetError
from nodefleet.host.facts import Facts
from nodefleet.host.health import NEARLY_FULL
from nodefleet.host.probe import probe
from nodefleet.units import human_size

log = logging.getLogger(__name__)

WATCH_MISSES = 3  # unanswered keepalives, connect_timeout seconds apart, before a building node is given up
NOTICE_CHARS = 240  # of a failed attempt's error in the line that says it is retried (the report has it whole)


# (builder, metadata file, jobs in this run, --progress value) -> the buildx argv of a job's attempt.
Command = Callable[[str, str, int, str], list[str]]


@dataclass
class Job:
    """One unit of work: what to build (the build's request, or a bake's targets) for one platform, on its chosen
    node, and what came of it. `result` is the job's own; `others` (the other targets a bake job builds together)
    end the same way."""

    choice: Choice
    result: PlatformResult
    command: Command | None = None  # None: the build request's argv for the platform
    key: str = ""  # names the job in progress lines and files; default: its platform
    others: list[PlatformResult] = field(default_factory=list)
    stops_others: bool = True  # as in buildx build, one platform failing stops the others

    @property
    def name(self) -> str:
        """The job's name: its key, else its platform."""
        return self.key or self.choice.platform


@dataclass
class _Plan:
    """What every job of one run shares: the checks (sessions, retries), buildx started early, progress mode."""

    checks: Checks
    early: dict[str, Early]
    count: int
    progress: str
    inherit: bool
    limits: Mapping[str, int] = field(default_factory=dict)
    labelled: bool = field(init=False)
    slots: dict[str, asyncio.Semaphore] = field(init=False)

    def __post_init__(self) -> None:
        self.labelled = self.count > 1
        self.slots = {node: asyncio.Semaphore(max(1, limit)) for node, limit in self.limits.items()}

    def label(self, job: Job) -> str:
        """The label of a job's progress lines: its name, when several jobs run at once."""
        return job.name if self.labelled else ""

    def slot(self, node: str) -> asyncio.Semaphore | contextlib.nullcontext[None]:
        """What a job holds while it runs on `node`: one of the node's max_jobs slots, when it has a limit."""
        return self.slots.get(node) or contextlib.nullcontext()


async def run_jobs(
    ctx: Context,
    jobs: Sequence[Job],
    checks: Checks,
    early: dict[str, Early],
    limits: Mapping[str, int] | None = None,
) -> None:
    """Run every job, at most `parallel` at a time (default: all at once) and at most `limits[node]` at once on a
    node, each with its retry."""
    progress, inherit = progress_mode(ctx.request, len(jobs))
    plan = _Plan(checks, early, len(jobs), progress, inherit, limits or {})
    semaphore = asyncio.Semaphore(ctx.options.parallel or max(1, len(jobs)))

    async def one(job: Job) -> None:
        async with semaphore:
            await _run_job(ctx, plan, job)

    await asyncio.gather(*(one(job) for job in jobs))


async def _run_job(ctx: Context, plan: _Plan, job: Job) -> None:
    """Run one job; an infrastructure failure is retried once on another node of its platform."""
    choice, result = job.choice, job.result
    node = choice.node
    try:
        await _attempts(ctx, plan, job, node)
    finally:
        for other in job.others:
            other.node, other.status, other.seconds = result.node, result.status, result.seconds
            other.error, other.error_kind, other.attempts = result.error, result.error_kind, result.attempts
            other.steps, other.cached_steps = result.steps, result.cached_steps
            other.metadata = result.metadata  # a bake's metadata file holds every target's, by name


async def _attempts(ctx: Context, plan: _Plan, job: Job, node: str) -> None:
    choice, result = job.choice, job.result
    while True:
        attempt = Attempt(node)
        result.attempts.append(attempt)
        result.node = node
        async with plan.slot(node):
            await _attempt(ctx, plan, job, attempt)
        if attempt.status in {"built", "cancelled"}:
            result.status = attempt.status
            result.error = attempt.error
            return
        retry = None
        if attempt.error_kind is FailureKind.INFRASTRUCTURE and len(result.attempts) == 1 and not ctx.abort.is_set():
            retry = await _next_node(ctx, choice, plan.checks, exclude={node})
        if retry is None:
            result.status = "failed"
            result.error = attempt.error
            result.error_kind = attempt.error_kind
            if job.stops_others:
                ctx.abort.set()  # as in buildx, one platform failing fails the build: the others stop
            return
        said = (attempt.error or "").strip().splitlines()
        why = said[0][:NOTICE_CHARS] if said else "no word why"
        ctx.options.notice(f"{job.name}: {node} failed ({attempt.error_kind}: {why}); retrying once on {retry}")
        await ctx.mark_used([retry])
        node = retry


async def _next_node(ctx: Context, choice: Choice, checks: Checks, exclude: set[str]) -> str | None:
    """The node to retry on, once the checks still running have answered (each within its connect timeout)."""
    await checks.wait_for(list(checks.tasks))
    ctx.views.update((view.name, view) for view in checks.views(list(ctx.views.values())))
    return retry_node(list(ctx.views.values()), choice, exclude)


async def _attempt(ctx: Context, plan: _Plan, job: Job, attempt: Attempt) -> None:
    platform, result = job.choice.platform, job.result
    early = plan.early.pop(platform, None) if len(result.attempts) == 1 and job.command is None else None
    if early is not None and early.node != attempt.node:
        await early.drop()
        early = None
    builder, env = "", None
    if early is None:
        try:
            builder, env = await ctx.builder_for(attempt.node, plan.checks)
        except (NodefleetError, OSError) as exc:
            attempt.status = "failed"
            attempt.error = f"cannot prepare the builder for {attempt.node}: {exc}"
            attempt.error_kind = FailureKind.INFRASTRUCTURE
            return
    else:
        ctx.used[attempt.node] = (early.builder, ctx.gateway_env)
    run = await _run_on_node(ctx, plan, job, attempt, early, builder, env)
    _take_run(ctx, job, attempt, run)
    if attempt.status == "failed" and run.lost is None:
        await _judge_disk(ctx, plan.checks, attempt, disk_full(run.lines))


async def _run_on_node(
    ctx: Context,
    plan: _Plan,
    job: Job,
    attempt: Attempt,
    early: Early | None,
    builder: str,
    env: Mapping[str, str] | None,
) -> Run:
    """Run the job's buildx on its node (or let the one started early go on), watching the node meanwhile."""
    platform, result, checks = job.choice.platform, job.result, plan.checks
    metadata = _metadata_file(ctx, job)
    mode = "under emulation (QEMU)" if result.emulated else "natively"
    ctx.options.notice(f"{job.name}: building {mode} on {attempt.node}")
    watch = asyncio.ensure_future(_watch(ctx, checks, attempt.node))
    try:
        if early is not None:
            watch.add_done_callback(functools.partial(_pass_on, early.lost))
            early.hold.set_result(True)
            run = await early.task
        else:
            if job.command is not None:
                argv = job.command(builder, str(metadata), plan.count, plan.progress)
            else:
                argv = platform_argv(
                    ctx.request,
                    platform,
                    builder,
                    platforms=plan.count,
                    metadata_file=str(metadata),
                    progress=plan.progress,
                )
            run = await run_streaming(
                argv,
                label=plan.label(job),
                options=ctx.options,
                stdin=ctx.request.stdin,
                inherit_stderr=plan.inherit,
                abort=ctx.abort,
                lost=watch,
                env=env,
            )
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
    return run


def _take_run(ctx: Context, job: Job, attempt: Attempt, run: Run) -> None:
    """What the run says of the attempt: built, cancelled (another job failed), or failed and why."""
    result = job.result
    metadata = _metadata_file(ctx, job)
    log.debug("%s on %s: exit %s after %.2f s", job.name, attempt.node, run.exit_status, run.seconds)
    attempt.seconds = run.seconds
    result.seconds = run.seconds
    if run.counts is not None:
        result.steps, result.cached_steps = run.counts
    if run.exit_status == 0:
        attempt.status = "built"
        with contextlib.suppress(OSError, ValueError):
            result.metadata = json.loads(metadata.read_text())
        return
    if ctx.abort.is_set():
        attempt.status = "cancelled"
        attempt.error = "stopped: another platform failed"
        return
    attempt.status = "failed"
    if run.lost is not None:
        attempt.error = run.lost
        attempt.error_kind = FailureKind.INFRASTRUCTURE
        return
    attempt.error = error_text(run.lines) or f"buildx exited {run.exit_status}"
    attempt.error_kind = classify_failure(attempt.error)


async def _judge_disk(ctx: Context, checks: Checks, attempt: Attempt, said: str | None) -> None:
    """A failed attempt on a node whose disk is full is the node's fault, not the Dockerfile's: another node may
    build it. Full when the output says so, or when the node, asked after the failure, has (nearly) no space left
    (a step that fills the disk may fail with its exit code alone); the error names the node and its free space."""
    free, where = None, ""
    try:
        session = await ctx.session(checks, attempt.node)
        timeout = ctx.inventory.defaults.connect_timeout + 15
        answer = await probe(session, attempt.node, ctx.cache, timeout=timeout, facts=Facts.NONE)
        free, where = answer.facts.disk_free_bytes, answer.facts.disk_path or ""
    except (NodefleetError, OSError) as exc:
        log.debug("%s: free space not known after the failure: %s", attempt.node, exc)
    if said is None and (free is None or free >= NEARLY_FULL):
        return
    space = f"{human_size(free)} free" + (f" on {where}" if where else "") if free is not None else "free space unknown"
    attempt.error = f"{attempt.node}'s disk is full ({space}): {said or attempt.error}"
    attempt.error_kind = FailureKind.INFRASTRUCTURE


def _metadata_file(ctx: Context, job: Job) -> Path:
    """Where buildx writes the metadata of the job's current attempt (the early buildx of a build's platform too)."""
    return ctx.tmp / f"{platform_slug(job.name)}-{len(job.result.attempts)}.json"


def _pass_on(target: asyncio.Future[str], source: asyncio.Future[str]) -> None:
    """Give an early buildx's `lost` what the node's watch answered (nothing when the watch was stopped)."""
    if target.done() or source.cancelled():
        return
    error = source.exception()
    if error is not None:
        target.set_exception(error)
    else:
        target.set_result(source.result())


async def _watch(ctx: Context, checks: Checks, node: str) -> str:
    """Return when the node stops answering, with what to say. buildx's SSH has no keepalive, so a node cut off
    mid-build would hold its build until TCP gives up; beside each build nodefleet keeps an SSH session to the node
    (the one its health check opened) with keepalives every connect_timeout seconds, and gives the node up after
    WATCH_MISSES unanswered: the attempt fails as an infrastructure error and is retried once on another node."""
    interval = ctx.inventory.defaults.connect_timeout
    try:
        session = await ctx.session(checks, node)
    except NodefleetError as exc:
        return f"{node} stopped answering when its build started: {exc}"
    session.keep_alive(interval, WATCH_MISSES)
    await session.wait_lost()
    return f"{node} stopped answering: no SSH answer for {interval * WATCH_MISSES:g} s (keepalives); build stopped"
