"""Plumbing shared by every lab step: paths, logged commands, the journal, daemons and bounded waits."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

RUN_DIR = Path("/run/nodefleet-lab")
LOCK_FILE = Path("/run/lock/nodefleet-lab.lock")
LOCK_HELD_ENV = "NODEFLEET_LAB_LOCK_HELD"  # set by a holder of LOCK_FILE for the labctl runs it starts
STATE_MARKER = ".nodefleet-lab"


class LabError(Exception):
    """A lab step failed. The message says what failed; the step's log file says why."""


@dataclasses.dataclass(frozen=True)
class LabPaths:
    """Where the lab keeps things. `state` goes away with `down`; `cache` survives it."""

    state: Path
    cache: Path
    run: Path = RUN_DIR

    @classmethod
    def from_env(cls) -> LabPaths:
        state = Path(os.environ.get("NODEFLEET_LAB_DIR", "/var/lib/nodefleet-lab"))
        cache = Path(os.environ.get("NODEFLEET_LAB_CACHE", "/var/cache/nodefleet-lab"))
        return cls(state=state.absolute(), cache=cache.absolute())

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def daemons(self) -> Path:
        return self.state / "daemons"

    @property
    def journal(self) -> Path:
        return self.state / "journal.jsonl"

    @property
    def lab_json(self) -> Path:
        return self.state / "lab.json"

    @property
    def home(self) -> Path:
        """Home directory of the lab's SSH user (same path inside the arm userlands)."""
        return self.state / "home"

    @property
    def sockets(self) -> Path:
        """Docker sockets of all hosts; bind-mounted into the arm userlands at the same path."""
        return self.run / "sockets"

    def host_dir(self, name: str) -> Path:
        return self.state / "hosts" / name

    def host_run_dir(self, name: str) -> Path:
        return self.run / "hosts" / name

    def userland(self, deb_arch: str) -> Path:
        return self.cache / "userland" / deb_arch


class Log:
    """An append-only log file shared by the threads of one step; each line can carry a prefix."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def write(self, text: str, prefix: str = "") -> None:
        lines = text.rstrip("\n").splitlines() or [""]
        stamp = time.strftime("%H:%M:%S")
        with self._lock, self.path.open("a", encoding="utf-8") as out:
            for line in lines:
                out.write(f"{stamp} {prefix}{line}\n")

    def tail(self, count: int = 15) -> str:
        try:
            return "\n".join(self.path.read_text(encoding="utf-8", errors="replace").splitlines()[-count:])
        except OSError:
            return ""


def run(
    argv: Sequence[str],
    log: Log,
    *,
    check: bool = True,
    timeout: float = 120,
    input_text: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    prefix: str = "",
) -> subprocess.CompletedProcess[str]:
    """Run a command, log it with its output, and raise LabError naming it when it fails."""
    log.write(f"$ {shlex.join(argv)}", prefix)
    try:
        result = subprocess.run(
            list(argv),
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=cwd,
            check=False,
            stdin=None if input_text is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        log.write(f"timed out after {timeout}s", prefix)
        raise LabError(f"`{shlex.join(argv)}` did not finish within {timeout:.0f}s") from exc
    except FileNotFoundError as exc:
        raise LabError(f"`{argv[0]}` not found") from exc
    if result.stdout.strip():
        log.write(result.stdout, prefix + "  ")
    if result.stderr.strip():
        log.write(result.stderr, prefix + "! ")
    if check and result.returncode != 0:
        last = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[-1]
        raise LabError(f"`{shlex.join(argv)}` exited {result.returncode}: {last}")
    return result


def wait_for(
    what: str,
    ready: Callable[[], bool],
    timeout: float,
    *,
    alive: Callable[[], bool] | None = None,
    interval: float = 0.05,
) -> None:
    """Poll `ready` until it is true; fail after `timeout` seconds or as soon as `alive` says the process died."""
    deadline = time.monotonic() + timeout
    delay = interval
    while True:
        if ready():
            return
        if alive is not None and not alive():
            raise LabError(f"{what}: the process exited before it was ready")
        if time.monotonic() > deadline:
            raise LabError(f"{what}: not ready after {timeout:.0f}s")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


class Journal:
    """What `up` changed outside its own directories, one JSON object a line, so `down` can undo exactly that."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def record(self, kind: str, **fields: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"kind": kind, **fields}, sort_keys=True)
        with self._lock, self.path.open("a", encoding="utf-8") as out:
            out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())

    def entries(self, kind: str | None = None) -> list[dict[str, str]]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        found = [json.loads(line) for line in lines if line.strip()]
        return [entry for entry in found if kind is None or entry["kind"] == kind]


# ---- daemons: started detached, recorded by PID and start time, stopped by that record only ----


@dataclasses.dataclass(frozen=True)
class DaemonRecord:
    key: str
    pid: int
    starttime: int
    argv: list[str]


def process_starttime(pid: int) -> int | None:
    """Start time (clock ticks since boot) of a live, non-zombie process, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def start_daemon(
    paths: LabPaths, key: str, argv: Sequence[str], log_path: Path, netns: str | None = None
) -> DaemonRecord:
    """Start a long-running process in its own session (optionally inside a lab netns) and record it."""
    full = list(argv) if netns is None else ["nsenter", f"--net=/run/netns/{netns}", *argv]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        out.write(f"--- {time.strftime('%H:%M:%S')} $ {shlex.join(full)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            full, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True
        )
    # nsenter without --fork execs the daemon itself, so this PID is the daemon's.
    starttime = process_starttime(proc.pid) or 0
    record = DaemonRecord(key=key, pid=proc.pid, starttime=starttime, argv=list(full))
    paths.daemons.mkdir(parents=True, exist_ok=True)
    (paths.daemons / f"{key}.json").write_text(json.dumps(dataclasses.asdict(record)))
    _REAPABLE[proc.pid] = proc
    return record


# Children started by this labctl process; polled so that a dead daemon is not left as a zombie that looks alive.
_REAPABLE: dict[int, subprocess.Popen[bytes]] = {}


def load_daemon(paths: LabPaths, key: str) -> DaemonRecord | None:
    try:
        data = json.loads((paths.daemons / f"{key}.json").read_text())
    except (OSError, ValueError):
        return None
    return DaemonRecord(**data)


def all_daemons(paths: LabPaths) -> list[DaemonRecord]:
    if not paths.daemons.is_dir():
        return []
    records = [load_daemon(paths, p.stem) for p in sorted(paths.daemons.glob("*.json"))]
    return [r for r in records if r is not None]


def daemon_alive(record: DaemonRecord | None) -> bool:
    if record is None:
        return False
    proc = _REAPABLE.get(record.pid)
    if proc is not None and proc.poll() is not None:
        return False
    return process_starttime(record.pid) == record.starttime


def stop_daemon(paths: LabPaths, key: str, timeout: float = 30) -> None:
    """SIGTERM the recorded process, wait for it (bounded), SIGKILL if needed, then forget it."""
    record = load_daemon(paths, key)
    if record is not None and daemon_alive(record):
        signal_process(record, signal.SIGTERM)
        try:
            wait_for(f"{key} to exit", lambda: not daemon_alive(record), timeout)
        except LabError:
            signal_process(record, signal.SIGKILL)
            wait_for(f"{key} to exit after SIGKILL", lambda: not daemon_alive(record), 10)
    (paths.daemons / f"{key}.json").unlink(missing_ok=True)


def signal_process(record: DaemonRecord, sig: signal.Signals) -> None:
    if process_starttime(record.pid) != record.starttime:
        return  # gone, or the PID now belongs to someone else
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, sig)


def tail_file(path: Path, count: int = 10) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-count:])
    except OSError:
        return ""
