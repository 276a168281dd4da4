"""The --json contract: a versioned envelope whose keys only ever grow."""

from __future__ import annotations

import json

from nodefleet.client import Client
from nodefleet.fleet.work import FleetReport
from nodefleet.results import HostResult, HostStatus

HOST_KEYS = {
    "name", "address", "platform", "pinned", "role", "os", "engine", "buildkit", "native_platform",
    "status", "action", "changes", "error", "seconds", "disk_free_bytes",
    # issue 15 (node care): the disk holding the node's state, its cache, and what `up` warns of
    "disk_size_bytes", "cache_bytes", "cache_reclaimable_bytes", "warnings",
}  # fmt: skip


def test_envelope_and_host_keys_are_stable() -> None:
    report = FleetReport(
        "up",
        "fleet",
        [
            HostResult("a", "10.0.0.1", platform="linux/amd64", pinned=("linux/amd64",), status=HostStatus.HEALTHY),
            HostResult("b", "10.0.0.2", status=HostStatus.FAILED, error="ssh: timed out"),
        ],
        changed=True,
        notes=["n"],
    )
    document = json.loads(json.dumps(report.as_json()))
    assert set(document) == {
        "nodefleet_json_version",
        "command",
        "builder",
        "ok",
        "changed",
        "client",
        "seconds",
        "notes",
        "hosts",
    }
    assert document["nodefleet_json_version"] == 1
    assert document["ok"] is False and report.exit_code == 1
    for host in document["hosts"]:
        assert set(host) == HOST_KEYS
    assert document["hosts"][0]["pinned"] == ["linux/amd64"]
    assert [host["status"] for host in document["hosts"]] == ["healthy", "failed"]  # the enum's value, a string
    # `client` (the local tools' versions) joined the envelope with the restructure (d65ba76): keys only grow
    assert document["client"] is None
    report.client = Client("27.3.1", "0.29.1", "OpenSSH_9.6p1")
    assert json.loads(json.dumps(report.as_json()))["client"] == {
        "docker": "27.3.1",
        "buildx": "0.29.1",
        "openssh": "OpenSSH_9.6p1",
    }


def test_all_healthy_is_exit_zero() -> None:
    report = FleetReport(
        "status",
        "f",
        [HostResult("a", "h", status=HostStatus.HEALTHY), HostResult("d", "h", status=HostStatus.DISABLED)],
    )
    assert report.ok and report.exit_code == 0
