"""What both benchmark scripts share: the repository, medians, labctl, and a byte-compiled nodefleet."""

from __future__ import annotations

import statistics
import subprocess
import sys
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
