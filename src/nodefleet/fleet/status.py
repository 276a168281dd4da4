"""`nodefleet status`: the health of every enabled host and its node, changing nothing."""

from __future__ import annotations

import asyncio
import time

from nodefleet.buildx import store
from nodefleet.buildx.store import StoredBuilder
from nodefleet.fanout import each
from nodefleet.fleet.work import (
    FleetOptions,
    FleetReport,
    HostWork,
    close_all,
    connect,
    disabled_results,
    judge_health,
    probe_host,
    start_local,
    start_openssh,
    stop,
    take_openssh,
)
from nodefleet.host.cache import ProbeCache
from nodefleet.host.openssh import OpenSSHCheck
from nodefleet.inventory import Inventory
from nodefleet.results import HostResult, HostStatus
from nodefleet.state import default_state_dir
from nodefleet.target import HostKeyPolicy

NOT_IN_BUILDER = "not in the builder; run `nodefleet up`"
UNREADABLE = "buildx's builder file is unreadable; `nodefleet up` restores it from nodefleet's backup"


async def status(inventory: Inventory, options: FleetOptions | None = None) -> FleetReport:
    """Health of every enabled host and its node, changing nothing; a dead host costs its connect timeout."""
    options = options or FleetOptions()
    started = time.monotonic()
    notes: list[str] = []
    missing = NOT_IN_BUILDER
    try:
        stored = store.read_store(inventory.builder)
    except store.CorruptStoreError as exc:
        stored = None
        missing = UNREADABLE
        notes.append(f"{store.instance_file(inventory.builder)}: {exc}; {missing.split('; ', 1)[1]}")
    else:
        if stored is None:
            notes.append(f"builder {inventory.builder} does not exist; run `nodefleet up`")
    works = [HostWork.of(inventory, host) for host in inventory.enabled_hosts]
    cache = ProbeCache(options.state_dir or default_state_dir())
    limit = options.limit(inventory)
    client, openssh = await start_local(works, inventory, limit)
    try:
        await each(
            limit,
            works,
            lambda w: _status_host(w, inventory, options, stored, missing, cache, openssh.pop(w.name, None)),
            lambda w, message: w.fail(message),
            lambda w: w.name,
        )
    finally:
        cache.save()
        await close_all(works)
    wanted = {host.name for host in inventory.enabled_hosts}
    extra = [
        HostResult(
            node.name,
            node.endpoint,
            pinned=node.platforms,
            status=HostStatus.FAILED,
            error="in the builder but not enabled in the inventory; `nodefleet up` removes it",
        )
        for node in (stored.nodes if stored else ())
        if node.name not in wanted
    ]
    results = [work.result for work in works] + extra + disabled_results(inventory)
    seconds = time.monotonic() - started
    return FleetReport("status", inventory.builder, results, notes=notes, seconds=seconds, client=client)


async def _status_host(
    work: HostWork,
    inventory: Inventory,
    options: FleetOptions,
    stored: StoredBuilder | None,
    missing: str,
    cache: ProbeCache,
    openssh: asyncio.Future[OpenSSHCheck] | None,
) -> None:
    # buildx's OpenSSH path runs while nodefleet's own session logs in and asks for facts and health in one round
    # trip; it is dropped when the host cannot be reached at all.
    openssh = openssh or start_openssh(work, inventory)
    node = stored.node(work.name) if stored else None
    try:
        await connect(
            work, HostKeyPolicy.STRICT, options.progress, attempts=1, budget=inventory.defaults.connect_timeout
        )
        if node is not None:
            work.result.pinned = node.platforms
            work.result.role = "primary" if node.platforms else "standby"
        await probe_host(work, inventory, cache, cache_usage=True)
        await take_openssh(work, openssh)  # skipped (and stopped below) when the host already failed
    finally:
        await stop(openssh)
    if node is None:
        work.fail(missing)
    judge_health(work)
