"""The Ansible role's architecture table (ansible/roles/nodefleet_host/vars/architectures.yml).

The role decides a host's native platform from its userland's package architecture and, for 32-bit ARM, the
kernel's `uname -m`. These tests render the role's own expression with Jinja2 and hold it to nodefleet's
Python mapping (nodefleet.platforms), so the playbook and `nodefleet up` agree on every host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from nodefleet.platforms import KNOWN_PLATFORMS, architecture, platform_for_machine

ROLE = Path(__file__).resolve().parents[2] / "ansible" / "roles" / "nodefleet_host"
TABLE: dict[str, Any] = yaml.safe_load((ROLE / "vars" / "architectures.yml").read_text())
FAMILIES = ("Debian", "RedHat", "Alpine")


def role_platform(family: str, userland_arch: str, machine: str) -> str:
    """Render the role's __nodefleet_host_native_platform exactly as written in the vars file."""
    template = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False).from_string(  # noqa: S701
        TABLE["__nodefleet_host_native_platform"]
    )
    return template.render(
        **TABLE,
        __nodefleet_host_package_family=family,
        __nodefleet_host_userland_arch=userland_arch,
        __nodefleet_host_kernel_machine=machine,
    ).strip()


@pytest.mark.parametrize(
    ("family", "userland", "machine", "expected"),
    [
        # The trap: Raspberry Pi OS 32-bit on a Pi 3/4/5 boots a 64-bit kernel; Docker there is armhf.
        ("Debian", "armhf", "aarch64", "linux/arm/v7"),
        ("Debian", "arm64", "aarch64", "linux/arm64"),
        ("Debian", "armhf", "armv7l", "linux/arm/v7"),
        # Raspberry Pi OS's armhf on a Pi Zero/1 (ARMv6 CPU).
        ("Debian", "armhf", "armv6l", "linux/arm/v6"),
        ("Debian", "armel", "armv5tel", "linux/arm/v5"),
        ("Debian", "armel", "armv7l", "linux/arm/v7"),
        ("Debian", "amd64", "x86_64", "linux/amd64"),
        ("Debian", "i386", "x86_64", "linux/386"),
        ("Debian", "ppc64el", "ppc64le", "linux/ppc64le"),
        ("RedHat", "x86_64", "x86_64", "linux/amd64"),
        ("RedHat", "aarch64", "aarch64", "linux/arm64"),
        ("RedHat", "armv7hl", "armv7l", "linux/arm/v7"),
        # Alpine's armhf is ARMv6, its armv7 is ARMv7: the reverse of what Debian's names suggest.
        ("Alpine", "armhf", "armv6l", "linux/arm/v6"),
        ("Alpine", "armhf", "aarch64", "linux/arm/v7"),
        ("Alpine", "armv7", "armv7l", "linux/arm/v7"),
        ("Alpine", "aarch64", "aarch64", "linux/arm64"),
        ("Alpine", "x86", "i686", "linux/386"),
        # A CPU name the table lacks keeps the userland's own baseline.
        ("Debian", "armhf", "armv7", "linux/arm/v7"),
        ("Alpine", "armhf", "arm", "linux/arm/v6"),
    ],
)
def test_role_platform(family: str, userland: str, machine: str, expected: str) -> None:
    assert role_platform(family, userland, machine) == expected


def test_every_family_has_a_command_and_a_table() -> None:
    assert set(TABLE["nodefleet_host_userland_arch_commands"]) == set(FAMILIES)
    assert set(TABLE["nodefleet_host_userland_platforms"]) == set(FAMILIES)


def test_every_platform_in_the_table_is_one_nodefleet_knows() -> None:
    for family in FAMILIES:
        for arch, platform in TABLE["nodefleet_host_userland_platforms"][family].items():
            assert platform in KNOWN_PLATFORMS, (family, arch, platform)
    for variant in TABLE["nodefleet_host_arm_variant_by_machine"].values():
        assert f"linux/arm/{variant}" in KNOWN_PLATFORMS


# `uname -m` values nodefleet.platforms maps, with the instruction set each belongs to.
MACHINES = {
    "x86_64": "x86",
    "i686": "x86",
    "i386": "x86",
    "aarch64": "arm",
    "armv6l": "arm",
    "armv7l": "arm",
    "armv8l": "arm",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}
_SIXTY_FOUR_BIT = {"x86_64", "aarch64", "ppc64le", "s390x", "riscv64"}


def _instruction_set(platform: str) -> str:
    arch = architecture(platform).split("/")[1]
    return {"amd64": "x86", "386": "x86", "arm64": "arm", "arm": "arm"}.get(arch, arch)


def _userland_bits(platform: str) -> int:
    return 32 if architecture(platform) in {"linux/arm", "linux/386"} else 64


def test_role_agrees_with_nodefleet_on_every_possible_host() -> None:
    """Every userland on every kernel that can run it: the role and `nodefleet up` name the same platform."""
    checked = 0
    for family in FAMILIES:
        for userland, userland_platform in TABLE["nodefleet_host_userland_platforms"][family].items():
            for machine, instruction_set in MACHINES.items():
                bits = _userland_bits(userland_platform)
                if instruction_set != _instruction_set(userland_platform):
                    continue
                if bits == 64 and machine not in _SIXTY_FOUR_BIT:
                    continue  # a 64-bit userland cannot run on a 32-bit kernel
                expected = platform_for_machine(machine, bits)
                assert role_platform(family, userland, machine) == expected, (family, userland, machine)
                checked += 1
    assert checked > 30
