"""`up`'s planning of pins when some hosts cannot be reached this run (nodefleet.fleet.plan.plan_up: pure, no
session, no I/O)."""

from __future__ import annotations

from pathlib import Path

from nodefleet.buildx.argv import leave_argv, rm_argv
from nodefleet.buildx.store import StoredBuilder, StoredNode
from nodefleet.fleet.plan import Action, Member, edits, plan_up, removal_argv
from nodefleet.inventory import Inventory, parse_inventory

IMAGE = "moby/buildkit:buildx-stable-1"


def _inventory() -> Inventory:
    hosts = [{"name": name, "address": f"10.0.0.{i}"} for i, name in enumerate(["amd64-1", "arm64-1", "arm64-2"], 1)]
    return parse_inventory({"hosts": hosts}, Path("/fleet/inventory.toml"))


def _members(inventory: Inventory, platforms: dict[str, str | None], down: set[str]) -> list[Member]:
    """Each host with the platform its probe found (None: not known this run) and whether it answered."""
    return [Member(host, platforms[host.name], host.name not in down) for host in inventory.hosts]


def _stored(inventory: Inventory) -> StoredBuilder:
    pins = {"amd64-1": ("linux/amd64",), "arm64-1": ("linux/arm64",), "arm64-2": ()}
    nodes = tuple(
        StoredNode(host.name, f"ssh://{host.address}", pins[host.name], {"image": IMAGE}) for host in inventory.hosts
    )
    return StoredBuilder("nodefleet", "docker-container", nodes)


def test_an_unreachable_primary_keeps_its_pin_and_its_standby_stays_unchanged() -> None:
    inventory = _inventory()
    members = _members(inventory, {"amd64-1": "linux/amd64", "arm64-1": None, "arm64-2": "linux/arm64"}, {"arm64-1"})
    digests = {"amd64-1": "", "arm64-1": "", "arm64-2": ""}
    changes, specs = plan_up(members, _stored(inventory), digests, None, "")
    assert {change.node: change.action for change in changes} == {"amd64-1": Action.KEEP, "arm64-2": Action.KEEP}
    # No pin: `up` reports it as the standby (role "primary" only for a host whose spec pins a platform).
    assert specs["arm64-2"].platforms == ()
    assert "arm64-1" not in specs
    assert edits(changes) == [] and removal_argv("nodefleet", changes, _stored(inventory)) == []


def test_a_new_host_that_cannot_be_reached_takes_no_pin() -> None:
    inventory = _inventory()
    members = _members(
        inventory, {"amd64-1": "linux/amd64", "arm64-1": "linux/arm64", "arm64-2": "linux/arm64"}, {"arm64-1"}
    )  # arm64-1: platform known, not ready (its engine is not running), and not in the builder
    stored = StoredBuilder(
        "nodefleet", "docker-container", tuple(n for n in _stored(inventory).nodes if n.name != "arm64-1")
    )
    changes, specs = plan_up(members, stored, {}, None, "")
    assert specs["arm64-2"].platforms == ("linux/arm64",)
    assert "arm64-1" not in specs and "arm64-1" not in {change.node for change in changes}


def test_a_builder_without_a_record_is_planned_as_applied_nothing() -> None:
    """`up` passes `load_digests() or {}`: with no record, a config digest is re-applied (recreate), not trusted."""
    inventory = _inventory()
    members = _members(inventory, {"amd64-1": "linux/amd64", "arm64-1": "linux/arm64", "arm64-2": "linux/arm64"}, set())
    changes, specs = plan_up(members, _stored(inventory), {}, Path("/etc/bk.toml"), "d1")
    assert {change.node: change.action for change in changes} == dict.fromkeys(specs, Action.UPDATE)
    assert all(change.recreate and "buildkitd config not recorded" in change.reasons for change in changes)
    assert all(spec.buildkitd_config == Path("/etc/bk.toml") and spec.config_digest == "d1" for spec in specs.values())


def test_removals_leave_node_by_node_unless_every_node_goes() -> None:
    inventory = _inventory()
    stored = _stored(inventory)
    one = parse_inventory({"hosts": [{"name": "amd64-1", "address": "10.0.0.1"}]}, Path("/fleet/inventory.toml"))
    changes, _ = plan_up([Member(one.hosts[0], "linux/amd64", True)], stored, {"amd64-1": ""}, None, "")
    assert removal_argv("nodefleet", changes, stored) == [
        leave_argv("nodefleet", "arm64-1"),
        leave_argv("nodefleet", "arm64-2"),
    ]
    other = parse_inventory({"hosts": [{"name": "new", "address": "10.0.0.9"}]}, Path("/fleet/inventory.toml"))
    changes, _ = plan_up([Member(other.hosts[0], "linux/amd64", True)], stored, {}, None, "")
    assert removal_argv("nodefleet", changes, stored) == [rm_argv("nodefleet", keep_state=True, keep_daemon=True)]
    assert [(change.node, change.action) for change in edits(changes)] == [("new", Action.CREATE)]


def _pinned(inventory: Inventory, pins: dict[str, tuple[str, ...]]) -> StoredBuilder:
    nodes = tuple(
        StoredNode(host.name, f"ssh://{host.address}", pins[host.name], {"image": IMAGE}) for host in inventory.hosts
    )
    return StoredBuilder("nodefleet", "docker-container", nodes)


def test_a_stale_pin_no_node_takes_is_dropped_by_leaving_and_joining_again() -> None:
    # arm64-2 was reinstalled as an arm/v7 machine (pinned linux/arm/v7), then put back: it is an arm64 standby
    # again, and nothing else pins linux/arm/v7, so buildx would keep routing arm/v7 builds to it.
    inventory = _inventory()
    stored = _pinned(
        inventory, {"amd64-1": ("linux/amd64",), "arm64-1": ("linux/arm64",), "arm64-2": ("linux/arm/v7",)}
    )
    members = _members(inventory, {"amd64-1": "linux/amd64", "arm64-1": "linux/arm64", "arm64-2": "linux/arm64"}, set())
    digests = {"amd64-1": "", "arm64-1": "", "arm64-2": ""}
    changes, specs = plan_up(members, stored, digests, None, "")
    by_node = {change.node: change for change in changes}
    assert specs["arm64-2"].platforms == ()
    assert by_node["arm64-2"].action is Action.UPDATE and by_node["arm64-2"].rejoin
    assert not by_node["arm64-2"].recreate  # its container and cache stay
    assert by_node["amd64-1"].action is Action.KEEP and by_node["arm64-1"].action is Action.KEEP


def test_a_stale_pin_another_node_takes_needs_no_rejoin() -> None:
    # buildx moves a pin when another node takes it: the standby loses it without leaving.
    inventory = _inventory()
    stored = _pinned(inventory, {"amd64-1": ("linux/amd64",), "arm64-1": (), "arm64-2": ("linux/arm64",)})
    members = _members(inventory, {"amd64-1": "linux/amd64", "arm64-1": "linux/arm64", "arm64-2": "linux/arm64"}, set())
    changes, _ = plan_up(members, stored, {"amd64-1": "", "arm64-1": "", "arm64-2": ""}, None, "")
    by_node = {change.node: change for change in changes}
    assert by_node["arm64-1"].action is Action.UPDATE and not by_node["arm64-1"].rejoin
    assert by_node["arm64-2"].action is Action.KEEP


def test_an_unreachable_node_keeps_its_pin_taken() -> None:
    inventory = _inventory()
    stored = _pinned(inventory, {"amd64-1": ("linux/amd64",), "arm64-1": ("linux/arm64",), "arm64-2": ()})
    members = _members(inventory, {"amd64-1": "linux/amd64", "arm64-1": None, "arm64-2": "linux/arm64"}, {"arm64-1"})
    changes, _ = plan_up(members, stored, {"amd64-1": "", "arm64-1": "", "arm64-2": ""}, None, "")
    assert all(change.action is Action.KEEP for change in changes)
