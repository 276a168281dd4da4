"""Which hosts a lab has: the `--hosts` SPEC, the platforms the lab can emulate, and each host's names and address."""

from __future__ import annotations

import dataclasses
import re

from .core import LabError

DEFAULT_SPEC = "amd64,arm64,arm/v7"
SUBNET_PREFIX = "10.231.0"
GATEWAY = f"{SUBNET_PREFIX}.1"
REGISTRY = f"{GATEWAY}:5443"
BRIDGE = "nflab0"
BUILDKIT_VERSION = "v0.13.2"
LAB_USER = "builder"
MAX_HOSTS = 200
# A small disk (`--small-disk HOST=SIZE`) must still hold the engine's state and a BuildKit image with its cache.
MIN_SMALL_DISK = 64 << 20
SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

# Go programs under qemu-user can deadlock at start; these two settings avoid it (see shared/lab-facts.md).
GO_UNDER_QEMU = {"env.GODEBUG": "asyncpreemptoff=1", "env.GOMAXPROCS": "1"}


@dataclasses.dataclass(frozen=True)
class Platform:
    """A platform the lab can give a host, and how it is emulated."""

    platform: str  # linux/arm/v7
    slug: str  # armv7: used in host names and image tags
    uname: str  # what `uname -m` answers in the host's SSH sessions
    deb_arch: str | None  # Debian architecture of the session userland; None = the machine's own
    buildkit_tag: str  # which BuildKit image the host runs
    qemu_cpu: str | None  # CPU model qemu-user emulates, so uname and /proc/cpuinfo agree with the platform

    @property
    def emulated(self) -> bool:
        return self.deb_arch is not None

    @property
    def driver_opts(self) -> dict[str, str]:
        if not self.emulated:
            return {}
        opts = dict(GO_UNDER_QEMU)
        # BuildKit derives its arm variant from /proc/cpuinfo; qemu's default CPU would make it say arm/v8.
        if self.qemu_cpu and self.buildkit_tag == self.slug:
            opts["env.QEMU_CPU"] = self.qemu_cpu
        return opts


PLATFORMS = {
    "amd64": Platform("linux/amd64", "amd64", "x86_64", None, "amd64", None),
    "arm64": Platform("linux/arm64", "arm64", "aarch64", "arm64", "arm64", None),
    "arm/v7": Platform("linux/arm/v7", "armv7", "armv7l", "armhf", "armv7", "cortex-a15"),
    # No arm/v6 BuildKit is built: an arm/v6 host runs the arm/v7 one (which then reports arm/v8 as native).
    "arm/v6": Platform("linux/arm/v6", "armv6", "armv6l", "armel", "armv7", "arm1176"),
}
ALIASES = {"x86_64": "amd64", "aarch64": "arm64", "armv7": "arm/v7", "armv6": "arm/v6", "armhf": "arm/v7"}


@dataclasses.dataclass(frozen=True)
class Host:
    """One lab host: its own network namespace, sshd and Docker Engine."""

    name: str
    number: int  # 1-based position in the SPEC; the address is 10.231.0.(10 + number)
    platform: Platform
    data_root_size: int | None = None  # bytes of the tmpfs the lab mounts as its engine's data root; None: no mount

    @property
    def address(self) -> str:
        return f"{SUBNET_PREFIX}.{10 + self.number}"

    @property
    def netns(self) -> str:
        return f"nflab-{self.name}"

    @property
    def veth(self) -> str:
        """The root-namespace end of the host's cable into the bridge."""
        return f"nflv{10 + self.number}"

    @property
    def buildkit_image(self) -> str:
        return f"{REGISTRY}/lab/buildkit:{BUILDKIT_VERSION}-{self.platform.buildkit_tag}"


def normalize_platform(text: str) -> str:
    key = text.strip().lower().removeprefix("linux/")
    key = ALIASES.get(key, key)
    if key not in PLATFORMS:
        known = ", ".join(PLATFORMS)
        raise LabError(f"unknown platform {text!r} in --hosts (known: {known})")
    return key


def parse_spec(spec: str) -> list[Host]:
    """`amd64,arm64:2,arm/v7` -> hosts amd64-1, arm64-1, arm64-2, armv7-1 numbered in that order."""
    hosts: list[Host] = []
    seen: set[str] = set()
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            raise LabError(f"empty entry in --hosts {spec!r}")
        name, _, count_text = item.partition(":")
        key = normalize_platform(name)
        if key in seen:
            raise LabError(f"platform {key} listed twice in --hosts {spec!r}; use {key}:N")
        seen.add(key)
        try:
            count = int(count_text) if count_text else 1
        except ValueError:
            raise LabError(f"bad count {count_text!r} in --hosts entry {item!r}") from None
        if count < 1:
            raise LabError(f"count must be at least 1 in --hosts entry {item!r}")
        platform = PLATFORMS[key]
        for index in range(1, count + 1):
            hosts.append(Host(f"{platform.slug}-{index}", len(hosts) + 1, platform))
    if len(hosts) > MAX_HOSTS:
        raise LabError(f"--hosts asks for {len(hosts)} hosts; the lab has room for {MAX_HOSTS}")
    return hosts


def spec_of(hosts: list[Host]) -> str:
    """The canonical SPEC for a host list (used to tell whether a running lab already matches)."""
    counts: dict[str, int] = {}
    for host in hosts:
        key = host.platform.platform.removeprefix("linux/")
        counts[key] = counts.get(key, 0) + 1
    return ",".join(f"{key}:{count}" for key, count in counts.items())


def parse_size(text: str) -> int:
    """`1G`, `768M`, `1GiB`, `512k`, `1073741824` -> bytes (binary units)."""
    match = re.fullmatch(r"(\d+)\s*([KMGT]?)(?:I?B)?", text.strip().upper())
    if match is None:
        raise LabError(f"bad size {text!r} (a number of bytes, or with K, M, G or T: 1G, 768M)")
    return int(match.group(1)) * SIZE_UNITS[match.group(2)]


def format_size(size: int) -> str:
    """Bytes as `parse_size` reads them back, in the largest unit that divides them: 1073741824 -> `1G`."""
    for unit in ("T", "G", "M", "K"):
        if size % SIZE_UNITS[unit] == 0:
            return f"{size // SIZE_UNITS[unit]}{unit}"
    return str(size)


def with_small_disks(hosts: list[Host], items: list[str]) -> list[Host]:
    """Apply `--small-disk HOST=SIZE` options (repeatable, one per host) to the hosts of a SPEC."""
    names = {h.name for h in hosts}
    sizes: dict[str, int] = {}
    for item in items:
        name, sep, size_text = item.partition("=")
        name = name.strip()
        if not sep:
            raise LabError(f"--small-disk {item!r}: expected HOST=SIZE, e.g. arm64-1=1G")
        if name not in names:
            raise LabError(f"--small-disk {item!r}: no host {name!r} in this lab ({', '.join(sorted(names))})")
        if name in sizes:
            raise LabError(f"--small-disk names {name} twice")
        size = parse_size(size_text)
        if size < MIN_SMALL_DISK:
            raise LabError(f"--small-disk {item!r}: at least {format_size(MIN_SMALL_DISK)} (the engine and BuildKit)")
        sizes[name] = size
    return [dataclasses.replace(h, data_root_size=sizes.get(h.name)) for h in hosts]


def small_disks_of(hosts: list[Host]) -> dict[str, int]:
    """{host name: data root size} of the hosts with a small disk (used to tell whether a running lab matches)."""
    return {h.name: h.data_root_size for h in hosts if h.data_root_size is not None}
