"""buildx argv builders (nodefleet.buildx.argv), node names (nodes) and the store reader (store), table-driven."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nodefleet.buildx import argv as buildx_argv
from nodefleet.buildx import nodes, store
from nodefleet.buildx.nodes import NodeSpec
from nodefleet.client import parse_buildx_version

SPEC = NodeSpec(
    name="arm64-1",
    endpoint="ssh://builder@10.0.0.12",
    platforms=("linux/arm64",),
    image="reg:5000/buildkit:v0.13.2",
    driver_opts={"env.GOMAXPROCS": "1"},
    buildkitd_config=Path("/etc/bk.toml"),
)


def test_create_argv_pins_and_forces_the_driver() -> None:
    assert buildx_argv.create_argv("fleet", SPEC, append=True) == [
        "docker", "buildx", "create", "--name", "fleet", "--node", "arm64-1", "--driver", "docker-container",
        "--append", "--platform", "linux/arm64",
        "--driver-opt", "env.GOMAXPROCS=1", "--driver-opt", "image=reg:5000/buildkit:v0.13.2",
        "--buildkitd-config", "/etc/bk.toml", "ssh://builder@10.0.0.12",
    ]  # fmt: skip


def test_standby_node_has_no_platform_flag() -> None:
    spec = NodeSpec(name="b", endpoint="ssh://h", platforms=(), image="img")
    argv = buildx_argv.create_argv("fleet", spec, append=False)
    assert "--platform" not in argv and "--append" not in argv
    assert argv[-1] == "ssh://h"


@pytest.mark.parametrize(
    ("address", "user", "port", "endpoint"),
    [
        ("10.0.0.1", "u", None, "ssh://u@10.0.0.1"),
        ("h.example", None, 2222, "ssh://h.example:2222"),
        ("fd00::1", "u", 22, "ssh://u@[fd00::1]:22"),
    ],
)
def test_ssh_endpoint(address: str, user: str | None, port: int | None, endpoint: str) -> None:
    assert nodes.ssh_endpoint(address, user, port) == endpoint


def test_leave_rm_bootstrap_argv() -> None:
    assert buildx_argv.leave_argv("f", "n") == ["docker", "buildx", "create", "--name", "f", "--node", "n", "--leave"]
    assert buildx_argv.rm_argv("f", keep_state=True, keep_daemon=True)[-3:] == ["--keep-state", "--keep-daemon", "f"]
    assert buildx_argv.bootstrap_argv("f") == ["docker", "buildx", "inspect", "--bootstrap", "--builder", "f"]


@pytest.mark.parametrize(
    ("output", "version"),
    [
        ("github.com/docker/buildx 0.13.1+ds1 0.13.1+ds1-3", (0, 13, 1)),
        ("github.com/docker/buildx v0.29.1 1a2b3c", (0, 29, 1)),
        ("garbage", None),
    ],
)
def test_parse_buildx_version(output: str, version: tuple[int, int, int] | None) -> None:
    assert parse_buildx_version(output) == version


STORE = {
    "Name": "fleet",
    "Driver": "docker-container",
    "Nodes": [
        {
            "Name": "arm64-1",
            "Endpoint": "ssh://builder@10.0.0.12",
            "Platforms": [{"architecture": "arm64", "os": "linux", "variant": "v8"}],
            "DriverOpts": {"image": "img"},
            "Flags": None,
            "Files": {"buildkitd.toml": "W10="},
        },
        {
            "Name": "armv7-1",
            "Endpoint": "ssh://h",
            "Platforms": [{"architecture": "arm", "os": "linux", "variant": "v7"}],
        },
        {"Name": "standby", "Endpoint": "ssh://s", "Platforms": None, "DriverOpts": None},
    ],
    "Dynamic": False,
}


def test_parse_store() -> None:
    builder = store.parse_store(json.dumps(STORE))
    assert builder.name == "fleet" and builder.driver == "docker-container"
    assert [node.platforms for node in builder.nodes] == [("linux/arm64",), ("linux/arm/v7",), ()]
    assert builder.node("arm64-1") is not None
    assert builder.node("arm64-1").driver_opts == {"image": "img"}  # type: ignore[union-attr]
    assert builder.node("nope") is None


@pytest.mark.parametrize("text", ["", "{", "[]", '{"Nodes": []}', '{"Name": "x", "Nodes": [{"Endpoint": 1}]}'])
def test_corrupt_store(text: str) -> None:
    with pytest.raises(store.CorruptStoreError):
        store.parse_store(text)


def test_store_dir_follows_buildx_rules(tmp_path: Path) -> None:
    assert store.store_dir({"BUILDX_CONFIG": "/b", "DOCKER_CONFIG": "/d"}) == Path("/b")
    assert store.store_dir({"DOCKER_CONFIG": "/d"}) == Path("/d/buildx")
    assert store.store_dir({"HOME": "/home/u"}) == Path("/home/u/.docker/buildx")


def test_backup_and_restore_round_trip(tmp_path: Path) -> None:
    env = {"BUILDX_CONFIG": str(tmp_path / "bx")}
    instance = store.instance_file("fleet", env)
    instance.parent.mkdir(parents=True)
    instance.write_text(json.dumps(STORE))
    backups = tmp_path / "backups"
    saved = store.backup_store("fleet", backups, env)
    assert saved is not None and saved.stat().st_mode & 0o777 == 0o600
    instance.write_text("corrupted{")
    assert store.latest_backup("fleet", backups) == saved
    store.restore_store("fleet", saved, env)
    assert store.read_store("fleet", env) is not None
    for _ in range(7):
        store.backup_store("fleet", backups, env)
    assert len(list(backups.glob("fleet.*.json"))) == 5
    store.restore_store("fleet", None, env)
    assert store.read_store("fleet", env) is None
