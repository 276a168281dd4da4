"""`nodefleet up`, `status` and `down` against the lab: real sshd, dockerd, buildx and BuildKit."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from nodefleet.buildx.store import read_store

from .fleetlib import (
    buildx_builders,
    container_id,
    host_docker,
    nodefleet,
    volume_exists,
    write_inventory,
)

pytestmark = pytest.mark.e2e

THREE = ["amd64-1", "arm64-1", "armv7-1"]
PLATFORMS = {"amd64-1": "linux/amd64", "arm64-1": "linux/arm64", "armv7-1": "linux/arm/v7"}
# Every test here runs with trixie's buildx (0.13) and with unstable's (0.29): the `buildx` fixture (conftest.py).


@pytest.fixture(scope="module")
def fleet_inventory(lab: Any, buildx: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A three-architecture builder, brought up once for the module and taken down at its end."""
    path = write_inventory(lab, tmp_path_factory.mktemp("fleet") / "inventory.toml", "e2efleet", THREE)
    first = nodefleet("up", "-i", str(path), "--json", env=buildx)
    yield path, first
    nodefleet("down", "-i", str(path), "--json", env=buildx)


def store(builder: str, env: dict[str, str]) -> Any:
    return read_store(builder, {**os.environ, **env})


def test_up_brings_three_native_pinned_nodes(lab: Any, buildx: dict[str, str], fleet_inventory: Any) -> None:
    path, first = fleet_inventory
    assert first.exit_code == 0, first.stdout + first.stderr
    hosts = first.hosts()
    for name, platform in PLATFORMS.items():
        host = hosts[name]
        assert host["status"] == "healthy", host
        assert host["platform"] == platform
        assert host["pinned"] == [platform]
        assert host["buildkit"] == "v0.13.2"
        assert host["native_platform"].split("/")[:2] == platform.split("/")[:2]
        assert host["engine"]
    stored = store("e2efleet", buildx)
    assert stored is not None
    assert {node.name: node.platforms for node in stored.nodes} == {n: (p,) for n, p in PLATFORMS.items()}
    status = nodefleet("status", "-i", str(path), "--json", env=buildx)
    assert status.exit_code == 0, status.stdout
    assert {h["name"]: h["status"] for h in status.json["hosts"]} == dict.fromkeys(THREE, "healthy")


def test_second_up_changes_nothing(lab: Any, buildx: dict[str, str], fleet_inventory: Any) -> None:
    path, _ = fleet_inventory
    before = {name: container_id(lab, name, name) for name in THREE}
    again = nodefleet("up", "-i", str(path), "--json", env=buildx)
    assert again.exit_code == 0, again.stdout + again.stderr
    assert again.json["changed"] is False
    assert {host["action"] for host in again.json["hosts"]} == {"keep"}
    assert {name: container_id(lab, name, name) for name in THREE} == before
    human = nodefleet("up", "-i", str(path), env=buildx)
    assert "no change" in human.stdout


def test_removed_buildkit_container_is_reported_and_started_again(
    lab: Any, buildx: dict[str, str], fleet_inventory: Any
) -> None:
    path, _ = fleet_inventory
    host_docker(lab, "amd64-1", "rm", "-f", "buildx_buildkit_amd64-1")
    status = nodefleet("status", "-i", str(path), "--json", env=buildx)
    assert status.exit_code == 1
    assert status.hosts()["amd64-1"]["status"] == "failed" and "missing" in status.hosts()["amd64-1"]["error"]
    build = nodefleet("build", "-i", str(path), "--platform", "linux/amd64", str(path.parent), env=buildx)
    assert build.exit_code == 1 and "buildx_buildkit_amd64-1 is missing" in build.stdout + build.stderr, build.stderr
    again = nodefleet("up", "-i", str(path), "--json", env=buildx)
    assert again.exit_code == 0, again.stdout + again.stderr
    assert again.json["changed"] is True
    assert {h["name"]: h["action"] for h in again.json["hosts"]} == {
        "amd64-1": "start",
        "arm64-1": "keep",
        "armv7-1": "keep",
    }
    assert container_id(lab, "amd64-1", "amd64-1")


def test_status_human_table(buildx: dict[str, str], fleet_inventory: Any) -> None:
    path, _ = fleet_inventory
    run = nodefleet("status", "-i", str(path), env=buildx)
    assert run.exit_code == 0
    for name in THREE:
        assert name in run.stdout
    assert "0 failed, 3 healthy" in run.stdout


def test_partitioned_host_fails_alone_and_builder_stays_intact(
    lab: Any, lab_fault: Any, buildx: dict[str, str], fleet_inventory: Any
) -> None:
    path, _ = fleet_inventory
    with lab_fault("arm64-1", "net-cut"):
        started = time.monotonic()
        status = nodefleet("status", "-i", str(path), "--json", env=buildx)
        status_seconds = time.monotonic() - started
        run = nodefleet("up", "-i", str(path), "--json", env=buildx)
    assert status.exit_code == 1
    assert status.hosts()["arm64-1"]["status"] == "failed"
    assert status_seconds < 3 + 5  # connect timeout 3 s, plus interpreter start-up
    assert run.exit_code == 1, run.stdout
    hosts = run.hosts()
    assert hosts["arm64-1"]["status"] == "failed"
    assert hosts["amd64-1"]["status"] == "healthy" and hosts["armv7-1"]["status"] == "healthy"
    stored = store("e2efleet", buildx)
    assert stored is not None
    assert {node.name: node.platforms for node in stored.nodes} == {n: (p,) for n, p in PLATFORMS.items()}
    # Back on the network, the same builder is healthy again without any change.
    healed = nodefleet("up", "-i", str(path), "--json", env=buildx)
    assert healed.exit_code == 0, healed.stdout
    assert healed.json["changed"] is False


def test_replaced_host_key_is_refused(lab: Any, lab_fault: Any, buildx: dict[str, str], fleet_inventory: Any) -> None:
    path, _ = fleet_inventory
    with lab_fault("armv7-1", "rekey"):
        run = nodefleet("up", "-i", str(path), "--json", "--accept-new-host-keys", env=buildx)
    assert run.exit_code == 1
    host = run.hosts()["armv7-1"]
    assert host["status"] == "failed"
    assert "does NOT match known_hosts" in host["error"]
    assert run.hosts()["amd64-1"]["status"] == "healthy"


def test_down_leaves_nothing(lab: Any, buildx: dict[str, str], fleet_inventory: Any) -> None:
    path, _ = fleet_inventory
    run = nodefleet("down", "-i", str(path), "--json", env=buildx)
    assert run.exit_code == 0, run.stdout
    assert "e2efleet" not in buildx_builders(buildx)
    for name in THREE:
        assert container_id(lab, name, name) == ""
        assert not volume_exists(lab, name, name)
    # Nothing else on the hosts was touched: the engines still answer.
    assert host_docker(lab, "amd64-1", "version", "--format", "{{.Server.Version}}").strip()


def test_removed_host_leaves_builder_and_host(lab: Any, buildx: dict[str, str], tmp_path: Path) -> None:
    path = write_inventory(lab, tmp_path / "inventory.toml", "e2eremove", ["amd64-1", "arm64-2"])
    assert nodefleet("up", "-i", str(path), env=buildx).exit_code == 0
    assert container_id(lab, "arm64-2", "arm64-2")
    write_inventory(lab, path, "e2eremove", ["amd64-1"])
    run = nodefleet("up", "-i", str(path), "--json", env=buildx)
    assert run.exit_code == 0, run.stdout
    assert run.hosts()["arm64-2"]["status"] == "removed"
    stored = store("e2eremove", buildx)
    assert stored is not None and [node.name for node in stored.nodes] == ["amd64-1"]
    assert container_id(lab, "arm64-2", "arm64-2") == ""
    assert not volume_exists(lab, "arm64-2", "arm64-2")
    down = nodefleet("down", "-i", str(path), "--json", env=buildx)
    assert down.exit_code == 0, down.stdout
