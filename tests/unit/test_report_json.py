"""The --json contract: a versioned envelope whose keys only ever grow."""

from __future__ import annotations

import json

from nodefleet.fleet import FleetReport, HostResult

HOST_KEYS = {
    "name", "address", "platform", "pinned", "role", "os", "engine", "buildkit", "native_platform",
    "status", "action", "changes", "error", "seconds", "disk_free_bytes",
}  # fmt: skip


def test_envelope_and_host_keys_are_stable() -> None:
    report = FleetReport(
        "up",
        "fleet",
        [
            HostResult("a", "10.0.0.1", platform="linux/amd64", pinned=("linux/amd64",), status="healthy"),
            HostResult("b", "10.0.0.2", status="failed", error="ssh: timed out"),
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
        "seconds",
        "notes",
        "hosts",
    }
    assert document["nodefleet_json_version"] == 1
    assert document["ok"] is False and report.exit_code == 1
    for host in document["hosts"]:
        assert set(host) == HOST_KEYS
    assert document["hosts"][0]["pinned"] == ["linux/amd64"]


def test_all_healthy_is_exit_zero() -> None:
    report = FleetReport(
        "status", "f", [HostResult("a", "h", status="healthy"), HostResult("d", "h", status="disabled")]
    )
    assert report.ok and report.exit_code == 0
