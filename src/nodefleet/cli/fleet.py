"""`nodefleet up`, `status` and `down`: options in, the fleet library called, its report rendered."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from nodefleet.cli.common import console, inventory_option, json_option, load, parallel_option, run, spinner, write_err
from nodefleet.results import HostResult, HostStatus

if TYPE_CHECKING:
    from nodefleet.fleet.work import FleetReport

_STATUS_STYLE = {"healthy": "green", "failed": "bold red", "disabled": "dim", "removed": "yellow"}


def render(report: FleetReport, as_json: bool) -> None:
    import json
    from collections import Counter

    from rich.table import Table

    stdout = console()
    if as_json:
        stdout.out(json.dumps(report.as_json(), indent=2), highlight=False)
        return
    table = Table(title=f"builder {report.builder} — {report.command}", title_justify="left")
    disks = report.command == "status"
    columns = ["host", "address", "platform", "pinned", "engine", "BuildKit", "action", "status", "s"]
    if disks:
        columns[6:7] = ["disk free", "cache (reclaimable)"]
    for column in columns:
        table.add_column(column, justify="right" if column in {"s", "disk free"} else "left")
    for host in report.hosts:
        style = _STATUS_STYLE.get(host.status, "")
        row = [
            host.name,
            host.address,
            host.platform or "-",
            ",".join(host.pinned) or ("standby" if host.role == "standby" else "-"),
            host.engine or "-",
            host.buildkit or "-",
            host.action if host.action != "none" else "-",
            f"[{style}]{host.status}[/]" if style else host.status,
            f"{host.seconds:.1f}",
        ]
        if disks:
            row[6:7] = [_disk(host), _cache(host)]
        table.add_row(*row)
    stdout.print(table)
    for host in report.hosts:
        if host.error:
            stdout.print(f"[red]{host.name}[/]: {host.error}", highlight=False)
        elif host.changes:
            stdout.print(f"{host.name}: {'; '.join(host.changes)}", highlight=False)
        for warning in host.warnings:
            stdout.print(f"[yellow]{host.name}[/]: {warning}", highlight=False)
    for note in report.notes:
        stdout.print(f"note: {note}", highlight=False)
    if report.client is not None and report.command == "status":
        client = report.client
        stdout.print(f"client: docker {client.docker}, buildx {client.buildx}, {client.openssh}", highlight=False)
    counts = Counter(host.status for host in report.hosts)
    counts.setdefault(HostStatus.FAILED, 0)
    summary = ", ".join(f"{count} {name}" for name, count in sorted(counts.items()))
    if report.command == "up":
        summary += ", builder changed" if report.changed else ", no change"
    stdout.print(f"{summary} ({report.seconds:.1f} s)", highlight=False)


def _disk(host: HostResult) -> str:
    """Free space of the disk holding the node's state, with its size: "3.2GB of 32GB"."""
    from nodefleet.units import human_size

    if host.disk_free_bytes is None:
        return "-"
    size = f" of {human_size(host.disk_size_bytes)}" if host.disk_size_bytes else ""
    return human_size(host.disk_free_bytes) + size


def _cache(host: HostResult) -> str:
    from nodefleet.units import human_size

    if host.cache_bytes is None:
        return "-"
    return f"{human_size(host.cache_bytes)} ({human_size(host.cache_reclaimable_bytes)})"


def _notice(message: str) -> None:
    write_err(f"nodefleet: {message}")


@click.command()
@inventory_option
@json_option
@parallel_option
@click.option(
    "--accept-new-host-keys",
    is_flag=True,
    help="Trust and record the SSH host key of hosts not yet in known_hosts (a changed key is always refused).",
)
def up(inventory_path: str, as_json: bool, parallel: int | None, accept_new_host_keys: bool) -> None:
    """Prepare every host and reconcile the builder, then health-check every node."""
    from nodefleet.fleet.up import up as fleet_up
    from nodefleet.fleet.work import FleetOptions
    from nodefleet.target import HostKeyPolicy

    inventory = load(inventory_path)
    policy = HostKeyPolicy.ACCEPT_NEW if accept_new_host_keys else HostKeyPolicy.STRICT
    with spinner(not as_json) as progress:
        report = run(
            fleet_up(
                inventory, FleetOptions(parallel=parallel, host_key_policy=policy, progress=progress, notice=_notice)
            ),
            tables=not as_json,
        )
    render(report, as_json)
    raise SystemExit(report.exit_code)


@click.command()
@inventory_option
@json_option
@parallel_option
def status(inventory_path: str, as_json: bool, parallel: int | None) -> None:
    """Show every host's and node's health, changing nothing."""
    from nodefleet.fleet.status import status as fleet_status
    from nodefleet.fleet.work import FleetOptions

    inventory = load(inventory_path)
    report = run(fleet_status(inventory, FleetOptions(parallel=parallel)), tables=not as_json)
    render(report, as_json)
    raise SystemExit(report.exit_code)


@click.command()
@inventory_option
@json_option
@parallel_option
@click.option("--keep-state", is_flag=True, help="Keep the BuildKit state volumes (build cache) on the hosts.")
@click.option(
    "--force",
    is_flag=True,
    help="Also remove BuildKit containers and caches that another builder on this machine still lists.",
)
def down(inventory_path: str, as_json: bool, parallel: int | None, keep_state: bool, force: bool) -> None:
    """Remove the builder and the BuildKit containers nodefleet made on the hosts."""
    from nodefleet.fleet.down import down as fleet_down
    from nodefleet.fleet.work import FleetOptions

    inventory = load(inventory_path)
    options = FleetOptions(parallel=parallel, keep_state=keep_state, force=force, notice=_notice)
    report = run(fleet_down(inventory, options), tables=not as_json)
    render(report, as_json)
    raise SystemExit(report.exit_code)
