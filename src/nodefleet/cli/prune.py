"""`nodefleet prune`: options in, the nodes' BuildKit caches pruned by the fleet library, its report rendered."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from nodefleet.cli.common import (
    console,
    fail,
    inventory_option,
    json_option,
    load,
    parallel_option,
    run,
    spinner,
    write_err,
)
from nodefleet.errors import ExitCode, UsageError

if TYPE_CHECKING:
    from nodefleet.fleet.prune import PruneOptions, PruneReport

_STYLE = {"pruned": "green", "failed": "bold red", "skipped": "yellow", "disabled": "dim"}


def prune_options(keep_storage: str | None, until: str | None, everything: bool) -> PruneOptions:
    """The prune options from the command line's text; bad input is a UsageError naming the option."""
    from nodefleet.fleet.prune import PruneOptions
    from nodefleet.units import UnitError, parse_duration, parse_size

    try:
        size = parse_size(keep_storage) if keep_storage is not None else None
    except UnitError as exc:
        raise UsageError(f"--keep-storage: {exc}") from None
    try:
        seconds = parse_duration(until) if until is not None else None
    except UnitError as exc:
        raise UsageError(f"--until: {exc}") from None
    return PruneOptions(keep_storage=size, keep_duration=seconds, all=everything)


def render(report: PruneReport, as_json: bool) -> None:
    import json
    from collections import Counter

    from rich.table import Table

    from nodefleet.results import PruneResult
    from nodefleet.units import human_size

    stdout = console()
    if as_json:
        stdout.out(json.dumps(report.as_json(), indent=2), highlight=False)
        return
    table = Table(title=f"builder {report.builder} — prune", title_justify="left")
    for column in ("host", "address", "status", "reclaimed", "free before", "free after", "s"):
        table.add_column(column, justify="left" if column in {"host", "address", "status"} else "right")
    for host in report.hosts:
        figures = host if isinstance(host, PruneResult) else None
        style = _STYLE.get(host.status, "")
        table.add_row(
            host.name,
            host.address,
            f"[{style}]{host.status}[/]" if style else host.status,
            human_size(figures.reclaimed_bytes if figures else None),
            human_size(host.disk_free_bytes),
            human_size(figures.disk_free_after_bytes if figures else None),
            f"{host.seconds:.1f}",
        )
    stdout.print(table)
    for host in report.hosts:
        if host.error:
            stdout.print(f"[red]{host.name}[/]: {host.error}", highlight=False)
    for note in report.notes:
        stdout.print(f"note: {note}", highlight=False)
    counts = Counter(str(host.status) for host in report.hosts)
    summary = ", ".join(f"{count} {name}" for name, count in sorted(counts.items()))
    stdout.print(f"{summary}; reclaimed {human_size(report.reclaimed_bytes)} ({report.seconds:.1f} s)", highlight=False)


@click.command()
@inventory_option
@json_option
@parallel_option
@click.option(
    "--keep-storage", metavar="SIZE", default=None, help="Keep at most this much cache per node (512MB, 20GB, 1.5GiB)."
)
@click.option("--until", metavar="DURATION", default=None, help="Keep the cache used within this long (168h, 7d).")
@click.option("--all", "everything", is_flag=True, help="Prune internal and frontend records too (buildctl --all).")
@click.argument("hosts", nargs=-1, metavar="[HOST]...")
def prune(
    inventory_path: str,
    as_json: bool,
    parallel: int | None,
    keep_storage: str | None,
    until: str | None,
    everything: bool,
    hosts: tuple[str, ...],
) -> None:
    """Prune the BuildKit cache of every node (or of the HOSTs named), each node on its own."""
    from nodefleet.fleet.prune import prune as fleet_prune
    from nodefleet.fleet.prune import select_hosts
    from nodefleet.fleet.work import FleetOptions

    try:
        what = prune_options(keep_storage, until, everything)
        inventory = load(inventory_path)
        select_hosts(inventory, hosts)  # an unknown name is bad input, before any host is contacted
    except UsageError as exc:
        lines = str(exc).splitlines() or [type(exc).__name__]
        for line in lines[:-1]:
            console(err=True).print(f"[bold red]nodefleet:[/] {line}", highlight=False)
        fail(lines[-1], ExitCode.USAGE)
    with spinner(not as_json) as progress:
        options = FleetOptions(parallel=parallel, progress=progress, notice=_notice)
        report = run(fleet_prune(inventory, what, hosts, options), tables=not as_json)
    render(report, as_json)
    raise SystemExit(report.exit_code)


def _notice(message: str) -> None:
    write_err(f"nodefleet: {message}")
