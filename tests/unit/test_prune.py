"""`nodefleet prune`: buildctl's command line from the options, what it reclaimed from its output, the report, and
bad input refused in one line with exit code 2 before any host is contacted."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from nodefleet.cli import cli
from nodefleet.errors import LockError, NodefleetError, UsageError
from nodefleet.fleet.prune import (
    PruneOptions,
    PruneReport,
    buildctl_prune_argv,
    parse_prune_total,
    prune,
    select_hosts,
)
from nodefleet.fleet.work import FleetOptions
from nodefleet.inventory import load_inventory
from nodefleet.results import HostResult, HostStatus, PruneResult
from nodefleet.state import BuilderState

# What `buildctl prune` (BuildKit v0.13.2) prints: a table of the records it deleted, then the total.
OUTPUT = """\
ID\t\t\t\t\t\tRECLAIMABLE\tSIZE\t\tLAST ACCESSED
sha256:5d2a3bd7f1e0c1b7a6c6f2f0d8c5e1a9b3f4e2d1c0b9a8f7e6d5c4b3a2f1e0d9\ttrue\t\t4.26MB\t\t2 minutes ago
xk7v2m9q0z1c4n8b5r3t6y2w1*\t\t\t\ttrue\t\t8.19kB\t\t2 minutes ago
Total:\t4.27MB
"""


def inventory_file(tmp_path: Path) -> Path:
    path = tmp_path / "inventory.toml"
    path.write_text(
        '[builder]\nname = "fleet"\n'
        '[[hosts]]\nname = "amd64-1"\naddress = "10.231.0.11"\n'
        '[[hosts]]\nname = "arm64-1"\naddress = "10.231.0.12"\n'
        '[[hosts]]\nname = "old"\naddress = "10.231.0.13"\nenabled = false\n'
    )
    return path


@pytest.mark.parametrize(
    ("options", "flags"),
    [
        (PruneOptions(), []),
        (PruneOptions(all=True), ["--all"]),
        (PruneOptions(keep_storage=512 * 1000**2), ["--keep-storage", "512"]),
        (PruneOptions(keep_storage=20 * 1000**3), ["--keep-storage", "20000"]),
        (PruneOptions(keep_storage=3 * 1024**3 // 2), ["--keep-storage", "1610"]),  # 1.5GiB, rounded down
        (PruneOptions(keep_storage=0), []),  # nothing to keep: no limit
        (PruneOptions(keep_duration=7 * 86400), ["--keep-duration", "604800s"]),
        (PruneOptions(keep_duration=5400), ["--keep-duration", "5400s"]),
        (
            PruneOptions(keep_storage=10**9, keep_duration=3600, all=True),
            ["--keep-storage", "1000", "--keep-duration", "3600s", "--all"],
        ),
    ],
)
def test_buildctl_argv_from_the_options(options: PruneOptions, flags: list[str]) -> None:
    argv = buildctl_prune_argv("arm64-1", options)
    assert argv == ["docker", "exec", "buildx_buildkit_arm64-1", "buildctl", "prune", *flags]
    assert shlex.split(shlex.join(argv)) == argv


def test_keep_storage_under_one_megabyte_is_refused() -> None:
    with pytest.raises(UsageError, match="at least 1MB"):
        PruneOptions(keep_storage=4096)
    with pytest.raises(UsageError):
        PruneOptions(keep_duration=-1)


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (OUTPUT, 4_270_000),
        ("Total:\t0B\n", 0),  # nothing to prune: no table, a zero total
        ("Total:\t512B\n", 512),
        ("ID\tRECLAIMABLE\tSIZE\tLAST ACCESSED\nabc\ttrue\t1.5GB\t\nTotal:\t1.50GB\n", 1_500_000_000),
        ("Total: 4.10kB", 4100),
    ],
)
def test_reclaimed_bytes_from_the_total_line(output: str, expected: int) -> None:
    assert parse_prune_total(output) == expected


@pytest.mark.parametrize("output", ["", "ID\tRECLAIMABLE\tSIZE\n", "Total:\tlots\n"])
def test_output_without_a_total_is_an_error(output: str) -> None:
    with pytest.raises(NodefleetError, match="reclaimed"):
        parse_prune_total(output)


def test_hosts_selected_by_name_in_inventory_order(tmp_path: Path) -> None:
    inventory = load_inventory(inventory_file(tmp_path))
    assert [host.name for host in select_hosts(inventory, ())] == ["amd64-1", "arm64-1"]
    assert [host.name for host in select_hosts(inventory, ("arm64-1", "amd64-1"))] == ["amd64-1", "arm64-1"]
    with pytest.raises(UsageError, match="no such host"):
        select_hosts(inventory, ("nope",))
    with pytest.raises(UsageError, match="disabled"):
        select_hosts(inventory, ("old",))


def test_the_report_is_ok_only_when_every_node_asked_for_was_pruned() -> None:
    pruned = PruneResult("a", "10.0.0.1", status=HostStatus.PRUNED, reclaimed_bytes=2000, disk_free_bytes=10)
    pruned.disk_free_after_bytes = 2010
    skipped = PruneResult("b", "10.0.0.2")
    skipped.skip("ssh: timed out")
    skipped.skip("a second reason is not kept")
    disabled = HostResult("c", "10.0.0.3", status=HostStatus.DISABLED)
    report = PruneReport("prune", "fleet", [pruned, disabled], prune=PruneOptions(all=True))
    assert report.ok and report.exit_code == 0
    report = PruneReport("prune", "fleet", [pruned, skipped, disabled], prune=PruneOptions(keep_storage=10**9))
    assert not report.ok and report.exit_code == 1
    assert skipped.status is HostStatus.SKIPPED and skipped.error == "ssh: timed out"
    document = json.loads(json.dumps(report.as_json()))
    assert document["command"] == "prune" and document["ok"] is False
    assert document["reclaimed_bytes"] == 2000
    assert document["prune"] == {"keep_storage_bytes": 10**9, "keep_duration_seconds": None, "all": False}
    hosts = {host["name"]: host for host in document["hosts"]}
    assert hosts["a"]["status"] == "pruned" and hosts["a"]["reclaimed_bytes"] == 2000
    assert hosts["a"]["disk_free_bytes"] == 10 and hosts["a"]["disk_free_after_bytes"] == 2010
    assert hosts["b"] == {**hosts["b"], "status": "skipped", "error": "ssh: timed out", "reclaimed_bytes": None}
    assert hosts["c"]["status"] == "disabled"
    failed = PruneResult("d", "10.0.0.4")
    failed.fail("`docker exec ...` exited 1: boom")
    assert not PruneReport("prune", "fleet", [pruned, failed]).ok


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--keep-storage", "lots"], "--keep-storage: 'lots' is not a size"),
        (["--keep-storage", "100kB"], "give at least 1MB"),
        (["--until", "a week"], "--until: 'a week' is not a duration"),
        (["--until", "1.5h"], "--until:"),
        (["nope"], "nope: no such host"),
        (["amd64-1", "old"], "old: disabled"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    path = inventory_file(tmp_path)
    result = CliRunner().invoke(cli, ["prune", "-i", str(path), "--json", *args])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_bad_size_is_refused_before_the_inventory_is_read(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["prune", "-i", str(tmp_path / "missing.toml"), "--keep-storage", "x"])
    assert result.exit_code == 2
    assert "--keep-storage" in result.stderr


async def test_prune_holds_the_builder_lock_shared(tmp_path: Path) -> None:
    """A build (shared) does not keep a prune out; an `up` or `down` (exclusive) does, until it ends."""
    path = tmp_path / "inventory.toml"
    path.write_text('[builder]\nname = "fleet"\n[[hosts]]\nname = "old"\naddress = "10.231.0.13"\nenabled = false\n')
    inventory = load_inventory(path)
    options = FleetOptions(state_dir=tmp_path / "state", lock_wait=0.3)
    lock = BuilderState(tmp_path / "state", "fleet").lock
    with lock.hold(1, shared=True):
        report = await prune(inventory, options=options)
    assert report.ok and [(host.name, host.status) for host in report.hosts] == [("old", HostStatus.DISABLED)]
    with lock.hold(1), pytest.raises(LockError):
        await prune(inventory, options=options)
