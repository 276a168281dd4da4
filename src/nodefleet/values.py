"""The checks behind the inventory: every value held to a pattern before it can reach a shell or a buildx flag,
each problem one line naming the file and the key (pure)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from nodefleet.units import UnitError, parse_duration, parse_size

# Every value that can reach a shell or a buildx flag is held to one of these patterns; nothing else is
# accepted, so quoting is a second line of defence rather than the only one. Always `fullmatch` (with `match`, `$`
# also matches before a trailing newline), so the patterns carry no anchors of their own.
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
HOSTNAME_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})")
USER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
IMAGE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}")
OPT_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
OPT_VALUE_RE = re.compile(r"[A-Za-z0-9._:/=@+-]{0,255}")
LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,62}")
REGISTRY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}(:[0-9]{1,5})?")
PATH_BAD = re.compile(r"[\x00-\x1f\x7f]")
# Driver options nodefleet sets itself; the user may not override them through driver_opts.
RESERVED_DRIVER_OPTS = frozenset({"image"})


class Problems:
    """Collects one line per problem, each naming the file and the key."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = []

    def add(self, key: str, message: str) -> None:
        self.lines.append(one_line(f"{self.path}: {key}: {message}"))


def one_line(text: str) -> str:
    """Escape control and line-separator characters that came from the file, so a problem stays one line."""
    return "".join(
        char if char.isprintable() or char == " " else char.encode("unicode_escape").decode() for char in text
    )


def name_rule(value: object) -> str:
    hint = ""
    if isinstance(value, str) and value.lower() != value:
        hint = f" (buildx lowercases node names; use {value.lower()!r})"
    return f"{value!r} must be 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit" + hint


def is_ipv6(value: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(value), ipaddress.IPv6Address)
    except ValueError:
        return False


def valid_address(value: str) -> bool:
    if "%" in value:
        return False  # an IPv6 zone id: see _parse_host
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return bool(HOSTNAME_RE.fullmatch(value)) and ".." not in value and not value.startswith("-")
    return True


def unknown_keys(problems: Problems, prefix: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    if not isinstance(table, Mapping):
        return
    for key in table:
        if key not in allowed:
            problems.add(f"{prefix}{key}", f"unknown key (allowed: {', '.join(sorted(allowed))})")


def table(problems: Problems, key: str, value: Any) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    problems.add(key, "must be a table")
    return {}


def get(problems: Problems, table: Mapping[str, Any], key: str, name: str, kind: type, default: Any) -> Any:
    value = table.get(name, default)
    # bool is an int in Python: an integer key must not accept true/false, nor a bool key 0/1.
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        problems.add(key, f"must be {kind_name(kind)}, got {describe(value)}")
        return default
    return value


def kind_name(kind: type) -> str:
    return {str: "a string", bool: "true or false", int: "an integer"}.get(kind, kind.__name__)


def describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:80]


def user(problems: Problems, key: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not USER_RE.fullmatch(value):
        problems.add(key, f"{value!r} is not a valid user name")
        return None
    return value


def port(problems: Problems, key: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        problems.add(key, f"must be an integer from 1 to 65535, got {value!r}")
        return None
    return value


def positive(
    problems: Problems,
    key: str,
    value: Any,
    default: float,
    kind: Callable[[Any], float] = float,
    maximum: float = 100_000,
    what: str | None = None,
) -> float:
    if value is None:
        return default
    wants_int = kind is int
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if not numeric or (wants_int and not isinstance(value, int)) or value <= 0 or value > maximum:
        what = what or ("a positive integer" if wants_int else "a positive number of seconds")
        limit = f" up to {maximum:g}" if maximum != 100_000 else ""
        problems.add(key, f"must be {what}{limit}, got {value!r}")
        return default
    return kind(value)


def size(problems: Problems, key: str, value: Any) -> int | None:
    """A size in bytes: "20GB", "512MiB" (a string with a unit), or a positive integer of bytes."""
    return _measure(problems, key, value, parse_size, '"20GB"', "more than nothing")


def duration(problems: Problems, key: str, value: Any) -> int | None:
    """A duration in seconds: "168h", "7d", "1h30m", or a positive integer of seconds."""
    return _measure(problems, key, value, parse_duration, '"168h"', "longer than nothing")


def _measure(
    problems: Problems, key: str, value: Any, parse: Callable[[str], int], example: str, nonzero: str
) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        problems.add(key, f"must be a string such as {example}, got {value!r}")
        return None
    try:
        parsed = parse(str(value))
    except UnitError as exc:
        problems.add(key, str(exc))
        return None
    if parsed <= 0:
        problems.add(key, f"{value!r}: must be {nonzero}")
        return None
    return parsed


def path(problems: Problems, key: str, value: Any, base: Path) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or PATH_BAD.search(value):
        problems.add(key, f"must be a file path, got {value!r}")
        return None
    try:
        path = Path(value).expanduser()
    except RuntimeError:  # `~someone/...` for a user this machine does not know
        problems.add(key, f"{value!r}: no home directory for {value.split('/', 1)[0]!r} on this machine")
        return None
    return path if path.is_absolute() else base / path


def image(problems: Problems, key: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not IMAGE_RE.fullmatch(value):
        problems.add(key, f"{value!r} is not an image reference like moby/buildkit:v0.13.2")
        return None
    return value


def string_list(problems: Problems, key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        problems.add(key, f"must be an array of strings, got {describe(value)}")
        return []
    return list(value)


def driver_opts(problems: Problems, key: str, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.add(key, "must be a table of option = value")
        return {}
    opts = {}
    for name, raw in value.items():
        text = str(raw).lower() if isinstance(raw, bool) else raw
        if isinstance(raw, int) and not isinstance(raw, bool):
            text = str(raw)
        if name in RESERVED_DRIVER_OPTS:
            problems.add(f"{key}.{name}", "is set by nodefleet; use buildkit_image instead")
        elif not OPT_KEY_RE.fullmatch(name):
            problems.add(f"{key}.{name}", "option names are letters, digits, '.', '_' and '-'")
        elif not isinstance(text, str) or not OPT_VALUE_RE.fullmatch(text):
            problems.add(f"{key}.{name}", f"{raw!r} has characters a driver option cannot carry")
        else:
            opts[name] = text
    return opts


def labels(problems: Problems, key: str, value: Any) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        problems.add(key, "must be a table of name = value")
        return MappingProxyType({})
    labels = {}
    for name, raw in value.items():
        if not LABEL_RE.fullmatch(name) or not isinstance(raw, str) or not LABEL_RE.fullmatch(raw):
            problems.add(f"{key}.{name}", "labels are short strings of letters, digits, '.', '_', '/' and '-'")
        else:
            labels[name] = raw
    return MappingProxyType(labels)
