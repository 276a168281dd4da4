"""`nodefleet up`: prepare every host, reconcile the builder with the inventory, start and check every node."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from nodefleet.buildx import store
from nodefleet.buildx.argv import bootstrap_argv, create_argv, leave_argv, rm_argv
from nodefleet.buildx.config import config_digest, node_config, resolve_buildkitd_config
from nodefleet.buildx.nodes import DRIVER, NodeSpec
from nodefleet.buildx.store import StoredBuilder
from nodefleet.errors import CommandError, NodefleetError, UsageError
from nodefleet.fanout import each
from nodefleet.fleet.plan import Action, Member, NodeChange, edits, kept_digests, plan_up, removal_argv
from nodefleet.fleet.remove import remove_hosts
from nodefleet.fleet.work import (
    FleetOptions,
    FleetReport,
    HostWork,
    check_health,
    close_all,
    connect,
    disabled_results,
    judge_health,
    judge_refused_key,
    probe_host,
    start_local,
    start_openssh,
    stop,
    take_openssh,
)
from nodefleet.host.cache import ProbeCache
from nodefleet.host.openssh import OpenSSHCheck
from nodefleet.host.ops import ensure_image, remove_node_container
from nodefleet.inventory import Inventory
from nodefleet.runner import run_local
from nodefleet.state import BuilderState, default_state_dir
from nodefleet.target import HostKeyPolicy
from nodefleet.units import human_size


async def up(inventory: Inventory, options: FleetOptions | None = None) -> FleetReport:
    """Bring the builder to what the inventory says; returns one result per host."""
    options = options or FleetOptions()
    state = BuilderState(options.state_dir or default_state_dir(), inventory.builder)
    started = time.monotonic()
    async with state.lock.hold_async(options.lock_wait, on_wait=options.notice):
        state.adopt_legacy()
        report = await _up_locked(inventory, options, state)
    report.seconds = time.monotonic() - started
    return report


async def _up_locked(inventory: Inventory, options: FleetOptions, state: BuilderState) -> FleetReport:
    notes: list[str] = []
    config = resolve_buildkitd_config(inventory, state)
    digest = config_digest(config)
    works = [HostWork.of(inventory, host) for host in inventory.enabled_hosts]
    limit = options.limit(inventory)
    cache = ProbeCache(state.root)
    client, openssh = await start_local(works, inventory, limit)
    try:
        await each(
            limit,
            works,
            lambda w: _prepare_host(w, inventory, options, cache, openssh.pop(w.name, None)),
            lambda w, message: w.fail(message),
            lambda w: w.name,
        )
        stored = read_store_or_repair(inventory.builder, state, notes)
        if stored is not None and stored.driver and stored.driver != DRIVER:
            raise UsageError(
                f"builder {inventory.builder} exists with driver {stored.driver}, not {DRIVER}: "
                "choose another builder name or remove it with docker buildx rm"
            )
        stored = await _evict_untrusted(inventory.builder, state, works, stored, notes)
        members = [Member(w.host, w.result.platform, w.ready, _own_config(inventory, state, w)) for w in works]
        changes, specs = plan_up(members, stored, state.load_digests() or {}, config, digest)
        for work in works:
            if work.name in specs:
                work.result.pinned = specs[work.name].platforms
                work.result.role = "primary" if work.result.pinned else "standby"
        changed = await _apply(inventory, options, state, works, stored, changes, specs, notes)
        removed = await remove_hosts(inventory, options, state, stored, changes, notes)
        await each(limit, works, lambda w: _recreate_if_needed(w, changes, inventory), _fail, _name)
        restarted = await _bootstrap_and_check(inventory, options, works, changed, notes, cache)
    finally:
        cache.save()
        await close_all(works)
    results = [work.result for work in works] + removed + disabled_results(inventory)
    changed = changed or restarted or bool(removed)
    return FleetReport("up", inventory.builder, results, changed=changed, notes=notes, client=client)


def _own_config(inventory: Inventory, state: BuilderState, work: HostWork) -> tuple[Path | None, str] | None:
    """A host's own buildkitd config and digest when it has a cache budget (in the gc form its BuildKit reads),
    with a warning when the budget does not fit its disk; None: the builder's config."""
    if not work.host.cache or not work.ready:
        return None
    budget, disk = work.host.cache, work.result.disk_size_bytes
    for key, value in (("max_size", budget.max_size), ("min_free", budget.min_free)):
        if value is not None and disk is not None and value >= disk:
            work.result.warnings += (f"cache.{key} {human_size(value)} is not less than its disk ({human_size(disk)})",)
    version = work.health.buildkit_version if work.health else None
    path = node_config(inventory, state, work.host, version)
    return path, config_digest(path)


def _fail(work: HostWork, message: str) -> None:
    work.fail(message)


def _name(work: HostWork) -> str:
    return work.name


async def _prepare_host(
    work: HostWork,
    inventory: Inventory,
    options: FleetOptions,
    cache: ProbeCache,
    openssh: asyncio.Future[OpenSSHCheck] | None,
) -> None:
    # buildx's own path is checked beside the facts: whether buildx can load this node decides whether the builder
    # may change.
    openssh = openssh or start_openssh(work, inventory)
    try:
        await connect(work, options.host_key_policy, options.progress, attempts=3, budget=None)
        if options.host_key_policy is HostKeyPolicy.ACCEPT_NEW and work.session is not None:
            # The key recorded just now must be in the file OpenSSH reads before buildx's path is judged: a check
            # started before it would find no key and fail the host until the next `up`.
            await stop(openssh)
            openssh = start_openssh(work, inventory)
        if work.key_refused:
            await judge_refused_key(work, openssh)
        await probe_host(work, inventory, cache, image=work.host.buildkit_image)
        await take_openssh(work, openssh)
    finally:
        await stop(openssh)

    async def image() -> None:
        options.progress(work.name, f"checking BuildKit image {work.host.buildkit_image}")
        await ensure_image(
            work.need_session(),
            work.host.buildkit_image,
            inventory.defaults.buildkit_image_archive,
            timeout=inventory.defaults.command_timeout,
            present=work.image_present,
        )

    await work.step("image", image)


async def _evict_untrusted(
    builder: str, state: BuilderState, works: Sequence[HostWork], stored: StoredBuilder | None, notes: list[str]
) -> StoredBuilder | None:
    """Take the nodes of hosts whose identity is in doubt out of the builder (`create --leave` contacts no host),
    so that neither buildx nor a user's plain `docker buildx build --builder` reaches them; the next `up` after the
    host is trusted again adds its node back. Its container and cache stay on the host."""
    doubted = [work.name for work in works if work.untrusted and stored is not None and stored.node(work.name)]
    if not doubted or stored is None:
        return stored
    if len(doubted) == len(stored.nodes):
        argvs = [rm_argv(builder, keep_state=True, keep_daemon=True)]
    else:
        argvs = [leave_argv(builder, name) for name in doubted]
    for argv in argvs:
        await run_buildx(state, builder, argv)
    for name in doubted:
        notes.append(f"{name} left the builder: its host key is in doubt (see its error); `nodefleet up` adds it back")
    return store.read_store(builder)


def read_store_or_repair(builder: str, state: BuilderState, notes: list[str]) -> StoredBuilder | None:
    """The builder as buildx's store has it; an unreadable store file is restored from nodefleet's backup."""
    try:
        return store.read_store(builder)
    except store.CorruptStoreError as exc:
        backup = store.latest_backup(builder, state.backup_dir)
        if backup is None:
            raise NodefleetError(
                f"{store.instance_file(builder)}: {exc}; no backup to restore: remove it with "
                f"`docker buildx rm {builder}` and run `nodefleet up` again"
            ) from None
        store.restore_store(builder, backup)
        notes.append(f"buildx state of {builder} was unreadable; restored the backup {backup.name}")
        return store.read_store(builder)


async def _apply(
    inventory: Inventory,
    options: FleetOptions,
    state: BuilderState,
    works: Sequence[HostWork],
    stored: StoredBuilder | None,
    changes: Sequence[NodeChange],
    specs: Mapping[str, NodeSpec],
    notes: list[str],
) -> bool:
    """Carry out the plan against buildx, backing up its store around each change."""
    by_name = {work.name: work for work in works}
    builder = inventory.builder
    for change in changes:
        if change.node in by_name:
            by_name[change.node].result.action = change.action.value
            by_name[change.node].result.changes = change.reasons
    recorded = state.load_digests()
    whole = kept_digests(recorded, changes, specs)
    if whole != recorded:
        state.save_digests(whole)
    removals = removal_argv(builder, changes, stored)
    wanted = edits(changes)
    if not removals and not wanted:
        return False
    for argv in removals:
        await run_buildx(state, builder, argv)
    unreachable = [w.name for w in works if not w.openssh_ok and stored is not None and stored.node(w.name)]
    if wanted and unreachable:
        message = (
            f"builder not changed: {', '.join(unreachable)} unreachable, and buildx loads every node when one "
            "changes (its rollback would drop pinned platforms); run `nodefleet up` again once they are back"
        )
        notes.append(message)
        for change in wanted:
            by_name[change.node].fail(message)
        return bool(removals)
    changed = bool(removals)
    digests = state.load_digests() or {}
    timeout = inventory.defaults.connect_timeout * 2 * max(1, len(specs)) + 60
    exists = store.instance_file(builder).exists()
    for change in wanted:
        options.progress(change.node, f"{change.action.value} node")
        try:
            if change.rejoin:
                await run_buildx(state, builder, leave_argv(builder, change.node))
            await run_buildx(state, builder, create_argv(builder, specs[change.node], append=exists), timeout=timeout)
        except NodefleetError as exc:
            by_name[change.node].fail(f"buildx: {exc}")
            continue
        exists = changed = True
        digests[change.node] = specs[change.node].config_digest
    for change in changes:
        if change.action is Action.REMOVE:
            digests.pop(change.node, None)
    state.save_digests(digests)
    _verify_store(builder, specs, by_name)
    return changed


async def run_buildx(state: BuilderState, builder: str, argv: list[str], timeout: float = 120) -> None:
    """Run one buildx command that changes the store; on failure put the store back as it was."""
    backup = store.backup_store(builder, state.backup_dir)
    try:
        await run_local(argv, timeout=timeout)
    except (CommandError, asyncio.CancelledError):
        store.restore_store(builder, backup)
        raise


def _verify_store(builder: str, specs: Mapping[str, NodeSpec], by_name: Mapping[str, HostWork]) -> None:
    """After changing the builder, check buildx stored what was asked (pins above all)."""
    stored = store.read_store(builder)
    for name, spec in specs.items():
        work = by_name[name]
        if work.result.failed:
            continue
        node = stored.node(name) if stored else None
        if node is None:
            work.fail(f"buildx did not store node {name}")
        elif set(node.platforms) != set(spec.platforms):
            work.fail(
                f"buildx stored pins {','.join(node.platforms) or '-'} instead of {','.join(spec.platforms) or '-'}"
            )


async def _recreate_if_needed(work: HostWork, changes: Sequence[NodeChange], inventory: Inventory) -> None:
    change = next((c for c in changes if c.node == work.name), None)
    if change is None or not change.recreate or change.action is not Action.UPDATE or not work.ready:
        return

    async def go() -> None:
        work.health = None  # a new container: ask its BuildKit after the bootstrap
        await remove_node_container(
            work.need_session(), work.name, keep_state=True, timeout=inventory.defaults.command_timeout
        )

    await work.step("recreate", go)


async def _bootstrap_and_check(
    inventory: Inventory,
    options: FleetOptions,
    works: Sequence[HostWork],
    changed: bool,
    notes: list[str],
    cache: ProbeCache,
) -> bool:
    """Start what is not running, then check every node; True when a node's BuildKit container was (re)started
    although its node did not change (it had stopped or been removed): reported as the action `start`."""
    limit = options.limit(inventory)
    ready = [work for work in works if work.ready]
    # The probe's health stands for a container nothing touched since.
    await each(limit, [w for w in ready if w.health is None], lambda w: check_health(w, inventory, cache), _fail, _name)
    stopped = {work.name for work in ready if work.health is None or work.health.state != "running"}
    if (changed or stopped) and ready:
        for work in ready:
            options.progress(work.name, "starting BuildKit")
        try:
            await run_local(bootstrap_argv(inventory.builder), timeout=options.bootstrap_timeout, check=True)
        except CommandError as exc:
            # Per-node health below says which nodes did not start; keep buildx's words as a note.
            notes.append(f"buildx inspect --bootstrap: {exc}")
        await each(limit, ready, lambda w: check_health(w, inventory, cache), _fail, _name)
    restarted = False
    for work in works:
        judge_health(work)
        running = work.health is not None and work.health.state == "running"
        if work.name in stopped and running and work.result.action in {"none", Action.KEEP.value}:
            work.result.action = "start"
            restarted = True
    return restarted
