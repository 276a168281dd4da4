"""A bake definition as nodefleet schedules it (pure): the targets buildx resolved (`docker buildx bake --print`,
so HCL, JSON and compose files, variables, `inherits` and `--set` all mean what buildx says), grouped into jobs of
one platform each, and the argv that runs one job.

Targets that use another target as a context (`contexts = { x = "target:y" }`) are built together, as one bake on
one node per platform: buildx then resolves the `target:` context itself, on the node that holds the dependency.
Requested targets sharing a dependency are one group too, so it is built once per platform."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodefleet.build.argv import cache_args, platform_output, platform_slug
from nodefleet.build.cmdline import Output, check_split, format_output, parse_output
from nodefleet.errors import UsageError
from nodefleet.platforms import known_platform

_NOT_LOCAL = ("target:", "docker-image://", "oci-layout://", "http://", "https://", "git@", "git://", "ssh://")


@dataclass(frozen=True)
class BakeTarget:
    """One target as buildx resolved it."""

    name: str
    platforms: tuple[str, ...]
    tags: tuple[str, ...]
    outputs: tuple[Output, ...]
    depends: tuple[str, ...]  # targets it uses as `target:` contexts


@dataclass(frozen=True)
class Definition:
    """The resolved definition: every target, the requested ones (in order), and the document to hand to buildx
    (local paths made absolute, so it means the same from any folder)."""

    targets: Mapping[str, BakeTarget]
    requested: tuple[str, ...]
    document: Mapping[str, Any]


@dataclass(frozen=True)
class BakeJob:
    """Targets built together for one platform on one node."""

    targets: tuple[str, ...]
    platform: str

    @property
    def key(self) -> str:
        """The job's name in progress lines, files and the record: `app+api linux/arm64`."""
        return f"{'+'.join(self.targets)} {self.platform}"


def parse_definition(text: str, cwd: Path) -> Definition:
    """`docker buildx bake --print` output as a Definition; relative local paths are taken from `cwd`."""
    try:
        document = json.loads(text)
        targets_doc: dict[str, Any] = document["target"]
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"docker buildx bake --print gave no definition nodefleet can read: {exc}") from None
    targets = {name: _target(name, fields) for name, fields in targets_doc.items()}
    group = ((document.get("group") or {}).get("default") or {}).get("targets") or []
    needed = {dep for target in targets.values() for dep in target.depends}
    requested = tuple(name for name in group if name in targets) or tuple(n for n in targets if n not in needed)
    absolute = {"group": document.get("group") or {}, "target": {n: _absolute(f, cwd) for n, f in targets_doc.items()}}
    return Definition(targets, requested, absolute)


def _target(name: str, fields: Mapping[str, Any]) -> BakeTarget:
    try:
        platforms = tuple(known_platform(p) for p in fields.get("platforms") or [])
    except ValueError as exc:
        raise UsageError(f"bake target {name}: {exc}") from None
    contexts = fields.get("contexts") or {}
    return BakeTarget(
        name=name,
        platforms=platforms,
        tags=tuple(str(tag) for tag in fields.get("tags") or []),
        outputs=tuple(parse_output(str(output)) for output in fields.get("output") or []),
        depends=tuple(str(value)[len("target:") :] for value in contexts.values() if str(value).startswith("target:")),
    )


def _absolute(fields: Mapping[str, Any], cwd: Path) -> dict[str, Any]:
    """A target's fields with its local context, named contexts and dockerfile path made absolute."""
    result = dict(fields)
    context = str(fields.get("context") or ".")
    if _local(context):
        result["context"] = str((cwd / context).resolve())
    contexts = fields.get("contexts")
    if isinstance(contexts, dict):
        result["contexts"] = {k: str((cwd / v).resolve()) if _local(str(v)) else v for k, v in contexts.items()}
    return result


def _local(path: str) -> bool:
    return path != "-" and "://" not in path and not path.startswith(_NOT_LOCAL)


def _closure(name: str, targets: Mapping[str, BakeTarget]) -> set[str]:
    seen: set[str] = set()
    stack = [name]
    while stack:
        current = stack.pop()
        if current in seen or current not in targets:
            continue
        seen.add(current)
        stack.extend(targets[current].depends)
    return seen


def groups(definition: Definition) -> list[tuple[str, ...]]:
    """The requested targets in groups built together: linked through a shared target (a `target:` context)."""
    found: list[tuple[set[str], list[str]]] = []
    for name in definition.requested:
        closure = _closure(name, definition.targets)
        joined = [group for group in found if group[0] & closure]
        members = [name] + [member for group in joined for member in group[1]]
        union = closure.union(*(group[0] for group in joined))
        found = [group for group in found if group not in joined] + [(union, members)]
    order = {name: index for index, name in enumerate(definition.requested)}
    return sorted((tuple(sorted(members, key=order.__getitem__)) for _, members in found), key=lambda g: order[g[0]])


def plan_jobs(definition: Definition, override: Sequence[str], default: Sequence[str]) -> list[BakeJob]:
    """One job per group and platform. A target builds for `override` (--platform) when given, else its own
    platforms, else `default` (every platform of a healthy node)."""
    jobs: list[BakeJob] = []
    for group in groups(definition):
        platforms: list[str] = []
        for name in group:
            for platform in target_platforms(definition.targets[name], override, default):
                if platform not in platforms:
                    platforms.append(platform)
        for platform in platforms:
            members = tuple(n for n in group if platform in target_platforms(definition.targets[n], override, default))
            jobs.append(BakeJob(members, platform))
    return jobs


def target_platforms(target: BakeTarget, override: Sequence[str], default: Sequence[str]) -> tuple[str, ...]:
    """The platforms a target builds for."""
    return tuple(override) or target.platforms or tuple(default)


def target_outputs(target: BakeTarget, push: bool, load: bool) -> tuple[Output, ...]:
    """What a target exports: --push and --load replace the file's outputs, as with buildx."""
    if push:
        return (Output("registry"),)
    if load:
        return (Output("docker"),)
    return target.outputs


def check_targets(definition: Definition, jobs: Sequence[BakeJob], *, push: bool, load: bool) -> None:
    """Refuse, before any host is contacted, what several nodes cannot make and pushes without a name."""
    for name in definition.requested:
        target = definition.targets[name]
        outputs = target_outputs(target, push, load)
        count = sum(1 for job in jobs if name in job.targets)
        check_split(outputs, count, f"bake target {name}: ")
        if any(output.push for output in outputs) and not (target.tags or any(o.names for o in outputs)):
            raise UsageError(f"bake target {name}: pushing needs an image name: add tags to the target")


def target_names(target: BakeTarget, outputs: Sequence[Output]) -> tuple[str, ...]:
    """The names a target's pushed index gets: its push output's own names, else its tags."""
    for output in outputs:
        if output.push and output.names:
            return output.names
    return target.tags


def job_argv(
    definition_file: str,
    builder: str,
    job: BakeJob,
    definition: Definition,
    *,
    push: bool,
    load: bool,
    cache_ref: str | None,
    passthrough: Sequence[str],
    platforms_of: Mapping[str, int],
    metadata_file: str,
    progress: str,
) -> list[str]:
    """`docker buildx bake` running one job: its targets (and what they depend on) for its platform, on one node's
    builder, each target's outputs split as for `nodefleet build` (pushed by digest, a folder per platform)."""
    argv = ["docker", "buildx", "bake", "--builder", builder, "--file", definition_file, "--progress", progress]
    argv += ["--metadata-file", metadata_file, *passthrough, "--set", f"*.platform={job.platform}"]
    for name in job.targets:
        target = definition.targets[name]
        outputs = target_outputs(target, push, load)
        names = target_names(target, outputs)
        for output in outputs:
            split = platform_output(output, names, job.platform, platforms_of[name])
            argv += ["--set", f"{name}.output={format_output(split)}"]
            if output.push:  # pushed by digest: the tags go on the index, and buildx would push them here
                argv += ["--set", f"{name}.tags="]
        if cache_ref:
            ref = cache_args(f"{cache_ref}", f"{name}-{platform_slug(job.platform)}")
            argv += ["--set", f"{name}.cache-from={ref[1]}", "--set", f"{name}.cache-to={ref[3]}"]
    return [*argv, *job.targets]
