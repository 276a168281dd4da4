"""The per-host side of `up` and `status`: one HostWork per host, its steps (log in, probe, buildx's OpenSSH
path, health), each isolated so that a fault fails that host alone, and the time each host spent in its own steps."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nodefleet.client import Client, check_client, require_programs
from nodefleet.errors import HostKeyError, NodefleetError, exit_code
from nodefleet.fanout import guarded
from nodefleet.host.cache import ProbeCache
from nodefleet.host.facts import Facts, HostFacts, NodeHealth
from nodefleet.host.health import health_problem, low_disk
from nodefleet.host.openssh import OpenSSHCheck, check_openssh, takes_unknown_keys
from nodefleet.host.probe import probe
from nodefleet.inventory import Host, Inventory
from nodefleet.results import HostResult, HostStatus, Progress, envelope, quiet
from nodefleet.target import HostKeyPolicy, SSHTarget, load_ssh_stack, ssh_target

if TYPE_CHECKING:
    from nodefleet.ssh import Session


@dataclass(frozen=True)
class FleetOptions:
    """How a fleet command runs; the defaults suit the command line."""

    parallel: int | None = None
    host_key_policy: HostKeyPolicy = HostKeyPolicy.STRICT
    state_dir: Path | None = None
    lock_wait: float = 600.0
    bootstrap_timeout: float = 300.0
    keep_state: bool = False
    force: bool = False  # down: remove containers other builders still list
    progress: Progress = quiet
    notice: Callable[[str], None] = lambda _message: None

    def limit(self, inventory: Inventory) -> int:
        """Hosts worked on at once."""
        return self.parallel or inventory.defaults.parallel


@dataclass
class FleetReport:
    """What a fleet command did, per host, plus builder-level notes."""

    command: str
    builder: str
    hosts: list[HostResult]
    changed: bool = False
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    client: Client | None = None

    @property
    def ok(self) -> bool:
        """True when no host failed."""
        return not any(host.failed for host in self.hosts)

    @property
    def exit_code(self) -> int:
        """0 when every enabled host is fine, 1 when some failed."""
        return exit_code(self.ok)

    def as_json(self) -> dict[str, Any]:
        """The versioned JSON document `--json` prints."""
        return {
            **envelope(self.command, self.builder, ok=self.ok, seconds=self.seconds),
            "changed": self.changed,
            "client": self.client.as_json() if self.client else None,
            "notes": list(self.notes),
            "hosts": [host.as_json() for host in self.hosts],
        }


@dataclass
class HostWork:
    """A host being worked on: its inventory entry, SSH session, what it answered, and its result. The result's
    seconds are the time spent in this host's own steps (not in waiting for its turn, nor in builder-wide ones)."""

    host: Host
    target: SSHTarget
    result: HostResult
    session: Session | None = None
    facts: HostFacts | None = None
    health: NodeHealth | None = None
    image_present: bool | None = None
    openssh_ok: bool = False
    # nodefleet refused the key the host showed (it is not the known one).
    key_refused: bool = False
    # The host's identity is in doubt where buildx goes: OpenSSH (buildx's way in) would not check its key, or took
    # a key nodefleet refused.
    untrusted: bool = False

    @classmethod
    def of(cls, inventory: Inventory, host: Host) -> HostWork:
        """A fresh HostWork for an inventory host."""
        return cls(host, ssh_target(inventory, host), HostResult(host.name, host.address))

    @property
    def name(self) -> str:
        """The host's name."""
        return self.host.name

    @property
    def ready(self) -> bool:
        """Logged in and not failed."""
        return not self.result.failed and self.session is not None

    def need_session(self) -> Session:
        """The open session; a step that needs one fails the host without it."""
        if self.session is None:
            raise NodefleetError("not connected")
        return self.session

    def fail(self, message: str) -> None:
        """Mark the host failed with one line."""
        self.result.fail(message)

    async def step(self, name: str, action: Callable[[], Awaitable[None]]) -> None:
        """Run one step unless the host already failed; any error fails the host with `<step>: <one line>`."""
        if self.result.failed:
            return
        started = time.monotonic()
        try:
            await guarded(self.name, action(), lambda message: self.fail(f"{name}: {message}"))
        finally:
            self.result.seconds += time.monotonic() - started


def disabled_results(inventory: Inventory) -> list[HostResult]:
    """The hosts the inventory disables, reported as such."""
    return [
        HostResult(host.name, host.address, status=HostStatus.DISABLED, platform=(host.platforms or (None,))[0])
        for host in inventory.hosts
        if not host.enabled
    ]


async def close_all(works: Sequence[HostWork]) -> None:
    """Close every open session."""
    await asyncio.gather(*(work.session.close() for work in works if work.session is not None))


async def connect(
    work: HostWork, policy: HostKeyPolicy, progress: Progress, *, attempts: int, budget: float | None
) -> None:
    """Log in to the host."""

    async def go() -> None:
        progress(work.name, "connecting")
        from nodefleet.ssh import open_session  # see load_ssh_stack

        try:
            work.session = await open_session(work.target, policy=policy, attempts=attempts, budget=budget)
        except HostKeyError:
            work.key_refused = True
            raise

    await work.step("ssh", go)


async def probe_host(
    work: HostWork, inventory: Inventory, cache: ProbeCache, *, image: str | None = None, cache_usage: bool = False
) -> None:
    """The host's facts and its node's health (with `image`, whether that image is there; with `cache_usage`, its
    BuildKit cache's size) in one round trip."""

    async def go() -> None:
        answer = await probe(
            work.need_session(),
            work.name,
            cache,
            timeout=inventory.defaults.command_timeout,
            image=image,
            cache_usage=cache_usage,
        )
        work.health = answer.health
        work.image_present = answer.image_present
        take_facts(work, answer.facts)
        if answer.cache is not None:
            work.result.cache_bytes = answer.cache.total_bytes
            work.result.cache_reclaimable_bytes = answer.cache.reclaimable_bytes
            if answer.cache.error:
                work.result.warnings += (f"its BuildKit cannot size its cache: {answer.cache.error}",)
        low = low_disk(work.host, work.result.disk_free_bytes)
        if low:
            work.result.warnings += (f"{low}: builds go to other nodes of its platform",)

    await work.step("facts", go)


async def check_health(work: HostWork, inventory: Inventory, cache: ProbeCache) -> None:
    """Ask the node's health again (after its container was started)."""

    async def go() -> None:
        answer = await probe(
            work.need_session(), work.name, cache, timeout=inventory.defaults.command_timeout, facts=Facts.NONE
        )
        work.health = answer.health

    await work.step("health", go)


def take_facts(work: HostWork, facts: HostFacts) -> None:
    """Keep the host's facts in its result; a host of unknown architecture or without a usable engine fails."""
    work.facts = facts
    work.result.os = facts.os
    work.result.engine = facts.engine_version
    work.result.disk_free_bytes = facts.disk_free_bytes
    work.result.disk_size_bytes = facts.disk_size_bytes
    work.result.platform = work.host.platforms[0] if work.host.platforms else facts.platform
    if work.result.platform is None:
        raise NodefleetError(f"unknown CPU architecture {facts.machine!r}; set platforms for this host")
    problem = facts.engine_problem()
    if problem:
        raise NodefleetError(problem)


def judge_health(work: HostWork) -> None:
    """Turn the node's health into healthy or failed."""
    if work.result.failed:
        return
    health = work.health
    problem = health_problem(work.name, work.result.platform, health)
    if problem or health is None:
        work.fail(problem or "not checked")
        return
    work.result.buildkit = health.buildkit_version
    work.result.native_platform = health.native_platform
    work.result.status = HostStatus.HEALTHY


_OPENSSH_FIRST = 4  # OpenSSH path checks started before the SSH stack loads


def start_openssh(work: HostWork, inventory: Inventory) -> asyncio.Future[OpenSSHCheck]:
    """buildx's OpenSSH path is checked by local processes, which run beside nodefleet's own session."""
    timeout = inventory.defaults.connect_timeout + 10
    return asyncio.ensure_future(check_openssh(work.target, timeout=timeout))


async def start_local(
    works: Sequence[HostWork], inventory: Inventory, limit: int
) -> tuple[Client, dict[str, asyncio.Future[OpenSSHCheck]]]:
    """The local side first: the SSH stack loads (in a thread) while the local tools are checked, before any host
    is contacted; then the OpenSSH path checks of the first few hosts start while the import ends. The other hosts'
    checks start with their turn. Only a few: many ssh clients at once would slow the import down more than they
    gain (measured on 20 hosts)."""
    require_programs()
    stack = asyncio.ensure_future(load_ssh_stack())
    try:
        client = await check_client()
    except BaseException:
        await stop(stack)
        raise
    started = {work.name: start_openssh(work, inventory) for work in works[: min(limit, _OPENSSH_FIRST)]}
    await stack
    return client, started


async def judge_refused_key(work: HostWork, check: asyncio.Future[OpenSSHCheck]) -> None:
    """nodefleet refused the host's key: the host is untrusted where buildx goes when OpenSSH would not check the key
    either, or reached the host all the same (it took the key nodefleet refused)."""
    try:
        result = await check
    except (NodefleetError, OSError):
        return
    work.untrusted = result.untrusted is not None or result.problem is None


async def take_openssh(work: HostWork, check: asyncio.Future[OpenSSHCheck]) -> None:
    """The OpenSSH path's verdict for this host: it reaches the engine, OpenSSH's settings check host keys strictly,
    and the known_hosts files OpenSSH reads hold the very key nodefleet verified (else, with accept-new, OpenSSH
    would take any key at this address)."""

    async def verdict() -> None:
        result = await check
        if result.untrusted:
            work.untrusted = True
            raise NodefleetError(result.untrusted)
        if result.problem:
            raise NodefleetError(result.problem)
        config, session = result.config, work.need_session()
        if config is not None and not session.key_known_in(config.known_hosts, config.host, config.port):
            files = " ".join(config.known_hosts)
            # Only an OpenSSH that would take the unknown key reaches the host: then it leaves the builder. A strict
            # one refuses the host, so buildx reaches nothing there and the builder stays as it is.
            work.untrusted = takes_unknown_keys(config)
            outcome = "would take any key there" if work.untrusted else "refuses the host"
            raise NodefleetError(
                f"the host key nodefleet verified for {work.target.address} is not in the known_hosts files OpenSSH "
                f"reads for it ({files}; StrictHostKeyChecking {config.strict}), so buildx's OpenSSH {outcome}: add "
                "that key there, or point UserKnownHostsFile in ~/.ssh/config at nodefleet's known_hosts"
            )
        work.openssh_ok = True

    await work.step("openssh", verdict)


async def stop(check: asyncio.Future[Any]) -> None:
    """Stop a check that is no longer wanted (and collect its result)."""
    if not check.done():
        check.cancel()
    await asyncio.gather(check, return_exceptions=True)
