"""`up`'s planning of pins when some hosts cannot be reached this run (fleet._plan, no I/O)."""

from __future__ import annotations

from pathlib import Path

from nodefleet.buildx import StoredBuilder, StoredNode
from nodefleet.fleet import HostResult, _HostWork, _plan, ssh_target
from nodefleet.inventory import Inventory, parse_inventory
from nodefleet.plan import Action
from nodefleet.state import BuilderState

IMAGE = "moby/buildkit:buildx-stable-1"


def _inventory() -> Inventory:
    hosts = [{"name": name, "address": f"10.0.0.{i}"} for i, name in enumerate(["amd64-1", "arm64-1", "arm64-2"], 1)]
    return parse_inventory({"hosts": hosts}, Path("/fleet/inventory.toml"))


def _works(inventory: Inventory, platforms: dict[str, str | None], down: set[str]) -> list[_HostWork]:
    works = []
    for host in inventory.hosts:
        result = HostResult(host.name, host.address, platform=platforms[host.name])
        work = _HostWork(host, ssh_target(inventory, host), result)
        if host.name in down:
            result.fail("ssh: timed out")
        else:
            work.session = object()  # type: ignore[assignment]  # connected; _plan never uses the session
        works.append(work)
    return works


def _stored(inventory: Inventory) -> StoredBuilder:
    pins = {"amd64-1": ("linux/amd64",), "arm64-1": ("linux/arm64",), "arm64-2": ()}
    nodes = tuple(
        StoredNode(host.name, f"ssh://{host.address}", pins[host.name], {"image": IMAGE}) for host in inventory.hosts
    )
    return StoredBuilder("nodefleet", "docker-container", nodes)


def test_an_unreachable_primary_keeps_its_pin_and_its_standby_stays_unchanged(tmp_path: Path) -> None:
    inventory = _inventory()
    works = _works(inventory, {"amd64-1": "linux/amd64", "arm64-1": None, "arm64-2": "linux/arm64"}, {"arm64-1"})
    state = BuilderState(tmp_path, "nodefleet")
    state.save_digests({"amd64-1": "", "arm64-1": "", "arm64-2": ""})
    changes, specs = _plan(inventory, works, _stored(inventory), state, None, "")
    assert {change.node: change.action for change in changes} == {"amd64-1": Action.KEEP, "arm64-2": Action.KEEP}
    assert specs["arm64-2"].platforms == ()
    assert works[2].result.role == "standby"


def test_a_new_host_that_cannot_be_reached_takes_no_pin(tmp_path: Path) -> None:
    inventory = _inventory()
    works = _works(inventory, {"amd64-1": "linux/amd64", "arm64-1": "linux/arm64", "arm64-2": "linux/arm64"}, set())
    works[1].result.fail("facts: the Docker engine is not running")  # platform known, not ready, not in the builder
    stored = StoredBuilder(
        "nodefleet", "docker-container", tuple(n for n in _stored(inventory).nodes if n.name != "arm64-1")
    )
    changes, specs = _plan(inventory, works, stored, BuilderState(tmp_path, "nodefleet"), None, "")
    assert specs["arm64-2"].platforms == ("linux/arm64",)
    assert "arm64-1" not in specs and "arm64-1" not in {change.node for change in changes}
