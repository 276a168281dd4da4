"""The health checks of one `nodefleet build`: every host the build needs checked at once (log in within the
connect timeout, one probe, the node judged as `status` judges it), and node choice made again as they answer,
until it waits for none."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from nodefleet.build.options import BuildOptions
from nodefleet.build.routing import Health, NodeView, Selection
from nodefleet.errors import NodefleetError
from nodefleet.fanout import guarded
from nodefleet.host.cache import ProbeCache
from nodefleet.host.facts import Facts
from nodefleet.host.health import health_problem, low_disk
from nodefleet.host.probe import probe
from nodefleet.inventory import Host, Inventory
from nodefleet.results import HostResult, HostStatus
from nodefleet.target import ssh_target

if TYPE_CHECKING:
    from nodefleet.ssh import Session


@dataclass(frozen=True)
class NodeCheck:
    """A quick look at one host's node before a build; `result.status` is healthy or failed."""

    result: HostResult
    worker_platforms: tuple[str, ...] = ()
    session: Session | None = field(default=None, compare=False, repr=False)
    cpus: int | None = None

    @property
    def healthy(self) -> bool:
        """True when the node can take a build now."""
        return self.result.status is HostStatus.HEALTHY


async def check_node(inventory: Inventory, host: Host, cache: ProbeCache, *, platform: str | None = None) -> NodeCheck:
    """Is this host's node ready to build: SSH within connect_timeout (one attempt, strict host keys), its
    platform, BuildKit running with a native worker, and the free space its cache budget's min_free asks for.
    `platform`, when already known, is not asked again; a container of another architecture still fails the
    native-worker check. What the probe cache knows of a running container is not asked again (a `docker exec` is
    slow where BuildKit is emulated). A healthy node's SSH session is handed over in the result, open: the caller
    closes it."""
    result = HostResult(host.name, host.address)
    started = time.monotonic()
    session: Session | None = None
    workers: tuple[str, ...] = ()
    cpus: int | None = None
    step = "ssh"

    async def look() -> None:
        nonlocal session, workers, step, cpus
        from nodefleet.ssh import open_session  # loaded by the build before the checks start

        session = await open_session(ssh_target(inventory, host), attempts=1, budget=inventory.defaults.connect_timeout)
        step = "check"
        known = host.platforms[0] if host.platforms else platform
        timeout = inventory.defaults.connect_timeout + 15
        answer = await probe(session, host.name, cache, timeout=timeout, facts=Facts.NONE if known else Facts.MACHINE)
        result.platform = known or answer.facts.platform
        if result.platform is None:
            raise NodefleetError(f"unknown CPU architecture {answer.facts.machine!r}; set platforms for this host")
        workers = answer.health.worker_platforms
        cpus = answer.facts.cpus
        problem = health_problem(host.name, result.platform, answer.health)
        if problem:
            stopped = answer.health.engine_error is None and answer.health.state != "running"
            raise NodefleetError(problem + ("; `nodefleet up` starts it" if stopped else ""))
        result.buildkit = answer.health.buildkit_version
        result.native_platform = answer.health.native_platform
        result.disk_free_bytes = answer.facts.disk_free_bytes
        low = low_disk(host, answer.facts.disk_free_bytes)
        if low:
            raise NodefleetError(f"disk low: {low}; `nodefleet prune {host.name}` frees its cache")
        result.status = HostStatus.HEALTHY

    try:
        await guarded(host.name, look(), lambda message: result.fail(f"{step}: {message}"))
    except BaseException:
        if session is not None:
            await session.close()
        raise
    finally:
        result.seconds = time.monotonic() - started
    if not result.failed:
        return NodeCheck(result, workers, session=session, cpus=cpus)
    if session is not None:
        await session.close()
    return NodeCheck(result, workers, cpus=cpus)


class Checks:
    """The concurrent health checks of one build, started at once and read as they answer."""

    def __init__(self, inventory: Inventory, options: BuildOptions, cache: ProbeCache) -> None:
        self.inventory = inventory
        self.hosts = {host.name: host for host in inventory.enabled_hosts}
        self.options = options
        self.cache = cache
        self.tasks: dict[str, asyncio.Task[NodeCheck]] = {}
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

    async def _check(self, host: Host, platform: str | None) -> NodeCheck:
        async with self.semaphore:
            return await check_node(self.inventory, host, self.cache, platform=platform)

    def result(self, name: str) -> NodeCheck | None:
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
            cpus=check.cpus,
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

    def results(self) -> list[HostResult]:
        """Every check's result so far, a check still running counted as failed (it was not waited for)."""
        results = []
        for name, task in self.tasks.items():
            check = self.result(name)
            if check is not None:
                results.append(check.result)
                continue
            waited = round(time.monotonic() - self.started, 1)
            why = f"no answer within {waited} s; not waited for" if not task.done() else "the health check crashed"
            results.append(HostResult(name, self.hosts[name].address, status=HostStatus.FAILED, error=why))
        return results

    def checked(self) -> list[NodeCheck]:
        """The answers so far, in the order the checks started."""
        return [check for name in self.tasks if (check := self.result(name)) is not None]
