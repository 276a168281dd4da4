"""`nodefleet prune` against the lab: real sshd, dockerd, buildx and BuildKit. A builder is brought up on three
hosts and something is built on every node, so that each has a cache to prune; BuildKit's own `buildctl du` is the
witness that the cache went down."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nodefleet.fleet.prune import parse_prune_total

from .fleetlib import Run, host_docker, lab_data, nodefleet, write_inventory

pytestmark = pytest.mark.e2e

HOSTS = ["amd64-1", "arm64-2", "armv7-1"]
PLATFORMS = "linux/amd64,linux/arm64,linux/arm/v7"
# A few MB of cache per node, new on every build (the nonce).
DOCKERFILE = """\
ARG BASE
FROM ${BASE}
ARG NONCE=0
RUN echo "$NONCE" > /nonce && head -c 3000000 /dev/urandom > /blob
"""


class Fleet:
    """The test's builder: its inventory, and its own buildx store and nodefleet state dir."""

    def __init__(self, lab: Any, root: Path) -> None:
        self.lab = lab
        self.inventory = write_inventory(lab, root / "inventory.toml", "e2eprune", HOSTS)
        self.env = {"NODEFLEET_STATE_DIR": str(root / "state"), "BUILDX_CONFIG": str(root / "buildx")}
        self.context = root / "context"
        self.context.mkdir()
        (self.context / "Dockerfile").write_text(DOCKERFILE)

    def run(self, *args: str, timeout: float = 600) -> Run:
        return nodefleet(*args, "-i", str(self.inventory), env=self.env, timeout=timeout)

    def build_everywhere(self) -> None:
        """Build on every node, leaving cache there."""
        base = f"{lab_data(self.lab)['registry']}/lab/busybox:stable"
        run = self.run(
            "build", "--json", "--platform", PLATFORMS, "--build-arg", f"BASE={base}",
            "--build-arg", f"NONCE={uuid.uuid4().hex}", str(self.context),
        )  # fmt: skip
        assert run.exit_code == 0, run.stdout + run.stderr
        assert {result["node"] for result in run.json["platforms"]} == set(HOSTS), run.stdout

    def cache_bytes(self, host: str) -> int:
        """The node's cache as BuildKit sums it (`buildctl du`, asked through the host's engine, not through
        nodefleet)."""
        output = host_docker(self.lab, host, "exec", f"buildx_buildkit_{host}", "buildctl", "du")
        return parse_prune_total(output)


@pytest.fixture(scope="module")
def fleet(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    made = Fleet(lab, tmp_path_factory.mktemp("prune"))
    up = made.run("up", "--json")
    assert up.exit_code == 0, up.stdout + up.stderr
    yield made
    made.run("down", "--json")


def test_prune_all_reclaims_the_cache_of_every_node(fleet: Fleet) -> None:
    fleet.build_everywhere()
    before = {host: fleet.cache_bytes(host) for host in HOSTS}
    assert all(size > 0 for size in before.values()), before
    run = fleet.run("prune", "--all", "--json")
    assert run.exit_code == 0, run.stdout + run.stderr
    document = run.json
    assert document["command"] == "prune" and document["ok"] is True and document["nodefleet_json_version"] == 1
    assert document["prune"] == {"keep_storage_bytes": None, "keep_duration_seconds": None, "all": True}
    hosts = run.hosts()
    assert set(hosts) == set(HOSTS)
    for name in HOSTS:
        host = hosts[name]
        assert host["status"] == "pruned" and host["error"] is None, host
        assert host["reclaimed_bytes"] > 0, host
        # The free space of the disk holding the node's state, before and after (the arm hosts' sessions run in an
        # arm userland that sees the engine's data root at the same path, as on a real host).
        assert host["disk_free_bytes"] > 0 and host["disk_free_after_bytes"] > 0, host
    assert document["reclaimed_bytes"] == sum(hosts[name]["reclaimed_bytes"] for name in HOSTS)
    after = {host: fleet.cache_bytes(host) for host in HOSTS}
    assert all(after[host] < before[host] for host in HOSTS), (before, after)
    # Nothing is left to reclaim: the next prune says so, node by node, in its table.
    again = fleet.run("prune", "--all")
    assert again.exit_code == 0, again.stdout + again.stderr
    assert "3 pruned; reclaimed 0B" in again.stdout, again.stdout
    for name in HOSTS:
        assert name in again.stdout


def test_a_cut_off_node_is_skipped_and_the_others_are_pruned(fleet: Fleet, lab_fault: Any) -> None:
    fleet.build_everywhere()
    with lab_fault("arm64-2", "net-cut"):
        run = fleet.run("prune", "--all", "--json")
    assert run.exit_code == 1, run.stdout + run.stderr
    assert run.json["ok"] is False
    hosts = run.hosts()
    cut = hosts["arm64-2"]
    assert cut["status"] == "skipped" and cut["error"].startswith("ssh: "), cut
    assert cut["reclaimed_bytes"] is None and cut["disk_free_after_bytes"] is None
    for name in ("amd64-1", "armv7-1"):
        assert hosts[name]["status"] == "pruned" and hosts[name]["reclaimed_bytes"] > 0, hosts[name]
    # Back on the network, its cache is still there, and a prune of that node alone takes it.
    assert fleet.cache_bytes("arm64-2") > 0
    alone = fleet.run("prune", "--all", "--json", "arm64-2")
    assert alone.exit_code == 0, alone.stdout + alone.stderr
    assert list(alone.hosts()) == ["arm64-2"] and alone.hosts()["arm64-2"]["reclaimed_bytes"] > 0


def test_a_stopped_buildkit_is_skipped_and_said_so(fleet: Fleet) -> None:
    container = "buildx_buildkit_amd64-1"
    host_docker(fleet.lab, "amd64-1", "stop", container)
    try:
        run = fleet.run("prune", "--json", "--keep-storage", "1GB", "--until", "7d")
    finally:
        host_docker(fleet.lab, "amd64-1", "start", container)
    assert run.exit_code == 1, run.stdout + run.stderr
    hosts = run.hosts()
    stopped = hosts["amd64-1"]
    assert stopped["status"] == "skipped" and f"{container} is exited" in stopped["error"], stopped
    assert stopped["disk_free_bytes"] > 0  # the container is there: the probe tells its disk
    assert stopped["reclaimed_bytes"] is None
    assert hosts["arm64-2"]["status"] == "pruned" and hosts["armv7-1"]["status"] == "pruned"
    assert run.json["prune"] == {"keep_storage_bytes": 10**9, "keep_duration_seconds": 7 * 86400, "all": False}


def test_unknown_host_is_bad_input(fleet: Fleet) -> None:
    run = fleet.run("prune", "arm64-9")
    assert run.exit_code == 2
    assert run.stdout == "" and run.stderr.strip().count("\n") == 0 and "arm64-9: no such host" in run.stderr
