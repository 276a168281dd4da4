"""What both benchmark scripts share: the repository, medians, labctl, and a byte-compiled nodefleet."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def median(samples: list[float]) -> float:
    return round(statistics.median(samples), 3)


def compile_nodefleet() -> None:
    """Byte-compile nodefleet as installing it does, so that a run measures the tool, not its compilation (this
    matters where PYTHONDONTWRITEBYTECODE is set)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "src" / "nodefleet")], check=True)


def labctl(*args: str) -> None:
    # labctl reports on stdout; keep it off ours, which is the JSON document.
    subprocess.run([sys.executable, str(REPO / "lab" / "labctl.py"), *args], check=True, stdout=sys.stderr)


def _busy() -> tuple[int, int]:
    with open("/proc/stat") as handle:
        fields = [int(value) for value in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def settle(threshold: float = 0.2, most: float = 90.0) -> float:
    """Wait until the machine is nearly idle (under `threshold` of its CPUs busy over one second), at most `most`
    seconds; returns the seconds waited. A freshly started BuildKit on an emulated lab host burns CPU for a while
    (qemu translating a large Go binary), which a real arm board does not: timing a command then measures the lab."""
    started = time.monotonic()
    while time.monotonic() - started < most:
        busy0, total0 = _busy()
        time.sleep(1.0)
        busy1, total1 = _busy()
        if total1 > total0 and (busy1 - busy0) / (total1 - total0) < threshold:
            break
    return round(time.monotonic() - started, 1)


def cpu_calibration() -> float:
    """Seconds this interpreter takes for a fixed pure-Python loop (median of three). The project's 2-core VM runs
    the same code up to 1.5x slower at some times than at others; printed before and after the measurements, it
    tells a slow phase of the machine from a slower nodefleet."""
    samples = []
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for value in range(2_000_000):
            total += value
        samples.append(time.perf_counter() - started)
    return round(statistics.median(samples), 3)
