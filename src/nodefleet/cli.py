"""The `nodefleet` command: a thin layer that parses options, calls the library and renders its results."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from nodefleet import __version__
from nodefleet.errors import NodefleetError

if TYPE_CHECKING:
    from rich.console import Console

    from nodefleet.fleet import FleetReport
    from nodefleet.inventory import Inventory

# `nodefleet --help` must stay fast (issue 3: 150 ms), so this module imports little more than click: json, logging,
# pathlib, the inventory parser and the library are imported by the commands that use them.

T = TypeVar("T")
_STATUS_STYLE = {"healthy": "green", "failed": "bold red", "disabled": "dim", "removed": "yellow"}


@functools.cache
def _console(err: bool = False) -> Console:
    # rich is imported on first output only, so `nodefleet --help` stays fast.
    from rich.console import Console

    stream = sys.stderr if err else sys.stdout
    # Piped or captured output keeps whole columns instead of folding them to 80 characters.
    return Console(stderr=err, soft_wrap=True, width=None if stream.isatty() else 200)


def _configure_logging(verbose: int) -> None:
    import logging

    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="nodefleet: %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # asyncssh logs every packet at debug; its auth messages are not for the default output.
    logging.getLogger("asyncssh").setLevel(logging.WARNING if verbose < 3 else logging.DEBUG)


def _load(path: str) -> Inventory:
    from pathlib import Path

    from nodefleet.inventory import load_inventory

    return load_inventory(Path(path))


def _run(coroutine: Coroutine[Any, Any, T], *, tables: bool = False) -> T:
    """Run the library's coroutine. With `tables`, rich (for the tables at the end) is imported in a thread while
    the hosts answer, so that its import is off the critical path. The thread waits for the SSH stack's import
    first: both hold the interpreter, and the command needs the SSH stack before anything else."""
    import asyncio

    async def main() -> T:
        loader = asyncio.get_running_loop().run_in_executor(None, _import_rich) if tables else None
        try:
            return await coroutine
        finally:
            if loader is not None:
                await loader

    return asyncio.run(main())


def _import_rich() -> None:
    import importlib

    importlib.import_module("nodefleet.ssh")  # waits while the command's own import of it runs
    import rich.console
    import rich.markup
    import rich.table  # noqa: F401


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str, str], None]]:
    """A one-line spinner on stderr showing the latest step per host, only on a terminal."""
    if not enabled or not sys.stderr.isatty():  # before rich's import: `up` has no time for it up front
        yield lambda _host, _message: None
        return
    stderr = _console(err=True)
    if not stderr.is_terminal:
        yield lambda _host, _message: None
        return
    latest: dict[str, str] = {}
    with stderr.status("starting") as spinner:

        def update(host: str, message: str) -> None:
            latest[host] = message
            spinner.update("  ".join(f"{name}: {step}" for name, step in list(latest.items())[-4:]))

        yield update


def _render(report: FleetReport, as_json: bool) -> None:
    import json
    from collections import Counter

    from rich.table import Table

    stdout = _console()
    if as_json:
        stdout.out(json.dumps(report.as_json(), indent=2), highlight=False)
        return
    table = Table(title=f"builder {report.builder} — {report.command}", title_justify="left")
    for column in ("host", "address", "platform", "pinned", "engine", "BuildKit", "action", "status", "s"):
        table.add_column(column, justify="right" if column == "s" else "left")
    for host in report.hosts:
        style = _STATUS_STYLE.get(host.status, "")
        table.add_row(
            host.name,
            host.address,
            host.platform or "-",
            ",".join(host.pinned) or ("standby" if host.role == "standby" else "-"),
            host.engine or "-",
            host.buildkit or "-",
            host.action if host.action != "none" else "-",
            f"[{style}]{host.status}[/]" if style else host.status,
            f"{host.seconds:.1f}",
        )
    stdout.print(table)
    for host in report.hosts:
        if host.error:
            stdout.print(f"[red]{host.name}[/]: {host.error}", highlight=False)
        elif host.changes:
            stdout.print(f"{host.name}: {'; '.join(host.changes)}", highlight=False)
    for note in report.notes:
        stdout.print(f"note: {note}", highlight=False)
    counts = Counter(host.status for host in report.hosts)
    counts.setdefault("failed", 0)
    summary = ", ".join(f"{count} {name}" for name, count in sorted(counts.items()))
    if report.command == "up":
        summary += ", builder changed" if report.changed else ", no change"
    stdout.print(f"{summary} ({report.seconds:.1f} s)", highlight=False)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one red line to stderr and exit."""
    _console(err=True).print(f"[bold red]nodefleet:[/] {message}", highlight=False, markup=True)
    raise SystemExit(code)


inventory_option = click.option(
    "-i",
    "--inventory",
    "inventory_path",
    default=lambda: os.environ.get("NODEFLEET_INVENTORY", "inventory.toml"),
    show_default="inventory.toml or $NODEFLEET_INVENTORY",
    help="The inventory file.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print versioned JSON on stdout.")
parallel_option = click.option(
    "--parallel",
    type=click.IntRange(1, 256),
    default=None,
    help="Hosts worked on at once (default: inventory).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nodefleet")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-vv for debug).")
def cli(verbose: int) -> None:
    """Native multi-architecture builds: one buildx builder, one node per host, no QEMU."""
    _configure_logging(verbose)


@cli.command()
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
    from nodefleet import fleet
    from nodefleet.target import HostKeyPolicy

    inventory = _load(inventory_path)
    policy = HostKeyPolicy.ACCEPT_NEW if accept_new_host_keys else HostKeyPolicy.STRICT
    with _progress(not as_json) as progress:
        report = _run(
            fleet.up(inventory, fleet.FleetOptions(parallel=parallel, host_key_policy=policy, progress=progress)),
            tables=not as_json,
        )
    _render(report, as_json)
    raise SystemExit(report.exit_code)


@cli.command()
@inventory_option
@json_option
@parallel_option
def status(inventory_path: str, as_json: bool, parallel: int | None) -> None:
    """Show every host's and node's health, changing nothing."""
    from nodefleet import fleet

    inventory = _load(inventory_path)
    report = _run(fleet.status(inventory, fleet.FleetOptions(parallel=parallel)), tables=not as_json)
    _render(report, as_json)
    raise SystemExit(report.exit_code)


@cli.command()
@inventory_option
@json_option
@parallel_option
@click.option("--keep-state", is_flag=True, help="Keep the BuildKit state volumes (build cache) on the hosts.")
def down(inventory_path: str, as_json: bool, parallel: int | None, keep_state: bool) -> None:
    """Remove the builder and the BuildKit containers nodefleet made on the hosts."""
    from nodefleet import fleet

    inventory = _load(inventory_path)
    options = fleet.FleetOptions(parallel=parallel, keep_state=keep_state)
    report = _run(fleet.down(inventory, options), tables=not as_json)
    _render(report, as_json)
    raise SystemExit(report.exit_code)


@cli.group("inventory")
def inventory_group() -> None:
    """Check or export the inventory."""


@inventory_group.command("check")
@inventory_option
def inventory_check(inventory_path: str) -> None:
    """Validate the inventory without contacting any host."""
    inventory = _load(inventory_path)
    enabled = len(inventory.enabled_hosts)
    _console().print(f"{inventory.path}: builder {inventory.builder}, {len(inventory.hosts)} hosts ({enabled} enabled)")


@inventory_group.command("export")
@inventory_option
@click.option("--format", "export_format", type=click.Choice(["ansible"]), default="ansible", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write here instead of stdout.")
def inventory_export(inventory_path: str, export_format: str, output: str | None) -> None:
    """Write the inventory in another tool's format (an Ansible YAML inventory)."""
    from pathlib import Path

    from nodefleet.export import render_ansible_inventory

    text = render_ansible_inventory(_load(inventory_path))
    if output is None:
        click.echo(text, nl=False)
    else:
        Path(output).write_text(text)


# ---------------------------------------------------------------------------------------------- build
# (one block: the `build` command, its argument splitting and its rendering)

if TYPE_CHECKING:
    from rich.table import Table

    from nodefleet.buildreport import BuildReport, PlatformResult


class _BuildCommand(click.Command):
    """Parses nodefleet's own options; every other argument goes to `docker buildx build` untouched, in order."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        from nodefleet.buildargs import split_command_line

        own, rest = split_command_line(args)
        super().parse_args(ctx, own)
        ctx.args = rest
        return rest


def _write_err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _build_progress(label: str, line: str) -> None:
    _write_err(f"[{label}] {line}" if label else line)


@cli.command(
    "build",
    cls=_BuildCommand,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    options_metavar="[OPTIONS] [BUILDX BUILD OPTIONS] CONTEXT",
)
@inventory_option
@json_option
@parallel_option
@click.option(
    "--platform",
    "platforms",
    multiple=True,
    metavar="PLATFORM[,PLATFORM]",
    help="Target platforms (default: every platform of a healthy node).",
)
@click.option(
    "--allow-emulation",
    is_flag=True,
    help="Build a platform with no healthy native node under QEMU on another node (reported as emulated).",
)
@click.option(
    "--cache-ref",
    metavar="REPO",
    default=None,
    help="Registry cache per platform: cache-from and cache-to REPO:<platform>, mode=max.",
)
@click.pass_context
def build_command(
    ctx: click.Context,
    inventory_path: str,
    as_json: bool,
    parallel: int | None,
    platforms: tuple[str, ...],
    allow_emulation: bool,
    cache_ref: str | None,
) -> None:
    """Build natively on the fleet: nodefleet build [buildx build options] CONTEXT.

    Every platform is built on a healthy node of its own architecture, in parallel, never silently emulated; a
    down node's platform goes to another node of that platform. Every other option goes to docker buildx build
    untouched (-t, -f, --push, --load, --build-arg, --secret, --target, --metadata-file, ...).
    """
    from dataclasses import replace

    from nodefleet.build import build
    from nodefleet.buildargs import parse_request
    from nodefleet.buildstate import BuildOptions

    inventory = _load(inventory_path)
    request = parse_request(ctx.args, platforms=platforms, cache_ref=cache_ref, allow_emulation=allow_emulation)
    if request.reads_stdin:
        request = replace(request, stdin=sys.stdin.buffer.read())
    to_stdout = any(output.attrs.get("dest") == "-" for output in request.outputs)
    options = BuildOptions(
        parallel=parallel,
        progress=_build_progress,
        notice=lambda message: _write_err(f"nodefleet: {message}"),
        inherit_stdout=to_stdout,
    )
    report = _run(build(inventory, request, options), tables=not as_json)
    _render_build(report, as_json, err=to_stdout)
    raise SystemExit(report.exit_code)


def _failure_kind(result: PlatformResult) -> str:
    kind = str(result.error_kind or "")
    if kind == "dockerfile":
        return " (Dockerfile error, not retried)"
    if kind == "infrastructure":
        return " (infrastructure error" + (", also on the retry)" if len(result.attempts) > 1 else ", no other node)")
    return " (not retried)" if kind else ""


def _render_build(report: BuildReport, as_json: bool, *, err: bool) -> None:
    if as_json:  # no rich here: machines need no colours, and importing it costs a tenth of a second
        import json

        stream = sys.stderr if err else sys.stdout
        stream.write(json.dumps(report.as_json(), indent=2) + "\n")
        return
    from rich.markup import escape

    out = _console(err=err)
    out.print(_build_table(report))
    for result in report.platforms:
        for attempt in result.attempts[:-1]:
            line = f"{result.platform}: {attempt.node} failed ({attempt.error_kind}): {attempt.error}"
            out.print(escape(line), highlight=False)
        if result.error and result.status == "refused":
            out.print(f"[red]refused[/] {escape(result.error)}", highlight=False)
        elif result.error and result.status == "failed":
            kind = _failure_kind(result)
            out.print(f"[red]{result.platform}[/]{escape(kind)}: {escape(result.error)}", highlight=False)
    for node in report.nodes:
        if node.status == "failed":
            out.print(f"[yellow]{node.name}[/] not used: {escape(node.error or 'failed')}", highlight=False)
    if report.failure and not any(result.status == "refused" for result in report.platforms):
        out.print(f"[red]build failed:[/] {escape(report.failure)}", highlight=False)
    for note in report.notes:
        out.print(f"note: {escape(note)}", highlight=False)
    built = sum(1 for result in report.platforms if result.status == "built")
    summary = f"{built} of {len(report.platforms)} platforms built ({report.seconds:.1f} s)"
    if report.pushed:
        summary += f"; index {report.index_digest} pushed as {', '.join(report.names)}"
    out.print(summary, highlight=False)


def _build_table(report: BuildReport) -> Table:
    from rich.table import Table

    table = Table(title=f"builder {report.builder} — build", title_justify="left")
    for column in ("platform", "node", "mode", "status", "s", "cached", "manifest"):
        table.add_column(column, justify="right" if column in {"s", "cached"} else "left")
    styles = {"built": "green", "failed": "bold red", "refused": "bold red", "cancelled": "yellow"}
    for result in report.platforms:
        style = styles.get(result.status, "")
        node = result.node or "-"
        if len(result.attempts) > 1:
            node += f" (after {', '.join(attempt.node for attempt in result.attempts[:-1])})"
        mode = "-" if result.node is None else ("emulated" if result.emulated else "native")
        if result.emulated and result.node_platform:
            mode += f" on {result.node_platform}"
        table.add_row(
            result.platform,
            node,
            mode,
            f"[{style}]{result.status}[/]" if style else result.status,
            f"{result.seconds:.1f}",
            f"{result.cached_steps}/{result.steps}" if result.steps is not None else "-",
            result.manifest_digest or "-",
        )
    return table


def main() -> NoReturn:
    """Entry point: errors become one line on stderr and an exit code, never a traceback."""
    try:
        _main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    # Every file, lock and subprocess is closed by now: flush the output and skip the interpreter's teardown, which
    # frees each module and object one by one (about 0.1 s here after asyncssh and rich, for nothing).
    logging = sys.modules.get("logging")  # imported by the commands, not by --help
    if logging is not None:
        logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 1
    os._exit(code)


def _main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except click.Abort:
        fail("aborted", 130)
    except click.ClickException as exc:
        fail(exc.format_message(), 2)
    except NodefleetError as exc:
        lines = str(exc).splitlines() or [type(exc).__name__]
        for line in lines[:-1]:
            _console(err=True).print(f"[bold red]nodefleet:[/] {line}", highlight=False)
        fail(lines[-1], exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except OSError as exc:
        fail(f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}", 1)
