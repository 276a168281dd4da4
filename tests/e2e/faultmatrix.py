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

# Issue 13: crashes and overlapping builders (section 2), buildx's OpenSSH path (section 1), and faults the matrix
# lacked (section 3). Each promise is stated here before its test checks it.
_TRUST = "nodefleet's own SSH (asyncssh) works and "
CASES += (
    Case(
        "up/sigkill-then-up",
        "up",
        "nodefleet SIGKILLed while buildx creates the nodes (buildx left running in its own session, no restore ran), "
        "then `up` again",
        "the next up exits 0 with pins intact and leaves exactly one BuildKit container per host",
    ),
    Case(
        "up/record-corrupted",
        "up",
        "nodefleet's record of the builder (state dir builders/<builder>/record.json) overwritten with garbage",
        "exit 0, no change: every node keeps its BuildKit container (same container ids), pins intact",
    ),
    Case(
        "up/record-deleted",
        "up",
        "nodefleet's record of the builder (state dir builders/<builder>/record.json) deleted",
        "exit 0, no change: every node keeps its BuildKit container (same container ids), pins intact",
    ),
    Case(
        "up/new-host-while-one-cut",
        "up",
        "armv7-1 added to the inventory while arm64-1's network is cut",
        "exit 1: the builder is not changed (it says why: arm64-1 unreachable), armv7-1 is not added, arm64-1 failed, "
        "the others healthy with pins unchanged; once arm64-1 is back, up adds armv7-1",
    ),
    Case(
        "up/changed-option-while-one-cut",
        "up",
        "a driver option of amd64-1 changed in the inventory while arm64-1's network is cut",
        "exit 1: the builder is not changed (it says why), amd64-1's container is not recreated, pins unchanged; once "
        "arm64-1 is back, up applies the option",
    ),
    Case(
        "down/shared-builder",
        "down",
        "a second builder over the same three hosts (another project), then `down` of the first",
        "exit 0; the BuildKit containers and volumes the other builder lists are kept and named; the other builder's "
        "next status is healthy",
    ),
    Case(
        "down/shared-builder-force",
        "down",
        "a second builder over the same three hosts, then `down --force` of the first",
        "exit 0; the containers and volumes are removed although the other builder lists them (it says so)",
    ),
    Case(
        "up/openssh-no-check",
        "up",
        "`StrictHostKeyChecking no` and `UserKnownHostsFile /dev/null` for arm64-1 in root's ~/.ssh/config",
        "exit 1: arm64-1 refused in one line naming the setting, the others healthy; arm64-1 leaves the builder "
        "(linux/arm64's pin goes to arm64-2 meanwhile) and the next up without the setting puts it back",
    ),
    Case(
        "build/openssh-no-check-rekeyed",
        "build",
        "`StrictHostKeyChecking no` and `UserKnownHostsFile /dev/null` for arm64-1 in root's ~/.ssh/config, then "
        "arm64-1's host key replaced",
        "nothing logs in to arm64-1: `up` refuses it and takes it out of the builder, nodefleet's build and a plain "
        "`docker buildx build --builder` on the builder build linux/arm64 on arm64-2; the other hosts keep working",
    ),
    Case(
        "up/openssh-path-fails",
        "up",
        _TRUST + "buildx's OpenSSH fails for arm64-1 (root's ~/.ssh/config points its UserKnownHostsFile at an empty "
        "file)",
        "exit 1: arm64-1 failed naming buildx's ssh path and the fix, the others healthy; builder pins unchanged",
    ),
    Case(
        "status/two-hosts-down",
        "status",
        "amd64-1's and arm64-1's networks cut at once",
        "exit 1: both failed with their reasons, arm64-2 healthy; builder unchanged",
    ),
    Case(
        "build/two-hosts-down",
        "build",
        "amd64-1's and arm64-1's networks cut at once (amd64-1 is the only amd64 host)",
        "exit 1 within seconds, nothing built: linux/amd64 refused naming amd64-1 (a build fails closed when a "
        "platform has no healthy native node), both hosts reported with their reasons",
    ),
    Case(
        "build/only-node-dies",
        "build",
        "the BuildKit container of amd64-1, the only amd64 node, killed (docker kill) during a RUN step",
        "exit 1 within seconds, not a hang: linux/amd64 failed as an infrastructure failure on amd64-1, no other "
        "node to retry on",
    ),
    Case(
        "build/disk-full",
        "build",
        "the building arm64 node's disk full during a RUN step that writes (arm64-1, whose Docker data root is the "
        "lab's 1 GiB tmpfs, filled from the host)",
        "reported as that node's fault (infrastructure; its error names the node, says the disk is full and gives "
        "its free space), linux/arm64 retried once on the other arm64 node and built natively; exit 0",
    ),
    Case(
        "build/oom-killed",
        "build",
        "the building arm64 node's buildkitd SIGKILLed during a RUN step, as the OOM killer does (simulated: "
        "kill -9 of the buildkitd process from the host; no real OOM is produced)",
        "exit 137 is infrastructure, not a Dockerfile error: retried once on the other arm64 node, built natively; "
        "exit 0",
    ),
    Case(
        "build/registry-unreachable-mid-push",
        "build",
        "the registry stopped while linux/arm64 builds, after linux/amd64 was pushed",
        "exit 1: linux/arm64 failed with the registry's error (not retried: not the node's fault), the report keeps "
        "linux/amd64's pushed digest, no index is made",
    ),
    Case(
        "build/registry-5xx-push",
        "build",
        "the registry answers 500 to every upload (its upload folder for the repository made immutable)",
        "exit 1: the platform failed with the registry's 500, not retried on another node; builder unchanged",
    ),
    Case(
        "build/registry-5xx-index",
        "build",
        "the registry answers 500 when the final index is tagged (the repository's tags folder made immutable)",
        "exit 1: the report keeps every platform's pushed digest; `imagetools create` from them makes the index "
        "once the registry is fixed",
    ),
    Case(
        "build/registry-unreachable-index",
        "build",
        "one of the index's names on a registry port nothing listens on (10.231.0.1:5999)",
        "exit 1: the report keeps every platform's pushed digest; `imagetools create` from them makes the index",
    ),
    Case(
        "up/host-reinstalled-other-arch",
        "up",
        "arm64-2 reinstalled as an arm/v7 machine at the same address (new host key, armv7l sessions, no BuildKit)",
        "the new key is refused (arm64-2 failed); after the user accepts it, up detects linux/arm/v7 and a "
        "linux/arm64 build never goes to arm64-2",
    ),
)

CASE_IDS = tuple(case.id for case in CASES)
assert len(set(CASE_IDS)) == len(CASE_IDS), "case ids must be unique"
