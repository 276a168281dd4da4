"""buildx started before its node is chosen: each platform's buildx starts at once on the node it goes to if the
checks all pass, through that node's door, which opens only once the build has chosen the node; buildx's own
start-up then overlaps the health checks. A buildx waiting for a node that was not chosen is stopped, and nothing
reached that node."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from nodefleet.build.argv import platform_argv, platform_slug, progress_mode
from nodefleet.build.checks import Checks
from nodefleet.build.context import Context
from nodefleet.build.routing import Health, NodeView, Selection, select_nodes
from nodefleet.build.run import Run, run_streaming
from nodefleet.errors import NodefleetError

log = logging.getLogger(__name__)


@dataclass
class Early:
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


async def start_early(ctx: Context, base: Sequence[NodeView]) -> dict[str, Early]:
    """Start each platform's buildx at once on the node it goes to if the checks all pass, through that node's door,
    which opens only once the build has chosen the node: buildx's own start-up then overlaps the checks."""
    request = ctx.request
    early: dict[str, Early] = {}
    if request.allow_emulation:
        return early
    optimistic = [replace(view, health=Health.HEALTHY) for view in base]
    provisional = select_nodes(optimistic, request.platforms, allow_emulation=False, grace_over=True, hint="")
    if provisional.refused or provisional.pending or not provisional.choices:
        return early
    count = len(provisional.choices)
    progress, inherit = progress_mode(request, count)
    if inherit:  # buildx writes to the terminal itself: its output cannot be held back
        return early
    views = {view.name: view for view in base}
    loop = asyncio.get_running_loop()
    for choice in provisional.choices:
        name = ctx.gateway_ready(choice.node, views[choice.node].platforms)
        if name is None or await ctx.serve(choice.node) is None:
            continue
        metadata = ctx.tmp / f"{platform_slug(choice.platform)}-1.json"
        argv = platform_argv(
            request, choice.platform, name, platforms=count, metadata_file=str(metadata), progress=progress
        )
        hold: asyncio.Future[bool] = loop.create_future()
        lost: asyncio.Future[str] = loop.create_future()
        run = run_streaming(
            argv,
            label=choice.platform if count > 1 else "",
            options=ctx.options,
            stdin=request.stdin,
            inherit_stderr=False,
            abort=ctx.abort,
            lost=lost,
            env=ctx.gateway_env,
            hold=hold,
        )
        early[choice.platform] = Early(choice.node, count, name, hold, lost, asyncio.ensure_future(run))
    return early


async def open_doors(ctx: Context, checks: Checks, selection: Selection, early: dict[str, Early]) -> None:
    """The nodes are chosen: drop each buildx started early for another node, open the chosen nodes' doors (a
    buildx waiting there goes on), and turn away what waits at the others' (a retry may still open one)."""
    chosen = {choice.platform: choice.node for choice in selection.choices}
    for platform, started in list(early.items()):
        if chosen.get(platform) != started.node or started.count != len(selection.choices):
            del early[platform]
            await started.drop()
    for node, gateway in ctx.gateways.items():
        if gateway is None:
            continue
        if node not in chosen.values():
            gateway.refuse()
            continue
        try:
            gateway.open(await ctx.session(checks, node))
        except NodefleetError as exc:
            log.debug("%s: no session for its door: %s", node, exc)
            gateway.refuse()


async def drop_all(early: dict[str, Early]) -> None:
    """Stop every buildx started early that was not used."""
    started = list(early.values())
    early.clear()
    await asyncio.gather(*(item.drop() for item in started))
