"""One test per defect the restructuring fixed (issue 12), each failing on the code before the fix."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

from nodefleet.buildx.helpers import HELPERS, make_helper, remove_helpers
from nodefleet.buildx.nodes import NodeSpec
from nodefleet.errors import InventoryError, LockError, NodefleetError
from nodefleet.fanout import each
from nodefleet.host.facts import NodeHealth
from nodefleet.host.health import health_problem
from nodefleet.inventory import parse_inventory
from nodefleet.results import HostResult, HostStatus
from nodefleet.runner import run_local
from nodefleet.state import BuilderState, FileLock

INVENTORY = Path("/fleet/inventory.toml")


# 1. One host's unexpected exception never hides the others' results.
async def test_one_hosts_surprise_fails_that_host_alone() -> None:
    results = {name: HostResult(name, "10.0.0.1") for name in ("a", "b", "c")}

    async def job(name: str) -> None:
        await asyncio.sleep(0)
        if name == "b":
            raise RuntimeError("boom")  # not a NodefleetError, not an OSError: a surprise
        if name == "c":
            raise OSError(5, "Input/output error")
        results[name].status = HostStatus.HEALTHY

    await each(2, list(results), job, lambda name, message: results[name].fail(message))
    assert results["a"].status is HostStatus.HEALTHY
    assert results["b"].error == "unexpected RuntimeError: boom"
    assert results["c"].failed and "Input/output error" in (results["c"].error or "")


# 3. Waiting for a lock never blocks the event loop.
async def test_waiting_for_a_lock_lets_the_event_loop_run(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "x.lock", "another run")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    told: list[str] = []
    with lock.hold(1):
        beat = asyncio.ensure_future(ticker())
        with pytest.raises(LockError, match=r"another run still running after 0\.3 s"):
            async with lock.hold_async(0.3, on_wait=told.append):
                pass
        beat.cancel()
    assert ticks >= 10, "the loop was blocked while waiting"
    assert told and "waiting up to 0.3 s for another run" in told[0]


# 4. Builds share the builder's lock; up and down hold it alone.
async def test_builds_share_the_lock_and_up_waits_for_them(tmp_path: Path) -> None:
    state = BuilderState(tmp_path, "fleet")
    async with state.lock.hold_async(1, shared=True), state.lock.hold_async(1, shared=True):
        with pytest.raises(LockError):
            async with state.lock.hold_async(0.2):  # up or down
                pass
    async with state.lock.hold_async(1):
        with pytest.raises(LockError):
            async with state.lock.hold_async(0.2, shared=True):  # a build waits for up
                pass


async def test_a_build_waits_for_up_saying_so(tmp_path: Path) -> None:
    from nodefleet.build.cmdline import parse_request
    from nodefleet.build.command import build
    from nodefleet.build.options import BuildOptions

    inventory = parse_inventory(
        {"builder": {"name": "fleet"}, "hosts": [{"name": "a", "address": "10.0.0.1"}]}, INVENTORY
    )
    told: list[str] = []
    options = BuildOptions(state_dir=tmp_path, lock_wait=0.2, notice=told.append)
    async with BuilderState(tmp_path, "fleet").lock.hold_async(1):
        with pytest.raises(LockError):
            await build(inventory, parse_request(["."]), options)
    assert told and "up, down or build on builder fleet" in told[0]


# 5. Builders' names never collide in the state folder, and helpers are known by the record only.
def test_each_builder_has_a_folder_of_its_own(tmp_path: Path) -> None:
    ci, ci_build = BuilderState(tmp_path, "ci"), BuilderState(tmp_path, "ci-build")
    files = {ci.record_file, ci.build_record.path, ci.helper_record.path, ci.buildkitd_config}
    others = {ci_build.record_file, ci_build.build_record.path, ci_build.helper_record.path}
    assert not files & others
    assert all(path.parent == tmp_path / "builders" / "ci" for path in files)


def _user_builder(store: Path, name: str) -> Path:
    instances = store / "instances"
    instances.mkdir(parents=True, exist_ok=True)
    path = instances / name
    path.write_text(json.dumps({"Name": name, "Driver": "docker-container", "Nodes": []}))
    return path


async def test_down_leaves_a_users_builder_that_only_looks_like_a_helper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUILDX_CONFIG", str(tmp_path / "buildx"))
    users = _user_builder(tmp_path / "buildx", "ci--x")
    notes = await remove_helpers(BuilderState(tmp_path / "state", "ci"))
    assert users.exists() and notes == []


async def test_a_helper_name_taken_by_a_users_builder_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUILDX_CONFIG", str(tmp_path / "buildx"))
    users = _user_builder(tmp_path / "buildx", "ci--x")
    spec = NodeSpec("x", "ssh://10.0.0.1", ("linux/amd64",), "moby/buildkit:v0.13.2")
    with pytest.raises(NodefleetError, match="a buildx builder named ci--x exists that nodefleet did not make"):
        await make_helper(BuilderState(tmp_path / "state", "ci"), HELPERS, spec, None, timeout=5)
    assert users.exists()


# 7. A cancelled local process is killed and reaped (no zombie).
async def test_a_cancelled_local_process_is_reaped() -> None:
    task = asyncio.ensure_future(run_local(["sh", "-c", "echo $$; exec sleep 30"], timeout=60))
    await asyncio.sleep(0.3)
    children_before = _children()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert children_before, "the process did not start"
    assert not _present(children_before), "left behind (zombie or alive)"


def _present(pids: list[int]) -> list[int]:
    return [pid for pid in pids if Path(f"/proc/{pid}").exists()]


def _children() -> list[int]:
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                found.append(int(entry.name))
    return found


# 10. Health fails closed: a running BuildKit that reports no worker cannot build.
def test_a_running_buildkit_without_workers_is_not_healthy() -> None:
    health = NodeHealth("running", "v0.13.2", (), instance="c0ffee 2026-12-01T00:00:00Z")
    assert (
        health_problem("a", "linux/amd64", health) == "BuildKit in buildx_buildkit_a reports no worker: it cannot build"
    )
    assert health_problem("a", "linux/amd64", NodeHealth("running", "v0.13.2", ("linux/amd64",))) is None


# 11. No validated value lets a trailing newline through.
@pytest.mark.parametrize(
    ("host", "key"),
    [
        ({"name": "a\n", "address": "10.0.0.1"}, "name"),
        ({"name": "a", "address": "h.example\n"}, "address"),
        ({"name": "a", "address": "10.0.0.1", "user": "u\n"}, "user"),
        ({"name": "a", "address": "10.0.0.1", "buildkit_image": "moby/buildkit\n"}, "buildkit_image"),
        ({"name": "a", "address": "10.0.0.1", "driver_opts": {"k\n": "v"}}, "driver_opts"),
        ({"name": "a", "address": "10.0.0.1", "driver_opts": {"k": "v\n"}}, "driver_opts"),
        ({"name": "a", "address": "10.0.0.1", "labels": {"k": "v\n"}}, "labels"),
    ],
)
def test_a_trailing_newline_is_refused(host: dict[str, object], key: str) -> None:
    with pytest.raises(InventoryError, match=key):
        parse_inventory({"hosts": [host]}, INVENTORY)


def test_a_registry_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(InventoryError, match="registries"):
        parse_inventory({"hosts": [{"name": "a", "address": "10.0.0.1"}], "registries": {"r.example\n": {}}}, INVENTORY)


# 12. An unknown architecture and a parallel the command line would refuse are input errors.
def test_an_unknown_architecture_is_refused() -> None:
    with pytest.raises(InventoryError, match=r"hosts\[0\] \(a\)\.platforms: 'linux/amd65' is not a known platform"):
        parse_inventory({"hosts": [{"name": "a", "address": "10.0.0.1", "platforms": ["linux/amd65"]}]}, INVENTORY)


def test_parallel_is_capped_as_on_the_command_line() -> None:
    with pytest.raises(InventoryError, match=r"defaults\.parallel: must be a positive integer up to 256, got 100000"):
        parse_inventory({"defaults": {"parallel": 100000}, "hosts": [{"name": "a", "address": "10.0.0.1"}]}, INVENTORY)
    assert parse_inventory({"defaults": {"parallel": 256}, "hosts": [{"name": "a", "address": "10.0.0.1"}]}, INVENTORY)


# 13. A host's seconds are its own steps', not the whole command's.
async def test_a_hosts_seconds_are_its_own() -> None:
    from nodefleet.fleet.work import HostWork

    inventory = parse_inventory(
        {"hosts": [{"name": "quick", "address": "10.0.0.1"}, {"name": "slow", "address": "10.0.0.2"}]}, INVENTORY
    )
    quick, slow = (HostWork.of(inventory, host) for host in inventory.hosts)
    started = time.monotonic()
    await asyncio.gather(quick.step("a", lambda: asyncio.sleep(0.05)), slow.step("a", lambda: asyncio.sleep(0.4)))
    await asyncio.sleep(0.2)  # a builder-wide phase: nobody's own time
    await quick.step("b", lambda: asyncio.sleep(0.05))
    assert quick.result.seconds < 0.3 < slow.result.seconds < time.monotonic() - started


# 14. The local side is checked before any host: a missing docker CLI is one line naming it, not a raw errno.
@pytest.mark.parametrize("command", [["status"], ["up"], ["build", "."]])
def test_no_docker_command_is_named_before_any_host_is_contacted(tmp_path: Path, command: list[str]) -> None:
    import subprocess
    import sys

    inventory = tmp_path / "inventory.toml"
    inventory.write_text('[[hosts]]\nname = "a"\naddress = "127.0.0.1"\nport = 9\n')
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty), "NODEFLEET_STATE_DIR": str(tmp_path / "state"), "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "nodefleet", *command[:1], "-i", str(inventory), *command[1:]],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "no `docker` command on this machine: install the Docker CLI" in lines[0]
    assert "Traceback" not in done.stderr and "Errno" not in done.stderr


def test_an_old_buildx_is_named() -> None:
    from nodefleet.client import parse_buildx_version

    assert parse_buildx_version("github.com/docker/buildx 0.12.1+ds1 abc") == (0, 12, 1)
    assert parse_buildx_version("github.com/docker/buildx v0.29.1 abc") == (0, 29, 1)
    assert parse_buildx_version("docker: 'buildx' is not a docker command.") is None


def test_the_flat_state_of_older_versions_is_adopted_without_touching_another_builders(tmp_path: Path) -> None:
    (tmp_path / "backups").mkdir()
    (tmp_path / "ci.json").write_text(
        json.dumps({"version": 1, "builder": "ci", "nodes": {"a": {"config_digest": "d"}}})
    )
    build = {"version": 1, "nodes": {"a": {"last_used": 1.0}}, "helpers": {"ci--a": {"config_digest": "d"}}}
    (tmp_path / "ci-build.json").write_text(json.dumps(build))
    (tmp_path / "backups" / "ci.1.json").write_text("{}")
    other = {"version": 1, "builder": "x-build", "nodes": {}}
    (tmp_path / "x-build.json").write_text(json.dumps(other))
    ci = BuilderState(tmp_path, "ci")
    ci.adopt_legacy()
    assert ci.load_digests() == {"a": "d"}
    assert ci.build_record.load()["nodes"] == {"a": {"last_used": 1.0}}
    assert ci.helper_record.load()["helpers"] == {"ci--a": {"config_digest": "d", "node": "a"}}
    assert (ci.backup_dir / "ci.1.json").exists()
    BuilderState(tmp_path, "x").adopt_legacy()  # x-build.json is builder x-build's up record, not x's build record
    assert json.loads((tmp_path / "x-build.json").read_text()) == other
