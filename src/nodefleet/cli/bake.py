"""`nodefleet bake`: nodefleet's own options parsed, the bake options sorted (files, overrides, targets, outputs),
the bake library called, its report rendered."""

from __future__ import annotations

import click

from nodefleet.cli.build import PassThroughCommand, build_progress, render_build
from nodefleet.cli.common import (
    allow_emulation_option,
    cache_ref_option,
    inventory_option,
    json_option,
    load,
    parallel_option,
    platform_option,
    run,
    write_err,
)


class _BakeCommand(PassThroughCommand):
    """Parses nodefleet's own options; every other argument is `docker buildx bake`'s."""

    def split(self, args: list[str]) -> tuple[list[str], list[str]]:
        from nodefleet.build.bakeargs import split_bake_line

        return split_bake_line(args)


@click.command(
    "bake",
    cls=_BakeCommand,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    options_metavar="[OPTIONS] [BUILDX BAKE OPTIONS] [TARGET...]",
)
@inventory_option
@json_option
@parallel_option
@platform_option("Platforms of every target (default: each target's own, else every platform of a healthy node).")
@allow_emulation_option
@cache_ref_option("Registry cache per target and platform: cache-from and cache-to REPO:<target>-<platform>, mode=max.")
@click.pass_context
def bake_command(
    ctx: click.Context,
    inventory_path: str,
    as_json: bool,
    parallel: int | None,
    platforms: tuple[str, ...],
    allow_emulation: bool,
    cache_ref: str | None,
) -> None:
    """Build every target of a bake or compose file natively on the fleet: nodefleet bake [bake options] [TARGET...].

    The definition is read through docker buildx bake --print (-f, --set, variables, groups). Each target's
    platforms become jobs, each on a healthy node of exactly that platform; the nodes of a platform share its
    jobs by capacity (speed, max_jobs in the inventory), at once. --push makes one index per target.
    """
    from nodefleet.build.bake import bake
    from nodefleet.build.bakeargs import parse_bake_request
    from nodefleet.build.options import BuildOptions

    inventory = load(inventory_path)
    request = parse_bake_request(ctx.args, platforms=platforms, cache_ref=cache_ref, allow_emulation=allow_emulation)
    options = BuildOptions(
        parallel=parallel,
        progress=build_progress,
        notice=lambda message: write_err(f"nodefleet: {message}"),
    )
    report = run(bake(inventory, request, options), tables=not as_json)
    render_build(report, as_json, err=False)
    raise SystemExit(report.exit_code)
