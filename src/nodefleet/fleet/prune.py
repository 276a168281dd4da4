"""`nodefleet prune`: prune the BuildKit cache of every node (or of the named ones) in parallel, each over nodefleet's
own SSH session, reporting per node what BuildKit reclaimed and the free space of the disk holding the node's state
before and after. A node that cannot be reached, or whose BuildKit is not running, is skipped and said so; the
others are pruned all the same. buildx's own `prune` stops at the first unreachable node and gives no figures per
node.

The builder's lock is held shared, as a build holds it: `up` and `down` do not change the nodes meanwhile. BuildKit
never removes a cache record that a running build uses."""

from __future__ import annotations

import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nodefleet.buildx.nodes import container_name
from nodefleet.errors import NodefleetError, UsageError
from nodefleet.fanout import describe, each
from nodefleet.fleet.work import FleetOptions, FleetReport, disabled_results
from nodefleet.host.cache import ProbeCache
from nodefleet.host.facts import Facts, Probe, engine_problem
from nodefleet.host.probe import probe
from nodefleet.inventory import Host, Inventory
from nodefleet.results import HostResult, HostStatus, PruneResult
from nodefleet.state import BuilderState, default_state_dir
from nodefleet.target import HostKeyPolicy, load_ssh_stack, ssh_target
from nodefleet.units import UnitError, parse_size

if TYPE_CHECKING:
    from nodefleet.ssh import Session

MB = 1000**2  # buildctl's --keep-storage counts in MB (10^6 bytes)
MIN_PRUNE_TIMEOUT = 600.0  # a large cache on a small host takes minutes to delete
KEEPALIVE = (10.0, 3)  # a host lost mid-prune is noticed within 30 s, not at the prune's time-out


@dataclass(frozen=True)
class PruneOptions:
    """What to prune: keep at most `keep_storage` bytes of cache, keep what was used in the last `keep_duration`
    seconds, and with `all` the internal and frontend records too (as `buildctl prune --all`)."""

    keep_storage: int | None = None
    keep_duration: int | None = None
    all: bool = False
    timeout: float | None = None  # per node; default: the inventory's command_timeout, at least 10 minutes

    def __post_init__(self) -> None:
        if self.keep_storage is not None and (self.keep_storage < 0 or 0 < self.keep_storage < MB):
            raise UsageError(f"--keep-storage {self.keep_storage}B: BuildKit counts in MB, give at least 1MB (or 0)")
        if self.keep_duration is not None and self.keep_duration < 0:
            raise UsageError(f"--until {self.keep_duration}s: a duration is not negative")

    @property
    def keep_storage_mb(self) -> int | None:
        """The cache to keep in whole MB, rounded down (never keeps more than asked); None when not limited."""
        return self.keep_storage // MB if self.keep_storage else None

    def as_json(self) -> dict[str, Any]:
        """The options, for the report."""
        return {"keep_storage_bytes": self.keep_storage, "keep_duration_seconds": self.keep_duration, "all": self.all}


def buildctl_prune_argv(node: str, options: PruneOptions) -> list[str]:
    """`docker exec buildx_buildkit_<node> buildctl prune ...` for these options."""
    argv = ["docker", "exec", container_name(node), "buildctl", "prune"]
    if options.keep_storage_mb:
        argv += ["--keep-storage", str(options.keep_storage_mb)]
    if options.keep_duration:
        argv += ["--keep-duration", f"{int(options.keep_duration)}s"]  # a Go duration
    if options.all:
        argv.append("--all")
    return argv


def parse_prune_total(output: str) -> int:
    """The bytes `buildctl prune` reclaimed, from the `Total:` line its output ends with (`Total:\t1.23GB`)."""
    for line in reversed(output.splitlines()):
        key, _, value = line.strip().partition(":")
        if key == "Total":
            try:
                return parse_size(value.strip())
            except UnitError:
                break
    raise NodefleetError(f"buildctl prune said nothing of what it reclaimed: {output.strip()[-200:] or 'no output'}")


def select_hosts(inventory: Inventory, names: Sequence[str]) -> tuple[Host, ...]:
    """The enabled hosts of the inventory, or only the named ones (in inventory order); a name that is no enabled
    host of the inventory is bad input."""
    if not names:
        return inventory.enabled_hosts
    by_name = {host.name: host for host in inventory.hosts}
    for name in names:
        host = by_name.get(name)
        if host is None:
            known = ", ".join(host.name for host in inventory.enabled_hosts) or "none"
            raise UsageError(f"{name}: no such host in {inventory.path} (enabled hosts: {known})")
        if not host.enabled:
            raise UsageError(f"{name}: disabled in {inventory.path} (enabled = false)")
    wanted = set(names)
    return tuple(host for host in inventory.hosts if host.name in wanted)


@dataclass
class PruneReport(FleetReport):
    """What `prune` did per node; every node asked for must be pruned for the report to be ok."""

    prune: PruneOptions = field(default_factory=PruneOptions)

    @property
    def ok(self) -> bool:
        """True when every node asked for was pruned."""
        return all(host.status in {HostStatus.PRUNED, HostStatus.DISABLED} for host in self.hosts)

    @property
    def reclaimed_bytes(self) -> int:
        """The bytes reclaimed on every node together."""
        return sum(host.reclaimed_bytes or 0 for host in self.hosts if isinstance(host, PruneResult))

    def as_json(self) -> dict[str, Any]:
        """FleetReport's document, plus the options and the bytes reclaimed in all."""
        return {**super().as_json(), "prune": self.prune.as_json(), "reclaimed_bytes": self.reclaimed_bytes}


async def prune(
    inventory: Inventory,
    what: PruneOptions | None = None,
    hosts: Sequence[str] = (),
    options: FleetOptions | None = None,
) -> PruneReport:
    """Prune the BuildKit cache of every enabled host's node (or of the named hosts') in parallel."""
    what = what or PruneOptions()
    options = options or FleetOptions()
    selected = select_hosts(inventory, hosts)
    started = time.monotonic()
    state_dir = options.state_dir or default_state_dir()
    state = BuilderState(state_dir, inventory.builder)
    results = [PruneResult(host.name, host.address, platform=(host.platforms or (None,))[0]) for host in selected]
    notes: list[str] = []
    cache = ProbeCache(state_dir)
    async with state.lock.hold_async(options.lock_wait, shared=True, on_wait=options.notice):
        await load_ssh_stack()
        try:
            await each(
                options.limit(inventory),
                list(zip(selected, results, strict=True)),
                lambda item: _prune_node(inventory, item[0], item[1], what, options, cache, notes),
                lambda item, message: item[1].fail(message),
                lambda item: item[0].name,
            )
        finally:
            cache.save()
    everyone: list[HostResult] = [*results, *(disabled_results(inventory) if not hosts else [])]
    report = PruneReport("prune", inventory.builder, everyone, notes=notes, prune=what)
    report.changed = report.reclaimed_bytes > 0
    report.seconds = time.monotonic() - started
    return report


async def _prune_node(
    inventory: Inventory,
    host: Host,
    result: PruneResult,
    what: PruneOptions,
    options: FleetOptions,
    cache: ProbeCache,
    notes: list[str],
) -> None:
    """Log in, check the node's BuildKit runs (and the free space), prune, and look at the free space again."""
    started = time.monotonic()
    options.progress(host.name, "connecting")
    from nodefleet.ssh import open_session  # loaded by load_ssh_stack

    target = ssh_target(inventory, host)
    try:
        session = await open_session(
            target, policy=HostKeyPolicy.STRICT, attempts=2, budget=inventory.defaults.connect_timeout + 2
        )
    except (NodefleetError, OSError) as exc:
        result.skip(f"ssh: {describe(exc)}")
        result.seconds = time.monotonic() - started
        return
    try:
        await _prune_over(session, inventory, host, result, what, options, cache, notes)
    finally:
        await session.close()
        result.seconds = time.monotonic() - started


async def _prune_over(
    session: Session,
    inventory: Inventory,
    host: Host,
    result: PruneResult,
    what: PruneOptions,
    options: FleetOptions,
    cache: ProbeCache,
    notes: list[str],
) -> None:
    timeout = inventory.defaults.command_timeout
    options.progress(host.name, "checking BuildKit")
    try:
        before = await probe(session, host.name, cache, timeout=timeout, facts=Facts.NONE)
    except (NodefleetError, OSError) as exc:
        result.skip(f"check: {describe(exc)}")
        return
    result.disk_free_bytes = before.facts.disk_free_bytes
    reason = not_running(host.name, before)
    if reason:
        result.skip(reason)
        return
    options.progress(host.name, "pruning")
    session.keep_alive(*KEEPALIVE)
    command = shlex.join(buildctl_prune_argv(host.name, what))
    output = await session.run(command, timeout=what.timeout or max(timeout, MIN_PRUNE_TIMEOUT), check=True)
    result.reclaimed_bytes = parse_prune_total(output.stdout)
    result.status = HostStatus.PRUNED
    try:
        after = await probe(session, host.name, cache, timeout=timeout, facts=Facts.NONE)
    except (NodefleetError, OSError) as exc:
        notes.append(f"{host.name}: pruned, but the free space after it is unknown: {describe(exc)}")
        return
    result.disk_free_after_bytes = after.facts.disk_free_bytes


def not_running(node: str, answer: Probe) -> str | None:
    """Why the node's cache cannot be pruned now (its engine or BuildKit container is not there), or None."""
    health = answer.health
    if health.engine_error:
        return engine_problem(health.engine_error)
    if health.state == "missing":
        return f"BuildKit container {container_name(node)} is missing: nothing to prune (`nodefleet up` makes it)"
    if health.state != "running":
        return f"BuildKit container {container_name(node)} is {health.state}, not running (`nodefleet up` starts it)"
    return None
