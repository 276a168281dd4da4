"""Fixtures for end-to-end tests: the lab fleet (lab/labctl.py) brought up once per session, and fault injection.

The lab needs root and the packages lab/install-deps.sh installs. Without them these fixtures FAIL, naming what is
missing: an end-to-end test that skips proves nothing. Set NODEFLEET_LAB_KEEP=1 to leave the lab up afterwards.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lab"))
from labkit.core import LOCK_FILE, LOCK_HELD_ENV

from .fleetlib import BUILDX_VARIANTS, buildx_env, buildx_version

REPO = Path(__file__).resolve().parents[2]
LABCTL = REPO / "lab" / "labctl.py"
# Two arm64 hosts, so failover tests have somewhere to go.
E2E_HOSTS = "amd64,arm64:2,arm/v7"
# One host whose Docker data root is a tmpfs of this many bytes (disk care: budgets, prune, low disk, disk full).
SMALL_DISK = {"arm64-1": 1 << 30}
E2E_UP_ARGS = ["--hosts", E2E_HOSTS, *(f"--small-disk={host}={size}" for host, size in SMALL_DISK.items())]
UP_TIMEOUT = 3600  # a cold first `up` builds BuildKit from source (lab/buildkit/build.sh)
# How `lab_fault` undoes each fault (`rekey-restore` puts the host's original key back; the registry's faults take
# the host `registry`).
RESTORE = {
    "sshd-stop": "sshd-start",
    "engine-stop": "engine-start",
    "net-cut": "net-restore",
    "rekey": "rekey-restore",
    "reinstall-armv7": "reinstall-restore",
    "registry-stop": "registry-start",
}


def labctl(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run lab/labctl.py (stdlib only, so any Python 3.11 runs it)."""
    return subprocess.run(
        [sys.executable, str(LABCTL), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Each phase's report on the test item (`item.rep_call`...), so a fixture's teardown knows how the test ended
    (the fault matrix records a case that stopped before its checks as not run, with why)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="session")
def lab() -> Iterator[dict[str, Any]]:
    """The lab's lab.json (lab/CONTRACT.md): registry, CA, key, known_hosts, inventory, and the hosts."""
    if os.geteuid() != 0:
        pytest.fail("end-to-end tests need root: the lab makes namespaces, mounts, daemons and a user", pytrace=False)
    with session_lock():
        up = labctl("up", *E2E_UP_ARGS, "--json", timeout=UP_TIMEOUT)
        if up.returncode != 0:
            pytest.fail(f"`labctl.py up {' '.join(E2E_UP_ARGS)}` failed:\n{up.stderr[-6000:]}", pytrace=False)
        sys.stderr.write(up.stderr)
        yield json.loads(up.stdout)
        if os.environ.get("NODEFLEET_LAB_KEEP") == "1":
            return
        down = labctl("down", timeout=600)
        if down.returncode != 0:
            pytest.fail(f"`labctl.py down` left things behind:\n{down.stdout}\n{down.stderr}", pytrace=False)


@contextlib.contextmanager
def session_lock() -> Iterator[None]:
    """The lab is one per machine: this session has it to itself, from its `up` to its `down`. Another session
    (another developer's, say) waits here; the labctl runs of this session skip the lock (LOCK_HELD_ENV)."""
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with LOCK_FILE.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            message = f"waiting for the lab lock {LOCK_FILE}: another test session or labctl has the lab"
            print(f"\n{message}", file=sys.__stderr__, flush=True)  # not captured: say why nothing happens
            fcntl.flock(lock, fcntl.LOCK_EX)
        os.environ[LOCK_HELD_ENV] = "1"
        try:
            yield
        finally:
            del os.environ[LOCK_HELD_ENV]


@pytest.fixture
def lab_fault(lab: dict[str, Any]) -> Callable[[str, str], contextlib.AbstractContextManager[None]]:
    """`with lab_fault("arm64-1", "net-cut"): ...` applies a fault to one host and always undoes it afterwards."""

    @contextlib.contextmanager
    def fault(host: str, action: str) -> Iterator[None]:
        _fault(host, action)
        try:
            yield
        finally:
            if action in RESTORE:
                _fault(host, RESTORE[action])

    return fault


def _fault(host: str, action: str) -> None:
    result = labctl("fault", host, action, timeout=120)
    if result.returncode != 0:
        pytest.fail(f"`labctl.py fault {host} {action}` failed:\n{result.stdout}{result.stderr}", pytrace=False)


@pytest.fixture(scope="module", params=BUILDX_VARIANTS)
def buildx_variant(request: pytest.FixtureRequest) -> str:
    """A module whose tests use this (or `buildx`) runs them all with trixie's buildx (0.13), then all with
    unstable's (0.29): the parameter is module-scoped, so pytest groups the tests by variant."""
    return str(request.param)


@pytest.fixture(scope="module")
def buildx(buildx_variant: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment that makes the docker CLI (and so nodefleet, which runs `docker buildx`) use that buildx."""
    env = buildx_env(buildx_variant, tmp_path_factory.mktemp(f"docker-config-{buildx_variant}"))
    if env and buildx_version(env) == buildx_version():
        pytest.fail(f"{env} does not change the buildx that `docker buildx` runs", pytrace=False)
    return env
