"""The fault matrix of tests/e2e/test_faults.py as plain data.

tests/e2e/test_faults.py runs one test per case and appends one JSON row per case to the results file;
scripts/gen_reliability.py turns the rows into docs/reliability.md; tests/unit/test_reliability_doc.py fails
when that document lacks a case listed here. Importing this module needs neither the lab nor pytest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS_ENV = "NODEFLEET_RELIABILITY_RESULTS"
DEFAULT_RESULTS = REPO / "build" / "reliability" / "results.jsonl"
DOC = REPO / "docs" / "reliability.md"

# The test fleet: three lab hosts in one builder. arm64-1 is the host faults hit; arm64-2 is its standby.
HOSTS = ("amd64-1", "arm64-1", "arm64-2")
FAULTED = "arm64-1"
PINS = {"amd64-1": ("linux/amd64",), "arm64-1": ("linux/arm64",), "arm64-2": ()}


def results_file() -> Path:
    """Where the suite appends its rows: $NODEFLEET_RELIABILITY_RESULTS, else build/reliability/results.jsonl."""
    return Path(os.environ.get(RESULTS_ENV) or DEFAULT_RESULTS)


@dataclass(frozen=True)
class Case:
    """One fault and one command, and the promise nodefleet makes about it."""

    id: str
    command: str
    fault: str
    promise: str


_BEFORE = {
    "host-down": "arm64-1's network cut before the command",
    "engine-stopped": "arm64-1's Docker engine stopped before the command",
    "host-key-changed": "arm64-1's SSH host key replaced (known_hosts keeps the old one)",
}
_PROMISES = {
    "status": "arm64-1 failed with its reason, the others healthy; builder unchanged",
    "up": "arm64-1 failed with its reason, the others healthy; builder pins unchanged",
    "build": "linux/arm64 built natively on arm64-2, linux/amd64 on amd64-1; exit 0",
    "down": "the others removed, arm64-1 reported failed (not falsely removed); a second down after the repair "
    "removes it",
}

CASES: tuple[Case, ...] = (
    *(
        Case(f"{command}/{fault}", command, description, _PROMISES[command])
        for fault, description in _BEFORE.items()
        for command in ("status", "up", "build", "down")
    ),
    Case(
        "status/sshd-killed-during",
        "status",
        "arm64-1's sshd and its sessions killed while the command talks to it",
        _PROMISES["status"],
    ),
    Case(
        "up/sshd-killed-during",
        "up",
        "arm64-1's sshd and its sessions killed while the command talks to it",
        _PROMISES["up"],
    ),
    Case(
        "build/sshd-killed-during",
        "build",
        "the building arm64 node's sshd and sessions killed during a RUN step",
        "retried once on the other arm64 node, built natively; exit 0",
    ),
    Case(
        "down/sshd-killed-during",
        "down",
        "arm64-1's sshd and its sessions killed while the command talks to it",
        "every host reported truthfully (removed means gone); a second down after the repair leaves nothing",
    ),
    Case(
        "build/buildkit-killed",
        "build",
        "the building arm64 node's BuildKit container killed (docker kill) during a RUN step",
        "retried once on the other arm64 node, built natively; exit 0; the next up restarts the container",
    ),
    Case(
        "build/network-cut-and-restored",
        "build",
        "the building arm64 node's network cut for 6 s during a RUN step, then restored",
        "ends within its timeout, built natively (same node or the other); exit 0",
    ),
    Case(
        "up/two-at-once",
        "up",
        "two `up` started together on a builder that does not exist",
        "both exit 0 (one waits for the other's lock); one builder, pins intact",
    ),
    Case(
        "up/sigint-then-up",
        "up",
        "SIGINT (Ctrl-C) while buildx creates the nodes, then `up` again",
        "exits 130 within seconds, store readable; the next up exits 0 with pins intact",
    ),
    Case(
        "status/store-corrupted",
        "status",
        "buildx's builder file overwritten with garbage",
        "no traceback, names the unreadable file and the fix; changes nothing",
    ),
    Case(
        "build/store-corrupted",
        "build",
        "buildx's builder file overwritten with garbage",
        "builds natively through the per-node builders; exit 0",
    ),
    Case(
        "up/store-corrupted",
        "up",
        "buildx's builder file overwritten with garbage",
        "restores nodefleet's backup and finishes; exit 0, pins intact",
    ),
    Case(
        "build/store-missing",
        "build",
        "buildx's builder file deleted",
        "builds natively through the per-node builders; exit 0",
    ),
    Case(
        "up/store-missing",
        "up",
        "buildx's builder file deleted",
        "recreates the builder; exit 0, pins intact",
    ),
    Case(
        "up/registry-unreachable",
        "up",
        "arm64-1's BuildKit image on a registry port nothing listens on (10.231.0.1:5999)",
        "arm64-1 failed (cannot pull), the others healthy; builder pins unchanged",
    ),
    Case(
        "build/registry-unreachable",
        "build",
        "--push to a registry port nothing listens on (10.231.0.1:5999)",
        "fails within seconds with buildx's reason, not retried on other nodes; builder unchanged",
    ),
)

CASE_IDS = tuple(case.id for case in CASES)
assert len(set(CASE_IDS)) == len(CASE_IDS), "case ids must be unique"
