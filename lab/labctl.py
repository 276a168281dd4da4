#!/usr/bin/env python3
"""The nodefleet lab: SSH + Docker hosts of several architectures on this machine, for end-to-end tests.

    labctl.py up [--hosts SPEC] [--small-disk HOST=SIZE]... [--json]
                                            bring the lab up (no-op if the same lab is up); --small-disk puts
                                            HOST's Docker data root on a tmpfs of SIZE (1G, 768M)
    labctl.py down                          remove everything the lab made
    labctl.py status [--json]               what is up, per host
    labctl.py fault HOST ACTION             sshd-stop|sshd-start|engine-stop|engine-start|net-cut|net-restore|rekey
    labctl.py selftest                      plain buildx builds on the lab hosts, without nodefleet

The contract is lab/CONTRACT.md. Prints one line per step; full logs are in the state dir (logs/).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent))

from labkit import clientfiles, hosts, network, registry, teardown
from labkit.core import LOCK_FILE, LOCK_HELD_ENV, LabError, LabPaths, Log
from labkit.selftest import SelfTest
from labkit.spec import (
    DEFAULT_SPEC,
    PLATFORMS,
    Host,
    format_size,
    parse_spec,
    small_disks_of,
    spec_of,
    with_small_disks,
)
from labkit.steps import UpRun

FAULTS = ["sshd-stop", "sshd-start", "engine-stop", "engine-start", "net-cut", "net-restore", "rekey"]
# Not in the contract's list, for the test fixtures: undo `rekey` by putting the original host key back; reinstall a
# host as an arm/v7 machine at the same address (new host key, armv7l sessions) and undo it; stop and start the
# registry (HOST is `registry` for those two).
EXTRA_FAULTS = ["rekey-restore", "reinstall-armv7", "reinstall-restore", "registry-stop", "registry-start"]


class StepFailed(Exception):
    def __init__(self, step: str, error: Exception, log: Log) -> None:
        super().__init__(f"{step}: {error}")
        self.step = step
        self.error = error
        self.log = log


class Steps:
    """Runs named steps, printing one line each: `command  step .......... ok  1.2s  detail`."""

    def __init__(self, command: str, logs: Path, out: TextIO) -> None:
        self.command = command
        self.logs = logs
        self.out = out

    def run(self, name: str, func: Callable[[Log], object]) -> None:
        log = Log(self.logs / f"{self.command}-{name.replace(' ', '-')}.log")
        started = time.monotonic()
        try:
            detail = func(log)
        except KeyboardInterrupt:
            self.say(name, "STOPPED", started, "interrupted")
            raise
        except Exception as exc:  # every failure ends as one line naming the step
            log.write(f"FAILED: {type(exc).__name__}: {exc}")
            self.say(name, "FAILED", started, str(exc))
            raise StepFailed(name, exc, log) from exc
        self.say(name, "ok", started, str(detail or ""))

    def say(self, name: str, status: str, started: float, detail: str) -> None:
        line = f"{self.command:<8} {name:<15} {status:<6} {time.monotonic() - started:6.1f}s  {detail}"
        print(line.rstrip(), file=self.out, flush=True)


@contextlib.contextmanager
def lab_lock(mode: int = fcntl.LOCK_EX) -> Iterator[None]:
    """Machine-wide, since the lab's bridge, addresses and user are: `up`/`down` hold it exclusively, `fault` and
    `selftest` shared. A test session (tests/e2e/conftest.py) holds it exclusively from its `up` to its `down` and
    sets NODEFLEET_LAB_LOCK_HELD=1 for the labctl runs inside it. The lock file stays: removing it breaks the lock."""
    if os.environ.get(LOCK_HELD_ENV) == "1":
        yield
        return
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with LOCK_FILE.open("a") as handle:
        try:
            fcntl.flock(handle, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for the lab lock {LOCK_FILE} (another labctl or test session)", file=sys.stderr, flush=True)
            fcntl.flock(handle, mode)
        yield


def lab_hosts(paths: LabPaths) -> list[Host] | None:
    description = clientfiles.read_lab_json(paths)
    if description is None:
        return None
    recorded = description.get("hosts")
    sizes = {h["name"]: h.get("data_root_size") for h in recorded} if isinstance(recorded, list) else {}
    return [dataclasses.replace(h, data_root_size=sizes.get(h.name)) for h in parse_spec(str(description["spec"]))]


def describe(lab: list[Host]) -> str:
    """`amd64:1,arm64:2` plus the small disks, as `up` and `status` name a lab."""
    small = ", ".join(f"{name} data root {format_size(size)}" for name, size in small_disks_of(lab).items())
    return spec_of(lab) + (f"; {small}" if small else "")


# ---- health ----


def host_health(paths: LabPaths, host: Host) -> dict[str, object]:
    engine = hosts.engine_running(paths, host) and hosts.engine_answers(paths, host)
    return {
        "name": host.name,
        "address": host.address,
        "platform": host.platform.platform,
        "sshd": hosts.sshd_running(paths, host),
        "engine": engine,
        "network": network.link_is_up(host.veth),
        "host_key": clientfiles.host_key_known(paths, host),  # False after `rekey`
        "data_root_size": host.data_root_size,
        "data_root": hosts.data_root_ok(paths, host),  # the small disk is mounted (always True without one)
    }


HEALTH_FLAGS = ("sshd", "engine", "network", "host_key", "data_root")


def health_line(health: dict[str, object]) -> str:
    words = [f"{flag} {'ok' if health[flag] else 'DOWN'}" for flag in HEALTH_FLAGS[:-1]]
    size = health["data_root_size"]
    if isinstance(size, int):
        words.append(f"data root tmpfs {format_size(size)} {'ok' if health['data_root'] else 'NOT MOUNTED'}")
    return ", ".join(words)


def lab_health(paths: LabPaths, lab: list[Host]) -> dict[str, object]:
    per_host = [host_health(paths, h) for h in lab]
    registry_up = registry.running(paths)
    healthy = registry_up and all(all(h[flag] for flag in HEALTH_FLAGS) for h in per_host)
    return {"up": True, "healthy": healthy, "registry": registry_up, "hosts": per_host}


# ---- commands ----


def cmd_up(args: argparse.Namespace) -> int:
    paths = LabPaths.from_env()
    out = sys.stderr if args.json else sys.stdout
    if os.geteuid() != 0:
        print("up: the lab needs root (namespaces, mounts, daemons, users)", file=sys.stderr)
        return 2
    try:
        wanted = with_small_disks(parse_spec(args.hosts), args.small_disk)
    except LabError as exc:
        print(f"up: {exc}", file=sys.stderr)
        return 2
    # Shared first: a test session holding the lab (shared) can still ask for the lab it already has.
    with lab_lock(fcntl.LOCK_SH):
        if already_up(paths, wanted):
            print(f"up       lab already up ({describe(wanted)})", file=out)
            return finish_up(paths, args.json)
    with lab_lock():
        current = lab_hosts(paths)
        if already_up(paths, wanted):
            print(f"up       lab already up ({describe(wanted)})", file=out)
            return finish_up(paths, args.json)
        if current is not None or teardown.anything_left(paths):
            print("up       taking down the previous lab first", file=out)
            if run_down(paths, out) != 0:
                return 1
        return run_up(paths, wanted, args.json, out)


def already_up(paths: LabPaths, wanted: list[Host]) -> bool:
    """Same hosts, same small disks, healthy. Anything else is brought about by down + up."""
    current = lab_hosts(paths)
    return (
        current is not None
        and spec_of(current) == spec_of(wanted)
        and small_disks_of(current) == small_disks_of(wanted)
        and bool(lab_health(paths, current)["healthy"])
    )


def interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_up(paths: LabPaths, wanted: list[Host], as_json: bool, out: TextIO) -> int:
    signal.signal(signal.SIGTERM, interrupted)  # a killed `up` still cleans up after itself
    started = time.monotonic()
    up = UpRun(paths, wanted)
    up.make_state_dir()  # before any step: its marker is how `down` knows the folder is the lab's
    steps = Steps("up", paths.logs, out)
    try:
        for name, func in up.steps():
            steps.run(name, func)
    except (StepFailed, KeyboardInterrupt) as failure:
        up.stop_artifacts()
        report_failed_up(paths, failure)
        run_down(paths, out)
        step = failure.step if isinstance(failure, StepFailed) else "interrupted"
        print(f"up failed at step '{step}'; everything it started was removed", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - started
    print(f"up       lab is up: {len(wanted)} hosts ({describe(wanted)}) in {elapsed:.1f}s", file=out)
    return finish_up(paths, as_json)


def report_failed_up(paths: LabPaths, failure: BaseException) -> None:
    """Keep the logs of a failed up (the state dir goes away) and show the end of the failing step's log."""
    kept = paths.cache / "logs" / "failed-up"
    shutil.rmtree(kept, ignore_errors=True)
    if paths.logs.is_dir():
        shutil.copytree(paths.logs, kept)
    if isinstance(failure, StepFailed):
        print(f"--- last lines of {failure.log.path.name} (all logs kept in {kept}):", file=sys.stderr)
        print(failure.log.tail(), file=sys.stderr)


def finish_up(paths: LabPaths, as_json: bool) -> int:
    if as_json:
        print(paths.lab_json.read_text(), end="")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    paths = LabPaths.from_env()
    with lab_lock():
        return run_down(paths, sys.stdout)


def run_down(paths: LabPaths, out: TextIO) -> int:
    """Every teardown step runs even if an earlier one failed; the exit code says whether all succeeded."""
    started = time.monotonic()
    logs = paths.cache / "logs"
    for old in logs.glob("down-*.log"):
        old.unlink()
    steps = Steps("down", logs, out)
    failed = []
    for name, func in teardown.teardown_steps(paths):
        try:
            steps.run(name, func)
        except StepFailed as failure:
            failed.append(failure.step)
    left = teardown.anything_left(paths)
    if failed or left:
        print(f"down     incomplete: failed {failed}, still present {left} (logs: {logs})", file=sys.stderr)
        return 1
    print(f"down     lab is down in {time.monotonic() - started:.1f}s", file=out)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    paths = LabPaths.from_env()
    lab = lab_hosts(paths)
    if lab is None:
        left = teardown.anything_left(paths)
        report = {"up": False, "healthy": False, "leftovers": left}
        print(
            json.dumps(report, indent=2)
            if args.json
            else f"lab is down{'; leftovers: ' + ', '.join(left) if left else ''}"
        )
        return 3
    health = lab_health(paths, lab)
    health["lab"] = clientfiles.read_lab_json(paths)
    if args.json:
        print(json.dumps(health, indent=2))
    else:
        state = "healthy" if health["healthy"] else "DEGRADED"
        print(f"lab is up ({describe(lab)}), {state}; registry {'up' if health['registry'] else 'DOWN'}")
        for h in per_host(health):
            print(f"  {h['name']:<10} {h['address']:<12} {h['platform']:<13} {health_line(h)}")
    return 0 if health["healthy"] else 1


def per_host(health: dict[str, object]) -> list[dict[str, object]]:
    hosts_health = health["hosts"]
    assert isinstance(hosts_health, list)
    return hosts_health


def cmd_fault(args: argparse.Namespace) -> int:
    paths = LabPaths.from_env()
    with lab_lock(fcntl.LOCK_SH):
        lab = lab_hosts(paths)
        if lab is None:
            print("fault: the lab is not up", file=sys.stderr)
            return 3
        if args.action.startswith("registry-") or args.host == "registry":
            return registry_fault(paths, args.host, args.action)
        host = next((h for h in lab if h.name == args.host), None)
        if host is None:
            print(f"fault: no host {args.host!r}; hosts: {', '.join(h.name for h in lab)}", file=sys.stderr)
            return 2
        steps = Steps("fault", paths.logs, sys.stdout)
        try:
            steps.run(f"{host.name} {args.action}", lambda log: apply_fault(paths, host, args.action, log))
        except StepFailed:
            return 1
        return 0


def registry_fault(paths: LabPaths, host: str, action: str) -> int:
    """Stop or start the lab registry (its storage stays)."""
    if host != "registry" or action not in ("registry-stop", "registry-start"):
        print("fault: the registry takes `fault registry registry-stop|registry-start`", file=sys.stderr)
        return 2
    steps = Steps("fault", paths.logs, sys.stdout)

    def go(log: Log) -> str:
        if action == "registry-stop":
            registry.stop(paths)
        elif not registry.running(paths):
            registry.start(paths, log)
        return "registry " + ("up" if registry.running(paths) else "DOWN")

    try:
        steps.run(f"registry {action}", go)
    except StepFailed:
        return 1
    return 0


def apply_fault(paths: LabPaths, host: Host, action: str, log: Log) -> str:
    if action == "sshd-stop":
        hosts.stop_sshd(paths, host)
    elif action == "sshd-start" and not hosts.sshd_running(paths, host):
        hosts.start_sshd(paths, host, log)
        hosts.wait_sshd(paths, host)
    elif action == "engine-stop":
        hosts.stop_engine(paths, host)
    elif action == "engine-start" and not hosts.engine_running(paths, host):
        hosts.start_engine(paths, host)
        hosts.wait_engine(paths, host)
    elif action == "net-cut":
        network.cut(host, log)
    elif action == "net-restore":
        network.restore(host, log)
    elif action in ("rekey", "rekey-restore"):
        if action == "rekey":
            hosts.replace_host_key(paths, host, log)  # known_hosts keeps the old key on purpose
        else:
            hosts.restore_host_key(paths, host)
        hosts.stop_sshd(paths, host)
        hosts.start_sshd(paths, host, log)
        hosts.wait_sshd(paths, host)
    elif action in ("reinstall-armv7", "reinstall-restore"):
        if action == "reinstall-armv7":
            hosts.reinstall_as(paths, host, PLATFORMS["arm/v7"], log)
        else:
            hosts.reinstall_restore(paths, host)
        hosts.stop_sshd(paths, host)
        hosts.start_sshd(paths, host, log)
        hosts.wait_sshd(paths, host)
    return health_line(host_health(paths, host))


def cmd_selftest(args: argparse.Namespace) -> int:
    paths = LabPaths.from_env()
    lab = clientfiles.read_lab_json(paths)
    if lab is None:
        print("selftest: the lab is not up (run `labctl.py up`)", file=sys.stderr)
        return 3
    with lab_lock(fcntl.LOCK_SH):  # nobody takes the lab down while the self-test uses it
        return run_selftest(paths, lab)


def run_selftest(paths: LabPaths, lab: dict[str, object]) -> int:
    steps = Steps("selftest", paths.logs, sys.stdout)
    started = time.monotonic()
    try:
        test = SelfTest(paths, lab)
    except LabError as exc:
        print(f"selftest: {exc}", file=sys.stderr)
        return 1
    failed = False
    try:
        for name, func in test.steps():
            steps.run(name, func)
    except StepFailed as failure:
        failed = True
        print(f"--- last lines of {failure.log.path}:\n{failure.log.tail()}", file=sys.stderr)
    finally:
        try:
            steps.run("cleanup", test.cleanup)
        except StepFailed:
            failed = True
    verdict = "FAILED" if failed else "passed"
    print(f"selftest {verdict} in {time.monotonic() - started:.1f}s", file=sys.stdout)
    return 1 if failed else 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="labctl.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="bring the lab up")
    up.add_argument("--hosts", default=DEFAULT_SPEC, help=f"platform[:count],... (default {DEFAULT_SPEC})")
    up.add_argument(
        "--small-disk",
        action="append",
        default=[],
        metavar="HOST=SIZE",
        help="HOST's Docker data root on a tmpfs of SIZE (1G, 768M; at least 64M); repeatable, one per host",
    )
    up.add_argument("--json", action="store_true", help="print lab.json on stdout (step lines go to stderr)")
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="remove everything the lab made").set_defaults(func=cmd_down)
    status = sub.add_parser("status", help="show the lab (exit 0 healthy, 1 degraded, 3 down)")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    fault = sub.add_parser("fault", help="break or repair one host")
    fault.add_argument("host")
    fault.add_argument("action", choices=FAULTS + EXTRA_FAULTS, metavar="ACTION", help=" | ".join(FAULTS))
    fault.set_defaults(func=cmd_fault)
    sub.add_parser("selftest", help="plain buildx multi-platform build on the lab").set_defaults(func=cmd_selftest)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # ip, dockerd, sshd, useradd live in sbin, which a non-login root environment may lack.
    path = os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
    os.environ["PATH"] = os.pathsep.join(path + [d for d in ("/usr/local/sbin", "/usr/sbin", "/sbin") if d not in path])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
