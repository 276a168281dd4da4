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

from .faultmatrix import CASES, FAULTED, HOSTS, PINS, Case, results_file
from .fleetlib import REPO, buildx_env, buildx_version, container_id, host_docker, lab_data, write_inventory

pytestmark = pytest.mark.e2e

OTHERS = tuple(host for host in HOSTS if host != FAULTED)
CONNECT_TIMEOUT = 3
TIMEOUTS = {"status": 90, "up": 300, "build": 300, "down": 120}  # hard limits: beyond them a case is a hang
RUN_ID = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:6]}"
BY_ID = {case.id: case for case in CASES}
SLOW_RUN = "ARG BASE\nFROM ${BASE}\nARG NONCE\nRUN echo start $NONCE && sleep 10 && echo slept\n"
QUICK = "ARG BASE\nFROM ${BASE}\nARG NONCE\nRUN echo $NONCE > /nonce\n"
UNREACHABLE_REGISTRY = "10.231.0.1:5999"  # the lab's gateway address, a port nothing listens on


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

    def expect(self, condition: bool, promise: str) -> bool:
        if not condition:
            self.broken.append(promise)
        return condition

    def main(self) -> Run:
        return self.runs[0]

    def row(self) -> dict[str, Any]:
        main = self.main() if self.runs else None
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
            "promise_kept": not self.broken,
            "broken": self.broken,
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
    path = results_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        for rec in made:
            handle.write(json.dumps(rec.row()) + "\n")


def check_builder(rec: Record, *, expect_gone: bool = False) -> None:
    pins = rec.fleet.pins()
    if expect_gone:
        rec.builder_intact = pins is None
        rec.builder = "removed, as asked" if pins is None else f"still there: {pins}"
        rec.expect(pins is None, "down removes the builder")
        return
    rec.builder_intact = pins == PINS
    rec.builder = "pins intact" if pins == PINS else f"changed: {pins}"
    rec.expect(pins == PINS, "buildx's store keeps every node and its pins")


def check_others_healthy(rec: Record, run: Run) -> None:
    hosts = run.hosts()
    reported = {name: hosts.get(name, {}).get("status") for name in OTHERS}
    states = {name: rec.fleet.state(name) for name in OTHERS}
    ok = all(status == "healthy" for status in reported.values()) and all(s == "running" for s in states.values())
    rec.others_intact = ok
    rec.others = ", ".join(
        f"{name} {reported[name]}" + ("" if states[name] == "running" else f" (BuildKit {states[name]})")
        for name in OTHERS
    )
    rec.expect(ok, "the other hosts are healthy and their BuildKit keeps running")


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
    fleet.ensure_up()
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


def _check_failover_build(rec: Record, run: Run) -> None:
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
    fleet.ensure_up()
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


def test_sshd_killed_during_build(fleet: FaultFleet, lab_fault: Any, record: Any) -> None:
    rec = record("build/sshd-killed-during")
    fleet.ensure_up()
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
    fleet.ensure_up()
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
    fleet.ensure_up()
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
    check_builder(rec)
    assert not rec.broken, rec.row()


# ---------------------------------------------------------------------------------------------- concurrency, signals


def test_two_ups_at_once(fleet: FaultFleet, record: Any) -> None:
    rec = record("up/two-at-once")
    fleet.ensure_up()
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
    check_others_healthy(rec, slowest)
    check_builder(rec)
    assert not rec.broken, rec.row()


def test_sigint_during_up_then_up_again(fleet: FaultFleet, record: Any) -> None:
    rec = record("up/sigint-then-up")
    fleet.ensure_up()
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
    check_others_healthy(rec, again)
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
    fleet.ensure_up()
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
    elif command == "build":
        _check_build_platforms(rec, run)
        rec.builder_intact = None
        rec.builder = "main builder file left as found; per-node builders used"
    else:
        rec.expect(run.exit_code == 0, "exit code 0")
        if damage == "store-corrupted":
            notes = " ".join(run.json.get("notes") or [])
            rec.expect("restored the backup" in notes, "says it restored nodefleet's backup")
        check_others_healthy(rec, run)
        rec.expect(run.hosts().get(FAULTED, {}).get("status") == "healthy", f"{FAULTED} healthy too")
        check_builder(rec)
    assert not rec.broken, rec.row()


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
    fleet.ensure_up()
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
    fleet.ensure_up()
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
