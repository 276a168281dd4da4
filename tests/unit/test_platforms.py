"""CPU architecture to OCI platform, the 64-bit-kernel/32-bit-userland trap included."""

from __future__ import annotations

import pytest

from nodefleet.platforms import UnknownMachineError, normalize_platform, platform_for_machine, same_architecture


@pytest.mark.parametrize(
    ("machine", "bits", "platform"),
    [
        ("x86_64", 64, "linux/amd64"),
        ("x86_64", None, "linux/amd64"),
        ("x86_64", 32, "linux/386"),
        ("aarch64", 64, "linux/arm64"),
        ("arm64", None, "linux/arm64"),
        ("aarch64", 32, "linux/arm/v7"),  # Raspberry Pi OS 32-bit on a 64-bit kernel
        ("armv8l", 32, "linux/arm/v7"),
        ("armv7l", None, "linux/arm/v7"),
        ("armv6l", 32, "linux/arm/v6"),
        ("i686", 32, "linux/386"),
        ("ppc64le", 64, "linux/ppc64le"),
        ("s390x", 64, "linux/s390x"),
        ("riscv64", 64, "linux/riscv64"),
        (" AARCH64\n", None, "linux/arm64"),
    ],
)
def test_platform_for_machine(machine: str, bits: int | None, platform: str) -> None:
    assert platform_for_machine(machine, bits) == platform


def test_unknown_machine() -> None:
    with pytest.raises(UnknownMachineError, match="sparc64"):
        platform_for_machine("sparc64")


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("arm64", "linux/arm64"),
        ("linux/arm", "linux/arm/v7"),
        ("linux/arm64/v8", "linux/arm64"),
        ("LINUX/AMD64", "linux/amd64"),
    ],
)
def test_normalize(given: str, canonical: str) -> None:
    assert normalize_platform(given) == canonical


@pytest.mark.parametrize("bad", ["linux/", "linux/arm64;rm", "a/b/c/d", ""])
def test_normalize_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="not a platform"):
        normalize_platform(bad)


def test_same_architecture_ignores_variant() -> None:
    assert same_architecture("linux/arm/v7", "linux/arm/v8")
    assert not same_architecture("linux/arm64", "linux/amd64")
