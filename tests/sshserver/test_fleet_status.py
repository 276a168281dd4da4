"""`status` over real SSH: one result per host, each with its own reason, none hiding the others."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import asyncssh

from nodefleet.fleet.status import status
from nodefleet.fleet.work import FleetOptions
from nodefleet.inventory import load_inventory

from .conftest import Server


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_status_reports_every_host(
    ssh_server: Server, tmp_path: Path, monkeypatch: object, local_client: None
) -> None:
    ssh_server.trust()
    # A second server whose recorded key is not the one it presents: a "reinstalled" host.
    rekeyed = await asyncssh.listen(
        "127.0.0.1", 0, server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")], authorized_client_keys=None
    )
    rekeyed_port = rekeyed.sockets[0].getsockname()[1]
    old_key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    with ssh_server.known_hosts.open("a") as handle:
        handle.write(f"[127.0.0.1]:{rekeyed_port} {old_key}\n")
    inventory_file = tmp_path / "inventory.toml"
    inventory_file.write_text(
        f"""
[builder]
name = "sshtest"
[defaults]
user = "tester"
identity_file = "{ssh_server.client_key_path}"
known_hosts = "{ssh_server.known_hosts}"
connect_timeout = 2
[[hosts]]
name = "good"
address = "127.0.0.1"
port = {ssh_server.port}
[[hosts]]
name = "refused"
address = "127.0.0.1"
port = {_closed_port()}
[[hosts]]
name = "rekeyed"
address = "127.0.0.1"
port = {rekeyed_port}
[[hosts]]
name = "off"
address = "10.231.0.99"
enabled = false
"""
    )
    inventory = load_inventory(inventory_file)
    monkeypatch.setenv("BUILDX_CONFIG", str(tmp_path / "buildx"))  # type: ignore[attr-defined]
    try:
        report = await status(inventory, FleetOptions(state_dir=tmp_path / "state"))
    finally:
        rekeyed.close()
    by_name = {host.name: host for host in report.hosts}
    assert set(by_name) == {"good", "refused", "rekeyed", "off"}
    assert "Docker engine is not running" in (by_name["good"].error or "")
    assert by_name["good"].platform is not None and by_name["good"].os
    assert "cannot connect" in (by_name["refused"].error or "")
    assert "does NOT match known_hosts" in (by_name["rekeyed"].error or "")
    assert by_name["off"].status == "disabled"
    assert report.exit_code == 1
    assert any("does not exist" in note for note in report.notes)
    # A dead host costs at most its connect timeout (plus a little), not retries.
    assert by_name["refused"].seconds < 3
    document = report.as_json()
    assert document["nodefleet_json_version"] == 1
    assert [host["name"] for host in document["hosts"]] == ["good", "refused", "rekeyed", "off"]
    # The machine is cached under the address and the host key the server proved it holds, with the boot id; the
    # next status fills it in from there (the host reports only its boot id).
    cached = json.loads((tmp_path / "state" / "probes.json").read_text())["hosts"]
    fingerprint = ssh_server.host_key.get_fingerprint("sha256")
    assert list(cached) == [f"127.0.0.1:{ssh_server.port} {fingerprint}"]
    assert cached[f"127.0.0.1:{ssh_server.port} {fingerprint}"]["machine"]
    again = await status(inventory, FleetOptions(state_dir=tmp_path / "state"))
    assert {host.name: host.platform for host in again.hosts}["good"] == by_name["good"].platform
