"""The health checks of one `nodefleet build`: every host the build needs checked at once, and node choice made
again as they answer, until it waits for none."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from nodefleet import fleet
from nodefleet.buildstate import BuildOptions
from nodefleet.inventory import Host, Inventory
from nodefleet.routing import Health, NodeView, Selection

if TYPE_CHECKING:
    from nodefleet.ssh import Session


class Checks:
    """The concurrent health checks of one build, started at once and read as they answer."""

    def __init__(
        self, inventory: Inventory, options: BuildOptions, known_workers: Mapping[str, tuple[str, ...]]
    ) -> None:
        self.inventory = inventory
        self.hosts = {host.name: host for host in inventory.enabled_hosts}
        self.options = options
        self.known_workers = known_workers
        self.tasks: dict[str, asyncio.Task[fleet.NodeCheck]] = {}
        self.sessions: dict[str, Session] = {}  # opened for the watch of a node whose check kept none
        self.started = time.monotonic()
        self.semaphore = asyncio.Semaphore(options.parallel or inventory.defaults.parallel)

    def start(self, views: Iterable[NodeView]) -> None:
        """Start checking these hosts (a platform already known is not asked again); the grace period counts from
        the first start."""
        if not self.tasks:
            self.started = time.monotonic()
        for view in views:
            known = view.platforms[0] if view.platforms else None
            self.tasks[view.name] = asyncio.ensure_future(self._check(self.hosts[view.name], known))

    async def _check(self, host: Host, platform: str | None) -> fleet.NodeCheck:
        async with self.semaphore:
            return await fleet.check_node(
                self.inventory, host, known_workers=self.known_workers, platform=platform, keep_session=True
            )

    def result(self, name: str) -> fleet.NodeCheck | None:
        """The answer of a finished check, if any."""
        task = self.tasks.get(name)
        if task is None or not task.done() or task.cancelled() or task.exception() is not None:
            return None
        return task.result()

    def views(self, base: Sequence[NodeView]) -> list[NodeView]:
        """The views with what the checks have answered so far."""
        return [self._view(view) for view in base]

    def _view(self, view: NodeView) -> NodeView:
        task = self.tasks.get(view.name)
        if task is None:
            return view
        if not task.done():
            return replace(view, health=Health.PENDING)
        check = self.result(view.name)
        if check is None:
            return replace(view, health=Health.FAILED, error="the health check crashed")
        platforms = view.platforms
        if check.result.platform and not self.hosts[view.name].platforms:
            platforms = (check.result.platform,)
        return replace(
            view,
            platforms=platforms,
            health=Health.HEALTHY if check.healthy else Health.FAILED,
            error=check.result.error,
            workers=check.worker_platforms,
        )

    async def settle(self, base: Sequence[NodeView], choose: Callable[[list[NodeView], bool], Selection]) -> Selection:
        """Choose again as checks answer, until the choice waits for none."""
        grace = self.options.health_grace
        while True:
            elapsed = time.monotonic() - self.started
            selection = choose(self.views(base), elapsed >= grace)
            if not selection.pending:
                return selection
            running = [task for task in self.tasks.values() if not task.done()]
            if not running:
                await asyncio.sleep(max(0.01, grace - elapsed))
                continue
            timeout = None if elapsed >= grace else grace - elapsed
            await asyncio.wait(running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)

    async def wait_for(self, names: Iterable[str]) -> None:
        """Wait for the checks of these hosts (each is bounded by its connect timeout)."""
        tasks = [self.tasks[name] for name in names if name in self.tasks and not self.tasks[name].done()]
        if tasks:
            await asyncio.wait(tasks)

    def session(self, name: str) -> Session | None:
        """The open SSH session of a healthy node: the one its check kept, or one opened since (`adopt`)."""
        check = self.result(name)
        if check is not None and check.session is not None:
            return check.session
        return self.sessions.get(name)

    def adopt(self, name: str, session: Session) -> None:
        """Keep a session opened for this node after its check; closed with the others."""
        self.sessions[name] = session

    async def close(self) -> None:
        """Stop the checks still running and close every session they kept."""
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        sessions = [check.session for check in self.checked() if check.session is not None]
        sessions += self.sessions.values()
        await asyncio.gather(*(session.close() for session in sessions))

    def results(self) -> list[fleet.HostResult]:
        """Every check's result so far, a check still running counted as failed (it was not waited for)."""
        results = []
        for name, task in self.tasks.items():
            check = self.result(name)
            if check is not None:
                results.append(check.result)
                continue
            waited = round(time.monotonic() - self.started, 1)
            why = f"no answer within {waited} s; not waited for" if not task.done() else "the health check crashed"
            results.append(fleet.HostResult(name, self.hosts[name].address, status="failed", error=why))
        return results

    def checked(self) -> list[fleet.NodeCheck]:
        """The answers so far, in the order the checks started."""
        return [check for name in self.tasks if (check := self.result(name)) is not None]
