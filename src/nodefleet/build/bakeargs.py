"""Pure parsing of `nodefleet bake`'s command line: nodefleet's own options, the bake options nodefleet handles
(files, overrides, targets, --push, --load, --metadata-file, --progress), and the rest passed to every job's
`docker buildx bake` untouched."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nodefleet.build.cmdline import TRUE_VALUES, check_repository, known_platforms, split_command_line
from nodefleet.errors import UsageError

# `docker buildx bake` options that take a value (v0.13 to v0.3x).
BAKE_VALUE_OPTIONS = frozenset(
    {"file", "set", "progress", "metadata-file", "builder", "allow", "call", "provenance", "sbom", "var", "list"}
)
_REFUSED = {
    "builder": "nodefleet bake chooses the builders from the inventory (-i); drop --builder",
    "print": "for the resolved definition, run docker buildx bake --print",
    "list": "to list targets, run docker buildx bake --list",
    "call": "nodefleet bake builds; for --call or --check run docker buildx bake",
    "check": "nodefleet bake builds; for --call or --check run docker buildx bake",
}


@dataclass(frozen=True)
class BakeRequest:
    """What the user asked `nodefleet bake` for."""

    files: tuple[str, ...] = ()  # -f, as given
    sets: tuple[str, ...] = ()  # --set, as given
    targets: tuple[str, ...] = ()
    passthrough: tuple[str, ...] = ()  # other bake options, in order
    platforms: tuple[str, ...] = ()
    push: bool = False
    load: bool = False
    cache_ref: str | None = None
    allow_emulation: bool = False
    metadata_file: str | None = None
    progress: str | None = None
    cwd: Path = field(default_factory=Path.cwd)

    def print_argv(self) -> list[str]:
        """`docker buildx bake --print` with the user's files, overrides and targets."""
        argv = ["docker", "buildx", "bake", "--print"]
        for name in self.files:
            argv += ["--file", name]
        for value in self.sets:
            argv += ["--set", value]
        return [*argv, *self.targets]


def split_bake_line(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate nodefleet's own options from `docker buildx bake`'s, keeping each side's order."""
    return split_command_line(args, _takes_value)


def _takes_value(word: str) -> bool:
    if word.startswith("--"):
        return "=" not in word and word[2:] in BAKE_VALUE_OPTIONS
    return word == "-f"


def parse_bake_request(
    args: Sequence[str],
    *,
    platforms: Sequence[str] = (),
    cache_ref: str | None = None,
    allow_emulation: bool = False,
) -> BakeRequest:
    """Sort `docker buildx bake` arguments into a BakeRequest; raise UsageError for what cannot work."""
    found: dict[str, list[str]] = {"file": [], "set": [], "targets": [], "passthrough": []}
    index = 0
    while index < len(args):
        word = args[index]
        index += 1
        if word == "--":
            found["targets"] += args[index:]
            break
        if not word.startswith("-") or word == "-":
            found["targets"].append(word)
            continue
        name, value, index = _option(word, args, index)
        _take(found, word, name, value)
    if cache_ref is not None:
        check_repository(cache_ref, "--cache-ref")
    push, load = bool(found.get("push")), bool(found.get("load"))
    if push and load:
        raise UsageError("--push and --load at once: choose one (nodefleet loads only single-platform targets)")
    return BakeRequest(
        files=tuple(found["file"]),
        sets=tuple(found["set"]),
        targets=tuple(found["targets"]),
        passthrough=tuple(found["passthrough"]),
        platforms=known_platforms(",".join(platforms)),
        push=push,
        load=load,
        cache_ref=cache_ref,
        allow_emulation=allow_emulation,
        metadata_file=_last(found.get("metadata-file")),
        progress=_last(found.get("progress")),
    )


def _last(values: list[str] | None) -> str | None:
    return values[-1] if values else None


def _option(word: str, args: Sequence[str], index: int) -> tuple[str, str | None, int]:
    """(long name, value or None for a flag, the index after it) of the option `word` (its value maybe next)."""
    if word.startswith("-f") and not word.startswith("--"):
        name, value = "file", word[2:] or None
    else:
        name, sep, text = word[2:].partition("=")
        value = text if sep else None
    if name in BAKE_VALUE_OPTIONS and value is None:
        if index >= len(args):
            raise UsageError(f"{word} needs a value")
        value, index = args[index], index + 1
    return name, value, index


def _take(found: dict[str, list[str]], word: str, name: str, value: str | None) -> None:
    if name in _REFUSED:
        raise UsageError(_REFUSED[name])
    if name in {"file", "set"}:
        found[name].append(value or "")
    elif name in {"push", "load"}:
        found[name] = ["true"] if value is None or value.lower() in TRUE_VALUES else []
    elif name in {"metadata-file", "progress"}:
        found[name] = [value or ""]
    elif value is not None and "=" not in word and name in BAKE_VALUE_OPTIONS:
        found["passthrough"] += [word, value]
    else:
        found["passthrough"].append(word)
