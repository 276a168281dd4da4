"""Planning the builder: pins are exclusive, nothing changes when nothing differs, removals come first."""

from __future__ import annotations

from nodefleet.buildx.nodes import NodeSpec
from nodefleet.buildx.store import StoredBuilder, StoredNode
from nodefleet.fleet.plan import Action, assign_pins, plan_builder


def spec(name: str, *platforms: str, image: str = "img", digest: str = "") -> NodeSpec:
    return NodeSpec(name, f"ssh://u@{name}", tuple(platforms), image, {}, None, digest)


def stored(name: str, *platforms: str, image: str = "img") -> StoredNode:
    return StoredNode(name, f"ssh://u@{name}", tuple(platforms), {"image": image})


def test_assign_pins_first_host_of_a_platform_wins() -> None:
    pins = assign_pins([("amd64-1", ("linux/amd64",)), ("arm64-1", ("linux/arm64",)), ("arm64-2", ("linux/arm64",))])
    assert pins == {"amd64-1": ("linux/amd64",), "arm64-1": ("linux/arm64",), "arm64-2": ()}


def test_new_builder_creates_then_adds() -> None:
    changes = plan_builder([spec("a", "linux/amd64"), spec("b", "linux/arm64")], None, {})
    assert [(c.node, c.action) for c in changes] == [("a", Action.CREATE), ("b", Action.ADD)]


def test_nothing_differs_nothing_changes() -> None:
    builder = StoredBuilder("f", "docker-container", (stored("a", "linux/amd64"), stored("b")))
    changes = plan_builder([spec("a", "linux/amd64"), spec("b")], builder, {"a": "", "b": ""})
    assert {c.action for c in changes} == {Action.KEEP}


def test_changed_image_updates_and_recreates() -> None:
    builder = StoredBuilder("f", "docker-container", (stored("a", "linux/amd64"),))
    (change,) = plan_builder([spec("a", "linux/amd64", image="new")], builder, {"a": ""})
    assert change.action is Action.UPDATE and change.recreate
    assert "driver options changed" in change.reasons


def test_lost_pins_are_restored_without_recreating() -> None:
    builder = StoredBuilder("f", "docker-container", (stored("a"),))
    (change,) = plan_builder([spec("a", "linux/amd64")], builder, {"a": ""})
    assert change.action is Action.UPDATE and not change.recreate


def test_standby_with_stale_pin_is_left_to_the_primary() -> None:
    builder = StoredBuilder("f", "docker-container", (stored("b", "linux/arm64"),))
    changes = plan_builder([spec("a", "linux/arm64"), spec("b")], builder, {"b": ""})
    assert [(c.node, c.action) for c in changes] == [("a", Action.ADD), ("b", Action.KEEP)]


def test_config_change_recreates() -> None:
    builder = StoredBuilder("f", "docker-container", (stored("a", "linux/amd64"),))
    (change,) = plan_builder([spec("a", "linux/amd64", digest="new")], builder, {"a": "old"})
    assert change.action is Action.UPDATE and change.recreate


def test_removed_hosts_go_first_and_unreachable_ones_stay() -> None:
    builder = StoredBuilder("f", "docker-container", (stored("gone"), stored("down", "linux/arm64"), stored("a")))
    changes = plan_builder([spec("a"), spec("new", "linux/amd64")], builder, {"a": ""}, keep=frozenset({"down"}))
    assert [(c.node, c.action) for c in changes] == [
        ("gone", Action.REMOVE),
        ("a", Action.KEEP),
        ("new", Action.ADD),
    ]


def test_all_stored_nodes_replaced() -> None:
    builder = StoredBuilder("f", "docker-container", (stored("old"),))
    changes = plan_builder([spec("a")], builder, {})
    assert [(c.node, c.action) for c in changes] == [("old", Action.REMOVE), ("a", Action.CREATE)]
