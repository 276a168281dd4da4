"""After the platforms are built: one index under every name from the platforms' pushed images, and one metadata
file merged from every platform's."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from nodefleet.build.argv import repository
from nodefleet.build.context import Context
from nodefleet.build.output import index_digests, merge_metadata
from nodefleet.build.report import BuildReport, PlatformResult
from nodefleet.buildx.argv import imagetools_create_argv, imagetools_inspect_argv
from nodefleet.errors import CommandError
from nodefleet.redact import mask, secret_values
from nodefleet.runner import run_local

INDEX_TIMEOUT = 300.0  # seconds for `imagetools create`: a registry that stops answering must not hang the build


async def assemble_index(ctx: Context, report: BuildReport) -> None:
    """Put the platforms' pushed images in one index under every name, then read its manifests back."""
    names = ctx.request.image_names
    try:
        digest = await make_index(ctx, names, report.platforms)
    except IndexFailure as exc:
        report.failure = str(exc)
        return
    report.pushed = True
    report.names = tuple(names)
    report.index_digest = digest
    for result in report.platforms:
        if result.manifest_digest is None:
            report.failure = f"the pushed index {names[0]} has no {result.platform} manifest"


class IndexFailure(Exception):
    """The index of pushed platforms could not be made; one line for the report."""


async def make_index(ctx: Context, names: Sequence[str], results: Sequence[PlatformResult]) -> str | None:
    """One index under every name from these results' pushed images (by digest, in one repository); each result
    gets its manifest's digest in the index. Returns the index's digest."""
    repo = repository(names[0])
    sources = []
    for result in results:
        digest = result.metadata.get("containerimage.digest")
        if not digest:
            raise IndexFailure(
                f"{result.platform}: buildx's metadata has no containerimage.digest; nothing to assemble"
            )
        sources.append(f"{repo}@{digest}")
    node = results[0].node or ""
    helper, env = ctx.used.get(node) or (await ctx.helper(node, gateway=False), None)
    ctx.options.notice(f"assembling the index {', '.join(names)} from {len(sources)} platforms")
    timeout = max(INDEX_TIMEOUT, ctx.inventory.defaults.command_timeout)
    try:
        await _run_logged(ctx, imagetools_create_argv(helper, names, sources), env, timeout)
        inspected = await run_local(imagetools_inspect_argv(helper, names[0]), timeout=120, env=env)
    except CommandError as exc:
        again = " ".join([*(f"-t {name}" for name in names), *sources])
        raise IndexFailure(
            f"assembling the index failed: {exc}; the platforms are pushed, make it again with "
            f"`docker buildx imagetools create {again}`"
        ) from None
    index_digest, digests = index_digests(inspected.stdout)
    for result in results:
        result.manifest_digest = digests.get(result.platform)
    return index_digest


async def _run_logged(ctx: Context, argv: list[str], env: Mapping[str, str] | None, timeout: float) -> None:
    """Run an imagetools command within `timeout`, its output passed on as progress lines labelled `index`."""
    result = await run_local(argv, timeout=timeout, env=env)
    for line in result.stderr.splitlines():
        ctx.options.progress("index", line)


def write_metadata(ctx: Context, report: BuildReport) -> None:
    """The user's --iidfile and --metadata-file, for the whole build."""
    request = ctx.request
    if report.index_digest and request.iidfile:
        Path(request.iidfile).write_text(report.index_digest)
    if not request.metadata_file:
        return
    per_platform = {result.platform: result.metadata for result in report.platforms if result.metadata}
    nodes = {result.platform: result.node or "" for result in report.platforms}
    merged = merge_metadata(per_platform, nodes, index_digest=report.index_digest, names=report.names)
    # buildx 0.29's provenance in the metadata holds the build arguments: secret ones are masked there too.
    secrets = secret_values(list(request.passthrough))
    Path(request.metadata_file).write_text(mask(json.dumps(merged, indent=2), secrets) + "\n")
