"""The fault matrix on the lab: `up`, `status`, `build` and `down` while hosts misbehave (tests/e2e/faultmatrix.py).

Every case runs the real command line with explicit subprocess timeouts (nothing may hang), checks the promise
nodefleet makes, and appends one JSON row to the results file (faultmatrix.results_file()), also when the promise
is broken: command, what it printed first, exit code, seconds, whether buildx's store (the builder's pins) and the
other hosts were intact. scripts/gen_reliability.py turns the rows into docs/reliability.md.

One builder (three hosts, arm64-1 the faulted one, arm64-2 its standby) is shared by every case, in its own buildx
store (BUILDX_CONFIG) and nodefleet state dir; a case that takes it down brings it back first thing in the next.

The whole matrix runs with trixie's buildx (0.13), then with unstable's (0.29): the `buildx` fixture (conftest.py).
Each variant has its own builder (e2efault-<variant>), store and state dir; each row records its buildx version.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nodefleet.buildx import store as buildx_store
from nodefleet.state import BuilderState

from .conftest import SMALL_DISK
from .faultmatrix import CASES, FAULTED, HOSTS, PINS, Case, results_file
from .fleetlib import (
    REPO,
    buildx_env,
    buildx_version,
    container_id,
    host_docker,
    lab_data,
    lab_hosts,
    volume_exists,
    write_inventory,
)

pytestmark = pytest.mark.e2e

OTHERS = tuple(host for host in HOSTS if host != FAULTED)
CONNECT_TIMEOUT = 3
TIMEOUTS = {"status": 90, "up": 300, "build": 300, "down": 120}  # hard limits: beyond them a case is a hang
RUN_ID = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:6]}"
BY_ID = {case.id: case for case in CASES}
SLOW_RUN = "ARG BASE\nFROM ${BASE}\nARG NONCE\nRUN echo start $NONCE && sleep 10 && echo slept\n"
QUICK = "ARG BASE\nFROM ${BASE}\nARG NONCE\nRUN echo $NONCE > /nonce\n"
UNREACHABLE_REGISTRY = "10.231.0.1:5999"  # the lab's gateway address, a port nothing listens on


def _git(*args: str) -> str:
    result = subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO, timeout=30, check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def tree() -> tuple[str, bool]:
    """The commit checked out, and whether the tree has no change git tracks or would track."""
    commit = _git("rev-parse", "HEAD") or "unknown"
    return commit, commit != "unknown" and _git("status", "--porcelain", "--untracked-files=normal") == ""


# ---------------------------------------------------------------------------------------------- running commands


@dataclass
class Run:
    """A finished command line run; exit_code None means it was killed at its timeout (a hang)."""

    args: tuple[str, ...]
    exit_code: int | None
    seconds: float
    stdout: str
    stderr: str

    @property
    def json(self) -> dict[str, Any]:
        try:
            data = json.loads(self.stdout)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def hosts(self) -> dict[str, dict[str, Any]]:
        return {host["name"]: host for host in self.json.get("hosts") or []}

    def platforms(self) -> dict[str, dict[str, Any]]:
        return {result["platform"]: result for result in self.json.get("platforms") or []}

    def nodes(self) -> dict[str, dict[str, Any]]:
        return {node["name"]: node for node in self.json.get("nodes") or []}


class Running:
    """A command line started in the background; its stderr is read line by line so a case can act mid-way."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.args = tuple(argv[3:])
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
            start_new_session=True,  # its own process group: SIGINT to it is a terminal's Ctrl-C
        )
        self.lines: list[str] = []
        self.stdout = ""
        self.changed = threading.Condition()
        self.readers = [threading.Thread(target=self._read_err, daemon=True), threading.Thread(target=self._read_out)]
        for reader in self.readers:
            reader.start()

    def _read_err(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def _read_out(self) -> None:
        assert self.process.stdout is not None
        self.stdout = self.process.stdout.read()

    def wait_for(self, pattern: str, timeout: float, start: int = 0) -> tuple[int, re.Match[str]] | None:
        """The first stderr line (from index `start`) matching `pattern`, waiting up to `timeout` seconds."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for index in range(start, len(self.lines)):
                    match = regex.search(self.lines[index])
                    if match:
                        return index, match
                start = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    return None
                self.changed.wait(min(left, 0.5))

    def signal(self, number: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, number)

    def finish(self, timeout: float) -> Run:
        try:
            code: int | None = self.process.wait(timeout=max(1.0, timeout - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait(timeout=30)
            code = None
        for reader in self.readers:
            reader.join(timeout=10)
        return Run(self.args, code, time.monotonic() - self.started, self.stdout, "\n".join(self.lines))


# ---------------------------------------------------------------------------------------------- the fleet


class FaultFleet:
    """The shared builder of the matrix: its inventory, isolated buildx store and nodefleet state dir, and the
    environment that selects its buildx variant."""

    def __init__(self, lab: Any, root: Path, variant: str, buildx_environ: dict[str, str]) -> None:
        self.lab = lab
        self.root = root
        self.variant = variant
        self.builder = f"e2efault-{variant}"
        self.inventory = write_inventory(
            lab, root / "inventory.toml", self.builder, HOSTS, connect_timeout=CONNECT_TIMEOUT
        )
        self.store = root / "buildx"
        self.env = {
            **os.environ,
            **buildx_environ,
            "NODEFLEET_STATE_DIR": str(root / "state"),
            "BUILDX_CONFIG": str(self.store),
        }
        self.buildx_version = buildx_version(self.env)
        self.base = f"{lab_data(lab)['registry']}/lab/busybox:stable"
        self.context = root / "context"
        self.context.mkdir()
        self.baseline: dict[str, float] = {}

    def argv(self, *args: str, inventory: Path | None = None, verbose: bool = False) -> list[str]:
        command, rest = args[0], args[1:]
        flags = ["-vv"] if verbose else []
        return [
            sys.executable, "-m", "nodefleet", *flags, command, "-i", str(inventory or self.inventory), "--json", *rest
        ]  # fmt: skip

    def run(self, *args: str, inventory: Path | None = None, timeout: float | None = None) -> Run:
        limit = timeout or TIMEOUTS[args[0]]
        return self.start(*args, inventory=inventory).finish(limit)

    def start(self, *args: str, inventory: Path | None = None, verbose: bool = False) -> Running:
        return Running(self.argv(*args, inventory=inventory, verbose=verbose), self.env)

    def build_args(self, *extra: str, dockerfile: str = QUICK, platforms: str = "linux/amd64,linux/arm64") -> list[str]:
        (self.context / "Dockerfile").write_text(dockerfile)
        return [
            "build", "--platform", platforms, "--build-arg", f"BASE={self.base}",
            "--build-arg", f"NONCE={uuid.uuid4().hex}", *extra, str(self.context),
        ]  # fmt: skip

    # ---- state

    def instance_file(self) -> Path:
        return buildx_store.instance_file(self.builder, {"BUILDX_CONFIG": str(self.store)})

    def pins(self) -> dict[str, tuple[str, ...]] | None:
        """The builder's nodes and pins as buildx's store has them; None when it has no such builder."""
        try:
            stored = buildx_store.read_store(self.builder, {"BUILDX_CONFIG": str(self.store)})
        except buildx_store.CorruptStoreError:
            return {"<unreadable>": ()}
        return None if stored is None else {node.name: node.platforms for node in stored.nodes}

    def state(self, host: str) -> str:
        """The host's BuildKit container state, asked of its engine directly (not through nodefleet)."""
        state = host_docker(
            self.lab, host, "inspect", "-f", "{{.State.Status}}", f"buildx_buildkit_{host}", check=False
        )
        return state.strip() or "missing"

    def running(self, host: str) -> bool:
        return self.state(host) == "running"

    def ensure_up(self) -> None:
        """Bring the builder to its full healthy state unless it is there already (a down case leaves it gone)."""
        if self.pins() == PINS and all(self.running(host) for host in HOSTS):
            return
        run = self.run("up")
        assert run.exit_code == 0, f"the builder could not be brought back before the case:\n{run.stdout}{run.stderr}"
        assert self.pins() == PINS

    def health(self) -> dict[str, str]:
        """Each host's status as `nodefleet status` reports it ('unknown' when it reports none)."""
        hosts = self.run("status").hosts()
        return {name: str(hosts.get(name, {}).get("status", "unknown")) for name in HOSTS}

    def snapshot(self, health: bool = True) -> dict[str, dict[str, Any]]:
        """What "intact" means for each node: its health, its pins, endpoint and driver options (with the config
        digest among them) in buildx's store, the config digest in nodefleet's record, and its BuildKit container
        (id and state, asked of the host's engine)."""
        try:
            stored = buildx_store.read_store(self.builder, {"BUILDX_CONFIG": str(self.store)})
        except buildx_store.CorruptStoreError:
            stored = None
        digests = BuilderState(Path(self.env["NODEFLEET_STATE_DIR"]), self.builder).load_digests() or {}
        statuses = self.health() if health else {}
        shot = {}
        for host in HOSTS:
            node = stored.node(host) if stored else None
            shot[host] = {
                "health": statuses.get(host, "not asked"),
                "pins": node.platforms if node else None,
                "endpoint": node.endpoint if node else None,
                "driver_opts": dict(node.driver_opts) if node else None,
                "record_digest": digests.get(host),
                "container": container_id(self.lab, host, host),
                "state": self.state(host),
            }
        return shot


@pytest.fixture(scope="module")
def fleet(
    lab: Any, buildx_variant: str, buildx: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FaultFleet]:
    fleet = FaultFleet(lab, tmp_path_factory.mktemp(f"faults-{buildx_variant}"), buildx_variant, buildx)
    first = fleet.run("up")
    assert first.exit_code == 0, first.stdout + first.stderr
    # Baselines without faults: what a case costs on top of them is the fault's price.
    for command in ("status", "up"):
        fleet.baseline[command] = fleet.run(command).seconds
    fleet.baseline["build"] = fleet.run(*fleet.build_args()).seconds
    yield fleet
    fleet.run("down")


# ---------------------------------------------------------------------------------------------- recording


@dataclass
class Record:
    """One case's row: what happened, and which promises were broken."""

    case: Case
    fleet: FaultFleet
    runs: list[Run] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    builder: str = ""
    builder_intact: bool | None = None
    others: str = ""
    others_intact: bool | None = None
    # Checks started (the first `expect`): before that, a failure means the case did not run, not that it failed.
    checked: bool = False
    not_run: str | None = None
    # The nodes the fault hit, comma-separated (the others are compared before and after), and the snapshot before
    # the fault.
    faulted: str = FAULTED
    before: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The tree when the case started: a row names the commit it ran on, clean only if nothing changed until its end.
    started_on: tuple[str, bool] = field(default_factory=tree)

    def expect(self, condition: bool, promise: str) -> bool:
        self.checked = True
        if not condition:
            self.broken.append(promise)
        return condition

    def ready(self, *, health: bool = True) -> None:
        """Set up: the builder brought to its full healthy state, and every node's state taken for comparison."""
        self.fleet.ensure_up()
        self.before = self.fleet.snapshot(health=health)

    def main(self) -> Run:
        return self.runs[0]

    def row(self) -> dict[str, Any]:
        main = self.main() if self.runs else None
        ran = self.not_run is None
        (commit, clean), ended_on = self.started_on, tree()
        return {
            "case": self.case.id,
            "command": "nodefleet " + " ".join(_display(main.args)) if main else self.case.command,
            "fault": self.case.fault,
            "promise": self.case.promise,
            "exit_code": main.exit_code if main else None,
            "seconds": round(main.seconds, 1) if main else None,
            "baseline_seconds": round(self.fleet.baseline.get(self.case.command, 0.0), 1),
            "builder_intact": self.builder_intact,
            "builder": self.builder,
            "other_hosts_intact": self.others_intact,
            "other_hosts": self.others,
            "saw": _saw(main) if main else [],
            "status": "ran" if ran else "not run",
            "not_run": self.not_run,
            "promise_kept": (not self.broken) if ran else None,
            "broken": self.broken,
            "built": _built(main) if main and main.platforms() else None,
            "notes": self.notes,
            "later_runs": [
                {
                    "command": "nodefleet " + " ".join(_display(run.args)),
                    "exit_code": run.exit_code,
                    "seconds": round(run.seconds, 1),
                }
                for run in self.runs[1:]
            ],
            "run": RUN_ID,
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "buildx": self.fleet.buildx_version,
            "buildx_variant": self.fleet.variant,
            "commit": commit if ended_on[0] == commit else f"{commit}..{ended_on[0]}",
            "tree_clean": clean and ended_on == (commit, True),
        }


def _built(run: Run) -> dict[str, str]:
    """Which node built (or failed) each platform, and how: every build row states it."""
    return {
        platform: f"{result.get('status')} on {result.get('node') or '-'} ({result.get('mode') or '-'})"
        for platform, result in sorted(run.platforms().items())
    }


def _display(args: tuple[str, ...]) -> list[str]:
    """The command as a user would type it: the inventory and temp paths shortened."""
    return [_display_word(word) for word in args]


def _display_word(word: str) -> str:
    if word.endswith("inventory.toml"):
        return "inventory.toml"
    if "/pytest-" in word:
        return Path(word).name
    if word.startswith("NONCE="):
        return "NONCE=…"
    if word.startswith("BASE="):
        return "BASE=…/lab/busybox:stable"
    return word


def _saw(run: Run) -> list[str]:
    """What the user saw first: nodefleet's own lines on stderr, then the reasons the JSON gives."""
    seen = [line for line in run.stderr.splitlines() if line.startswith("nodefleet:") and " DEBUG " not in line]
    data = run.json
    for host in data.get("hosts") or []:
        if host.get("error"):
            seen.append(f"{host['name']}: {host['error']}")
    for result in data.get("platforms") or []:
        line = f"{result['platform']}: {result['status']} on {result.get('node') or '-'} ({result.get('mode')})"
        if len(result.get("attempts") or []) > 1:
            line += " after " + ", ".join(f"{a['node']} {a['status']}" for a in result["attempts"][:-1])
        if result.get("error"):
            line += f": {result['error']}"
        seen.append(line)
    seen += [f"note: {note}" for note in data.get("notes") or []]
    if not seen and not data:
        seen += [line for line in run.stderr.splitlines() if line.strip()][-3:]
    if not seen and data.get("hosts"):
        states = ", ".join(f"{host['name']} {host['status']}" for host in data["hosts"])
        seen.append(states + (", builder changed" if data.get("changed") else ", no change"))
    return [line[:300] for line in dict.fromkeys(seen)][:6]


@pytest.fixture
def record(request: pytest.FixtureRequest, fleet: FaultFleet) -> Iterator[Callable[[str], Record]]:
    """`rec = record("up/host-down")`: the case's row, appended to the results file when the test ends."""
    made: list[Record] = []

    def make(case_id: str) -> Record:
        made.append(Record(BY_ID[case_id], fleet))
        return made[-1]

    yield make
    outcome = getattr(request.node, "rep_call", None)
    # A test stopped by an error, or by one a known defect's xfail mark expects; a strict xfail that passed
    # (XPASS) is no error: its checks all held.
    stopped = outcome is not None and (outcome.failed or hasattr(outcome, "wasxfail"))
    error = _reason(outcome.longrepr) if stopped else ""
    if error.startswith("[XPASS"):
        error = ""
    for rec in made:
        if not rec.checked:
            # It stopped before its checks (a lab fault or the setup failed): no verdict, and it says why.
            rec.not_run = error or "the case ran no check"
        elif error and not rec.broken:
            rec.not_run = f"its checks stopped on an error: {error}"
    path = results_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        for rec in made:
            handle.write(json.dumps(rec.row()) + "\n")


def _reason(longrepr: Any) -> str:
    """The one line that says why a test stopped: pytest's message (`E   ...` lines) or the last line."""
    crash = getattr(longrepr, "reprcrash", None)
    text = str(crash.message if crash is not None else longrepr)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else "failed")[:300]


def check_builder(rec: Record, *, expect_gone: bool = False) -> None:
    pins = rec.fleet.pins()
    if expect_gone:
        rec.builder_intact = pins is None
        rec.builder = "removed, as asked" if pins is None else f"still there: {pins}"
        rec.expect(pins is None, "down removes the builder")
        return
    moved = _store_changes(rec)
    rec.builder_intact = pins == PINS and not moved
    rec.builder = ("pins intact" if pins == PINS else f"changed: {pins}") + "".join(f"; {m}" for m in moved)
    rec.expect(pins == PINS, "buildx's store keeps every node and its pins")
    rec.expect(not moved, "every node keeps its endpoint and driver options (config digest among them)")


def _store_changes(rec: Record) -> list[str]:
    """Nodes whose endpoint or driver options in buildx's store differ from before the case."""
    if not rec.before:
        return []
    after = rec.fleet.snapshot(health=False)
    return [
        f"{host}'s {key} changed"
        for host in HOSTS
        for key in ("endpoint", "driver_opts")
        if rec.before[host][key] is not None and after[host][key] != rec.before[host][key]
    ]


COMPARED = ("health", "pins", "endpoint", "driver_opts", "record_digest", "container", "state")


def check_others_intact(rec: Record, ignore: tuple[str, ...] = ()) -> bool:
    """Every node but the faulted one as before the case: health (a `status` now), pins, endpoint, driver options,
    config digest (buildx's store and nodefleet's record), BuildKit container id and state. Adds the verdict to
    the row (with the case's own words in `rec.others`) and returns it."""
    assert rec.before, "the case took no snapshot before its fault (rec.ready())"
    after = rec.fleet.snapshot()
    diffs = [
        f"{host} {key}: {rec.before[host][key]} -> {after[host][key]}"
        for host in HOSTS
        if host not in rec.faulted.split(",")
        for key in COMPARED
        if key not in ignore and after[host][key] != rec.before[host][key]
    ]
    others = [host for host in HOSTS if host not in rec.faulted.split(",")]
    summary = ", ".join(f"{host} {after[host]['health']}" for host in others)
    compared = ", ".join(key for key in COMPARED if key not in ignore)
    rec.others = "; ".join(filter(None, [rec.others, f"after: {summary}", *diffs]))
    rec.notes.append(f"other hosts compared before and after: {compared}")
    ok = not diffs and all(after[host]["health"] == "healthy" for host in others)
    rec.others_intact = ok if rec.others_intact is None else (rec.others_intact and ok)
    rec.expect(ok, "the other hosts as before: " + compared)
    return ok


def check_others_healthy(rec: Record, run: Run, ignore: tuple[str, ...] = ()) -> None:
    hosts = run.hosts()
    others = [host for host in HOSTS if host not in rec.faulted.split(",")]
    reported = {name: hosts.get(name, {}).get("status") for name in others}
    states = {name: rec.fleet.state(name) for name in others}
    ok = all(status == "healthy" for status in reported.values()) and all(s == "running" for s in states.values())
    rec.others_intact = ok
    rec.others = ", ".join(
        f"{name} {reported[name]}" + ("" if states[name] == "running" else f" (BuildKit {states[name]})")
        for name in others
    )
    rec.expect(ok, "the other hosts are healthy and their BuildKit keeps running")
    check_others_intact(rec, ignore)


def check_bounded(rec: Record, run: Run, extra: float) -> None:
    """No hang: the command ended by itself, within its baseline plus what the fault may cost."""
    limit = rec.fleet.baseline.get(rec.case.command, 10.0) * 2 + extra
    rec.expect(run.exit_code is not None, f"ends by itself within {TIMEOUTS[rec.case.command]} s")
    rec.expect(run.seconds <= limit, f"takes at most {limit:.0f} s (took {run.seconds:.1f} s)")


# ---------------------------------------------------------------------------------------------- faults before

LAB_ACTION = {"host-down": "net-cut", "engine-stopped": "engine-stop", "host-key-changed": "rekey"}
REASON = {
    "host-down": r"timed out|cannot connect|unreachable|No route",
    "engine-stopped": r"Docker engine is not running|Cannot connect to the Docker daemon",
    "host-key-changed": r"does NOT match known_hosts",
}
# What a fault may cost on top of the baseline: up retries a connection 3 times, down twice.
FAULT_COST = {"status": CONNECT_TIMEOUT + 10, "up": 3 * CONNECT_TIMEOUT + 15, "build": CONNECT_TIMEOUT + 15}
FAULT_COST["down"] = 2 * CONNECT_TIMEOUT + 15


@pytest.mark.parametrize(
    "case_id", [case.id for case in CASES if case.id.split("/")[1] in LAB_ACTION], ids=lambda case_id: case_id
)
def test_fault_before_the_command(fleet: FaultFleet, lab_fault: Any, record: Any, case_id: str) -> None:
    rec = record(case_id)
    command, fault = case_id.split("/")
    rec.ready()
    args = fleet.build_args() if command == "build" else [command]
    with lab_fault(FAULTED, LAB_ACTION[fault]):
        run = fleet.run(*args)
        rec.runs.append(run)
        check_bounded(rec, run, FAULT_COST[command])
        if command == "down":
            _check_down_with_a_failed_host(rec, run, REASON[fault])
    if command == "down":
        _repair_down(rec)
        return
    if command == "build":
        _check_failover_build(rec, run)
    else:
        rec.expect(run.exit_code == 1, "exit code 1 (some hosts failed)")
        failed = run.hosts().get(FAULTED, {})
        rec.expect(failed.get("status") == "failed", f"{FAULTED} reported failed")
        rec.expect(bool(re.search(REASON[fault], failed.get("error") or "")), f"{FAULTED}'s reason says what is wrong")
        check_others_healthy(rec, run)
    check_builder(rec)
    assert not rec.broken, rec.row()


def _check_failover_build(rec: Record, run: Run, *, compare: bool = True) -> None:
    platforms = run.platforms()
    arm, amd = platforms.get("linux/arm64", {}), platforms.get("linux/amd64", {})
    rec.expect(run.exit_code == 0, "exit code 0")
    rec.expect(arm.get("status") == "built" and arm.get("node") == "arm64-2", "linux/arm64 built on arm64-2")
    rec.expect(arm.get("mode") == "native" and amd.get("mode") == "native", "every platform built natively")
    rec.expect(amd.get("status") == "built" and amd.get("node") == "amd64-1", "linux/amd64 built on amd64-1")
    node = run.nodes().get(FAULTED, {})
    rec.expect(node.get("status") == "failed", f"{FAULTED} reported not used, with its reason")
    rec.others_intact = arm.get("node") == "arm64-2" and amd.get("status") == "built"
    rec.others = f"arm64 on {arm.get('node')} {arm.get('status')}, amd64 on {amd.get('node')} {amd.get('status')}"
    if compare:
        check_others_intact(rec)


def _check_down_with_a_failed_host(rec: Record, run: Run, reason: str) -> None:
    hosts = run.hosts()
    failed = hosts.get(FAULTED, {})
    rec.expect(run.exit_code == 1, "exit code 1 (a host could not be cleaned)")
    rec.expect(failed.get("status") == "failed", f"{FAULTED} reported failed, not removed")
    rec.expect(bool(re.search(reason, failed.get("error") or "")), f"{FAULTED}'s reason says what is wrong")
    removed = {name: hosts.get(name, {}).get("status") for name in OTHERS}
    gone = {name: container_id(rec.fleet.lab, name, name) == "" for name in OTHERS}
    rec.others_intact = all(status == "removed" for status in removed.values()) and all(gone.values())
    rec.others = ", ".join(f"{name} {removed[name]}" + ("" if gone[name] else " (container left!)") for name in OTHERS)
    rec.expect(bool(rec.others_intact), "the other hosts removed, their containers gone")
    check_builder(rec, expect_gone=True)


def _repair_down(rec: Record) -> None:
    """After the fault is undone: what the faulted host kept, and a second `down` that must clean it."""
    fleet = rec.fleet
    left = container_id(fleet.lab, FAULTED, FAULTED)
    if left:
        rec.notes.append(f"{FAULTED}'s BuildKit container was still there once the fault was undone")
    again = fleet.run("down")
    rec.runs.append(again)
    rec.expect(again.exit_code == 0, "a second down, once the host is back, exits 0")
    rec.expect(container_id(fleet.lab, FAULTED, FAULTED) == "", f"the second down removes {FAULTED}'s container")
    rec.expect(fleet.pins() is None, "after the second down the builder is gone")
    assert not rec.broken, rec.row()


# ---------------------------------------------------------------------------------------------- sshd killed during


def kill_sshd_sessions(host: str) -> list[int]:
    """SIGKILL the sshd processes serving sessions on a lab host (in its network namespace); the listener is
    stopped through labctl. Only this test's own sessions exist: the session has the lab to itself."""
    pids = subprocess.run(
        ["ip", "netns", "pids", f"nflab-{host}"], capture_output=True, text=True, timeout=10, check=False
    ).stdout.split()
    killed = []
    for pid in pids:
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if comm.startswith("sshd") and b"-D" not in cmdline:  # the listener runs `sshd -D -f ...`
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
    return killed


@pytest.mark.parametrize("command", ["status", "up", "down"])
def test_sshd_killed_during_the_command(fleet: FaultFleet, lab_fault: Any, record: Any, command: str) -> None:
    rec = record(f"{command}/sshd-killed-during")
    rec.ready()
    running = fleet.start(command, verbose=True)
    hit = running.wait_for(rf"nodefleet\.ssh: {FAULTED}: run ", timeout=60)
    killed = kill_sshd_sessions(FAULTED)  # at once, by pid: the command is still talking to the host
    with lab_fault(FAULTED, "sshd-stop"):
        killed += kill_sshd_sessions(FAULTED)  # sessions opened before the listener stopped
        run = running.finish(TIMEOUTS[command])
        rec.runs.append(run)
        rec.notes.append(f"fault applied {'when ' + FAULTED + ' ran its first command' if hit else 'late'}; "
                         f"{len(killed)} sshd session processes killed")  # fmt: skip
        check_bounded(rec, run, FAULT_COST[command])
    hosts = run.hosts()
    faulted = hosts.get(FAULTED, {})
    if command == "down":
        # Whether the kill came before or after the host's removal ran, the report must be the truth.
        removed = faulted.get("status") == "removed"
        rec.notes.append(f"{FAULTED} reported {faulted.get('status')}")
        rec.expect(not removed or container_id(fleet.lab, FAULTED, FAULTED) == "", "removed means gone")
        rec.expect(run.exit_code == (0 if removed else 1), "exit code says whether every host was cleaned")
        others = {name: hosts.get(name, {}).get("status") for name in OTHERS}
        rec.others_intact = all(status == "removed" for status in others.values())
        rec.others = ", ".join(f"{name} {status}" for name, status in others.items())
        if fleet.pins() is None:
            check_builder(rec, expect_gone=True)
        else:
            # The kill landed after the host's own cleanup but before `buildx rm`, which inspects every node over
            # ssh: the builder stays, and down must say so; the second down below must remove it.
            rm_failed = any("buildx rm" in note for note in run.json.get("notes") or [])
            rec.builder_intact = False
            rec.builder = "kept: the first down said `buildx rm` could not reach arm64-1; the second removed it"
            rec.notes.append("the fault hit between arm64-1's cleanup and `buildx rm`")
            rec.expect(run.exit_code == 1 and rm_failed, "a builder left in buildx's store is reported, exit 1")
        _repair_down(rec)
        return
    rec.expect(run.exit_code == 1, "exit code 1 (some hosts failed)")
    rec.expect(faulted.get("status") == "failed", f"{FAULTED} reported failed")
    check_others_healthy(rec, run)
    check_builder(rec)
    assert not rec.broken, rec.row()


# ---------------------------------------------------------------------------------------------- mid-build faults


def _start_slow_arm64_build(fleet: FaultFleet) -> tuple[Running, str | None]:
    running = fleet.start(*fleet.build_args(dockerfile=SLOW_RUN, platforms="linux/arm64"), verbose=False)
    chosen = running.wait_for(r"linux/arm64: building natively on (\S+)", timeout=90)
    node = chosen[1].group(1) if chosen else None
    if chosen is not None and running.wait_for(r"echo start", timeout=90, start=chosen[0]) is None:
        node = None
    return running, node


def _check_retried_build(rec: Record, run: Run, node: str | None) -> None:
    (result,) = run.platforms().values() or [{}]
    attempts = result.get("attempts") or []
    rec.expect(run.exit_code == 0, "exit code 0")
    rec.expect(result.get("status") == "built" and result.get("mode") == "native", "linux/arm64 built natively")
    rec.expect(
        len(attempts) == 2 and attempts[0].get("node") == node and attempts[0].get("error_kind") == "infrastructure",
        f"the first attempt on {node} failed as an infrastructure error",
    )
    rec.expect(result.get("node") not in {None, node}, "built on the other arm64 node")
    rec.others_intact = result.get("status") == "built"
    rec.others = f"arm64 built on {result.get('node')}"
    rec.faulted = node or FAULTED
    check_others_intact(rec)


def test_sshd_killed_during_build(fleet: FaultFleet, lab_fault: Any, record: Any) -> None:
    rec = record("build/sshd-killed-during")
    rec.ready()
    running, node = _start_slow_arm64_build(fleet)
    assert node is not None, "the build did not reach its RUN step"
    with lab_fault(node, "sshd-stop"):
        killed = kill_sshd_sessions(node)
        run = running.finish(TIMEOUTS["build"])
        rec.runs.append(run)
    rec.notes.append(f"killed {node}'s sshd and {len(killed)} session processes during RUN")
    check_bounded(rec, run, 40)
    _check_retried_build(rec, run, node)
    check_builder(rec)
    assert not rec.broken, rec.row()


def test_buildkit_killed_mid_build(fleet: FaultFleet, record: Any) -> None:
    rec = record("build/buildkit-killed")
    rec.ready()
    running, node = _start_slow_arm64_build(fleet)
    assert node is not None, "the build did not reach its RUN step"
    host_docker(fleet.lab, node, "kill", f"buildx_buildkit_{node}")
    run = running.finish(TIMEOUTS["build"])
    rec.runs.append(run)
    check_bounded(rec, run, 40)
    _check_retried_build(rec, run, node)
    check_builder(rec)
    repair = fleet.run("up")
    rec.runs.append(repair)
    rec.expect(repair.exit_code == 0 and fleet.running(node), f"the next up starts {node}'s BuildKit again")
    assert not rec.broken, rec.row()


def test_network_cut_mid_build_and_restored(fleet: FaultFleet, lab_fault: Any, record: Any) -> None:
    rec = record("build/network-cut-and-restored")
    rec.ready()
    running, node = _start_slow_arm64_build(fleet)
    assert node is not None, "the build did not reach its RUN step"
    with lab_fault(node, "net-cut"):
        time.sleep(6)
    run = running.finish(TIMEOUTS["build"])
    rec.runs.append(run)
    check_bounded(rec, run, 60)
    (result,) = run.platforms().values() or [{}]
    rec.expect(run.exit_code == 0, "exit code 0")
    rec.expect(result.get("status") == "built" and result.get("mode") == "native", "linux/arm64 built natively")
    attempts = [attempt.get("node") for attempt in result.get("attempts") or []]
    rec.notes.append(f"cut {node} for 6 s; attempts on {', '.join(map(str, attempts))}")
    rec.others_intact = result.get("status") == "built"
    rec.others = f"arm64 built on {result.get('node')}"
    rec.faulted = node or FAULTED
    check_others_intact(rec)
    check_builder(rec)
    assert not rec.broken, rec.row()


# ---------------------------------------------------------------------------------------------- concurrency, signals


def test_two_ups_at_once(fleet: FaultFleet, record: Any) -> None:
    rec = record("up/two-at-once")
    rec.ready()
    down = fleet.run("down")
    assert down.exit_code == 0, down.stdout
    first, second = fleet.start("up"), fleet.start("up")
    runs = [first.finish(TIMEOUTS["up"]), second.finish(TIMEOUTS["up"])]
    rec.runs += runs
    slowest = max(runs, key=lambda run: run.seconds)
    rec.runs[0] = slowest  # the row shows the one that waited
    rec.expect(all(run.exit_code == 0 for run in runs), "both exit 0")
    rec.expect(slowest.seconds <= fleet.baseline["up"] * 2 + 60, "the second waits for the first, not for ever")
    rec.notes.append("changed: " + ", ".join(str(run.json.get("changed")) for run in runs))
    check_others_healthy(rec, slowest, ignore=("container",))  # down, then up: new containers
    check_builder(rec)
    assert not rec.broken, rec.row()


def test_sigint_during_up_then_up_again(fleet: FaultFleet, record: Any) -> None:
    rec = record("up/sigint-then-up")
    rec.ready()
    down = fleet.run("down")
    assert down.exit_code == 0, down.stdout
    running = fleet.start("up", verbose=True)
    hit = running.wait_for(r"run docker buildx create .*--append", timeout=120)
    interrupted = time.monotonic()
    running.signal(signal.SIGINT)
    run = running.finish(60)
    rec.runs.append(run)
    after_signal = time.monotonic() - interrupted
    rec.notes.append(f"SIGINT {'while buildx appended a node' if hit else 'late'}; ended {after_signal:.1f} s later")
    rec.expect(run.exit_code == 130, "exit code 130")
    rec.expect(after_signal < 15, "ends within seconds of the signal")
    rec.expect("Traceback" not in run.stderr, "no traceback")
    pins = fleet.pins()
    rec.notes.append(f"store after the interrupt: {pins}")
    rec.expect(pins is None or "<unreadable>" not in pins, "buildx's store is readable after the interrupt")
    again = fleet.run("up")
    rec.runs.append(again)
    rec.expect(again.exit_code == 0, "the next up exits 0")
    check_others_healthy(rec, again, ignore=("container",))  # down, then up: new containers
    check_builder(rec)
    assert not rec.broken, rec.row()


# ---------------------------------------------------------------------------------------------- buildx's store


@pytest.mark.parametrize(
    "case_id", ["status/store-corrupted", "build/store-corrupted", "up/store-corrupted", "build/store-missing",
                "up/store-missing"],
)  # fmt: skip
def test_builder_state_file(fleet: FaultFleet, record: Any, case_id: str) -> None:
    rec = record(case_id)
    command, damage = case_id.split("/")
    rec.ready()
    instance = fleet.instance_file()
    if damage == "store-corrupted":
        instance.write_text(json.dumps({"Name": fleet.builder})[:-1] + ', "Nodes": [{"Name": \x00 garbage')
    else:
        instance.unlink()
    damaged = instance.read_bytes() if instance.exists() else None
    args = fleet.build_args() if command == "build" else [command]
    run = fleet.run(*args)
    rec.runs.append(run)
    check_bounded(rec, run, 30)
    rec.expect("Traceback" not in run.stderr, "no traceback")
    if command == "status":
        rec.expect(run.exit_code == 1, "exit code 1")
        notes = " ".join(run.json.get("notes") or [])
        rec.expect(str(instance) in notes, "names the unreadable file")
        rec.expect("nodefleet up" in notes, "says how to repair it")
        unchanged = (instance.read_bytes() if instance.exists() else None) == damaged
        rec.expect(unchanged, "status changes nothing")
        rec.builder_intact = None
        rec.builder = "left as found (status changes nothing)" if unchanged else "changed by status!"
        rec.others_intact = all(fleet.running(name) for name in OTHERS)
        rec.others = "BuildKit running on " + ", ".join(OTHERS)
        _repair_then_compare(rec)
    elif command == "build":
        _check_build_platforms(rec, run)
        rec.builder_intact = None
        rec.builder = "main builder file left as found; per-node builders used"
        _repair_then_compare(rec)
    else:
        rec.expect(run.exit_code == 0, "exit code 0")
        if damage == "store-corrupted":
            notes = " ".join(run.json.get("notes") or [])
            rec.expect("restored the backup" in notes, "says it restored nodefleet's backup")
        check_others_healthy(rec, run)
        rec.expect(run.hosts().get(FAULTED, {}).get("status") == "healthy", f"{FAULTED} healthy too")
        check_builder(rec)
    assert not rec.broken, rec.row()


def _repair_then_compare(rec: Record) -> None:
    """A command that leaves the damaged store as it found it: `status` would judge every node against that store,
    so the nodes are compared once the next `up` has repaired it (every node, every column)."""
    repair = rec.fleet.run("up")
    rec.runs.append(repair)
    rec.expect(repair.exit_code == 0, "the next up repairs the builder")
    rec.faulted = ""  # no host is faulted: every node compared
    check_others_intact(rec)


def _check_build_platforms(rec: Record, run: Run) -> None:
    platforms = run.platforms()
    built = {platform: result.get("node") for platform, result in platforms.items() if result.get("status") == "built"}
    native = all(result.get("mode") == "native" for result in platforms.values())
    rec.expect(run.exit_code == 0, "exit code 0")
    rec.expect(set(built) == {"linux/amd64", "linux/arm64"} and native, "both platforms built natively")
    rec.others_intact = set(built) == {"linux/amd64", "linux/arm64"}
    rec.others = ", ".join(f"{platform} on {node}" for platform, node in sorted(built.items()))


# ---------------------------------------------------------------------------------------------- registry unreachable


def test_up_with_buildkit_image_on_an_unreachable_registry(fleet: FaultFleet, record: Any) -> None:
    rec = record("up/registry-unreachable")
    rec.ready()
    inventory = fleet.root / "registry-inventory.toml"
    text = fleet.inventory.read_text()
    image = f"{UNREACHABLE_REGISTRY}/lab/buildkit:nodefleet-missing-{uuid.uuid4().hex[:8]}"
    section = text.split(f'name = "{FAULTED}"', 1)
    head, tail = section[0], section[1]
    tail = re.sub(r'buildkit_image = "[^"]*"', f'buildkit_image = "{image}"', tail, count=1)
    inventory.write_text(f'{head}name = "{FAULTED}"{tail}')
    run = fleet.run("up", inventory=inventory)
    rec.runs.append(run)
    check_bounded(rec, run, 30)
    failed = run.hosts().get(FAULTED, {})
    rec.expect(run.exit_code == 1, "exit code 1")
    rec.expect(failed.get("status") == "failed", f"{FAULTED} reported failed")
    rec.expect("cannot pull BuildKit image" in (failed.get("error") or ""), "says the image cannot be pulled")
    check_others_healthy(rec, run)
    check_builder(rec)
    assert not rec.broken, rec.row()


def test_build_pushing_to_an_unreachable_registry(fleet: FaultFleet, record: Any) -> None:
    rec = record("build/registry-unreachable")
    rec.ready()
    image = f"{UNREACHABLE_REGISTRY}/e2e-faults/app:{uuid.uuid4().hex[:8]}"
    run = fleet.run(*fleet.build_args("-t", image, "--push", platforms="linux/arm64"))
    rec.runs.append(run)
    check_bounded(rec, run, 30)
    (result,) = run.platforms().values() or [{}]
    rec.expect(run.exit_code == 1, "exit code 1")
    rec.expect(result.get("status") == "failed", "linux/arm64 reported failed")
    rec.expect(UNREACHABLE_REGISTRY in (result.get("error") or ""), "the error names the registry")
    rec.expect(len(result.get("attempts") or []) == 1, "a registry fault is not retried on another node")
    rec.others_intact = all(fleet.running(name) for name in HOSTS)
    rec.others = "every BuildKit still running" if rec.others_intact else "a BuildKit stopped"
    rec.faulted = ""  # the registry is faulted, no host: every node compared
    check_others_intact(rec)
    check_builder(rec)
    assert not rec.broken, rec.row()


# ---------------------------------------------------------------------------------------------- secrets (not a fault)

SECRET_RUN = (
    "ARG BASE\nFROM ${BASE}\nARG NONCE\n"
    "RUN --mount=type=secret,id=tok,required=true echo $NONCE && wc -c < /run/secrets/tok\n"
)


@pytest.mark.parametrize("outcome", ["built", "failed"])
def test_no_secret_in_build_output_logs_or_json(fleet: FaultFleet, tmp_path: Path, outcome: str) -> None:
    """A --secret value and registry credentials in DOCKER_CONFIG never reach nodefleet's stdout, its -vv log,
    its JSON or its errors, whether the build succeeds or fails."""
    import base64

    fleet.ensure_up()
    secret = f"sekret-{uuid.uuid4().hex}"
    password = f"pw-{uuid.uuid4().hex}"
    auth = base64.b64encode(f"ci:{password}".encode()).decode()
    docker_config = tmp_path / "docker"
    docker_config.mkdir()
    registry = lab_data(fleet.lab)["registry"]
    (docker_config / "config.json").write_text(json.dumps({"auths": {registry: {"auth": auth}}}))
    dockerfile = SECRET_RUN if outcome == "built" else SECRET_RUN.replace("wc -c <", "exit 3; cat")
    args = fleet.build_args(
        "--secret", "id=tok,env=NF_SECRET", "-t", f"{registry}/e2e-faults/secret:{uuid.uuid4().hex[:8]}", "--push",
        dockerfile=dockerfile, platforms="linux/amd64,linux/arm64",
    )  # fmt: skip
    # The credentials' DOCKER_CONFIG must also hold the variant's buildx plugin (buildx_env links it there).
    env = {**fleet.env, "NF_SECRET": secret, "DOCKER_CONFIG": str(docker_config)}
    env.update(buildx_env(fleet.variant, docker_config))
    run = Running(fleet.argv(*args, verbose=True), env).finish(TIMEOUTS["build"])
    assert run.exit_code == (0 if outcome == "built" else 1), run.stdout + run.stderr[-3000:]
    if outcome == "built":
        assert f" {len(secret)}" in run.stderr  # the secret was mounted (its length shows), its value was not
    else:
        assert "exit code: 3" in run.stdout
    for value in (secret, password, auth):
        assert value not in run.stdout and value not in run.stderr


# ---------------------------------------------------------------------------------------------- issue 13: crashes


def buildkit_containers(fleet: FaultFleet, host: str) -> list[str]:
    """Every BuildKit container on the host's engine, whatever its state."""
    names = host_docker(fleet.lab, host, "ps", "-a", "--format", "{{.Names}}", "--filter", "name=buildx_buildkit_")
    return names.split()


def test_sigkill_during_up_then_up_again(fleet: FaultFleet, record: Any) -> None:
    rec = record("up/sigkill-then-up")
    rec.ready()
    down = fleet.run("down")
    assert down.exit_code == 0, down.stdout
    running = fleet.start("up", verbose=True)
    hit = running.wait_for(r"run docker buildx create .*--append", timeout=120)
    assert hit is not None, "up never reached `buildx create --append`"
    os.kill(running.process.pid, signal.SIGKILL)  # nodefleet alone: its buildx runs on, no restore runs
    killed = running.finish(30)
    left = subprocess.run(
        ["pgrep", "-f", f"buildx create .*{fleet.builder}"], capture_output=True, text=True, check=False
    ).stdout.split()
    rec.notes.append(f"SIGKILL while buildx appended a node; buildx processes still running: {len(left)}")
    rec.notes.append(f"store after the kill: {fleet.pins()}")
    again = fleet.run("up")
    rec.runs += [again, killed]
    rec.expect(again.exit_code == 0, "the next up exits 0")
    per_host = {host: buildkit_containers(fleet, host) for host in HOSTS}
    rec.notes.append("BuildKit containers per host: " + ", ".join(f"{h} {len(c)}" for h, c in per_host.items()))
    one_each = all(names == [f"buildx_buildkit_{h}"] for h, names in per_host.items())
    rec.expect(one_each, "exactly one BuildKit container per host")
    rec.expect(again.hosts().get(FAULTED, {}).get("status") == "healthy", f"{FAULTED} healthy too")
    check_others_healthy(rec, again, ignore=("container",))  # down, then up: new containers
    check_builder(rec)
    assert not rec.broken, rec.row()


@pytest.mark.parametrize("damage", ["corrupted", "deleted"])
def test_lost_record_recreates_no_container(fleet: FaultFleet, record: Any, damage: str) -> None:
    rec = record(f"up/record-{damage}")
    rec.ready()
    ids = {host: container_id(fleet.lab, host, host) for host in HOSTS}
    state = BuilderState(Path(fleet.env["NODEFLEET_STATE_DIR"]), fleet.builder)
    assert state.record_file.is_file(), f"no record at {state.record_file}"
    if damage == "corrupted":
        state.record_file.write_text('{"version": 1, "nodes": {"amd64-1": \x00 garbage')
    else:
        state.record_file.unlink()
    run = fleet.run("up")
    rec.runs.append(run)
    check_bounded(rec, run, 30)
    rec.expect(run.exit_code == 0, "exit code 0")
    actions = {name: host.get("action") for name, host in run.hosts().items()}
    rec.notes.append("actions: " + ", ".join(f"{name} {action}" for name, action in actions.items()))
    rec.expect(all(action == "keep" for action in actions.values()), "every node kept (no change)")
    after = {host: container_id(fleet.lab, host, host) for host in HOSTS}
    rec.expect(after == ids, "every BuildKit container kept (same container ids)")
    rec.notes.append("container ids " + ("unchanged" if after == ids else f"changed: {ids} -> {after}"))
    rec.faulted = ""  # no host is faulted: every node compared
    rewritten = BuilderState(Path(fleet.env["NODEFLEET_STATE_DIR"]), fleet.builder).load_digests()
    rec.notes.append(f"record after up: {'rewritten' if rewritten else 'not rewritten'}")
    check_others_healthy(rec, run, ignore=("record_digest",))  # the record is the fault
    check_builder(rec)
    assert not rec.broken, rec.row()


# ---------------------------------------------------------------------------------------------- the builder guard


def _inventory_with(fleet: FaultFleet, name: str, hosts: tuple[str, ...], **host_lines: str) -> Path:
    """The fleet's inventory with other hosts, and extra lines under some hosts (`amd64_1='driver_opts = ...'`)."""
    path = write_inventory(fleet.lab, fleet.root / name, fleet.builder, hosts, connect_timeout=CONNECT_TIMEOUT)
    text = path.read_text()
    for host, line in host_lines.items():
        marker = f'name = "{host.replace("_", "-")}"\n'
        text = text.replace(marker, marker + line + "\n")
    path.write_text(text)
    return path


def _check_guarded(rec: Record, run: Run, pending: str) -> None:
    rec.expect(run.exit_code == 1, "exit code 1")
    notes = " ".join(run.json.get("notes") or [])
    rec.expect("builder not changed" in notes and FAULTED in notes, f"says the builder was not changed: {FAULTED}")
    rec.expect(run.hosts().get(FAULTED, {}).get("status") == "failed", f"{FAULTED} reported failed")
    rec.notes.append(f"{pending}: {run.hosts().get(pending.split(maxsplit=1)[0], {}).get('error')}")


def test_new_host_while_one_node_is_cut(fleet: FaultFleet, lab_fault: Any, record: Any) -> None:
    rec = record("up/new-host-while-one-cut")
    rec.ready()
    wider = _inventory_with(fleet, "wider.toml", (*HOSTS, "armv7-1"))
    try:
        with lab_fault(FAULTED, "net-cut"):
            run = fleet.run("up", inventory=wider)
            rec.runs.append(run)
        check_bounded(rec, run, FAULT_COST["up"])
        _check_guarded(rec, run, "armv7-1 (new)")
        rec.expect(run.hosts().get("armv7-1", {}).get("status") == "failed", "armv7-1 not added, reported failed")
        rec.expect("armv7-1" not in (fleet.pins() or {}), "armv7-1 not in buildx's store")
        check_others_healthy(rec, run)
        check_builder(rec)
        later = fleet.run("up", inventory=wider)
        rec.runs.append(later)
        rec.expect(later.exit_code == 0, "once arm64-1 is back, up exits 0")
        rec.expect((fleet.pins() or {}).get("armv7-1") == ("linux/arm/v7",), "and adds armv7-1, pinned")
    finally:
        back = fleet.run("up")  # armv7-1 leaves again
        assert back.exit_code == 0 and fleet.pins() == PINS, back.stdout + back.stderr
    rec.expect(container_id(fleet.lab, "armv7-1", "armv7-1") == "", "armv7-1's container removed when it leaves")
    assert not rec.broken, rec.row()


def test_changed_option_while_one_node_is_cut(fleet: FaultFleet, lab_fault: Any, record: Any) -> None:
    rec = record("up/changed-option-while-one-cut")
    rec.ready()
    option = 'driver_opts = { "env.NODEFLEET_E2E_OPTION" = "1" }'
    changed = _inventory_with(fleet, "changed.toml", HOSTS, amd64_1=option)
    before = container_id(fleet.lab, "amd64-1", "amd64-1")
    try:
        with lab_fault(FAULTED, "net-cut"):
            run = fleet.run("up", inventory=changed)
            rec.runs.append(run)
        check_bounded(rec, run, FAULT_COST["up"])
        _check_guarded(rec, run, "amd64-1 (changed)")
        kept = container_id(fleet.lab, "amd64-1", "amd64-1")
        rec.expect(kept == before, "amd64-1's container not recreated")
        stored = buildx_store.read_store(fleet.builder, {"BUILDX_CONFIG": str(fleet.store)})
        node = stored.node("amd64-1") if stored else None
        rec.expect(node is not None and "env.NODEFLEET_E2E_OPTION" not in node.driver_opts, "option not applied yet")
        rec.faulted = f"{FAULTED},amd64-1"  # amd64-1 reports failed (the change waits); arm64-2 compared
        check_others_intact(rec)
        check_builder(rec)
        later = fleet.run("up", inventory=changed)
        rec.runs.append(later)
        stored = buildx_store.read_store(fleet.builder, {"BUILDX_CONFIG": str(fleet.store)})
        node = stored.node("amd64-1") if stored else None
        rec.expect(later.exit_code == 0, "once arm64-1 is back, up exits 0")
        rec.expect(node is not None and node.driver_opts.get("env.NODEFLEET_E2E_OPTION") == "1", "and applies it")
    finally:
        back = fleet.run("up")
        assert back.exit_code == 0 and fleet.pins() == PINS, back.stdout + back.stderr
    assert not rec.broken, rec.row()


# ---------------------------------------------------------------------------------------------- two builders


@pytest.mark.parametrize("force", [False, True], ids=["down", "down-force"])
def test_down_of_one_builder_over_shared_hosts(fleet: FaultFleet, record: Any, force: bool) -> None:
    rec = record("down/shared-builder-force" if force else "down/shared-builder")
    rec.ready()
    other = fleet.root / "other.toml"
    text = fleet.inventory.read_text().replace(f'name = "{fleet.builder}"', f'name = "{fleet.builder}-other"', 1)
    other.write_text(text)
    try:
        second = fleet.run("up", inventory=other)
        assert second.exit_code == 0, second.stdout + second.stderr
        ids = {host: container_id(fleet.lab, host, host) for host in HOSTS}
        run = fleet.run("down", *(["--force"] if force else []))
        rec.runs.append(run)
        check_bounded(rec, run, 30)
        rec.expect(run.exit_code == 0, "exit code 0")
        check_builder(rec, expect_gone=True)
        after = {host: container_id(fleet.lab, host, host) for host in HOSTS}
        volumes = {host: volume_exists(fleet.lab, host, host) for host in HOSTS}
        said = json.dumps(run.json)
        status = fleet.run("status", inventory=other)
        rec.runs.append(status)
        healthy = {name: host.get("status") for name, host in status.hosts().items()}
        if force:
            rec.expect(not any(after.values()) and not any(volumes.values()), "containers and volumes removed")
            rec.expect(f"{fleet.builder}-other" in said, "says the other builder listed them")
            rec.others_intact = None
            rec.others = f"the other builder's status: {healthy} (its nodes removed, as --force asks)"
        else:
            rec.expect(after == ids and all(volumes.values()), "the other builder's containers and volumes kept")
            rec.expect(f"{fleet.builder}-other" in said, "names the other builder that lists them")
            rec.expect(status.exit_code == 0 and set(healthy.values()) == {"healthy"}, "the other builder healthy")
            rec.others_intact = after == ids and status.exit_code == 0
            rec.others = f"the other builder's status: {healthy}; containers kept: {after == ids}"
    finally:
        fleet.run("down", inventory=other)
    assert not rec.broken, rec.row()


# ---------------------------------------------------------------------------------------------- buildx's OpenSSH path

SSH_CONFIG = Path.home() / ".ssh" / "config"


@contextlib.contextmanager
def ssh_config_override(text: str) -> Iterator[Path]:
    """Settings of the test's own, in a file of its own, included at the top of root's ~/.ssh/config (ahead of the
    lab's Include: OpenSSH takes the first value it finds); the line and the file are removed afterwards."""
    path = SSH_CONFIG.parent / f"nodefleet-e2e-{uuid.uuid4().hex[:8]}.conf"
    path.write_text(text)
    line = f"Include {path}  # nodefleet-e2e\n"
    original = SSH_CONFIG.read_text()
    SSH_CONFIG.write_text(line + original)
    try:
        yield path
    finally:
        SSH_CONFIG.write_text("".join(kept for kept in SSH_CONFIG.read_text().splitlines(True) if kept != line))
        path.unlink(missing_ok=True)


def address(fleet: FaultFleet, host: str) -> str:
    return str(lab_hosts(fleet.lab)[host]["address"])


def logins(fleet: FaultFleet, host: str) -> int:
    """How many SSH logins the host's sshd has accepted (its log, LogLevel VERBOSE)."""
    log = Path(lab_data(fleet.lab)["state_dir"]) / "logs" / f"{host}-sshd.log"
    return log.read_text(errors="replace").count("Accepted publickey") if log.is_file() else 0


NO_CHECK = "Host {address}\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"


def test_openssh_that_checks_no_key_is_refused(fleet: FaultFleet, record: Any) -> None:
    rec = record("up/openssh-no-check")
    rec.ready()
    with ssh_config_override(NO_CHECK.format(address=address(fleet, FAULTED))):
        run = fleet.run("up")
        rec.runs.append(run)
        pins = fleet.pins() or {}
    check_bounded(rec, run, 30)
    error = run.hosts().get(FAULTED, {}).get("error") or ""
    rec.expect(run.exit_code == 1, "exit code 1")
    rec.expect(run.hosts().get(FAULTED, {}).get("status") == "failed", f"{FAULTED} refused")
    rec.expect("StrictHostKeyChecking no" in error and "\n" not in error, "in one line naming the setting")
    rec.expect(FAULTED not in pins, f"{FAULTED} out of the builder while its key is not checked")
    rec.notes.append(f"builder meanwhile: {pins}")
    check_others_healthy(rec, run, ignore=("pins",))  # arm64-2 may carry linux/arm64's pin meanwhile
    again = fleet.run("up")
    rec.runs.append(again)
    rec.expect(again.exit_code == 0, "once the setting is gone, up exits 0")
    check_builder(rec)
    assert not rec.broken, rec.row()


def test_rekeyed_host_behind_openssh_that_checks_no_key_is_reached_by_nothing(
    fleet: FaultFleet, lab_fault: Any, record: Any
) -> None:
    rec = record("build/openssh-no-check-rekeyed")
    rec.ready()
    with ssh_config_override(NO_CHECK.format(address=address(fleet, FAULTED))), lab_fault(FAULTED, "rekey"):
        before = logins(fleet, FAULTED)
        up = fleet.run("up")
        run = fleet.run(*fleet.build_args())
        rec.runs += [run, up]
        plain = subprocess.run(
            ["docker", "buildx", "build", "--builder", fleet.builder, "--platform", "linux/arm64", "--progress",
             "plain", "--build-arg", f"BASE={fleet.base}", "--build-arg", f"NONCE={uuid.uuid4().hex}",
             str(fleet.context)],
            capture_output=True, text=True, timeout=TIMEOUTS["build"], env=fleet.env, check=False,
        )  # fmt: skip
        after = logins(fleet, FAULTED)
        pins = fleet.pins() or {}
    rec.notes.append(f"plain `docker buildx build --builder {fleet.builder} --platform linux/arm64`: exit "
                     f"{plain.returncode}; {after - before} logins to {FAULTED} during the case")  # fmt: skip
    rec.expect(up.exit_code == 1 and up.hosts().get(FAULTED, {}).get("status") == "failed", f"up refuses {FAULTED}")
    rec.expect(FAULTED not in pins, f"{FAULTED} out of the builder")
    rec.expect(after == before, f"nothing logged in to {FAULTED} (its sshd's log)")
    rec.expect(plain.returncode == 0, "plain buildx on the builder builds linux/arm64 elsewhere")
    _check_failover_build(rec, run, compare=False)
    again = fleet.run("up")
    rec.runs.append(again)
    rec.expect(again.exit_code == 0, "once the host and the setting are back, up exits 0")
    # Meanwhile arm64-2 carried linux/arm64's pin (arm64-1 was out of the builder): compared once it is back.
    check_others_intact(rec)
    check_builder(rec)
    assert not rec.broken, rec.row()


def test_buildx_openssh_path_fails_while_nodefleets_ssh_works(fleet: FaultFleet, record: Any) -> None:
    rec = record("up/openssh-path-fails")
    rec.ready()
    empty = fleet.root / "empty-known_hosts"
    empty.write_text("")
    override = f"Host {address(fleet, FAULTED)}\n  StrictHostKeyChecking yes\n  UserKnownHostsFile {empty}\n"
    with ssh_config_override(override):
        run = fleet.run("up")
        rec.runs.append(run)
    check_bounded(rec, run, 30)
    error = run.hosts().get(FAULTED, {}).get("error") or ""
    rec.expect(run.exit_code == 1, "exit code 1")
    rec.expect(run.hosts().get(FAULTED, {}).get("status") == "failed", f"{FAULTED} reported failed")
    rec.expect("known_hosts" in error and ("buildx" in error or "OpenSSH" in error), "names buildx's ssh path")
    check_others_healthy(rec, run)
    check_builder(rec)
    assert not rec.broken, rec.row()


# ------------------------------------------------------------------------------------ several hosts, sole nodes


@pytest.mark.parametrize("command", ["status", "build"])
def test_two_hosts_down_at_once(fleet: FaultFleet, lab_fault: Any, record: Any, command: str) -> None:
    rec = record(f"{command}/two-hosts-down")
    rec.ready()
    args = fleet.build_args() if command == "build" else [command]
    with lab_fault("amd64-1", "net-cut"), lab_fault(FAULTED, "net-cut"):
        run = fleet.run(*args)
        rec.runs.append(run)
    check_bounded(rec, run, FAULT_COST[command])
    rec.expect(run.exit_code == 1, "exit code 1")
    rec.faulted = f"amd64-1,{FAULTED}"
    if command == "status":
        for host in ("amd64-1", FAULTED):
            failed = run.hosts().get(host, {})
            rec.expect(failed.get("status") == "failed" and bool(failed.get("error")), f"{host} failed with a reason")
        check_others_healthy(rec, run)
    else:
        platforms = run.platforms()
        amd, arm = platforms.get("linux/amd64", {}), platforms.get("linux/arm64", {})
        rec.expect(amd.get("status") == "refused" and "amd64-1" in (amd.get("error") or ""), "amd64 refused, naming it")
        rec.expect(arm.get("status") == "not built", "nothing built: a refused platform fails the build closed")
        nodes = run.nodes()
        for host in ("amd64-1", FAULTED):
            rec.expect(nodes.get(host, {}).get("status") == "failed", f"{host} reported not used, with its reason")
        rec.others = f"arm64-2 {nodes.get('arm64-2', {}).get('status')}"
        check_others_intact(rec)
    check_builder(rec)
    assert not rec.broken, rec.row()


def _start_slow_build(fleet: FaultFleet, platform: str, *extra: str) -> tuple[Running, str | None]:
    running = fleet.start(*fleet.build_args(*extra, dockerfile=SLOW_RUN, platforms=platform))
    chosen = running.wait_for(rf"{platform}: building natively on (\S+)", timeout=90)
    node = chosen[1].group(1) if chosen else None
    if chosen is not None and running.wait_for(r"echo start", timeout=90, start=chosen[0]) is None:
        node = None
    return running, node


def test_only_node_of_a_platform_dies_mid_build(fleet: FaultFleet, record: Any) -> None:
    rec = record("build/only-node-dies")
    rec.ready()
    running, node = _start_slow_build(fleet, "linux/amd64")
    assert node == "amd64-1", "the build did not reach its RUN step on amd64-1"
    host_docker(fleet.lab, node, "kill", f"buildx_buildkit_{node}")
    run = running.finish(TIMEOUTS["build"])
    rec.runs.append(run)
    check_bounded(rec, run, 40)
    (result,) = run.platforms().values() or [{}]
    rec.expect(run.exit_code == 1, "exit code 1")
    rec.expect(result.get("status") == "failed" and result.get("error_kind") == "infrastructure", "infrastructure")
    rec.expect(len(result.get("attempts") or []) == 1, "no other node to retry on: one attempt")
    rec.expect(bool(result.get("error")), "says what happened")
    rec.faulted = node
    check_others_intact(rec)
    check_builder(rec)
    repair = fleet.run("up")
    rec.runs.append(repair)
    rec.expect(repair.exit_code == 0 and fleet.running(node), f"the next up starts {node}'s BuildKit again")
    assert not rec.broken, rec.row()


DISK_WRITE = (
    "ARG BASE\nFROM ${BASE}\nARG NONCE\nRUN echo start $NONCE && sleep 10 && head -c 8388608 /dev/zero > /blob\n"
)
ARM64 = ("arm64-1", "arm64-2")


def fill(fleet: FaultFleet, host: str) -> Path:
    """Fill the disk holding the node's state (its state volume, on the host's data root) from the host until the
    file system says it is full; the file written, for the caller to remove."""
    mountpoint = host_docker(fleet.lab, host, "volume", "inspect", "-f", "{{.Mountpoint}}",
                             f"buildx_buildkit_{host}_state").strip()  # fmt: skip
    path = Path(mountpoint) / "nodefleet-e2e-fill"
    with contextlib.suppress(OSError), path.open("wb") as handle:
        while True:
            handle.write(b"\0" * (1 << 20))
            handle.flush()
    return path


def _next_arm64_build_on(fleet: FaultFleet, node: str) -> None:
    """Quick arm64 builds until the next one goes to `node` (a platform goes to its least recently used node)."""
    for _ in range(3):
        run = fleet.run(*fleet.build_args(platforms="linux/arm64"))
        assert run.exit_code == 0, f"a quick arm64 build failed:\n{run.stdout}{run.stderr}"
        if (run.platforms().get("linux/arm64") or {}).get("node") != node:
            return
    raise AssertionError(f"the arm64 builds never left {node}")


def test_disk_full_during_a_build(fleet: FaultFleet, record: Any) -> None:
    rec = record("build/disk-full")
    rec.ready()
    small = next(iter(SMALL_DISK))
    assert small in ARM64, f"the lab's small disk ({small}) is not an arm64 host of the matrix"
    _next_arm64_build_on(fleet, small)
    rec.before = fleet.snapshot()
    running = fleet.start(*fleet.build_args(dockerfile=DISK_WRITE, platforms="linux/arm64"))
    chosen = running.wait_for(r"linux/arm64: building natively on (\S+)", timeout=90)
    started = chosen and running.wait_for(r"echo start", timeout=90, start=chosen[0])
    assert chosen and started, "the build did not reach its RUN step"
    node = chosen[1].group(1)
    assert node == small, f"the build went to {node}, not to {small} (the small disk)"
    filled = fill(fleet, node)
    try:
        run = running.finish(TIMEOUTS["build"])
    finally:
        written = filled.stat().st_size if filled.exists() else 0
        filled.unlink(missing_ok=True)
    rec.runs.append(run)
    rec.notes.append(f"{node}'s data root (1 GiB tmpfs) filled during RUN: {written >> 20} MB written until ENOSPC")
    check_bounded(rec, run, 40)
    (result,) = run.platforms().values() or [{}]
    first = (result.get("attempts") or [{}])[0]
    error = first.get("error") or ""
    rec.notes.append(f"first attempt: {first.get('node')} {first.get('error_kind')}: {error}")
    rec.expect(error.startswith(f"{node}'s disk is full ("), "the error names the node and says its disk is full")
    rec.expect(" free on " in error, "the error gives the node's free space and where")
    rec.expect(f"{node} failed (infrastructure: {node}'s disk is full (" in run.stderr, "the retry line says why")
    _check_retried_build(rec, run, node)
    check_builder(rec)
    assert not rec.broken, rec.row()


def test_buildkitd_killed_as_by_the_oom_killer(fleet: FaultFleet, record: Any) -> None:
    rec = record("build/oom-killed")
    rec.ready()
    running, node = _start_slow_build(fleet, "linux/arm64")
    assert node is not None, "the build did not reach its RUN step"
    top = host_docker(fleet.lab, node, "top", f"buildx_buildkit_{node}", "-eo", "pid,args")
    pids = [line.split()[0] for line in top.splitlines()[1:] if "buildkitd" in line and "buildctl" not in line]
    assert pids, f"no buildkitd in {node}'s BuildKit container:\n{top}"
    pid = pids[0]
    os.kill(int(pid), signal.SIGKILL)  # what the OOM killer sends to the process it picks
    run = running.finish(TIMEOUTS["build"])
    rec.runs.append(run)
    code = host_docker(fleet.lab, node, "inspect", "-f", "{{.State.ExitCode}}", f"buildx_buildkit_{node}").strip()
    rec.notes.append(f"buildkitd (pid {pid} on {node}) killed with SIGKILL (simulated OOM kill); container exit {code}")
    check_bounded(rec, run, 40)
    _check_retried_build(rec, run, node)
    check_builder(rec)
    repair = fleet.run("up")
    rec.runs.append(repair)
    rec.expect(repair.exit_code == 0 and fleet.running(node), f"the next up starts {node}'s BuildKit again")
    assert not rec.broken, rec.row()


# ---------------------------------------------------------------------------------------------- the registry

REGISTRY_ROOT = Path("/var/cache/nodefleet-lab/registry/docker/registry/v2/repositories")


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """The folder made immutable (chattr +i): the registry, root as it is, gets EPERM writing in it and answers 500."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["chattr", "+i", str(path)], check=True, timeout=10)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True, timeout=10)


def pushed_digests(run: Run, repo: str) -> list[str]:
    """The digests the report gives (anywhere in its JSON) that the registry holds in the repository."""
    revisions = REGISTRY_ROOT / repo / "_manifests" / "revisions" / "sha256"
    found = dict.fromkeys(re.findall(r"sha256:[0-9a-f]{64}", run.stdout))
    return [digest for digest in found if (revisions / digest.removeprefix("sha256:")).is_dir()]


def imagetools(fleet: FaultFleet, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "buildx", "imagetools", *args], capture_output=True, text=True, timeout=120, env=fleet.env,
        check=False,
    )  # fmt: skip


def platforms_of(fleet: FaultFleet, ref: str) -> set[str]:
    """The platforms an image holds (an index: its entries but attestations; an image: its config's)."""
    raw = imagetools(fleet, "inspect", "--raw", ref)
    try:
        document = json.loads(raw.stdout)
    except ValueError:
        return set()
    if "manifests" in document:
        return {
            f"{entry['platform']['os']}/{entry['platform']['architecture']}"
            for entry in document["manifests"]
            if (entry.get("platform") or {}).get("os") not in {None, "unknown"}
        }
    image = imagetools(fleet, "inspect", "--format", "{{json .Image}}", ref)
    with contextlib.suppress(ValueError):
        config = json.loads(image.stdout)
        return {f"{config['os']}/{config['architecture']}"}
    return set()


def remake_index(rec: Record, run: Run, repo: str, platforms: set[str]) -> None:
    """The user makes the index again from the digests the report kept: it must hold every built platform."""
    fleet = rec.fleet
    registry = lab_data(fleet.lab)["registry"]
    rec.notes.append(f"the report's failure: {run.json.get('failure')}")
    per_platform: dict[str, str] = {}
    for digest in pushed_digests(run, repo):
        held = platforms_of(fleet, f"{registry}/{repo}@{digest}")
        if len(held) == 1:
            per_platform.setdefault(held.pop(), digest)
    rec.notes.append(f"platforms whose pushed digest the report gives: {sorted(per_platform)}")
    rec.expect(platforms <= set(per_platform), "the report keeps every built platform's pushed digest")
    digests = [per_platform[platform] for platform in sorted(platforms & set(per_platform))]
    if not digests:
        return
    name = f"{registry}/{repo}:remade"
    sources = [f"{registry}/{repo}@{digest}" for digest in digests]
    made = imagetools(fleet, "create", "-t", name, *sources)
    found = platforms_of(fleet, name)
    rec.notes.append(f"`imagetools create` from them: exit {made.returncode}; platforms {sorted(found)}")
    rec.expect(made.returncode == 0 and platforms <= found, "imagetools create from them makes the index")


def test_registry_stopped_during_a_platforms_push(fleet: FaultFleet, lab_fault: Any, record: Any) -> None:
    rec = record("build/registry-unreachable-mid-push")
    rec.ready()
    repo = f"e2e-faults/midpush-{uuid.uuid4().hex[:8]}"
    image = f"{lab_data(fleet.lab)['registry']}/{repo}:v1"
    (fleet.context / "Dockerfile").write_text(SLOW_RUN)
    running = fleet.start(*fleet.build_args("-t", image, "--push", dockerfile=SLOW_RUN.replace(
        "RUN echo", 'RUN if [ "$(uname -m)" = x86_64 ]; then echo quick; exit 0; fi; echo')))  # fmt: skip
    pushed = running.wait_for(r"\[linux/amd64\] .*pushing manifest for .* done", timeout=120)
    slow = running.wait_for(r"\[linux/arm64\] .*echo start", timeout=60)
    assert pushed is not None and slow is not None, "linux/amd64 was not pushed while linux/arm64 ran its RUN step"
    with lab_fault("registry", "registry-stop"):
        run = running.finish(TIMEOUTS["build"])
        rec.runs.append(run)
    check_bounded(rec, run, 40)
    platforms = run.platforms()
    amd, arm = platforms.get("linux/amd64", {}), platforms.get("linux/arm64", {})
    rec.expect(run.exit_code == 1, "exit code 1")
    rec.expect(amd.get("status") == "built", "linux/amd64 built and pushed")
    rec.expect(arm.get("status") == "failed" and len(arm.get("attempts") or []) == 1, "linux/arm64 failed, not retried")
    rec.expect(not run.json.get("pushed"), "no index is claimed")
    remake_index(rec, run, repo, {"linux/amd64"})
    rec.faulted = ""
    check_others_intact(rec)
    check_builder(rec)
    assert not rec.broken, rec.row()


def test_registry_answering_500_to_a_push(fleet: FaultFleet, record: Any) -> None:
    rec = record("build/registry-5xx-push")
    rec.ready()
    space = f"e2e-faults-5xx-{uuid.uuid4().hex[:8]}"
    image = f"{lab_data(fleet.lab)['registry']}/{space}/app:v1"
    try:
        with immutable(REGISTRY_ROOT / space):
            run = fleet.run(*fleet.build_args("-t", image, "--push", platforms="linux/arm64"))
            rec.runs.append(run)
    finally:
        (REGISTRY_ROOT / space).rmdir()
    check_bounded(rec, run, 30)
    (result,) = run.platforms().values() or [{}]
    rec.expect(run.exit_code == 1, "exit code 1")
    rec.expect(result.get("status") == "failed", "linux/arm64 reported failed")
    rec.expect(bool(re.search(r"500|internal server error", result.get("error") or "", re.I)), "names the 500")
    rec.expect(len(result.get("attempts") or []) == 1, "a registry fault is not retried on another node")
    rec.faulted = ""
    check_others_intact(rec)
    check_builder(rec)
    assert not rec.broken, rec.row()


def test_registry_answering_500_to_the_index(fleet: FaultFleet, record: Any) -> None:
    rec = record("build/registry-5xx-index")
    rec.ready()
    registry = lab_data(fleet.lab)["registry"]
    repo = f"e2e-faults/index5xx-{uuid.uuid4().hex[:8]}"
    seed = subprocess.run(
        ["docker", "buildx", "imagetools", "create", "-t", f"{registry}/{repo}:seed", fleet.base],
        capture_output=True, text=True, timeout=120, env=fleet.env, check=False,
    )  # fmt: skip
    assert seed.returncode == 0, f"could not make the repository: {seed.stderr}"
    with immutable(REGISTRY_ROOT / repo / "_manifests" / "tags"):
        run = fleet.run(*fleet.build_args("-t", f"{registry}/{repo}:v1", "--push"))
        rec.runs.append(run)
    check_bounded(rec, run, 30)
    built = {platform for platform, result in run.platforms().items() if result.get("status") == "built"}
    rec.expect(run.exit_code == 1, "exit code 1")
    rec.expect(built == {"linux/amd64", "linux/arm64"}, "both platforms built and pushed")
    rec.expect("index" in (run.json.get("failure") or ""), "says the index was not made")
    remake_index(rec, run, repo, {"linux/amd64", "linux/arm64"})
    rec.faulted = ""
    check_others_intact(rec)
    check_builder(rec)
    assert not rec.broken, rec.row()


def test_index_name_on_an_unreachable_registry(fleet: FaultFleet, record: Any) -> None:
    rec = record("build/registry-unreachable-index")
    rec.ready()
    registry = lab_data(fleet.lab)["registry"]
    repo = f"e2e-faults/indexdown-{uuid.uuid4().hex[:8]}"
    names = ["-t", f"{registry}/{repo}:v1", "-t", f"{UNREACHABLE_REGISTRY}/{repo}:v1"]
    run = fleet.run(*fleet.build_args(*names, "--push"))
    rec.runs.append(run)
    check_bounded(rec, run, 30)
    built = {platform for platform, result in run.platforms().items() if result.get("status") == "built"}
    rec.expect(run.exit_code == 1, "exit code 1")
    rec.expect(built == {"linux/amd64", "linux/arm64"}, "both platforms built and pushed")
    rec.expect(UNREACHABLE_REGISTRY in (run.json.get("failure") or ""), "the failure names the registry")
    remake_index(rec, run, repo, {"linux/amd64", "linux/arm64"})
    rec.faulted = ""
    check_others_intact(rec)
    check_builder(rec)
    assert not rec.broken, rec.row()


# ---------------------------------------------------------------------------------------------- another machine


def test_host_reinstalled_as_another_architecture(fleet: FaultFleet, lab_fault: Any, record: Any) -> None:
    rec = record("up/host-reinstalled-other-arch")
    rec.ready()
    host, addr = "arm64-2", address(fleet, "arm64-2")
    known = fleet.root / "known_hosts-reinstall"
    known.write_text(Path(lab_data(fleet.lab)["known_hosts"]).read_text())
    inventory = fleet.root / "reinstall.toml"
    inventory.write_text(
        fleet.inventory.read_text().replace(f'known_hosts = "{lab_data(fleet.lab)["known_hosts"]}"',
                                            f'known_hosts = "{known}"')
    )  # fmt: skip
    override = f"Host {addr}\n  StrictHostKeyChecking yes\n  UserKnownHostsFile {known}\n"
    rec.faulted = host
    try:
        with ssh_config_override(override), lab_fault(host, "reinstall-armv7"):
            # A fresh machine: no BuildKit container or cache of the old one.
            host_docker(fleet.lab, host, "rm", "-f", f"buildx_buildkit_{host}", check=False)
            host_docker(fleet.lab, host, "volume", "rm", "-f", f"buildx_buildkit_{host}_state", check=False)
            refused = fleet.run("up", inventory=inventory)
            rec.runs.append(refused)
            subprocess.run(["ssh-keygen", "-R", addr, "-f", str(known)], capture_output=True, check=True, timeout=10)
            accepted = fleet.run("up", "--accept-new-host-keys", inventory=inventory)
            build = fleet.run(*fleet.build_args(platforms="linux/arm64"), inventory=inventory)
            rec.runs += [accepted, build]
            check_bounded(rec, refused, FAULT_COST["up"])
            reported = refused.hosts().get(host, {})
            rec.expect(refused.exit_code == 1 and reported.get("status") == "failed", f"{host}'s new key refused")
            rec.expect("does NOT match known_hosts" in (reported.get("error") or ""), "naming the known_hosts line")
            check_others_healthy(rec, refused)
            detected = accepted.hosts().get(host, {})
            rec.notes.append(f"after accepting the key: {host} {detected.get('status')} as {detected.get('platform')}"
                             f" ({detected.get('error') or 'no error'})")  # fmt: skip
            rec.expect(detected.get("platform") == "linux/arm/v7", f"up detects {host} as linux/arm/v7")
            (result,) = build.platforms().values() or [{}]
            nodes = [attempt.get("node") for attempt in result.get("attempts") or []]
            rec.notes.append(f"linux/arm64 build: {result.get('status')} on {result.get('node')}, attempts {nodes}")
            rec.expect(
                host not in nodes and result.get("node") == FAULTED, f"linux/arm64 built on {FAULTED}, never {host}"
            )
    finally:
        host_docker(fleet.lab, host, "rm", "-f", f"buildx_buildkit_{host}", check=False)
        back = fleet.run("up")
        rec.runs.append(back)
    rec.expect(back.exit_code == 0, f"once {host} is back as it was, up exits 0")
    check_builder(rec)
    assert not rec.broken, rec.row()


def test_secret_build_arg_value_is_in_no_output(fleet: FaultFleet, tmp_path: Path) -> None:
    """A build argument whose name looks secret (API_TOKEN), with -vv and --json and a metadata file: its value is
    in none of stdout, stderr, the metadata file nor any file of nodefleet's state folder."""
    fleet.ensure_up()
    token = f"tok-{uuid.uuid4().hex}"
    metadata = tmp_path / "metadata.json"
    dockerfile = QUICK.replace("ARG NONCE\n", "ARG NONCE\nARG API_TOKEN\n").replace(
        "RUN echo $NONCE", 'RUN test -n "$API_TOKEN" && echo $NONCE'
    )
    args = fleet.build_args(
        "--build-arg", f"API_TOKEN={token}", "--metadata-file", str(metadata), dockerfile=dockerfile
    )  # fmt: skip
    run = Running(fleet.argv(*args, verbose=True), fleet.env).finish(TIMEOUTS["build"])
    assert run.exit_code == 0, run.stdout + run.stderr[-3000:]
    assert "API_TOKEN=***" in run.stderr  # -vv logged the argv, masked
    assert metadata.is_file()
    outputs = {"stdout": run.stdout, "stderr": run.stderr, str(metadata): metadata.read_text(errors="replace")}
    for path in Path(fleet.env["NODEFLEET_STATE_DIR"]).rglob("*"):
        if path.is_file():
            outputs[str(path)] = path.read_bytes().decode(errors="replace")
    leaked = [name for name, text in outputs.items() if token in text]
    assert not leaked, f"the API_TOKEN value is in {leaked}"
