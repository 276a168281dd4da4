"""Node care (issue 15) against the lab: real sshd, dockerd, buildx and BuildKit. arm64-1's Docker data root is a
1 GiB tmpfs made by the lab (conftest.SMALL_DISK): the small board. arm64-2 is its standby, amd64-1 a big host.

What is promised, and checked here: `status` shows each node's free disk and its BuildKit cache; a cache budget
set low makes BuildKit collect on its own; builds go around a node under its min_free (and fail, saying why, when
it is the only node of the platform); `prune` gives the free space back. (A disk filling during a build is a row of
the fault matrix: tests/e2e/test_faults.py, build/disk-full.)"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nodefleet.fleet.prune import parse_prune_total

from .conftest import SMALL_DISK
from .fleetlib import Run, host_docker, lab_data, lab_hosts, nodefleet

pytestmark = pytest.mark.e2e

SMALL = "arm64-1"
BUILDER = "e2ecare"
DOCKERFILE = """\
ARG BASE
FROM ${BASE}
ARG NONCE=0
ARG BYTES=8000000
RUN echo "$NONCE" > /nonce && head -c "$BYTES" /dev/urandom > /blob
"""


class Fleet:
    """The test's builder on amd64-1 and arm64-1 (arm64-2 joins when a test needs a standby: builds are spread over
    the nodes of a platform), its inventory written anew for each budget."""

    def __init__(self, lab: Any, root: Path) -> None:
        self.lab = lab
        self.root = root
        self.inventory = root / "inventory.toml"
        self.env = {"NODEFLEET_STATE_DIR": str(root / "state"), "BUILDX_CONFIG": str(root / "buildx")}
        self.context = root / "context"
        self.context.mkdir()
        (self.context / "Dockerfile").write_text(DOCKERFILE)
        self.base = f"{lab_data(lab)['registry']}/lab/busybox:stable"

    def write(self, hosts: tuple[str, ...] = ("amd64-1", SMALL), **cache: str) -> None:
        """The inventory: the lab's settings, the registry trusted through [registries] (a budget needs the
        buildkitd config nodefleet writes), and `cache` as arm64-1's budget."""
        data, by_name = lab_data(self.lab), lab_hosts(self.lab)
        lines = [
            f'[builder]\nname = "{BUILDER}"',
            f'[defaults]\nuser = "builder"\nidentity_file = "{data["ssh_key"]}"\nknown_hosts = "{data["known_hosts"]}"',
            "connect_timeout = 3",
        ]
        for name in hosts:
            host = by_name[name]
            lines += ["[[hosts]]", f'name = "{name}"', f'address = "{host["address"]}"']
            lines.append(f'buildkit_image = "{host["buildkit_image"]}"')
            if host.get("driver_opts"):
                opts = ", ".join(f'"{key}" = "{value}"' for key, value in sorted(host["driver_opts"].items()))
                lines.append(f"driver_opts = {{ {opts} }}")
            if name == SMALL and cache:
                lines.append("cache = { " + ", ".join(f'{key} = "{value}"' for key, value in cache.items()) + " }")
        lines += [f'[registries."{data["registry"]}"]', f'ca_file = "{data["ca"]}"']
        self.inventory.write_text("\n".join(lines) + "\n")

    def run(self, *args: str, timeout: float = 600) -> Run:
        return nodefleet(*args, "-i", str(self.inventory), env=self.env, timeout=timeout)

    def up(self) -> Run:
        run = self.run("up", "--json")
        assert run.exit_code == 0, run.stdout + run.stderr
        return run

    def build(self, platform: str = "linux/arm64", size: int = 8_000_000) -> Run:
        return self.run(
            "build", "--json", "--platform", platform, "--build-arg", f"BASE={self.base}",
            "--build-arg", f"NONCE={uuid.uuid4().hex}", "--build-arg", f"BYTES={size}", str(self.context),
        )  # fmt: skip

    def status(self) -> dict[str, dict[str, Any]]:
        run = self.run("status", "--json")
        assert run.exit_code == 0, run.stdout + run.stderr
        return run.hosts()

    def cache_bytes(self, host: str) -> int:
        """The node's cache as BuildKit itself sums it (`buildctl du` through the host's engine)."""
        return parse_prune_total(host_docker(self.lab, host, "exec", f"buildx_buildkit_{host}", "buildctl", "du"))


@pytest.fixture(scope="module")
def fleet(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    made = Fleet(lab, tmp_path_factory.mktemp("care"))
    made.write()
    made.up()
    yield made
    made.write()
    made.run("down", "--json")


def test_status_shows_each_nodes_free_disk_and_cache(fleet: Fleet) -> None:
    fleet.write()
    fleet.up()
    built = fleet.build()
    assert built.exit_code == 0, built.stdout + built.stderr
    hosts = fleet.status()
    small = hosts[SMALL]
    assert small["disk_size_bytes"] == SMALL_DISK[SMALL], small  # the lab's tmpfs: the disk holding its state
    assert 0 < small["disk_free_bytes"] < small["disk_size_bytes"], small
    assert small["cache_bytes"] >= 8_000_000 and 0 <= small["cache_reclaimable_bytes"] <= small["cache_bytes"], small
    big = hosts["amd64-1"]
    assert big["disk_size_bytes"] > 4 * SMALL_DISK[SMALL] and big["cache_bytes"] is not None, big
    table = fleet.run("status")
    assert table.exit_code == 0 and "disk free" in table.stdout and "cache (reclaimable)" in table.stdout
    assert "of 1.07GB" in table.stdout, table.stdout  # 1 GiB, as docker prints sizes


def test_a_low_budget_makes_buildkit_collect_on_its_own(fleet: Fleet) -> None:
    fleet.write(max_size="10MB", keep_for="168h")
    up = fleet.up()
    assert "buildkitd config" in " ".join(up.hosts()[SMALL]["changes"]), up.hosts()[SMALL]
    assert up.hosts()["amd64-1"]["action"] == "keep", up.hosts()["amd64-1"]  # no budget: untouched
    workers = host_docker(fleet.lab, SMALL, "exec", f"buildx_buildkit_{SMALL}", "buildctl", "debug", "workers", "-v")
    assert "Keep Bytes:\t10MB" in workers and "Keep Duration:\t168h0m0s" in workers, workers
    for _ in range(3):
        built = fleet.build()
        assert built.exit_code == 0, built.stdout + built.stderr
        nodes = [(node["name"], node["status"], node["error"]) for node in built.json["nodes"]]
        assert built.json["platforms"][0]["node"] == SMALL, nodes
    grown = fleet.cache_bytes(SMALL)
    assert grown >= 24_000_000, grown
    # BuildKit collects at most once a minute, a while after a build ends.
    deadline = time.monotonic() + 150
    while fleet.cache_bytes(SMALL) > 10_000_000 and time.monotonic() < deadline:
        time.sleep(5)
    assert fleet.cache_bytes(SMALL) <= 10_000_000, f"the cache stayed at {fleet.cache_bytes(SMALL)} bytes"


def test_builds_go_around_a_node_under_its_min_free(fleet: Fleet) -> None:
    fleet.write(("amd64-1", SMALL, "arm64-2"), min_free="2GB")  # more than its whole disk: allowed, and said
    up = fleet.up()
    small = up.hosts()[SMALL]
    assert any("cache.min_free 2GB is not less than its disk" in warning for warning in small["warnings"]), small
    status = fleet.status()[SMALL]
    assert any("under its cache.min_free 2GB" in warning for warning in status["warnings"]), status
    run = fleet.build()
    assert run.exit_code == 0, run.stdout + run.stderr
    (platform,) = run.json["platforms"]
    assert platform["node"] == "arm64-2" and len(platform["attempts"]) == 1, platform
    skipped = {node["name"]: node for node in run.json["nodes"]}[SMALL]
    assert "disk low" in skipped["error"] and "min_free 2GB" in skipped["error"], skipped
    # The only arm64 node low on disk: refused, saying which node and why.
    fleet.write(("amd64-1", SMALL), min_free="2GB")
    alone = fleet.build()
    assert alone.exit_code != 0, alone.stdout + alone.stderr
    assert SMALL in alone.stderr + alone.stdout and "min_free 2GB" in alone.stderr + alone.stdout
    fleet.write()
    fleet.up()


def test_prune_gives_the_free_space_back(fleet: Fleet) -> None:
    fleet.write()
    fleet.up()
    built = fleet.build(size=150_000_000)
    assert built.exit_code == 0, built.stdout + built.stderr
    before = fleet.status()[SMALL]["disk_free_bytes"]
    run = fleet.run("prune", "--all", "--json", SMALL)
    assert run.exit_code == 0, run.stdout + run.stderr
    pruned = run.hosts()[SMALL]
    assert pruned["reclaimed_bytes"] >= 150_000_000, pruned
    after = fleet.status()[SMALL]["disk_free_bytes"]
    assert after >= before + 140_000_000, (before, after)
    assert pruned["disk_free_after_bytes"] >= before + 140_000_000, pruned
