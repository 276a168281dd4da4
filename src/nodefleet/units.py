"""Sizes and durations as people write them ("20GB", "512MiB", "168h", "7d") and as nodefleet shows them (pure).

Sizes: a number (a decimal point allowed) and a unit: B, kB/KB, MB, GB, TB (powers of 1000, as `docker system df`
and BuildKit's `du` print them) or KiB, MiB, GiB, TiB (powers of 1024); a bare integer is bytes. Durations: one or
more `<integer><unit>` parts with units s, m, h, d (`1h30m`); a bare integer is seconds."""

from __future__ import annotations

import re

SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
SIZE_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?) ?([A-Za-z]*)")
DURATION_PART_RE = re.compile(r"([0-9]+)([smhd])")
MAX_SIZE = 1000**6  # an exabyte: anything larger is a typo
MAX_SECONDS = 100 * 365 * 86400


class UnitError(ValueError):
    """A size or duration that cannot be read; the message says what is accepted."""


def parse_size(text: str) -> int:
    """Bytes from "20GB", "1.5GiB", "512MB" or "1048576"."""
    match = SIZE_RE.fullmatch(text.strip()) if isinstance(text, str) else None
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in SIZE_UNITS or (unit in {"", "b"} and "." in match.group(1)):
        raise UnitError(f"{text!r} is not a size: use a number and a unit such as 512MB, 20GB or 1.5GiB")
    value = round(float(match.group(1)) * SIZE_UNITS[unit])
    if value > MAX_SIZE:
        raise UnitError(f"{text!r} is larger than any disk")
    return value


def parse_duration(text: str) -> int:
    """Seconds from "168h", "7d", "1h30m" or "3600"."""
    stripped = text.strip() if isinstance(text, str) else ""
    if stripped.isdigit():
        seconds = int(stripped)
    elif stripped and DURATION_PART_RE.sub("", stripped) == "":
        seconds = sum(int(number) * DURATION_UNITS[unit] for number, unit in DURATION_PART_RE.findall(stripped))
    else:
        raise UnitError(f"{text!r} is not a duration: use whole numbers with s, m, h or d, such as 168h or 7d")
    if seconds > MAX_SECONDS:
        raise UnitError(f"{text!r} is longer than a century")
    return seconds


def human_size(value: int | None) -> str:
    """Bytes as docker prints them (powers of 1000, three significant figures): "1.23GB", "512MB", "0B"."""
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            break
        size /= 1000
    return f"{size:.3g}{unit}" if unit != "B" else f"{int(size)}B"


def human_duration(seconds: int) -> str:
    """Seconds as the largest whole units: "7d", "36h", "90m", "45s"."""
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % span == 0:
            return f"{seconds // span}{unit}"
    return f"{seconds}s"
