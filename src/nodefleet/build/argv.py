"""Pure argv for one platform's `docker buildx build` on one node's builder, from the user's BuildRequest: pushes
go by digest to the repository, local folders get a subfolder per platform, one registry cache per platform."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nodefleet.build.cmdline import TRUE_VALUES, BuildRequest, Output, format_output


def repository(reference: str) -> str:
    """`reg:5000/app:1.0` or `reg/app@sha256:...` -> `reg:5000/app`."""
    name = reference.split("@", 1)[0]
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > last_slash else name


def platform_slug(platform: str) -> str:
    """`linux/arm/v7` -> `linux-arm-v7` (a registry tag)."""
    return platform.replace("/", "-")


def platform_dir(platform: str) -> str:
    """`linux/arm/v7` -> `linux_arm_v7`, the folder buildx's multi-platform local output uses."""
    return platform.replace("/", "_")


def platform_output(output: Output, names: Sequence[str], platform: str, platforms: int) -> Output:
    """The output of one platform's build of an image named `names`: pushes go by digest to the repository; local
    folders get a subfolder per platform."""
    if output.push:
        keep = {
            key: value
            for key, value in output.attrs.items()
            if key not in {"name", "push", "push-by-digest", "name-canonical"}
        }
        repo = repository(names[0])
        return Output(
            "image", {**keep, "name": repo, "push-by-digest": "true", "name-canonical": "true", "push": "true"}
        )
    if output.type == "local" and platforms > 1 and output.attrs.get("platform-split", "true").lower() in TRUE_VALUES:
        dest = output.attrs.get("dest", ".")
        return Output("local", {**output.attrs, "dest": str(Path(dest) / platform_dir(platform))})
    return output


def cache_args(cache_ref: str, platform: str) -> list[str]:
    """One registry cache per platform (a shared ref keeps only the last platform's, buildx #1044)."""
    ref = f"{cache_ref}:{platform_slug(platform)}"
    return ["--cache-from", f"type=registry,ref={ref}", "--cache-to", f"type=registry,ref={ref},mode=max"]


def platform_argv(
    request: BuildRequest,
    platform: str,
    builder: str,
    *,
    platforms: int,
    metadata_file: str,
    progress: str,
) -> list[str]:
    """`docker buildx build` for one platform on one node's builder."""
    argv = ["docker", "buildx", "build", "--builder", builder, "--platform", platform, "--progress", progress]
    argv += request.passthrough
    if not request.push:
        for tag in request.tags:
            argv += ["--tag", tag]
    for output in request.outputs:
        argv += ["--output", format_output(platform_output(output, request.image_names, platform, platforms))]
    if request.cache_ref:
        argv += cache_args(request.cache_ref, platform)
    argv += ["--metadata-file", metadata_file]
    if request.iidfile and platforms == 1 and not request.push:
        argv += ["--iidfile", request.iidfile]
    return [*argv, "--", request.context]


def progress_mode(request: BuildRequest, builds: int) -> tuple[str, bool]:
    """(--progress value, whether buildx's stderr goes straight to ours): plain lines unless one build asks tty."""
    wanted = (request.progress or "plain").lower()
    if wanted == "tty" and builds == 1:
        return "tty", True
    if wanted in {"quiet", "rawjson"}:
        return wanted, False
    return "plain", False
