"""`nodefleet build`: nodefleet's own options parsed, every other argument handed to `docker buildx build`
untouched, the build library called, its report rendered."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from nodefleet.cli.common import (
    allow_emulation_option,
    cache_ref_option,
    console,
    inventory_option,
    json_option,
    load,
    parallel_option,
    platform_option,
    run,
    write_err,
)

if TYPE_CHECKING:
    from rich.table import Table

    from nodefleet.build.report import BuildReport, PlatformResult


class PassThroughCommand(click.Command):
    """Parses nodefleet's own options; every other argument goes to buildx untouched, in order (`split` tells them
    apart; imported when the command runs, so that `--help` stays fast)."""

    def split(self, args: list[str]) -> tuple[list[str], list[str]]:
        from nodefleet.build.cmdline import split_command_line

        return split_command_line(args)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        own, rest = self.split(args)
        super().parse_args(ctx, own)
        ctx.args = rest
        return rest


def build_progress(label: str, line: str) -> None:
    write_err(f"[{label}] {line}" if label else line)


@click.command(
    "build",
    cls=PassThroughCommand,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    options_metavar="[OPTIONS] [BUILDX BUILD OPTIONS] CONTEXT",
)
@inventory_option
@json_option
@parallel_option
@platform_option("Target platforms (default: every platform of a healthy node).")
@allow_emulation_option
@cache_ref_option("Registry cache per platform: cache-from and cache-to REPO:<platform>, mode=max.")
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

    from nodefleet.build.cmdline import parse_request
    from nodefleet.build.command import build
    from nodefleet.build.options import BuildOptions

    inventory = load(inventory_path)
    request = parse_request(ctx.args, platforms=platforms, cache_ref=cache_ref, allow_emulation=allow_emulation)
    if request.reads_stdin:
        request = replace(request, stdin=sys.stdin.buffer.read())
    to_stdout = any(output.attrs.get("dest") == "-" for output in request.outputs)
    options = BuildOptions(
        parallel=parallel,
        progress=build_progress,
        notice=lambda message: write_err(f"nodefleet: {message}"),
        inherit_stdout=to_stdout,
    )
    report = run(build(inventory, request, options), tables=not as_json)
    render_build(report, as_json, err=to_stdout)
    raise SystemExit(report.exit_code)


def _failure_kind(result: PlatformResult) -> str:
    kind = str(result.error_kind or "")
    if kind == "dockerfile":
        return " (Dockerfile error, not retried)"
    if kind == "infrastructure":
        return " (infrastructure error" + (", also on the retry)" if len(result.attempts) > 1 else ", no other node)")
    return " (not retried)" if kind else ""


def render_build(report: BuildReport, as_json: bool, *, err: bool) -> None:
    if as_json:  # no rich here: machines need no colours, and importing it costs a tenth of a second
        import json

        stream = sys.stderr if err else sys.stdout
        stream.write(json.dumps(report.as_json(), indent=2) + "\n")
        return
    from rich.markup import escape

    out = console(err=err)
    out.print(_build_table(report))
    for result in report.platforms:
        for attempt in result.attempts[:-1]:
            line = f"{_what(result)}: {attempt.node} failed ({attempt.error_kind}): {attempt.error}"
            out.print(escape(line), highlight=False)
        if result.error and result.status == "refused":
            out.print(f"[red]refused[/] {escape(result.error)}", highlight=False)
        elif result.error and result.status == "failed":
            kind = _failure_kind(result)
            out.print(f"[red]{escape(_what(result))}[/]{escape(kind)}: {escape(result.error)}", highlight=False)
    for node in report.nodes:
        if node.status == "failed":
            out.print(f"[yellow]{node.name}[/] not used: {escape(node.error or 'failed')}", highlight=False)
    if report.failure and not any(result.status == "refused" for result in report.platforms):
        out.print(f"[red]{report.command} failed:[/] {escape(report.failure)}", highlight=False)
    for note in report.notes:
        out.print(f"note: {escape(note)}", highlight=False)
    built = sum(1 for result in report.platforms if result.status == "built")
    what = "target platforms" if report.command == "bake" else "platforms"
    took = "makespan" if report.command == "bake" else ""
    summary = f"{built} of {len(report.platforms)} {what} built ({took}{' ' if took else ''}{report.seconds:.1f} s)"
    if report.pushed:
        summary += f"; index {report.index_digest} pushed as {', '.join(report.names)}"
    for index in report.indexes:
        summary += f"\n{index['target']}: index {index['index_digest']} pushed as {', '.join(index['names'])}"
    out.print(summary, highlight=False)


def _what(result: PlatformResult) -> str:
    return f"{result.target} {result.platform}" if result.target else result.platform


def _build_table(report: BuildReport) -> Table:
    from rich.table import Table

    table = Table(title=f"builder {report.builder} — {report.command}", title_justify="left")
    targets = report.command == "bake"
    for column in ("target", "platform", "node", "mode", "status", "s", "cached", "manifest")[0 if targets else 1 :]:
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
            *([result.target or "-"] if targets else []),
            result.platform,
            node,
            mode,
            f"[{style}]{result.status}[/]" if style else result.status,
            f"{result.seconds:.1f}",
            f"{result.cached_steps}/{result.steps}" if result.steps is not None else "-",
            result.manifest_digest or "-",
        )
    return table
