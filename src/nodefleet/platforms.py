"""OCI platforms: mapping a host's CPU architecture to the platform it builds natively, and comparing them."""

from __future__ import annotations

import re

# `uname -m` of the kernel -> OCI platform of a userland of the same width.
_MACHINE_64 = {
    "x86_64": "linux/amd64",
    "amd64": "linux/amd64",
    "aarch64": "linux/arm64",
    "arm64": "linux/arm64",
    "ppc64le": "linux/ppc64le",
    "s390x": "linux/s390x",
    "riscv64": "linux/riscv64",
}
_MACHINE_32 = {
    "i386": "linux/386",
    "i486": "linux/386",
    "i586": "linux/386",
    "i686": "linux/386",
    "armv6l": "linux/arm/v6",
    "armv7l": "linux/arm/v7",
    # A 32-bit userland on an ARMv8 CPU builds arm/v7 images: v7 is what users build for.
    "armv8l": "linux/arm/v7",
    "armv8b": "linux/arm/v7",
}
# A 64-bit kernel under a 32-bit userland (Raspberry Pi OS 32-bit on a Pi 4): Docker there is 32-bit.
_NARROWED = {"linux/amd64": "linux/386", "linux/arm64": "linux/arm/v7"}

KNOWN_PLATFORMS = frozenset(
    {
        "linux/amd64",
        "linux/386",
        "linux/arm64",
        "linux/arm/v5",
        "linux/arm/v6",
        "linux/arm/v7",
        "linux/ppc64le",
        "linux/s390x",
        "linux/riscv64",
        "linux/mips64le",
        "linux/loong64",
    }
)

_PLATFORM_RE = re.compile(r"[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?")
_ALIASES = {
    "linux/arm": "linux/arm/v7",
    "linux/arm64/v8": "linux/arm64",
    "linux/amd64/v1": "linux/amd64",
    "linux/arm/v8": "linux/arm/v7",
}


class UnknownMachineError(ValueError):
    """`uname -m` named an architecture nodefleet cannot map to a platform."""


def platform_for_machine(machine: str, userland_bits: int | None = None) -> str:
    """Return the OCI platform a host builds natively from `uname -m` and the width of its userland."""
    key = machine.strip().lower()
    if key in _MACHINE_64:
        platform = _MACHINE_64[key]
        if userland_bits == 32 and platform in _NARROWED:
            return _NARROWED[platform]
        return platform
    if key in _MACHINE_32:
        return _MACHINE_32[key]
    raise UnknownMachineError(f"unknown CPU architecture {machine!r} from `uname -m`")


def normalize_platform(value: str) -> str:
    """Return the canonical spelling of a platform (`arm64` -> `linux/arm64`, `linux/arm` -> `linux/arm/v7`)."""
    text = value.strip().lower()
    if "/" not in text:
        text = "linux/" + text
    text = _ALIASES.get(text, text)
    if not _PLATFORM_RE.fullmatch(text):
        raise ValueError(f"{value!r} is not a platform like linux/arm64 or linux/arm/v7")
    return text


def architecture(platform: str) -> str:
    """Return `os/arch` of a platform without its variant: `linux/arm/v7` -> `linux/arm`."""
    return "/".join(platform.split("/")[:2])


def same_architecture(first: str, second: str) -> bool:
    """True when two platforms share OS and CPU architecture (an arm/v8 worker builds arm/v7 natively)."""
    return architecture(normalize_platform(first)) == architecture(normalize_platform(second))


def join_platform(os_name: str | None, architecture_name: str | None, variant: str | None = None) -> str:
    """The canonical platform of OCI os/architecture/variant fields (`linux`, `arm`, `v7` -> `linux/arm/v7`);
    raises ValueError when they do not make a platform."""
    return normalize_platform("/".join(part for part in (os_name, architecture_name, variant) if part))


KNOWN_ARCHITECTURES = frozenset(architecture(platform) for platform in KNOWN_PLATFORMS) | {
    "linux/ppc64",
    "linux/mips64",
    "linux/mips",
    "linux/mipsle",
    "linux/riscv32",
}


def known_platform(value: str) -> str:
    """normalize_platform, refusing an OS/architecture no container platform has (`linux/amd65`)."""
    platform = normalize_platform(value)
    if architecture(platform) not in KNOWN_ARCHITECTURES:
        known = ", ".join(sorted(KNOWN_PLATFORMS))
        raise ValueError(f"{value!r} is not a known platform (known: {known})")
    return platform
