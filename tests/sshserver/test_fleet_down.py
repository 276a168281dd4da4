"""`down` over real SSH: one host's unexpected fault fails that host alone; the others are still cleaned and
reported, and the builder's state is still forgotten."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from nodefleet.fleet import remove
from nodefleet.fleet.down import down
from nodefleet.fleet.work import FleetOptions
from nodefleet.host import ops
from nodefleet.inventory import load_inventory
from nodefleet.state import BuilderState

from .conftest import Server

BUILDER = "downtest"


def _stub_engine(folder: Path) -> None:
    """A docker CLI on the server's PATH whose engine answers and removes containers (remove_node.sh succeeds)."""
    folder.mkdir()
    docker = folder / "docker"
    docker.write_text(
        "#!/bin/sh\n"
        '[ "$1" = version ] && { echo 27.0.0; exit 0; }\n'
        '[ "$1" = rm ] && exit 0\n'
        '[ "$1" = volume ] && exit 0\n'
        '[ "$1 $2" = "container inspect" ] && { echo "No such container: $3" >&2; exit 1; }\n'
        "exit 1\n"
    )
    docker.chmod(0o755)


def _inventory(ssh_server: Server, tmp_path: Path) -> Path:
    # Three hosts on the one server, told apart by their login (the server takes any user with the key).
    hosts = "".join(
        f'[[hosts]]\nname = "{name}"\naddress = "127.0.0.1"\nport = {ssh_server.port}\nuser = "{name}"\n'
        for name in ("first", "broken", "last")
    )
    path = tmp_path / "inventory.toml"
    path.write_text(
        f'[builder]\nname = "{BUILDER}"\n[defaults]\n'
        f'identity_file = "{ssh_server.client_key_path}"\nknown_hosts = "{ssh_server.known_hosts}"\n'
        f"connect_timeout = 2\n{hosts}"
    )
    return path


def _break_clean_remote(monkeypatch: pytest.MonkeyPatch) -> str:
    original = remove._clean_remote

    async def clean_remote(target: Any, *args: Any, **kwargs: Any) -> None:
        if target.name == "broken":
            raise RuntimeError("surprise while cleaning broken")
        await original(target, *args, **kwargs)

    monkeypatch.setattr(remove, "_clean_remote", clean_remote)
    return "unexpected RuntimeError: surprise while cleaning broken"


def _break_remove_node_container(monkeypatch: pytest.MonkeyPatch) -> str:
    original = ops.remove_node_container

    async def remove_node_container(session: Any, node: str, **kwargs: Any) -> None:
        if node == "broken":
            raise OSError("surprise while removing broken's container")
        await original(session, node, **kwargs)

    # Patched where `_clean_remote` looks it up: nodefleet.fleet.remove imported it from nodefleet.host.ops, so
    # patching nodefleet.host.ops itself would not reach it.
    monkeypatch.setattr(remove, "remove_node_container", remove_node_container)
    return "surprise while removing broken's container"


@pytest.mark.parametrize("breaker", [_break_clean_remote, _break_remove_node_container])
async def test_one_hosts_unexpected_fault_in_down_hides_no_other_host_and_state_is_forgotten(
    ssh_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, breaker: Any
) -> None:
    ssh_server.trust()
    _stub_engine(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")  # the server's sessions inherit it
    monkeypatch.setenv("BUILDX_CONFIG", str(tmp_path / "buildx"))
    state = BuilderState(tmp_path / "state", BUILDER)
    state.save_digests({"first": "sha256:1", "broken": "sha256:2", "last": "sha256:3"})
    for path in (state.build_record.path, state.helper_record.path, state.buildkitd_config):
        path.write_text("{}\n" if path.suffix == ".json" else "# generated\n")
    expected = breaker(monkeypatch)

    report = await down(load_inventory(_inventory(ssh_server, tmp_path)), FleetOptions(state_dir=tmp_path / "state"))

    by_name = {host.name: host for host in report.hosts}
    assert list(by_name) == ["first", "broken", "last"]
    assert by_name["first"].status == "removed", by_name["first"]
    assert by_name["last"].status == "removed", by_name["last"]
    broken = by_name["broken"]
    assert broken.status == "failed"
    assert broken.error is not None and expected in broken.error and "\n" not in broken.error, broken.error
    assert report.exit_code == 1
    # The builder's records are gone although one host failed: `down` forgot the builder.
    assert state.load_digests() is None
    for path in (state.record_file, state.build_record.path, state.helper_record.path, state.buildkitd_config):
        assert not path.exists(), path
