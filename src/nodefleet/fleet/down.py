"""`nodefleet down`: remove the builder, its helper builders, and the BuildKit containers nodefleet made."""

from __future__ import annotations

import asyncio
import shlex
import time
from collections.abc import Mapping

from nodefleet.buildx import store
from nodefleet.buildx.argv import leave_argv, rm_argv
from nodefleet.buildx.helpers import remove_helpers
from nodefleet.buildx.store import StoredBuilder
from nodefleet.errors import CommandError
from nodefleet.fleet.remove import clean_hosts, keep_shared
from nodefleet.fleet.work import FleetOptions, FleetReport
from nodefleet.host.openssh import check_openssh_path
from nodefleet.inventory import Inventory
from nodefleet.results import HostResult, HostStatus
from nodefleet.runner import run_local
from nodefleet.state import BuilderState, default_state_dir
from nodefleet.target import SSHTarget, load_ssh_stack, ssh_target, target_from_endpoint


async def down(inventory: Inventory, options: FleetOptions | None = None) -> FleetReport:
    """Remove the builder and the BuildKit containers (and volumes, unless keep_state) nodefleet made."""
    options = options or FleetOptions()
    state = BuilderState(options.state_dir or default_state_dir(), inventory.builder)
    started = time.monotonic()
    notes: list[str] = []
    async with state.lock.hold_async(options.lock_wait, on_wait=options.notice):
        state.adopt_legacy()
        try:
            stored = store.read_store(inventory.builder)
        except store.CorruptStoreError as exc:
            notes.append(str(exc))
            stored = None
        targets: dict[str, SSHTarget] = {host.name: ssh_target(inventory, host) for host in inventory.hosts}
        for node in stored.nodes if stored else ():
            target = target_from_endpoint(inventory, node.name, node.endpoint)
            if node.name not in targets and target is not None:
                targets[node.name] = target
        results = {
            name: HostResult(name, target.address, status=HostStatus.REMOVED, action="remove")
            for name, target in targets.items()
        }
        await load_ssh_stack()
        jobs = [(target, results[name]) for name, target in targets.items()]
        jobs = keep_shared(inventory, options, state, jobs, notes)
        await clean_hosts(inventory, options, state, jobs, keep_state=options.keep_state)
        uncleaned = {name for name, result in results.items() if result.failed}
        if stored is not None or store.instance_file(inventory.builder).exists():
            await _remove_builder(inventory.builder, stored, uncleaned, state, results, notes, targets)
        notes.extend(await remove_helpers(state, skip=uncleaned))
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
    targets: Mapping[str, SSHTarget],
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
    backup = store.backup_store(builder, state.backup_dir)
    try:
        for name in leaving:
            await run_local(leave_argv(builder, name), timeout=60)
        try:
            await run_local(rm_argv(builder, keep_state=True, keep_daemon=True), timeout=120)
        except CommandError:
            if not store.instance_file(builder).exists():
                return  # buildx removed the builder and then complained about a node it could not inspect
            # A host can go away between its clean-up and `rm`: leave the nodes buildx cannot reach now, try again.
            gone = await _unreachable_now(stored, set(leaving), targets)
            if not gone or (stored is not None and len(gone) + len(leaving) >= len(stored.nodes)):
                raise
            for name in gone:
                await run_local(leave_argv(builder, name), timeout=60)
            await run_local(rm_argv(builder, keep_state=True, keep_daemon=True), timeout=120)
    except CommandError as exc:
        store.restore_store(builder, backup)
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
