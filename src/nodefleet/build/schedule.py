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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from nodefleet.build.argv import platform_argv, platform_slug, progress_mode
from nodefleet.build.checks import Checks
from nodefleet.build.context import Context
from nodefleet.build.early import Early
from nodefleet.build.output import FailureKind, classify_failure, error_text
from nodefleet.build.report import Attempt, PlatformResult
from nodefleet.build.routing import Choice, retry_node
from nodefleet.build.run import Run, run_streaming
from nodefleet.errors import NodefleetError

log = logging.getLogger(__name__)

WATCH_MISSES = 3  # unanswered keepalives, connect_timeout seconds apart, before a building node is given up


@dataclass
class Job:
    """One unit of work: the request built for one platform on its chosen node, and what came of it."""

    choice: Choice
    result: PlatformResult


@dataclass
class _Plan:
    """What every job of one run shares: the checks (sessions, retries), buildx started early, progress mode."""

    checks: Checks
    early: dict[str, Early]
    count: int
    progress: str
    inherit: bool
    labelled: bool = field(init=False)

    def __post_init__(self) -> None:
        self.labelled = self.count > 1

    def label(self, platform: str) -> str:
        """The label of a job's progress lines: its platform, when several jobs run at once."""
        return platform if self.labelled else ""


async def run_jobs(ctx: Context, jobs: Sequence[Job], checks: Checks, early: dict[str, Early]) -> None:
    """Run every job, at most `parallel` at a time (default: all at once), each with its retry."""
    progress, inherit = progress_mode(ctx.request, len(jobs))
    plan = _Plan(checks, early, len(jobs), progress, inherit)
    semaphore = asyncio.Semaphore(ctx.options.parallel or max(1, len(jobs)))

    async def one(job: Job) -> None:
        async with semaphore:
            await _run_job(ctx, plan, job)

    await asyncio.gather(*(one(job) for job in jobs))


async def _run_job(ctx: Context, plan: _Plan, job: Job) -> None:
    """Run one job; an infrastructure failure is retried once on another node of its platform."""
    choice, result = job.choice, job.result
    node = choice.node
    while True:
        attempt = Attempt(node)
        result.attempts.append(attempt)
        result.node = node
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
            ctx.abort.set()  # as in buildx, one platform failing fails the build: the others stop
            return
        ctx.options.notice(f"{choice.platform}: {node} failed ({attempt.error_kind}); retrying once on {retry}")
        await ctx.mark_used([retry])
        node = retry


async def _next_node(ctx: Context, choice: Choice, checks: Checks, exclude: set[str]) -> str | None:
    """The node to retry on, once the checks still running have answered (each within its connect timeout)."""
    await checks.wait_for(list(checks.tasks))
    ctx.views.update((view.name, view) for view in checks.views(list(ctx.views.values())))
    return retry_node(list(ctx.views.values()), choice, exclude)


async def _attempt(ctx: Context, plan: _Plan, job: Job, attempt: Attempt) -> None:
    platform, result = job.choice.platform, job.result
    early = plan.early.pop(platform, None) if len(result.attempts) == 1 else None
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
    metadata = ctx.tmp / f"{platform_slug(platform)}-{len(result.attempts)}.json"
    mode = "under emulation (QEMU)" if result.emulated else "natively"
    ctx.options.notice(f"{platform}: building {mode} on {attempt.node}")
    watch = asyncio.ensure_future(_watch(ctx, checks, attempt.node))
    try:
        if early is not None:
            watch.add_done_callback(functools.partial(_pass_on, early.lost))
            early.hold.set_result(True)
            run = await early.task
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
                label=plan.label(platform),
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
    platform, result = job.choice.platform, job.result
    metadata = ctx.tmp / f"{platform_slug(platform)}-{len(result.attempts)}.json"
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
    if ctx.abort.is_set():
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
