"""Pure parsing of `nodefleet build`'s command line, and the buildx argv built from it.

`split_command_line` separates nodefleet's own options from `docker buildx build`'s; `parse_request` sorts the
latter into a BuildRequest (tags, outputs, platforms, cache ref), refusing what cannot work, and `check_outputs`
what several nodes cannot make. The argv the build runs is in nodefleet.build.argv. Nothing here touches a host,
a file or a process.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from nodefleet.errors import UsageError
from nodefleet.platforms import known_platform

# ---------------------------------------------------------------------------------------------- the command line

# nodefleet's own options; everything else belongs to `docker buildx build`.
OWN_VALUE_OPTIONS = frozenset({"-i", "--inventory", "--platform", "--cache-ref", "--parallel"})
OWN_FLAG_OPTIONS = frozenset({"--allow-emulation", "--json", "-h", "--help"})

# `docker buildx build` options that take a value (v0.13 to v0.3x, hidden legacy ones included), so that a value
# is never mistaken for the build context or for a nodefleet option.
BUILDX_VALUE_OPTIONS = frozenset(
    {
        "add-host",
        "allow",
        "annotation",
        "attest",
        "build-arg",
        "build-context",
        "builder",
        "cache-from",
        "cache-to",
        "call",
        "cgroup-parent",
        "cpu-period",
        "cpu-quota",
        "cpu-shares",
        "cpuset-cpus",
        "cpuset-mems",
        "file",
        "iidfile",
        "invoke",
        "isolation",
        "label",
        "memory",
        "memory-swap",
        "metadata-file",
        "network",
        "no-cache-filter",
        "output",
        "platform",
        "policy",
        "print",
        "progress",
        "provenance",
        "resource",
        "root",
        "sbom",
        "secret",
        "security-opt",
        "server-config",
        "shm-size",
        "ssh",
        "tag",
        "target",
        "ulimit",
    }
)
BUILDX_SHORT = {"f": "file", "o": "output", "t": "tag", "q": "quiet", "m": "memory", "c": "cpu-shares"}
TRUE_VALUES = {"1", "t", "true", "yes", "on"}


def split_command_line(
    args: Sequence[str], takes_value: Callable[[str], bool] | None = None
) -> tuple[list[str], list[str]]:
    """Separate nodefleet's own options from `docker buildx build`'s (or, with bake's `takes_value`, `bake`'s),
    keeping each side's order.

    Values of buildx options are skipped over, so `--label --json` or `-f -i.Dockerfile` stay buildx's.
    """
    takes_value = takes_value or _takes_next_value
    own: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(args):
        word = args[index]
        index += 1
        name = word.split("=", 1)[0]
        if word == "--":
            rest += args[index - 1 :]
            break
        if name in OWN_FLAG_OPTIONS and "=" not in word:
            own.append(word)
        elif name in OWN_VALUE_OPTIONS or (word.startswith("-i") and not word.startswith("--")):
            own.append(word)
            if "=" not in word and word in OWN_VALUE_OPTIONS and index < len(args):
                own.append(args[index])
                index += 1
        else:
            rest.append(word)
            if takes_value(word) and index < len(args):
                rest.append(args[index])
                index += 1
    return own, rest


def _takes_next_value(word: str) -> bool:
    """True when a buildx option word's value is the next word."""
    if word.startswith("--"):
        return "=" not in word and word[2:] in BUILDX_VALUE_OPTIONS
    if word.startswith("-") and len(word) > 1:
        # A short cluster (-qt): the first option taking a value takes the rest of the word, or the next one.
        for position, char in enumerate(word[1:], start=1):
            if BUILDX_SHORT.get(char, "quiet") in BUILDX_VALUE_OPTIONS:
                return position == len(word) - 1
    return False


@dataclass(frozen=True)
class _Arg:
    """One parsed command-line item: an option (long name) with its value, or a positional (name None)."""

    name: str | None
    value: str | None
    raw: tuple[str, ...]


def _parse_items(args: Sequence[str]) -> list[_Arg]:
    items: list[_Arg] = []
    index = 0
    while index < len(args):
        word = args[index]
        index += 1
        if word == "--":
            items += [_Arg(None, value, (value,)) for value in args[index:]]
            break
        if word.startswith("--"):
            name, sep, value = word[2:].partition("=")
            if sep or name not in BUILDX_VALUE_OPTIONS:
                items.append(_Arg(name, value if sep else None, (word,)))
                continue
            if index >= len(args):
                raise UsageError(f"{word} needs a value")
            items.append(_Arg(name, args[index], (word, args[index])))
            index += 1
        elif word.startswith("-") and word != "-":
            consumed, index = _parse_short(word, args, index)
            items += consumed
        else:
            items.append(_Arg(None, word, (word,)))
    return items


def _parse_short(word: str, args: Sequence[str], index: int) -> tuple[list[_Arg], int]:
    items = []
    for position, char in enumerate(word[1:], start=1):
        name = BUILDX_SHORT.get(char)
        if name is None:
            items.append(_Arg(f"-{char}", None, (f"-{char}",)))
            continue
        if name not in BUILDX_VALUE_OPTIONS:
            items.append(_Arg(name, None, (f"-{char}",)))
            continue
        value = word[position + 1 :]
        if not value:
            if index >= len(args):
                raise UsageError(f"-{char} needs a value")
            value = args[index]
            index += 1
        items.append(_Arg(name, value, (f"-{char}", value)))
        break
    return items, index


@dataclass(frozen=True)
class Output:
    """One `--output` of buildx: its type and attributes (`--push` is type registry, `--load` type docker)."""

    type: str
    attrs: Mapping[str, str] = field(default_factory=dict)

    @property
    def push(self) -> bool:
        """True when this output pushes to a registry."""
        return self.type == "registry" or (self.type == "image" and self.attrs.get("push", "").lower() in TRUE_VALUES)

    @property
    def names(self) -> tuple[str, ...]:
        """Image names given in the output itself (`name=a,b`)."""
        return tuple(name for name in self.attrs.get("name", "").split(",") if name)


def parse_output(value: str) -> Output:
    """Parse one `--output` value the way buildx does (`-` is a tar on stdout, a bare path a local folder)."""
    if value == "-":
        return Output("tar", {"dest": "-"})
    if "=" not in value and "," not in value:
        return Output("local", {"dest": value})
    attrs: dict[str, str] = {}
    for field_text in next(csv.reader([value])):
        key, sep, item = field_text.partition("=")
        if not sep:
            raise UsageError(f"--output {value!r}: {field_text!r} is not key=value")
        attrs[key.strip().lower()] = item
    kind = attrs.pop("type", "")
    if not kind:
        raise UsageError(f"--output {value!r}: type is required (type=registry, image, local, tar, oci, docker)")
    return Output(kind, attrs)


def format_csv(fields: Mapping[str, str]) -> str:
    """key=value pairs as buildx reads them (CSV, quoted where a value holds a comma or a quote)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow([f"{key}={value}" for key, value in fields.items()])
    return buffer.getvalue()


def format_output(output: Output) -> str:
    """An Output back as a `--output` value."""
    return format_csv({"type": output.type, **output.attrs})


@dataclass(frozen=True)
class BuildRequest:
    """What the user asked for: the buildx options, sorted into what nodefleet handles and what passes through."""

    context: str
    passthrough: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    outputs: tuple[Output, ...] = ()
    platforms: tuple[str, ...] = ()
    cache_ref: str | None = None
    allow_emulation: bool = False
    metadata_file: str | None = None
    iidfile: str | None = None
    progress: str | None = None
    reads_stdin: bool = False
    stdin: bytes | None = None

    @property
    def push(self) -> bool:
        """True when the build pushes to a registry."""
        return any(output.push for output in self.outputs)

    @property
    def image_names(self) -> tuple[str, ...]:
        """Names the pushed index gets: the push output's own names, else the tags."""
        for output in self.outputs:
            if output.push and output.names:
                return output.names
        return self.tags


_INTERCEPTED = {"tag", "output", "push", "load", "metadata-file", "iidfile", "progress", "builder", "platform"}
_REF_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_REGISTRY_HOST = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]+)?")


def parse_request(
    args: Sequence[str],
    *,
    platforms: Sequence[str] = (),
    cache_ref: str | None = None,
    allow_emulation: bool = False,
) -> BuildRequest:
    """Sort `docker buildx build` arguments into a BuildRequest; raise UsageError for what cannot work."""
    passthrough: list[str] = []
    tags: list[str] = []
    outputs: list[Output] = []
    positionals: list[str] = []
    found: dict[str, str] = {}
    cache_to = False
    for item in _parse_items(args):
        if item.name is None:
            positionals.append(item.value or "")
        elif item.name in _INTERCEPTED:
            _intercept(item, tags, outputs, found)
        else:
            cache_to = cache_to or item.name == "cache-to"
            passthrough += item.raw
            if item.name in {"file", "f"} and item.value == "-":
                found["stdin"] = "file"
    if len(positionals) != 1:
        what = "no build context" if not positionals else f"several build contexts: {' '.join(positionals)}"
        raise UsageError(f"{what}; give exactly one PATH, URL or - after the buildx options")
    if cache_ref is not None:
        check_repository(cache_ref, "--cache-ref")
        if cache_to:
            raise UsageError("--cache-ref writes one cache per platform; drop --cache-to (or drop --cache-ref)")
    request = BuildRequest(
        context=positionals[0],
        passthrough=tuple(passthrough),
        tags=tuple(tags),
        outputs=tuple(outputs),
        platforms=known_platforms(",".join([*platforms, found.get("platform", "")])),
        cache_ref=cache_ref,
        allow_emulation=allow_emulation,
        metadata_file=found.get("metadata-file"),
        iidfile=found.get("iidfile"),
        progress=found.get("progress"),
        reads_stdin=positionals[0] == "-" or "stdin" in found,
    )
    if request.push and not request.image_names:
        raise UsageError("pushing needs an image name: add -t REGISTRY/REPOSITORY:TAG")
    if len([output for output in outputs if output.push]) > 1:
        raise UsageError("one pushing output at a time (--push or --output type=registry|image,push=true)")
    return request


def _intercept(item: _Arg, tags: list[str], outputs: list[Output], found: dict[str, str]) -> None:
    value = item.value
    if item.name == "builder":
        raise UsageError("nodefleet build chooses the builder from the inventory (-i); drop --builder")
    if item.name == "push":
        if value is None or value.lower() in TRUE_VALUES:
            outputs.append(Output("registry"))
        return
    if item.name == "load":
        if value is None or value.lower() in TRUE_VALUES:
            outputs.append(Output("docker"))
        return
    if value is None:
        raise UsageError(f"--{item.name} needs a value")
    if item.name == "tag":
        tags.append(value)
    elif item.name == "output":
        outputs.append(parse_output(value))
    elif item.name == "platform":
        found["platform"] = ",".join(filter(None, [found.get("platform", ""), value]))
    else:
        found[item.name or ""] = value


def known_platforms(text: str) -> tuple[str, ...]:
    result: list[str] = []
    for part in text.split(","):
        if not part.strip():
            continue
        try:
            platform = known_platform(part)
        except ValueError as exc:
            raise UsageError(f"--platform: {exc}") from None
        if platform not in result:
            result.append(platform)
    return tuple(result)


def check_repository(reference: str, option: str) -> None:
    host, sep, path = reference.partition("/")
    components = path.split("/") if sep else [host]
    # fullmatch: `$` would let a trailing newline through into buildx's arguments
    registry_ok = not sep or _REGISTRY_HOST.fullmatch(host) or _REF_COMPONENT.fullmatch(host)
    if not registry_ok or not all(_REF_COMPONENT.fullmatch(part) for part in components):
        raise UsageError(
            f"{option} {reference!r} must be a repository without tag, like registry.example.com/app/cache "
            "(nodefleet adds one tag per platform)"
        )


# ---------------------------------------------------------------------------------------------- outputs

_SPLITTABLE = {"registry", "image", "cacheonly", "local"}


def check_outputs(request: BuildRequest, platforms: int) -> None:
    """Raise UsageError for outputs that several nodes cannot make.

    Every platform is built on its own node. A registry push, an image kept in BuildKit, a cache-only build and a
    local folder (one subfolder per platform) split across nodes; a tar, an OCI layout or a docker image of several
    platforms do not, and buildx refuses them for multi-node builds too ("oci for multi-node builds currently not
    supported").
    """
    check_split(request.outputs, platforms)
    if platforms > 1 and request.iidfile and not request.push:
        raise UsageError("--iidfile with several platforms needs --push (nodefleet writes the pushed index digest)")


def check_split(outputs: Sequence[Output], platforms: int, who: str = "") -> None:
    """Raise UsageError when these outputs cannot be made from `platforms` platforms built on separate nodes."""
    if platforms <= 1:
        return
    unsplittable = sorted({output.type for output in outputs if output.type not in _SPLITTABLE})
    if unsplittable:
        what = "--load" if unsplittable == ["docker"] else f"an output of type {', '.join(unsplittable)}"
        raise UsageError(
            f"{who}{what} cannot be made from {platforms} platforms built on separate nodes (buildx refuses it for "
            "multi-node builds too): build one platform per run (--platform P), or push to a registry (--push)"
        )
