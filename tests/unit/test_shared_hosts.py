"""Two builders over the same hosts share each host's BuildKit container (the driver names it after the node):
`down` of one keeps what the other still lists, unless forced (pure: buildx's store is read from a folder)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nodefleet.fleet.remove import keep_shared
from nodefleet.fleet.work import FleetOptions
from nodefleet.inventory import parse_inventory
from nodefleet.results import HostResult
from nodefleet.state import BuilderState
from nodefleet.target import ssh_target


def _builder(store: Path, name: str, nodes: dict[str, str]) -> None:
    (store / "instances").mkdir(parents=True, exist_ok=True)
    document = {
        "Name": name,
        "Driver": "docker-container",
        "Nodes": [{"Name": node, "Endpoint": endpoint, "Platforms": []} for node, endpoint in nodes.items()],
    }
    (store / "instances" / name).write_text(json.dumps(document))


@pytest.mark.parametrize("force", [False, True])
def test_down_keeps_a_container_another_builder_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, force: bool
) -> None:
    store = tmp_path / "buildx"
    monkeypatch.setenv("BUILDX_CONFIG", str(store))
    hosts = [{"name": "a", "address": "10.0.0.1"}, {"name": "b", "address": "10.0.0.2"}]
    inventory = parse_inventory({"builder": {"name": "one"}, "hosts": hosts}, tmp_path / "inventory.toml")
    _builder(store, "one", {"a": "ssh://10.0.0.1", "b": "ssh://10.0.0.2"})
    _builder(store, "two", {"a": "ssh://builder@10.0.0.1:22"})  # another project's builder, another login
    _builder(store, "three", {"b": "ssh://10.0.0.9"})  # a node of that name on another host: not shared
    jobs = [(ssh_target(inventory, host), HostResult(host.name, host.address)) for host in inventory.hosts]
    notes: list[str] = []
    state = BuilderState(tmp_path / "state", "one")
    left = keep_shared(inventory, FleetOptions(force=force), state, jobs, notes)
    if force:
        assert [target.name for target, _ in left] == ["a", "b"]
        assert notes == [
            "a: BuildKit container buildx_buildkit_a and its cache removed (--force) although builder two also lists "
            "node a on 10.0.0.1"
        ]
        return
    assert [target.name for target, _ in left] == ["b"]
    assert jobs[0][1].action == "keep"
    assert notes == [
        "a: BuildKit container buildx_buildkit_a and its cache kept: builder two also lists node a on 10.0.0.1 "
        "(`nodefleet down --force` removes them anyway)"
    ]


def test_nodefleets_own_helpers_do_not_keep_a_container(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "buildx"
    monkeypatch.setenv("BUILDX_CONFIG", str(store))
    inventory = parse_inventory(
        {"builder": {"name": "one"}, "hosts": [{"name": "a", "address": "10.0.0.1"}]}, tmp_path / "inventory.toml"
    )
    _builder(store, "one--a", {"a": "ssh://10.0.0.1"})
    state = BuilderState(tmp_path / "state", "one")
    state.helper_record.path.parent.mkdir(parents=True)
    state.helper_record.path.write_text(json.dumps({"helpers": {"one--a": {"node": "a", "config_digest": ""}}}))
    jobs = [(ssh_target(inventory, inventory.hosts[0]), HostResult("a", "10.0.0.1"))]
    assert keep_shared(inventory, FleetOptions(), state, jobs, []) == jobs
