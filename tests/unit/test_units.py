"""Sizes and durations as the inventory and `prune` take them, and as nodefleet prints them."""

from __future__ import annotations

import pytest

from nodefleet.units import UnitError, human_duration, human_size, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20GB", 20 * 1000**3),
        ("20gb", 20 * 1000**3),
        ("512MB", 512 * 1000**2),
        ("1.5GiB", 3 * 1024**3 // 2),
        ("4.096kB", 4096),
        ("100 MiB", 100 * 1024**2),
        ("1048576", 1048576),
        ("0B", 0),
    ],
)
def test_sizes(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "GB", "20 gigabytes", "-5GB", "1.5", "1.5B", "20GB ", "5PB", "9999999TB", "1e9"])
def test_sizes_that_are_not(text: str) -> None:
    if text == "20GB ":  # surrounding spaces are forgiven
        assert parse_size(text) == 20 * 1000**3
        return
    with pytest.raises(UnitError, match=r"size|larger"):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "expected"), [("168h", 604800), ("7d", 604800), ("1h30m", 5400), ("3600", 3600), ("45s", 45)]
)
def test_durations(text: str, expected: int) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "h", "1.5h", "7 days", "-1h", "1w", "36500000d"])
def test_durations_that_are_not(text: str) -> None:
    with pytest.raises(UnitError, match=r"duration|century"):
        parse_duration(text)


def test_shown_as_docker_prints_them() -> None:
    assert [human_size(v) for v in (0, 999, 1000, 1_234_567_890, None)] == ["0B", "999B", "1kB", "1.23GB", "-"]
    assert [human_duration(s) for s in (604800, 129600, 5400, 45, 0)] == ["7d", "36h", "90m", "45s", "0s"]
