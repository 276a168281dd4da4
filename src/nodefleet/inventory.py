"""The inventory file: parsed and validated into frozen dataclasses before any host is contacted."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from nodefleet import values
from nodefleet.errors import InventoryError
from nodefleet.platforms import known_platform

DEFAULT_BUILDKIT_IMAGE = "moby/buildkit:buildx-stable-1"
MAX_PARALLEL = 256  # hosts worked on at once; the command line's --parallel has the same cap


@dataclass(frozen=True)
class Registry:
    """Registry settings written into the generated buildkitd.toml."""

    host: str
    ca_file: Path | None = None
    mirrors: tuple[str, ...] = ()
    insecure: bool = False


@dataclass(frozen=True)
class CacheBudget:
    """How much disk a node's BuildKit cache may take (bytes), how much the disk keeps free (bytes), and how long an
    unused cache record is kept (seconds); None: BuildKit's own default for that part."""

    max_size: int | None = None
    min_free: int | None = None
    keep_for: int | None = None

    def __bool__(self) -> bool:
        return any(value is not None for value in (self.max_size, self.min_free, self.keep_for))

    def over(self, other: CacheBudget) -> CacheBudget:
        """This budget, with what it leaves unset taken from `other` (a host's own over the defaults)."""
        return CacheBudget(
            self.max_size if self.max_size is not None else other.max_size,
            self.min_free if self.min_free is not None else other.min_free,
            self.keep_for if self.keep_for is not None else other.keep_for,
        )


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
    # Capacity, for spreading a bake's jobs over the nodes of a platform: a relative speed, and how many jobs the
    # node runs at once (None: from its CPU count).
    speed: float = 1.0
    max_jobs: int | None = None
    cache: CacheBudget = CacheBudget()


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
    cache: CacheBudget = CacheBudget()


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
    "cache",
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
    "speed",
    "max_jobs",
    "cache",
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
    problems = values.Problems(path)
    base = path.parent
    values.unknown_keys(problems, "", data, _TOP_KEYS)

    builder_table = values.table(problems, "builder", data.get("builder", {}))
    values.unknown_keys(problems, "builder.", builder_table, _BUILDER_KEYS)
    builder = values.get(problems, builder_table, "builder.name", "name", str, "nodefleet")
    if isinstance(builder, str) and not values.NAME_RE.fullmatch(builder):
        problems.add("builder.name", values.name_rule(builder))

    defaults = _parse_defaults(problems, values.table(problems, "defaults", data.get("defaults", {})), base)
    registries = _parse_registries(problems, values.table(problems, "registries", data.get("registries", {})), base)

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
    budgeted = [host.name for host in hosts if host.cache]
    if defaults.buildkitd_config is not None and budgeted:
        problems.add(
            "defaults.buildkitd_config",
            f"a cache budget (hosts {', '.join(budgeted)}) is written into the buildkitd config nodefleet makes; "
            "with your own file, put the gc policy in it instead and drop cache",
        )

    if problems.lines:
        raise InventoryError(problems.lines)
    return Inventory(
        path=path,
        builder=str(builder),
        defaults=defaults,
        hosts=tuple(hosts),
        registries=tuple(registries),
    )


def _parse_defaults(problems: values.Problems, table: Mapping[str, Any], base: Path) -> Defaults:
    values.unknown_keys(problems, "defaults.", table, _DEFAULT_KEYS)
    fallback = Defaults()
    return Defaults(
        user=values.user(problems, "defaults.user", table.get("user")),
        port=values.port(problems, "defaults.port", table.get("port")),
        identity_file=values.path(problems, "defaults.identity_file", table.get("identity_file"), base),
        known_hosts=_known_hosts(problems, table.get("known_hosts"), base),
        connect_timeout=values.positive(
            problems, "defaults.connect_timeout", table.get("connect_timeout"), fallback.connect_timeout
        ),
        command_timeout=values.positive(
            problems, "defaults.command_timeout", table.get("command_timeout"), fallback.command_timeout
        ),
        parallel=int(
            values.positive(problems, "defaults.parallel", table.get("parallel"), fallback.parallel, int, MAX_PARALLEL)
        ),
        buildkit_image=values.image(problems, "defaults.buildkit_image", table.get("buildkit_image"))
        or fallback.buildkit_image,
        buildkit_image_archive=values.path(
            problems, "defaults.buildkit_image_archive", table.get("buildkit_image_archive"), base
        ),
        driver_opts=values.driver_opts(problems, "defaults.driver_opts", table.get("driver_opts")),
        buildkitd_config=values.path(problems, "defaults.buildkitd_config", table.get("buildkitd_config"), base),
        cache=_cache_budget(problems, "defaults.cache", table.get("cache")),
    )


def _parse_registries(problems: values.Problems, table: Mapping[str, Any], base: Path) -> list[Registry]:
    registries = []
    for host, raw in table.items():
        key = f'registries."{host}"'
        if not values.REGISTRY_RE.fullmatch(host):
            problems.add(key, "must be a registry host like registry.example.com:5000")
            continue
        settings = values.table(problems, key, raw)
        values.unknown_keys(problems, key + ".", settings, _REGISTRY_KEYS)
        mirrors = values.string_list(problems, key + ".mirrors", settings.get("mirrors", []))
        for mirror in mirrors:
            if not values.REGISTRY_RE.fullmatch(mirror):
                problems.add(key + ".mirrors", f"{mirror!r} must be a registry host like mirror.local:5000")
        registries.append(
            Registry(
                host=host,
                ca_file=values.path(problems, key + ".ca_file", settings.get("ca_file"), base),
                mirrors=tuple(mirrors),
                insecure=bool(values.get(problems, settings, key + ".insecure", "insecure", bool, False)),
            )
        )
    return registries


def _parse_host(problems: values.Problems, key: str, raw: Any, defaults: Defaults, base: Path) -> Host | None:
    if not isinstance(raw, Mapping):
        problems.add(key, "must be a table with name and address")
        return None
    before = len(problems.lines)
    values.unknown_keys(problems, key + ".", raw, _HOST_KEYS)
    name = raw.get("name")
    if name is None:
        problems.add(key, "missing required key name")
    elif not isinstance(name, str) or not values.NAME_RE.fullmatch(name):
        problems.add(key + ".name", values.name_rule(name))
    label = f"{key} ({name})" if isinstance(name, str) else key
    address = raw.get("address")
    if address is None:
        problems.add(label, "missing required key address")
    elif isinstance(address, str) and "%" in address and values.is_ipv6(address.partition("%")[0]):
        # ipaddress accepts any text after '%' (even `$(reboot)` or a newline), and buildx's ssh:// URL
        # cannot carry a zone id anyway.
        problems.add(f"{label}.address", f"{address!r}: IPv6 zone ids (%...) cannot be used in a buildx endpoint")
    elif not isinstance(address, str) or not values.valid_address(address):
        problems.add(f"{label}.address", f"{address!r} is not a hostname or IP address")
    platforms = []
    for value in values.string_list(problems, f"{label}.platforms", raw.get("platforms", [])):
        try:
            platforms.append(known_platform(value))
        except ValueError as exc:
            problems.add(f"{label}.platforms", str(exc))
    if len(set(platforms)) != len(platforms):
        problems.add(f"{label}.platforms", "lists a platform twice")
    labels = values.labels(problems, f"{label}.labels", raw.get("labels", {}))
    enabled = values.get(problems, raw, f"{label}.enabled", "enabled", bool, True)
    user = values.user(problems, f"{label}.user", raw.get("user"))
    port = values.port(problems, f"{label}.port", raw.get("port"))
    identity = values.path(problems, f"{label}.identity_file", raw.get("identity_file"), base)
    image = values.image(problems, f"{label}.buildkit_image", raw.get("buildkit_image"))
    opts = dict(defaults.driver_opts)
    opts.update(values.driver_opts(problems, f"{label}.driver_opts", raw.get("driver_opts")))
    speed = values.positive(problems, f"{label}.speed", raw.get("speed"), 1.0, maximum=1000, what="a positive number")
    max_jobs = raw.get("max_jobs")
    if max_jobs is not None:
        max_jobs = int(values.positive(problems, f"{label}.max_jobs", max_jobs, 1, int, MAX_PARALLEL))
    cache = _cache_budget(problems, f"{label}.cache", raw.get("cache"))
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
        speed=float(speed),
        max_jobs=max_jobs,
        cache=cache.over(defaults.cache),
    )


def _cache_budget(problems: values.Problems, key: str, value: Any) -> CacheBudget:
    """A cache budget: `{ max_size = "20GB", min_free = "5GB", keep_for = "168h" }`, every part optional."""
    if value is None:
        return CacheBudget()
    table = values.table(problems, key, value)
    values.unknown_keys(problems, key + ".", table, {"max_size", "min_free", "keep_for"})
    return CacheBudget(
        values.size(problems, key + ".max_size", table.get("max_size")),
        values.size(problems, key + ".min_free", table.get("min_free")),
        values.duration(problems, key + ".keep_for", table.get("keep_for")),
    )


def _known_hosts(problems: values.Problems, value: Any, base: Path) -> Path | None:
    """The known_hosts file: also handed to OpenSSH as an ssh_config value, which cannot hold a double quote."""
    path = values.path(problems, "defaults.known_hosts", value, base)
    if path is not None and '"' in str(path):
        problems.add("defaults.known_hosts", f"{str(path)!r}: OpenSSH cannot be given a path with a double quote")
        return None
    return path


def _check_unique(problems: values.Problems, hosts: list[Host]) -> None:
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
