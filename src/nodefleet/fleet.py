"""The library API behind `nodefleet up`, `status` and `down`: one result per host, never first-failure-stops."""

from __future__ import annotations

import asyncio
import importlib
import logging
import shlex
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from nodefleet import buildx, jsondoc
from nodefleet.bootstrap import (
    check_openssh_path,
    config_digest,
    ensure_image,
    remove_node_container,
    render_buildkitd_config,
)
from nodefleet.buildx import NodeSpec, StoredBuilder
from nodefleet.errors import CommandError, NodefleetError, UsageError
from nodefleet.facts import (
    HostFacts,
    NodeHealth,
    node_check_script,
    node_health_script,
    node_workers_script,
    parse_facts,
    parse_image_present,
    parse_node_check,
    parse_node_health,
    probe_script,
)
from nodefleet.gateway import Gateway, buildx_environment
from nodefleet.inventory import Host, Inventory
from nodefleet.plan import Action, NodeChange, assign_pins, plan_builder
from nodefleet.platforms import same_architecture
from nodefleet.state import BuilderState, ProbeCache, default_state_dir, private_dir, write_private
from nodefleet.target import HostKeyPolicy, SSHTarget

if TYPE_CHECKING:
    from nodefleet.ssh import Session

log = logging.getLogger(__name__)

T = TypeVar("T")

# (who, what): a host or platform and its latest step, for a spinner or labelled progress lines.
Progress = Callable[[str, str], None]


def quiet(_who: str, _what: str) -> None:
    """A Progress that shows nothing."""


@dataclass(frozen=True)
class FleetOptions:
    """How a fleet command runs; the defaults suit the command line."""

    parallel: int | None = None
    host_key_policy: HostKeyPolicy = HostKeyPolicy.STRICT
    state_dir: Path | None = None
    lock_wait: float = 600.0
    bootstrap_timeout: float = 300.0
    keep_state: bool = False
    progress: Progress = quiet


@dataclass
class HostResult:
    """The outcome for one host; `status` is healthy, failed, disabled or removed."""

    name: str
    address: str
    platform: str | None = None
    pinned: tuple[str, ...] = ()
    role: str = ""
    os: str = ""
    engine: str | None = None
    buildkit: str | None = None
    native_platform: str | None = None
    status: str = "pending"
    action: str = "none"
    changes: tuple[str, ...] = ()
    error: str | None = None
    seconds: float = 0.0
    disk_free_bytes: int | None = None

    def fail(self, message: str) -> None:
        """Mark the host failed; the first reason is kept, it is the cause."""
        if self.status != "failed":
            self.status = "failed"
            self.error = message

    def as_json(self) -> dict[str, Any]:
        """Stable JSON keys for this host."""
        data = asdict(self)
        data["pinned"] = list(self.pinned)
        data["changes"] = list(self.changes)
        data["seconds"] = round(self.seconds, 3)
        return data


@dataclass
class FleetReport:
    """What a fleet command did, per host, plus builder-level notes."""

    command: str
    builder: str
    hosts: list[HostResult]
    changed: bool = False
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no host failed."""
        return all(host.status != "failed" for host in self.hosts)

    @property
    def exit_code(self) -> int:
        """0 when every enabled host is fine, 1 when some failed."""
        return jsondoc.exit_code(self.ok)

    def as_json(self) -> dict[str, Any]:
        """The versioned JSON document `--json` prints."""
        return {
            **jsondoc.envelope(self.command, self.builder, ok=self.ok, seconds=self.seconds),
            "changed": self.changed,
            "notes": list(self.notes),
            "hosts": [host.as_json() for host in self.hosts],
        }


# ---------------------------------------------------------------------------------------------- helpers


def ssh_target(inventory: Inventory, host: Host) -> SSHTarget:
    """How to log in to an inventory host."""
    return SSHTarget(
        name=host.name,
        address=host.address,
        user=host.user,
        port=host.port,
        identity_file=host.identity_file,
        known_hosts=inventory.defaults.known_hosts,
        connect_timeout=inventory.defaults.connect_timeout,
    )


def target_from_endpoint(inventory: Inventory, name: str, endpoint: str) -> SSHTarget | None:
    """How to log in to a node that is in buildx's store but no longer in the inventory."""
    parts = urlsplit(endpoint)
    if parts.scheme != "ssh" or not parts.hostname:
        return None
    defaults = inventory.defaults
    return SSHTarget(
        name=name,
        address=parts.hostname,
        user=parts.username or defaults.user,
        port=parts.port or defaults.port,
        identity_file=defaults.identity_file,
        known_hosts=defaults.known_hosts,
        connect_timeout=defaults.connect_timeout,
    )


async def _bounded(limit: int, jobs: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run jobs at most `limit` at a time; each job handles its own errors."""
    semaphore = asyncio.Semaphore(max(1, limit))

    async def guarded(job: Callable[[], Awaitable[T]]) -> T:
        async with semaphore:
            return await job()

    return list(await asyncio.gather(*(guarded(job) for job in jobs)))


def _parallel(inventory: Inventory, options: FleetOptions) -> int:
    return options.parallel or inventory.defaults.parallel


def resolve_buildkitd_config(inventory: Inventory, state: BuilderState) -> Path | None:
    """The buildkitd.toml every node gets: the inventory's own, or one written from [registries]."""
    if inventory.defaults.buildkitd_config is not None:
        return inventory.defaults.buildkitd_config
    if not inventory.registries:
        return None
    private_dir(state.dir)
    path = state.dir / f"{inventory.builder}-buildkitd.toml"
    text = render_buildkitd_config(inventory.registries)
    if not path.exists() or path.read_text() != text:
        write_private(path, text.encode())
    return path


def _read_store_or_repair(builder: str, state: BuilderState, notes: list[str]) -> StoredBuilder | None:
    try:
        return buildx.read_store(builder)
    except buildx.CorruptStoreError as exc:
        backup = buildx.latest_backup(builder, state.backup_dir)
        if backup is None:
            raise NodefleetError(
                f"{buildx.instance_file(builder)}: {exc}; no backup to restore: remove it with "
                f"`docker buildx rm {builder}` and run `nodefleet up` again"
            ) from None
        buildx.restore_store(builder, backup)
        notes.append(f"buildx state of {builder} was unreadable; restored the backup {backup.name}")
        return buildx.read_store(builder)


# ---------------------------------------------------------------------------------------------- per-host work


@dataclass
class _HostWork:
    """A host being worked on: its inventory entry, SSH session, facts and result."""

    host: Host
    target: SSHTarget
    result: HostResult
    session: Session | None = None
    facts: HostFacts | None = None
    health: NodeHealth | None = None
    image_present: bool | None = None
    openssh_ok: bool = False
    started: float = field(default_factory=time.monotonic)

    @property
    def ready(self) -> bool:
        return self.result.status != "failed" and self.session is not None

    def need_session(self) -> Session:
        if self.session is None:
            raise NodefleetError("not connected")
        return self.session

    def finish(self) -> None:
        self.result.seconds = time.monotonic() - self.started


async def _guard(work: _HostWork, step: str, action: Callable[[], Awaitable[None]]) -> None:
    """Run one step for a host; any error marks the host failed with a one-line reason."""
    if work.result.status == "failed":
        return
    try:
        await action()
    except NodefleetError as exc:
        work.result.fail(f"{step}: {exc}")
    except (OSError, TimeoutError) as exc:
        work.result.fail(f"{step}: {exc}")
    except Exception as exc:  # one host's surprise must not hide the other hosts' results
        log.debug("%s: %s failed", work.host.name, step, exc_info=True)
        work.result.fail(f"{step}: unexpected {type(exc).__name__}: {exc}")


async def _connect(work: _HostWork, options: FleetOptions, *, attempts: int, budget: float | None) -> None:
    async def go() -> None:
        options.progress(work.host.name, "connecting")
        from nodefleet.ssh import open_session  # see load_ssh_stack

        work.session = await open_session(work.target, policy=options.host_key_policy, attempts=attempts, budget=budget)

    await _guard(work, "ssh", go)


async def _probe(work: _HostWork, inventory: Inventory, cache: ProbeCache, *, image: str | None = None) -> None:
    """The host's facts and its node's health (with `image`, whether that image is there) in one round trip."""

    async def go() -> None:
        session = work.need_session()
        key = _cache_key(work)
        machine_key = _machine_key(work, session)
        machine = cache.machine(machine_key) if machine_key else None
        script = probe_script(
            buildx.container_name(work.host.name),
            image=image,
            known=cache.instance(key),
            known_boot=machine[0] if machine else None,
        )
        output = await session.run(script, timeout=inventory.defaults.command_timeout, check=True)
        work.health = _with_cache(parse_node_health(output.stdout), cache, key)
        work.image_present = parse_image_present(output.stdout) if image else None
        facts = parse_facts(output.stdout)
        _take_facts(work, _machine_with_cache(facts, cache, machine_key) if machine_key else facts)

    await _guard(work, "facts", go)


def _address(work: _HostWork) -> str:
    """The host's address and port, as the probe cache keys its entries."""
    return f"{work.target.address}:{work.target.port or ''}"


def _machine_key(work: _HostWork, session: Session) -> str | None:
    """Where a host's machine is cached: its address and its SSH host key. The boot id alone does not tell hosts
    apart: containers share their kernel's, and an address may be given to another machine (the lab re-created
    with other architectures on the same addresses and kernel)."""
    fingerprint = session.host_key
    return f"{_address(work)} {fingerprint}" if fingerprint else None


def _machine_with_cache(facts: HostFacts, cache: ProbeCache, key: str) -> HostFacts:
    """Record the machine a host reported with its boot id; fill it in from the cache when the host, still in the
    boot the cache knows, did not report it."""
    if facts.machine:
        if facts.boot_id:
            cache.put_machine(key, facts.boot_id, facts.machine, facts.userland_bits)
        return facts
    cached = cache.machine(key)
    if cached is not None and facts.boot_id == cached[0]:
        return replace(facts, machine=cached[1], userland_bits=cached[2])
    return facts


def _take_facts(work: _HostWork, facts: HostFacts) -> None:
    work.facts = facts
    work.result.os = facts.os
    work.result.engine = facts.engine_version
    work.result.disk_free_bytes = facts.disk_free_bytes
    work.result.platform = work.host.platforms[0] if work.host.platforms else facts.platform
    if work.result.platform is None:
        raise NodefleetError(f"unknown CPU architecture {facts.machine!r}; set platforms for this host")
    problem = facts.engine_problem()
    if problem:
        raise NodefleetError(problem)


def _cache_key(work: _HostWork) -> str:
    return f"{_address(work)} {buildx.container_name(work.host.name)}"


def _with_cache(health: NodeHealth, cache: ProbeCache, key: str) -> NodeHealth:
    """Record what a running BuildKit said; fill in what it was not asked (a known instance) from the cache."""
    if health.state != "running" or health.instance is None:
        return health
    if health.asked:
        if health.worker_platforms:
            cache.put(key, health.instance, health.buildkit_version, health.worker_platforms)
        return health
    cached = cache.get(key)
    if cached is not None and cached[0] == health.instance:
        return replace(health, buildkit_version=cached[1], worker_platforms=cached[2])
    return health


_OPENSSH_FIRST = 4  # OpenSSH path checks started before the SSH stack loads


async def load_ssh_stack() -> None:
    """Import the SSH stack (asyncssh: about 0.2 s) in a thread. Commands call it right after starting the local
    processes they start first (buildx's OpenSSH path checks, a build's buildx), which run meanwhile."""
    await asyncio.to_thread(importlib.import_module, "nodefleet.ssh")


def _start_openssh(work: _HostWork, inventory: Inventory) -> asyncio.Future[str | None]:
    """buildx's OpenSSH path is checked by a local process, which runs beside nodefleet's own session."""
    timeout = inventory.defaults.connect_timeout + 10
    return asyncio.ensure_future(check_openssh_path(work.target, timeout=timeout))


async def _openssh_first(
    works: Sequence[_HostWork], inventory: Inventory, limit: int
) -> dict[str, asyncio.Future[str | None]]:
    """Start the OpenSSH path checks of the first few hosts, then load the SSH stack while they run; the other
    hosts' checks start with their turn. Only a few: many ssh clients at once would slow the import down more than
    they gain (measured on 20 hosts)."""
    started = {work.host.name: _start_openssh(work, inventory) for work in works[: min(limit, _OPENSSH_FIRST)]}
    await load_ssh_stack()
    return started


async def _take_openssh(work: _HostWork, check: asyncio.Future[str | None]) -> None:
    async def verdict() -> None:
        problem = await check
        if problem:
            raise NodefleetError(problem)
        work.openssh_ok = True

    await _guard(work, "openssh", verdict)


async def _stop(check: asyncio.Future[Any]) -> None:
    if not check.done():
        check.cancel()
    await asyncio.gather(check, return_exceptions=True)


async def _check_health(work: _HostWork, inventory: Inventory, cache: ProbeCache) -> None:
    async def go() -> None:
        session = work.need_session()
        key = _cache_key(work)
        script = node_health_script(buildx.container_name(work.host.name), cache.instance(key))
        output = await session.run(script, timeout=inventory.defaults.command_timeout)
        work.health = _with_cache(parse_node_health(output.stdout), cache, key)

    await _guard(work, "health", go)


def _judge_health(work: _HostWork) -> None:
    """Turn a node's health facts into healthy or failed, comparing its worker with the pinned platform."""
    if work.result.status == "failed":
        return
    health = work.health
    if health is None or health.state != "running":
        state = health.state if health else "unknown"
        work.result.fail(f"BuildKit container {buildx.container_name(work.host.name)} is {state}")
        return
    work.result.buildkit = health.buildkit_version
    work.result.native_platform = health.native_platform
    expected = work.result.platform
    if expected and health.native_platform and not same_architecture(expected, health.native_platform):
        work.result.fail(
            f"BuildKit runs {health.native_platform} natively but the node is pinned to {expected} "
            "(it would emulate): check the BuildKit image's architecture or the host's platforms"
        )
        return
    work.result.status = "healthy"


async def _close_all(works: Sequence[_HostWork]) -> None:
    await asyncio.gather(*(work.session.close() for work in works if work.session is not None))


def _new_work(inventory: Inventory, host: Host) -> _HostWork:
    return _HostWork(host, ssh_target(inventory, host), HostResult(host.name, host.address))


def _disabled_results(inventory: Inventory) -> list[HostResult]:
    return [
        HostResult(host.name, host.address, status="disabled", platform=(host.platforms or (None,))[0])
        for host in inventory.hosts
        if not host.enabled
    ]


# ---------------------------------------------------------------------------------------------- up


async def up(inventory: Inventory, options: FleetOptions | None = None) -> FleetReport:
    """Bring the builder to what the inventory says; returns one result per host."""
    options = options or FleetOptions()
    state = BuilderState(options.state_dir or default_state_dir(), inventory.builder)
    started = time.monotonic()
    with state.lock(options.lock_wait):
        report = await _up_locked(inventory, options, state)
    report.seconds = time.monotonic() - started
    return report


async def _up_locked(inventory: Inventory, options: FleetOptions, state: BuilderState) -> FleetReport:
    notes: list[str] = []
    config = resolve_buildkitd_config(inventory, state)
    digest = config_digest(config)
    works = [_new_work(inventory, host) for host in inventory.enabled_hosts]
    limit = _parallel(inventory, options)
    cache = ProbeCache(state.dir)
    openssh = await _openssh_first(works, inventory, limit)
    try:
        await _bounded(
            limit, [partial(_prepare_host, w, inventory, options, cache, openssh.pop(w.host.name, None)) for w in works]
        )
        stored = _read_store_or_repair(inventory.builder, state, notes)
        if stored is not None and stored.driver and stored.driver != buildx.DRIVER:
            raise UsageError(
                f"builder {inventory.builder} exists with driver {stored.driver}, not {buildx.DRIVER}: "
                "choose another builder name or remove it with docker buildx rm"
            )
        changes, specs = _plan(inventory, works, stored, state, config, digest)
        changed = await _apply(inventory, options, state, works, stored, changes, specs, notes)
        removed = await _remove_hosts(inventory, options, stored, changes)
        await _bounded(limit, [partial(_recreate_if_needed, w, changes, inventory) for w in works])
        started = await _bootstrap_and_check(inventory, options, works, changed, notes, cache)
    finally:
        cache.save()
        await _close_all(works)
    for work in works:
        work.finish()
    results = [work.result for work in works] + removed + _disabled_results(inventory)
    return FleetReport("up", inventory.builder, results, changed=changed or started or bool(removed), notes=notes)


async def _prepare_host(
    work: _HostWork,
    inventory: Inventory,
    options: FleetOptions,
    cache: ProbeCache,
    openssh: asyncio.Future[str | None] | None,
) -> None:
    # buildx's own path is checked beside the facts: whether buildx can load this node decides whether the builder
    # may change.
    openssh = openssh or _start_openssh(work, inventory)
    try:
        await _connect(work, options, attempts=3, budget=None)
        await _probe(work, inventory, cache, image=work.host.buildkit_image)
        await _take_openssh(work, openssh)
    finally:
        await _stop(openssh)

    async def image() -> None:
        session = work.need_session()
        options.progress(work.host.name, f"checking BuildKit image {work.host.buildkit_image}")
        await ensure_image(
            session,
            work.host.buildkit_image,
            inventory.defaults.buildkit_image_archive,
            timeout=inventory.defaults.command_timeout,
            present=work.image_present,
        )

    await _guard(work, "image", image)
    work.finish()


def _plan(
    inventory: Inventory,
    works: Sequence[_HostWork],
    stored: StoredBuilder | None,
    state: BuilderState,
    config: Path | None,
    digest: str,
) -> tuple[list[NodeChange], dict[str, NodeSpec]]:
    """Desired specs for the hosts that are ready; hosts that are not stay in the builder untouched."""
    ready = [work for work in works if work.ready]
    # Pins go to the first host of each platform among the nodes the builder will have after this run. A host
    # that is in the builder but unreachable now keeps its pins: moving them to its standby would need a builder
    # change, which is refused while a node is unreachable, and would fail the healthy standby.
    members: list[tuple[str, tuple[str, ...]]] = []
    for work in works:
        node = stored.node(work.host.name) if stored else None
        if not work.ready and node is None:
            continue  # not in the builder after this run
        if work.result.platform:
            members.append((work.host.name, (work.result.platform,)))
        else:
            members.append((work.host.name, node.platforms if node else ()))
    pins = assign_pins(members)
    specs: dict[str, NodeSpec] = {}
    for work in ready:
        host = work.host
        specs[host.name] = node_spec(host, pins.get(host.name, ()), config, digest)
        work.result.pinned = specs[host.name].platforms
        work.result.role = "primary" if work.result.pinned else "standby"
    keep = frozenset(work.host.name for work in works if not work.ready)
    changes = plan_builder(list(specs.values()), stored, state.load_digests(), keep)
    return changes, specs


async def _apply(
    inventory: Inventory,
    options: FleetOptions,
    state: BuilderState,
    works: Sequence[_HostWork],
    stored: StoredBuilder | None,
    changes: Sequence[NodeChange],
    specs: Mapping[str, NodeSpec],
    notes: list[str],
) -> bool:
    """Carry out the plan against buildx, backing up its store around each change."""
    by_name = {work.host.name: work for work in works}
    builder = inventory.builder
    removals = [change for change in changes if change.action is Action.REMOVE]
    edits = [change for change in changes if change.action in {Action.CREATE, Action.ADD, Action.UPDATE}]
    for change in changes:
        if change.node in by_name:
            by_name[change.node].result.action = change.action.value
            by_name[change.node].result.changes = change.reasons
    if not removals and not edits:
        return False
    changed = False
    if stored is not None and removals and len(removals) == len(stored.nodes):
        await _run_buildx(state, builder, buildx.rm_argv(builder, keep_state=True, keep_daemon=True))
        changed = True
    else:
        for change in removals:
            await _run_buildx(state, builder, buildx.leave_argv(builder, change.node))
            changed = True
    unreachable = [
        work.host.name for work in works if not work.openssh_ok and stored is not None and stored.node(work.host.name)
    ]
    if edits and unreachable:
        message = (
            f"builder not changed: {', '.join(unreachable)} unreachable, and buildx loads every node when one "
            "changes (its rollback would drop pinned platforms); run `nodefleet up` again once they are back"
        )
        notes.append(message)
        for change in edits:
            by_name[change.node].result.fail(message)
        return changed
    digests = state.load_digests()
    timeout = inventory.defaults.connect_timeout * 2 * max(1, len(specs)) + 60
    exists = stored is not None and len(removals) < len(stored.nodes)
    for change in edits:
        spec = specs[change.node]
        options.progress(change.node, f"{change.action.value} node")
        argv = buildx.create_argv(builder, spec, append=exists)
        try:
            await _run_buildx(state, builder, argv, timeout=timeout)
        except NodefleetError as exc:
            by_name[change.node].result.fail(f"buildx: {exc}")
            continue
        exists = True
        changed = True
        digests[change.node] = spec.config_digest
    for name in [change.node for change in removals]:
        digests.pop(name, None)
    state.save_digests({name: digest for name, digest in digests.items()})
    _verify_store(builder, specs, by_name, notes)
    return changed


async def _run_buildx(state: BuilderState, builder: str, argv: list[str], timeout: float = 120) -> None:
    """Run one buildx command that changes the store; on failure put the store back as it was."""
    backup = buildx.backup_store(builder, state.backup_dir)
    try:
        await buildx.run_local(argv, timeout=timeout)
    except (CommandError, asyncio.CancelledError):
        buildx.restore_store(builder, backup)
        raise


def _verify_store(
    builder: str, specs: Mapping[str, NodeSpec], by_name: Mapping[str, _HostWork], notes: list[str]
) -> None:
    """After changing the builder, check buildx stored what was asked (pins above all)."""
    stored = buildx.read_store(builder)
    for name, spec in specs.items():
        work = by_name[name]
        if work.result.status == "failed":
            continue
        node = stored.node(name) if stored else None
        if node is None:
            work.result.fail(f"buildx did not store node {name}")
        elif set(node.platforms) != set(spec.platforms):
            work.result.fail(
                f"buildx stored pins {','.join(node.platforms) or '-'} instead of {','.join(spec.platforms) or '-'}"
            )


async def _remove_hosts(
    inventory: Inventory, options: FleetOptions, stored: StoredBuilder | None, changes: Sequence[NodeChange]
) -> list[HostResult]:
    """Remove the BuildKit container and volume of nodes that left the builder from their hosts."""
    results = []
    jobs: list[Callable[[], Awaitable[None]]] = []
    for change in changes:
        if change.action is not Action.REMOVE or stored is None:
            continue
        node = stored.node(change.node)
        if node is None:
            continue
        target = target_from_endpoint(inventory, node.name, node.endpoint)
        result = HostResult(node.name, target.address if target else node.endpoint, status="removed", action="remove")
        results.append(result)
        if target is not None:
            jobs.append(partial(_clean_remote, target, result, inventory, options, keep_state=False))
    await _bounded(_parallel(inventory, options), jobs)
    return results


async def _clean_remote(
    target: SSHTarget, result: HostResult, inventory: Inventory, options: FleetOptions, *, keep_state: bool
) -> None:
    started = time.monotonic()
    try:
        from nodefleet.ssh import open_session  # see load_ssh_stack

        async with await open_session(target, policy=options.host_key_policy, attempts=2) as session:
            await _forget_gateway_helper(session, inventory, options.state_dir or default_state_dir(), target.name)
            await remove_node_container(
                session, target.name, keep_state=keep_state, timeout=inventory.defaults.command_timeout
            )
    except NodefleetError as exc:
        result.fail(f"left the builder, but its BuildKit container could not be removed: {exc}")
    result.seconds = time.monotonic() - started


async def _forget_gateway_helper(session: Session, inventory: Inventory, state_dir: Path, node: str) -> None:
    """Drop the node's gateway helper (nodefleet.gateway) from nodefleet's private buildx store. `buildx rm` connects
    to the node, so the node's door is served over `session` meanwhile; a build serving it now keeps it."""
    env = buildx_environment(state_dir)
    name = helper_builder_name(inventory.builder, node)
    if not buildx.instance_file(name, env).exists():
        return
    gateway = Gateway.for_node(state_dir, inventory.builder, node)
    try:
        if await gateway.start():
            gateway.open(session)
            argv = buildx.rm_argv(name, keep_state=True, keep_daemon=True)
            await buildx.run_local(argv, timeout=inventory.defaults.command_timeout, env=env, check=False)
    finally:
        await gateway.close()


async def _recreate_if_needed(work: _HostWork, changes: Sequence[NodeChange], inventory: Inventory) -> None:
    change = next((c for c in changes if c.node == work.host.name), None)
    if change is None or not change.recreate or change.action is not Action.UPDATE or not work.ready:
        return

    async def go() -> None:
        session = work.need_session()
        work.health = None  # a new container: ask its BuildKit after the bootstrap
        await remove_node_container(
            session, work.host.name, keep_state=True, timeout=inventory.defaults.command_timeout
        )

    await _guard(work, "recreate", go)


async def _bootstrap_and_check(
    inventory: Inventory,
    options: FleetOptions,
    works: Sequence[_HostWork],
    changed: bool,
    notes: list[str],
    cache: ProbeCache,
) -> bool:
    """Start what is not running, then check every node; True when a node's BuildKit container was (re)started
    although its node did not change (it had stopped or been removed): reported as the action `start`."""
    limit = _parallel(inventory, options)
    ready = [work for work in works if work.ready]
    # The probe's health stands for a container nothing touched since.
    await _bounded(limit, [partial(_check_health, w, inventory, cache) for w in ready if w.health is None])
    stopped = {work.host.name for work in ready if work.health is None or work.health.state != "running"}
    needs_boot = changed or bool(stopped)
    if needs_boot and ready:
        for work in ready:
            options.progress(work.host.name, "starting BuildKit")
        try:
            await buildx.run_local(
                buildx.bootstrap_argv(inventory.builder), timeout=options.bootstrap_timeout, check=True
            )
        except CommandError as exc:
            # Per-node health below says which nodes did not start; keep buildx's words as a note.
            notes.append(f"buildx inspect --bootstrap: {exc}")
        await _bounded(limit, [partial(_check_health, w, inventory, cache) for w in ready])
    started = False
    for work in works:
        _judge_health(work)
        running = work.health is not None and work.health.state == "running"
        if work.host.name in stopped and running and work.result.action in {"none", Action.KEEP.value}:
            work.result.action = "start"
            started = True
    return started


# ---------------------------------------------------------------------------------------------- status


async def status(inventory: Inventory, options: FleetOptions | None = None) -> FleetReport:
    """Health of every enabled host and its node, changing nothing; a dead host costs its connect timeout."""
    options = options or FleetOptions()
    started = time.monotonic()
    notes: list[str] = []
    missing = "not in the builder; run `nodefleet up`"
    try:
        stored = buildx.read_store(inventory.builder)
    except buildx.CorruptStoreError as exc:
        stored = None
        missing = "buildx's builder file is unreadable; `nodefleet up` restores it from nodefleet's backup"
        notes.append(f"{buildx.instance_file(inventory.builder)}: {exc}; {missing.split('; ', 1)[1]}")
    else:
        if stored is None:
            notes.append(f"builder {inventory.builder} does not exist; run `nodefleet up`")
    works = [_new_work(inventory, host) for host in inventory.enabled_hosts]
    cache = ProbeCache(options.state_dir or default_state_dir())
    limit = _parallel(inventory, options)
    openssh = await _openssh_first(works, inventory, limit)
    try:
        await _bounded(
            limit,
            [
                partial(_status_host, w, inventory, options, stored, missing, cache, openssh.pop(w.host.name, None))
                for w in works
            ],
        )
    finally:
        cache.save()
        await _close_all(works)
    extra = []
    wanted = {host.name for host in inventory.enabled_hosts}
    for node in stored.nodes if stored else ():
        if node.name not in wanted:
            extra.append(
                HostResult(
                    node.name,
                    node.endpoint,
                    pinned=node.platforms,
                    status="failed",
                    error="in the builder but not enabled in the inventory; `nodefleet up` removes it",
                )
            )
    for work in works:
        work.finish()
    results = [work.result for work in works] + extra + _disabled_results(inventory)
    report = FleetReport("status", inventory.builder, results, notes=notes)
    report.seconds = time.monotonic() - started
    return report


async def _status_host(
    work: _HostWork,
    inventory: Inventory,
    options: FleetOptions,
    stored: StoredBuilder | None,
    missing: str,
    cache: ProbeCache,
    openssh: asyncio.Future[str | None] | None,
) -> None:
    # buildx's OpenSSH path runs while nodefleet's own session logs in and asks for facts and health in one round
    # trip; it is dropped when the host cannot be reached at all.
    openssh = openssh or _start_openssh(work, inventory)
    node = stored.node(work.host.name) if stored else None
    try:
        await _connect(
            work,
            replace(options, host_key_policy=HostKeyPolicy.STRICT),
            attempts=1,
            budget=inventory.defaults.connect_timeout,
        )
        if node is not None:
            work.result.pinned = node.platforms
            work.result.role = "primary" if node.platforms else "standby"
        await _probe(work, inventory, cache)
        await _take_openssh(work, openssh)  # skipped (and stopped below) when the host already failed
    finally:
        await _stop(openssh)
    if node is None and work.result.status != "failed":
        work.result.fail(missing)
    _judge_health(work)


# ---------------------------------------------------------------------------------------------- down


async def down(inventory: Inventory, options: FleetOptions | None = None) -> FleetReport:
    """Remove the builder and the BuildKit containers (and volumes, unless keep_state) nodefleet made."""
    options = options or FleetOptions()
    state = BuilderState(options.state_dir or default_state_dir(), inventory.builder)
    started = time.monotonic()
    notes: list[str] = []
    with state.lock(options.lock_wait):
        try:
            stored = buildx.read_store(inventory.builder)
        except buildx.CorruptStoreError as exc:
            notes.append(str(exc))
            stored = None
        targets: dict[str, SSHTarget] = {host.name: ssh_target(inventory, host) for host in inventory.hosts}
        for node in stored.nodes if stored else ():
            target = target_from_endpoint(inventory, node.name, node.endpoint)
            if node.name not in targets and target is not None:
                targets[node.name] = target
        results = {
            name: HostResult(name, target.address, status="removed", action="remove")
            for name, target in targets.items()
        }
        await _bounded(
            _parallel(inventory, options),
            [
                partial(_clean_remote, target, results[name], inventory, options, keep_state=options.keep_state)
                for name, target in targets.items()
            ],
        )
        uncleaned = {name for name, result in results.items() if result.status == "failed"}
        if stored is not None or buildx.instance_file(inventory.builder).exists():
            await _remove_builder(inventory.builder, stored, uncleaned, state, results, notes, targets)
        notes.extend(await remove_helper_builders(inventory.builder, state.dir, skip=uncleaned))
        state.forget()
    report = FleetReport("down", inventory.builder, list(results.values()), changed=True, notes=notes)
    report.seconds = time.monotonic() - started
    return report


async def _remove_builder(
    builder: str,
    stored: StoredBuilder | None,
    uncleaned: set[str],
    state: BuilderState,
    results: Mapping[str, HostResult],
    notes: list[str],
    targets: Mapping[str, SSHTarget] | None = None,
) -> None:
    """Remove the builder from buildx's store. `buildx rm` inspects every node's container, even with
    --keep-daemon, and waits on ssh's own 30 s timeout for a dead host; so the nodes whose host could not be
    cleaned leave first (`create --leave` contacts no host), and `rm` only meets hosts that just answered."""
    leaving = [node.name for node in stored.nodes if node.name in uncleaned] if stored else []
    if stored is not None and len(leaving) == len(stored.nodes):
        notes.append(
            f"builder {builder} kept in buildx's store: none of its hosts could be cleaned; "
            "run `nodefleet down` again once they are back"
        )
        return
    backup = buildx.backup_store(builder, state.backup_dir)
    try:
        for name in leaving:
            await buildx.run_local(buildx.leave_argv(builder, name), timeout=60)
        try:
            await buildx.run_local(buildx.rm_argv(builder, keep_state=True, keep_daemon=True), timeout=120)
        except CommandError:
            if not buildx.instance_file(builder).exists():
                return  # buildx removed the builder and then complained about a node it could not inspect
            # A host can go away between its clean-up and `rm`: leave the nodes buildx cannot reach now, try again.
            gone = await _unreachable_now(stored, set(leaving), targets or {})
            if not gone or (stored is not None and len(gone) + len(leaving) >= len(stored.nodes)):
                raise
            for name in gone:
                await buildx.run_local(buildx.leave_argv(builder, name), timeout=60)
            await buildx.run_local(buildx.rm_argv(builder, keep_state=True, keep_daemon=True), timeout=120)
    except CommandError as exc:
        buildx.restore_store(builder, backup)
        notes.append(f"docker buildx rm {shlex.quote(builder)} failed: {exc}")
        for result in results.values():
            result.fail(f"builder not removed: {exc}")


async def _unreachable_now(
    stored: StoredBuilder | None, already_left: set[str], targets: Mapping[str, SSHTarget]
) -> list[str]:
    """Nodes still in the builder whose host buildx's OpenSSH path cannot reach at this moment."""
    names = [node.name for node in stored.nodes if node.name not in already_left] if stored else []
    checked = [name for name in names if name in targets]
    problems = await asyncio.gather(
        *(check_openssh_path(targets[name], timeout=targets[name].connect_timeout + 2) for name in checked)
    )
    return [name for name, problem in zip(checked, problems, strict=True) if problem]


# ---------------------------------------------------------------------------------------------- build support
# `nodefleet build` reaches every node through a single-node builder of its own, `<builder>--<node>`: the same
# node name and endpoint, hence the same BuildKit container and cache as the node of the main builder.

HELPER_SEPARATOR = "--"


def node_spec(host: Host, platforms: tuple[str, ...], config: Path | None, digest: str) -> NodeSpec:
    """The buildx node nodefleet makes for a host, pinning `platforms`; identical in every builder it joins."""
    return NodeSpec(
        name=host.name,
        endpoint=buildx.ssh_endpoint(host.address, host.user, host.port),
        platforms=platforms,
        image=host.buildkit_image,
        driver_opts=dict(host.driver_opts),
        buildkitd_config=config,
        config_digest=digest,
    )


def helper_builder_name(builder: str, node: str) -> str:
    """The single-node builder `nodefleet build` uses to reach one node of `builder`."""
    return f"{builder}{HELPER_SEPARATOR}{node}"


def build_record_file(state_dir: Path, builder: str) -> Path:
    """Where `nodefleet build` records node use (for balancing) and the helper builders it made."""
    return state_dir / f"{builder}-build.json"


def helper_builders(builder: str) -> list[str]:
    """The helper builders of `builder` in buildx's store: named `<builder>--<node>`, with that one node."""
    instances = buildx.store_dir() / "instances"
    prefix = builder + HELPER_SEPARATOR
    try:
        names = sorted(path.name for path in instances.iterdir() if path.name.startswith(prefix))
    except OSError:
        return []
    helpers = []
    for name in names:
        try:
            stored = buildx.read_store(name)
        except buildx.CorruptStoreError:
            continue
        if stored is not None and [node.name for node in stored.nodes] == [name[len(prefix) :]]:
            helpers.append(name)
    return helpers


async def remove_helper_builders(builder: str, state_dir: Path, *, skip: Collection[str] = ()) -> list[str]:
    """Drop the helper builders from buildx's store, keeping the BuildKit containers they share; returns notes.
    Helpers of the nodes in `skip` (hosts that could not be cleaned) stay: `buildx rm` would wait on them."""
    notes = []
    for name in helper_builders(builder):
        node = name[len(builder + HELPER_SEPARATOR) :]
        if node in skip:
            notes.append(f"builder {name} kept: {node} could not be cleaned; the next `nodefleet down` removes it")
            continue
        try:
            await buildx.run_local(buildx.rm_argv(name, keep_state=True, keep_daemon=True), timeout=60)
        except CommandError as exc:
            # buildx removes the store entry and then may complain about a node it could not inspect.
            if buildx.instance_file(name).exists():
                notes.append(f"docker buildx rm {shlex.quote(name)} failed: {exc}")
    build_record_file(state_dir, builder).unlink(missing_ok=True)
    return notes


@dataclass(frozen=True)
class NodeCheck:
    """A quick look at one host's node before a build; `result.status` is healthy or failed."""

    result: HostResult
    container_id: str | None = None
    worker_platforms: tuple[str, ...] = ()
    session: Session | None = field(default=None, compare=False, repr=False)

    @property
    def healthy(self) -> bool:
        """True when the node can take a build now."""
        return self.result.status == "healthy"


async def check_node(
    inventory: Inventory,
    host: Host,
    options: FleetOptions | None = None,
    *,
    known_workers: Mapping[str, tuple[str, ...]] | None = None,
    platform: str | None = None,
    keep_session: bool = False,
) -> NodeCheck:
    """Is this host's node ready to build: SSH within connect_timeout (one attempt), its platform, BuildKit running
    with a native worker. `known_workers` maps container ids already looked at to their worker platforms: an
    unchanged container then costs no `docker exec` (slow when BuildKit is emulated). `platform`, when already
    known, is not asked again; a container of another architecture still fails the native-worker check. With
    `keep_session`, a healthy node's SSH session is handed over in the result, open: the caller closes it."""
    options = replace(options or FleetOptions(), host_key_policy=HostKeyPolicy.STRICT)
    work = _new_work(inventory, host)
    timeout = inventory.defaults.connect_timeout + 15
    seen: list[str] = []

    async def look() -> None:
        session = work.need_session()
        known = host.platforms[0] if host.platforms else platform
        script = node_check_script(buildx.container_name(host.name), machine=known is None)
        output = await session.run(script, timeout=timeout)
        facts = parse_facts(output.stdout)
        work.result.platform = known or facts.platform
        if work.result.platform is None:
            raise NodefleetError(f"unknown CPU architecture {facts.machine!r}; set platforms for this host")
        container, state, problem = parse_node_check(output.stdout)
        if problem:
            raise NodefleetError(problem)
        if container is not None:
            seen.append(container)
        if state == "running" and container is not None and known_workers and container in known_workers:
            work.health = NodeHealth(state, None, tuple(known_workers[container]))
        elif state == "running":
            health = await session.run(node_workers_script(buildx.container_name(host.name)), timeout=timeout)
            # The workers script prints no state line: the state is the one inspect just gave.
            work.health = replace(parse_node_health(health.stdout), state=state)
        else:
            work.health = NodeHealth(state, None, ())

    kept: Session | None = None
    try:
        await _connect(work, options, attempts=1, budget=inventory.defaults.connect_timeout)
        await _guard(work, "check", look)
        _judge_health(work)
        if keep_session and work.result.status == "healthy":
            kept, work.session = work.session, None
        await _close_all([work])
    except BaseException:
        await asyncio.gather(*(session.close() for session in (work.session, kept) if session is not None))
        raise
    if work.result.status == "failed" and work.health is not None and work.health.state != "running":
        work.result.error = f"{work.result.error}; `nodefleet up` starts it"
    work.finish()
    workers = work.health.worker_platforms if work.health is not None else ()
    return NodeCheck(work.result, seen[0] if seen else None, workers, session=kept)


async def node_health(
    inventory: Inventory,
    hosts: Sequence[Host],
    options: FleetOptions | None = None,
    *,
    known_workers: Mapping[str, tuple[str, ...]] | None = None,
) -> list[NodeCheck]:
    """check_node for several hosts at once (at most `parallel` at a time), in the order given."""
    options = options or FleetOptions()
    return await _bounded(
        _parallel(inventory, options),
        [partial(check_node, inventory, host, options, known_workers=known_workers) for host in hosts],
    )
