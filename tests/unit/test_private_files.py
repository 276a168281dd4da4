"""Files nodefleet writes that hold state (or buildx's store, which embeds buildkitd.toml and CA files) are 0600
from the moment they exist, in 0700 folders, whatever the umask."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodefleet.buildx import store as buildx
from nodefleet.buildx.config import resolve_buildkitd_config
from nodefleet.inventory import parse_inventory
from nodefleet.state import BuilderState, write_private

STORE = {
    "Name": "fleet",
    "Driver": "docker-container",
    "Nodes": [{"Name": "a", "Endpoint": "ssh://h", "Platforms": []}],
}


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.fixture
def open_umask() -> Iterator[None]:
    """umask 0: a file created without an explicit mode would be world-writable."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("open_umask")
def test_write_private_creates_and_replaces_as_0600(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("old")
    target.chmod(0o644)
    write_private(target, b"new")
    assert target.read_bytes() == b"new" and mode(target) == 0o600
    assert [path.name for path in tmp_path.iterdir()] == ["f"]  # no temporary file left behind


@pytest.mark.usefixtures("open_umask")
def test_backups_and_restores_of_the_buildx_store_are_private(tmp_path: Path) -> None:
    environ = {"BUILDX_CONFIG": str(tmp_path / "buildx")}
    instance = buildx.instance_file("fleet", environ)
    instance.parent.mkdir(parents=True)
    instance.write_text(json.dumps(STORE))
    backups = tmp_path / "state" / "backups"
    backup = buildx.backup_store("fleet", backups, environ)
    assert backup is not None
    assert mode(backups) == 0o700 and mode(backup) == 0o600
    instance.write_text("garbage")
    instance.chmod(0o666)
    buildx.restore_store("fleet", backup, environ)
    assert json.loads(instance.read_text()) == STORE and mode(instance) == 0o600
    instance.unlink()
    buildx.restore_store("fleet", backup, environ)  # a missing store file is put back too
    assert mode(instance) == 0o600
    assert sorted(path.name for path in instance.parent.iterdir()) == ["fleet"]


@pytest.mark.usefixtures("open_umask")
def test_generated_buildkitd_config_and_builder_state_are_private(tmp_path: Path) -> None:
    inventory = parse_inventory(
        {
            "registries": {"reg.example:5000": {"ca_file": "/etc/ca.crt"}},
            "hosts": [{"name": "a", "address": "10.0.0.1"}],
        },
        tmp_path / "inventory.toml",
    )
    state = BuilderState(tmp_path / "state" / "nodefleet", inventory.builder)
    config = resolve_buildkitd_config(inventory, state)
    assert config is not None
    assert mode(config) == 0o600 and mode(state.dir) == 0o700
    with state.lock.hold(1):
        state.save_digests({"a": "d1"})
    for path in (state.lock.path, state.record_file):
        assert mode(path) == 0o600, path

    async def record() -> None:
        async with state.build_record.update() as data:
            data["nodes"]["a"] = {"last_used": 1.0}
        async with state.helper_record.update() as data:
            data["helpers"]["fleet--a"] = {"node": "a", "config_digest": "d1"}

    asyncio.run(record())
    files = [path for path in state.dir.rglob("*") if path.is_file()]
    assert len(files) >= 7, files  # buildkitd.toml, builder.lock, record.json, build.json/.lock, helpers.json/.lock
    for path in files:
        assert mode(path) == 0o600, path


@pytest.mark.usefixtures("open_umask")
def test_every_folder_of_the_state_is_private(tmp_path: Path) -> None:
    """The state folder and builders/ too: a folder others can write lets them swap a builder's folder."""
    state = BuilderState(tmp_path / "state" / "nodefleet", "fleet")
    with state.lock.hold(1):
        state.save_digests({"a": "d1"})
    folders = [state.root, *(path for path in state.root.rglob("*") if path.is_dir())]
    assert {folder: mode(folder) for folder in folders} == dict.fromkeys(folders, 0o700)
