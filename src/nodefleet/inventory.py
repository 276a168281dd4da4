"""The inventory file: parsed and validated into frozen dataclasses before any host is contacted."""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from nodefleet.errors import InventoryError
from nodefleet.platforms import normalize_platform

DEFAULT_BUILDKIT_IMAGE = "moby/buildkit:buildx-stable-1"

# Every value that can reach a shell or a buildx flag is held to one of these patterns; nothing else is
# accepted, so quoting is a second line of defence rather than the only one. Always `fullmatch`: with `match`,
# `$` also matches before a trailing newline.
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})$")
_USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
_IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$")
_OPT_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_OPT_VALUE_RE = re.compile(r"^[A-Za-z0-9._:/=@+-]{0,255}$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")
_REGISTRY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}(:[0-9]{1,5})?$")
_PATH_BAD = re.compile(r"[\x00-\x1f\x7f]")
# Driver options nodefleet sets itself; the user may not override them through driver_opts.
_RESERVED_DRIVER_OPTS = frozenset({"image"})


@dataclass(frozen=True)
class Registry:
    """Registry settings written into the generated buildkitd.toml."""

    host: str
    ca_file: Path | None = None
    mirrors: tuple[str, ...] = ()
    insecure: bool = False


@dataclass(frozen=True)
class Host:
    """One build host, with the defaults already applied."""

    name: str
    address: str
    user: str | None
    port: int | None
    identity_file: Path | None
    platforms: tuple[str, ...]
    labels: Mapping[str, str]
    enabled: bool
    buildkit_image: str
    driver_opts: Mapping[str, str]


@dataclass(frozen=True)
class Defaults:
    """Settings every host inherits unless it says otherwise."""

    user: str | None = None
    port: int | None = None
    identity_file: Path | None = None
    known_hosts: Path | None = None
    connect_timeout: float = 5.0
    command_timeout: float = 120.0
    parallel: int = 32
    buildkit_image: str = DEFAULT_BUILDKIT_IMAGE
    buildkit_image_archive: Path | None = None
    driver_opts: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    buildkitd_config: Path | None = None


@dataclass(frozen=True)
class Inventory:
    """A validated inventory: the builder, its defaults and its hosts, in file order."""

    path: Path
    builder: str
    defaults: Defaults
    hosts: tuple[Host, ...]
    registries: tuple[Registry, ...] = ()

    @property
    def enabled_hosts(self) -> tuple[Host, ...]:
        """The hosts that take part in the builder."""
        return tuple(host for host in self.hosts if host.enabled)


class _Problems:
    """Collects one line per problem, each naming the file and the key."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = []

    def add(self, key: str, message: str) -> None:
        self.lines.append(_one_line(f"{self.path}: {key}: {message}"))


def _one_line(text: str) -> str:
    """Escape control and line-separator characters that came from the file, so a problem stays one line."""
    return "".join(
        char if char.isprintable() or char == " " else char.encode("unicode_escape").decode() for char in text
    )


_BUILDER_KEYS = {"name"}
_DEFAULT_KEYS = {
    "user",
    "port",
    "identity_file",
    "known_hosts",
    "connect_timeout",
    "command_timeout",
    "parallel",
    "buildkit_image",
    "buildkit_image_archive",
    "driver_opts",
    "buildkitd_config",
}
_HOST_KEYS = {
    "name",
    "address",
    "user",
    "port",
    "identity_file",
    "platforms",
    "labels",
    "enabled",
    "buildkit_image",
    "driver_opts",
}
_REGISTRY_KEYS = {"ca_file", "mirrors", "insecure"}
_TOP_KEYS = {"builder", "defaults", "hosts", "registries"}


def load_inventory(path: str | Path) -> Inventory:
    """Read and validate an inventory file; raise InventoryError listing every problem found."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise InventoryError([f"{file}: no such file (pass --inventory or create inventory.toml)"]) from None
    except OSError as exc:
        raise InventoryError([f"{file}: cannot read: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InventoryError([f"{file}: not UTF-8 text"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError([f"{file}: TOML syntax: {exc}"]) from None
    return parse_inventory(data, file)


def parse_inventory(data: Mapping[str, Any], path: Path) -> Inventory:
    """Validate an already-parsed TOML document; relative paths are taken from the file's folder."""
    problems = _Problems(path)
    base = path.parent
    _unknown_keys(problems, "", data, _TOP_KEYS)

    builder_table = _table(problems, "builder", data.get("builder", {}))
    _unknown_keys(problems, "builder.", builder_table, _BUILDER_KEYS)
    builder = _get(problems, builder_table, "builder.name", "name", str, "nodefleet")
    if isinstance(builder, str) and not _NAME_RE.fullmatch(builder):
        problems.add("builder.name", _name_rule(builder))

    defaults = _parse_defaults(problems, _table(problems, "defaults", data.get("defaults", {})), base)
    registries = _parse_registries(problems, _table(problems, "registries", data.get("registries", {})), base)

    raw_hosts = data.get("hosts", [])
    hosts: list[Host] = []
    if not isinstance(raw_hosts, list):
        problems.add("hosts", "must be an array of tables ([[hosts]])")
        raw_hosts = []
    if not raw_hosts:
        problems.add("hosts", "no hosts: add at least one [[hosts]] table")
    for index, raw_host in enumerate(raw_hosts):
        host = _parse_host(problems, f"hosts[{index}]", raw_host, defaults, base)
        if host is not None:
            hosts.append(host)
    _check_unique(problems, hosts)

    if problems.lines:
        raise InventoryError(problems.lines)
    return Inventory(
        path=path,
        builder=str(builder),
        defaults=defaults,
        hosts=tuple(hosts),
        registries=tuple(registries),
    )


def _parse_defaults(problems: _Problems, table: Mapping[str, Any], base: Path) -> Defaults:
    _unknown_keys(problems, "defaults.", table, _DEFAULT_KEYS)
    fallback = Defaults()
    return Defaults(
        user=_user(problems, "defaults.user", table.get("user")),
        port=_port(problems, "defaults.port", table.get("port")),
        identity_file=_path(problems, "defaults.identity_file", table.get("identity_file"), base),
        known_hosts=_path(problems, "defaults.known_hosts", table.get("known_hosts"), base),
        connect_timeout=_positive(
            problems, "defaults.connect_timeout", table.get("connect_timeout"), fallback.connect_timeout
        ),
        command_timeout=_positive(
            problems, "defaults.command_timeout", table.get("command_timeout"), fallback.command_timeout
        ),
        parallel=int(_positive(problems, "defaults.parallel", table.get("parallel"), fallback.parallel, int)),
        buildkit_image=_image(problems, "defaults.buildkit_image", table.get("buildkit_image"))
        or fallback.buildkit_image,
        buildkit_image_archive=_path(
            problems, "defaults.buildkit_image_archive", table.get("buildkit_image_archive"), base
        ),
        driver_opts=_driver_opts(problems, "defaults.driver_opts", table.get("driver_opts")),
        buildkitd_config=_path(problems, "defaults.buildkitd_config", table.get("buildkitd_config"), base),
    )


def _parse_registries(problems: _Problems, table: Mapping[str, Any], base: Path) -> list[Registry]:
    registries = []
    for host, raw in table.items():
        key = f'registries."{host}"'
        if not _REGISTRY_RE.fullmatch(host):
            problems.add(key, "must be a registry host like registry.example.com:5000")
            continue
        settings = _table(problems, key, raw)
        _unknown_keys(problems, key + ".", settings, _REGISTRY_KEYS)
        mirrors = _string_list(problems, key + ".mirrors", settings.get("mirrors", []))
        for mirror in mirrors:
            if not _REGISTRY_RE.fullmatch(mirror):
                problems.add(key + ".mirrors", f"{mirror!r} must be a registry host like mirror.local:5000")
        registries.append(
            Registry(
                host=host,
                ca_file=_path(problems, key + ".ca_file", settings.get("ca_file"), base),
                mirrors=tuple(mirrors),
                insecure=bool(_get(problems, settings, key + ".insecure", "insecure", bool, False)),
            )
        )
    return registries


def _parse_host(problems: _Problems, key: str, raw: Any, defaults: Defaults, base: Path) -> Host | None:
    if not isinstance(raw, Mapping):
        problems.add(key, "must be a table with name and address")
        return None
    before = len(problems.lines)
    _unknown_keys(problems, key + ".", raw, _HOST_KEYS)
    name = raw.get("name")
    if name is None:
        problems.add(key, "missing required key name")
    elif not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        problems.add(key + ".name", _name_rule(name))
    label = f"{key} ({name})" if isinstance(name, str) else key
    address = raw.get("address")
    if address is None:
        problems.add(label, "missing required key address")
    elif isinstance(address, str) and "%" in address and _is_ipv6(address.partition("%")[0]):
        # ipaddress accepts any text after '%' (even `$(reboot)` or a newline), and buildx's ssh:// URL
        # cannot carry a zone id anyway.
        problems.add(f"{label}.address", f"{address!r}: IPv6 zone ids (%...) cannot be used in a buildx endpoint")
    elif not isinstance(address, str) or not _valid_address(address):
        problems.add(f"{label}.address", f"{address!r} is not a hostname or IP address")
    platforms = []
    for value in _string_list(problems, f"{label}.platforms", raw.get("platforms", [])):
        try:
            platforms.append(normalize_platform(value))
        except ValueError as exc:
            problems.add(f"{label}.platforms", str(exc))
    if len(set(platforms)) != len(platforms):
        problems.add(f"{label}.platforms", "lists a platform twice")
    labels = _labels(problems, f"{label}.labels", raw.get("labels", {}))
    enabled = _get(problems, raw, f"{label}.enabled", "enabled", bool, True)
    user = _user(problems, f"{label}.user", raw.get("user"))
    port = _port(problems, f"{label}.port", raw.get("port"))
    identity = _path(problems, f"{label}.identity_file", raw.get("identity_file"), base)
    image = _image(problems, f"{label}.buildkit_image", raw.get("buildkit_image"))
    opts = dict(defaults.driver_opts)
    opts.update(_driver_opts(problems, f"{label}.driver_opts", raw.get("driver_opts")))
    if len(problems.lines) != before:
        return None
    return Host(
        name=str(name),
        address=str(address),
        user=user or defaults.user,
        port=port or defaults.port,
        identity_file=identity or defaults.identity_file,
        platforms=tuple(platforms),
        labels=labels,
        enabled=bool(enabled),
        buildkit_image=image or defaults.buildkit_image,
        driver_opts=MappingProxyType(opts),
    )


def _check_unique(problems: _Problems, hosts: list[Host]) -> None:
    seen_names: dict[str, int] = {}
    seen_endpoints: dict[tuple[str, int | None, str | None], str] = {}
    for index, host in enumerate(hosts):
        if host.name in seen_names:
            problems.add(f"hosts[{index}].name", f"duplicate host name {host.name!r}")
        seen_names.setdefault(host.name, index)
        endpoint = (host.address.lower(), host.port, host.user)
        if endpoint in seen_endpoints:
            problems.add(
                f"hosts[{index}] ({host.name}).address",
                f"duplicate address {host.address!r}: same endpoint as host {seen_endpoints[endpoint]!r} "
                "(buildx refuses two nodes with one endpoint)",
            )
        seen_endpoints.setdefault(endpoint, host.name)


def _name_rule(value: object) -> str:
    hint = ""
    if isinstance(value, str) and value.lower() != value:
        hint = f" (buildx lowercases node names; use {value.lower()!r})"
    return f"{value!r} must be 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit" + hint


def _is_ipv6(value: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(value), ipaddress.IPv6Address)
    except ValueError:
        return False


def _valid_address(value: str) -> bool:
    if "%" in value:
        return False  # an IPv6 zone id: see _parse_host
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return bool(_HOSTNAME_RE.fullmatch(value)) and ".." not in value and not value.startswith("-")
    return True


def _unknown_keys(problems: _Problems, prefix: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    if not isinstance(table, Mapping):
        return
    for key in table:
        if key not in allowed:
            problems.add(f"{prefix}{key}", f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _table(problems: _Problems, key: str, value: Any) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    problems.add(key, "must be a table")
    return {}


def _get(problems: _Problems, table: Mapping[str, Any], key: str, name: str, kind: type, default: Any) -> Any:
    value = table.get(name, default)
    # bool is an int in Python: an integer key must not accept true/false, nor a bool key 0/1.
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        problems.add(key, f"must be {_kind_name(kind)}, got {_describe(value)}")
        return default
    return value


def _kind_name(kind: type) -> str:
    return {str: "a string", bool: "true or false", int: "an integer"}.get(kind, kind.__name__)


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:80]


def _user(problems: _Problems, key: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _USER_RE.fullmatch(value):
        problems.add(key, f"{value!r} is not a valid user name")
        return None
    return value


def _port(problems: _Problems, key: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        problems.add(key, f"must be an integer from 1 to 65535, got {value!r}")
        return None
    return value


def _positive(
    problems: _Problems,
    key: str,
    value: Any,
    default: float,
    kind: Callable[[Any], float] = float,
) -> float:
    if value is None:
        return default
    wants_int = kind is int
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if not numeric or (wants_int and not isinstance(value, int)) or value <= 0 or value > 100_000:
        what = "a positive integer" if wants_int else "a positive number of seconds"
        problems.add(key, f"must be {what}, got {value!r}")
        return default
    return kind(value)


def _path(problems: _Problems, key: str, value: Any, base: Path) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or _PATH_BAD.search(value):
        problems.add(key, f"must be a file path, got {value!r}")
        return None
    try:
        path = Path(value).expanduser()
    except RuntimeError:  # `~someone/...` for a user this machine does not know
        problems.add(key, f"{value!r}: no home directory for {value.split('/', 1)[0]!r} on this machine")
        return None
    return path if path.is_absolute() else base / path


def _image(problems: _Problems, key: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _IMAGE_RE.fullmatch(value):
        problems.add(key, f"{value!r} is not an image reference like moby/buildkit:v0.13.2")
        return None
    return value


def _string_list(problems: _Problems, key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        problems.add(key, f"must be an array of strings, got {_describe(value)}")
        return []
    return list(value)


def _driver_opts(problems: _Problems, key: str, value: Any) -> dict[str, str]:
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
        if name in _RESERVED_DRIVER_OPTS:
            problems.add(f"{key}.{name}", "is set by nodefleet; use buildkit_image instead")
        elif not _OPT_KEY_RE.fullmatch(name):
            problems.add(f"{key}.{name}", "option names are letters, digits, '.', '_' and '-'")
        elif not isinstance(text, str) or not _OPT_VALUE_RE.fullmatch(text):
            problems.add(f"{key}.{name}", f"{raw!r} has characters a driver option cannot carry")
        else:
            opts[name] = text
    return opts


def _labels(problems: _Problems, key: str, value: Any) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        problems.add(key, "must be a table of name = value")
        return MappingProxyType({})
    labels = {}
    for name, raw in value.items():
        if not _LABEL_RE.fullmatch(name) or not isinstance(raw, str) or not _LABEL_RE.fullmatch(raw):
            problems.add(f"{key}.{name}", "labels are short strings of letters, digits, '.', '_', '/' and '-'")
        else:
            labels[name] = raw
    return MappingProxyType(labels)
