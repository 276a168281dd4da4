"""`nodefleet build` against the lab: real sshd, dockerd, buildx, BuildKit and registry; nothing mocked.

Every test runs with trixie's buildx (0.13) and with unstable's (0.29): the `buildx` fixture (conftest.py). Each
variant has its own buildx store (DOCKER_CONFIG) and its own builder names (suffixed with the variant).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nodefleet.buildx.store import read_store

from .fleetlib import REPO, Run, buildx_builders, host_docker, lab_data, nodefleet, write_inventory

pytestmark = pytest.mark.e2e

ALL = ["amd64-1", "arm64-1", "arm64-2", "armv7-1"]
NATIVE = {"amd64-1": "linux/amd64", "arm64-1": "linux/arm64", "arm64-2": "linux/arm64", "armv7-1": "linux/arm/v7"}
THREE = ["linux/amd64", "linux/arm64", "linux/arm/v7"]

CLASSIC = """\
ARG BASE
FROM --platform=$BUILDPLATFORM ${BASE} AS build
ARG TARGETPLATFORM
ARG BUILDPLATFORM
ARG NONCE=0
RUN echo "I am running on $BUILDPLATFORM, building for $TARGETPLATFORM" > /log && echo "$NONCE" > /nonce

FROM ${BASE}
COPY --from=build /log /log
CMD ["cat", "/log"]
"""


class Fleet:
    """One test fleet: its inventory, its own builder and nodefleet state dir, the buildx variant's environment,
    and the lab registry."""

    def __init__(self, lab: Any, root: Path, builder: str, hosts: list[str], variant: str, buildx: dict[str, str]):
        self.lab = lab
        self.builder = f"{builder}-{variant}"
        self.inventory = write_inventory(lab, root / "inventory.toml", self.builder, hosts)
        self.env = {"NODEFLEET_STATE_DIR": str(root / "state"), **buildx}
        self.registry = lab_data(lab)["registry"]
        self.base = f"{self.registry}/lab/busybox:stable"

    def run(self, *args: str, timeout: float = 600) -> Run:
        return nodefleet(*args, "-i", str(self.inventory), env=self.env, timeout=timeout)

    def build(self, *args: str) -> Run:
        return self.run("build", "--json", "--build-arg", f"BASE={self.base}", *args)

    def image(self, name: str) -> str:
        return f"{self.registry}/e2e-build/{name}:{uuid.uuid4().hex[:10]}"


def context(tmp_path: Path, dockerfile: str = CLASSIC) -> Path:
    folder = tmp_path / "context"
    folder.mkdir(exist_ok=True)
    (folder / "Dockerfile").write_text(dockerfile)
    return folder


def platforms(run: Run) -> dict[str, dict[str, Any]]:
    return {result["platform"]: result for result in run.json["platforms"]}


def docker_buildx(fleet: Fleet, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`docker buildx ...` with the fleet's buildx variant."""
    return subprocess.run(
        ["docker", "buildx", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **fleet.env},
        check=False,
    )


def imagetools_raw(fleet: Fleet, name: str) -> dict[str, Any]:
    raw = docker_buildx(fleet, "imagetools", "inspect", "--raw", name)
    assert raw.returncode == 0, raw.stderr
    return json.loads(raw.stdout)


def index_platforms(index: dict[str, Any]) -> dict[str, str]:
    found = {}
    for entry in index["manifests"]:
        if (entry.get("annotations") or {}).get("vnd.docker.reference.type") == "attestation-manifest":
            continue
        platform = entry["platform"]
        key = "/".join(part for part in (platform["os"], platform["architecture"], platform.get("variant")) if part)
        found[key] = entry["digest"]
    return found


# These two run first: their own builders' `down` removes the shared BuildKit containers of their hosts, which
# the module fleet's `up` then brings back.


def test_first_arm64_host_partitioned_builds_on_the_second(
    lab: Any, lab_fault: Any, buildx_variant: str, buildx: dict[str, str], tmp_path: Path
) -> None:
    pair = Fleet(lab, tmp_path, "e2ebuildarm", ["arm64-1", "arm64-2"], buildx_variant, buildx)
    up = pair.run("up", "--json")
    assert up.exit_code == 0, up.stdout + up.stderr
    folder = context(tmp_path)
    with lab_fault("arm64-1", "net-cut"):
        started = time.monotonic()
        run = pair.build("--platform", "linux/arm64", str(folder))
        seconds = time.monotonic() - started
    try:
        assert run.exit_code == 0, run.stdout + run.stderr
        (result,) = run.json["platforms"]
        assert result["node"] == "arm64-2" and result["mode"] == "native" and result["status"] == "built"
        nodes = {node["name"]: node for node in run.json["nodes"]}
        assert nodes["arm64-1"]["status"] == "failed"
        assert seconds < 30, seconds
    finally:
        down = pair.run("down", "--json")
    assert down.exit_code == 0, down.stdout
    assert not [name for name in buildx_builders(buildx) if name.startswith(pair.builder)]  # helpers gone too


def test_platform_whose_only_host_is_partitioned_fails_closed_in_seconds(
    lab: Any, lab_fault: Any, buildx_variant: str, buildx: dict[str, str], tmp_path: Path
) -> None:
    single = Fleet(lab, tmp_path, "e2ebuildone", ["amd64-1", "armv7-1"], buildx_variant, buildx)
    up = single.run("up", "--json")
    assert up.exit_code == 0, up.stdout + up.stderr
    try:
        with lab_fault("armv7-1", "net-cut"):
            started = time.monotonic()
            run = single.build("--platform", "linux/amd64,linux/arm/v7", str(context(tmp_path)))
            seconds = time.monotonic() - started
        assert run.exit_code == 1
        assert seconds < 3 + 4, seconds  # connect timeout 3 s, plus interpreter start-up
        refused = {result["platform"]: result for result in run.json["platforms"]}
        assert refused["linux/arm/v7"]["status"] == "refused"
        assert "armv7-1 failed" in refused["linux/arm/v7"]["error"]
        assert refused["linux/amd64"]["status"] == "not built"
    finally:
        single.run("down", "--json")


@pytest.fixture(scope="module")
def fleet(
    lab: Any, buildx_variant: str, buildx: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    """All four lab hosts in one builder, brought up once per buildx variant and taken down after its tests."""
    root = tmp_path_factory.mktemp(f"build-{buildx_variant}")
    built = Fleet(lab, root, "e2ebuild", ALL, buildx_variant, buildx)
    up = built.run("up", "--json")
    assert up.exit_code == 0, up.stdout + up.stderr
    yield built
    built.run("down", "--json")


def test_three_platforms_pushed_natively_each_image_prints_its_own_platform_twice(
    lab: Any, fleet: Fleet, tmp_path: Path
) -> None:
    image = fleet.image("hello")
    run = fleet.build("--platform", ",".join(THREE), "-t", image, "--push", str(context(tmp_path)))
    assert run.exit_code == 0, run.stdout + run.stderr
    report = run.json
    assert report["nodefleet_json_version"] == 1 and report["ok"] is True
    results = platforms(run)
    assert set(results) == set(THREE)
    for platform, result in results.items():
        assert result["status"] == "built"
        assert result["mode"] == "native"
        assert NATIVE[result["node"]] == platform, result
        assert result["seconds"] > 0
    # The pushed index has the three platforms, with the manifest digests the report gives.
    index = index_platforms(imagetools_raw(fleet, image))
    assert index == {platform: results[platform]["manifest_digest"] for platform in THREE}
    assert report["pushed"]["names"] == [image]
    assert report["pushed"]["index_digest"].startswith("sha256:")
    # Each platform's image, run, prints its own platform twice: built natively, for itself.
    for platform in THREE:
        output = host_docker(lab, "amd64-1", "run", "--rm", "--pull", "always", "--platform", platform, image)
        assert output.strip() == f"I am running on {platform}, building for {platform}", (platform, output)
    # buildx's own progress went to stderr, prefixed with the platform.
    for platform in THREE:
        assert f"[{platform}] #" in run.stderr


def test_builds_reach_nodes_through_nodefleets_session_with_helpers_out_of_the_users_store(
    fleet: Fleet, tmp_path: Path
) -> None:
    folder = context(tmp_path)
    first = fleet.run(
        "-vv", "build", "--json", "--build-arg", f"BASE={fleet.base}", "--platform", ",".join(THREE), str(folder)
    )
    second = fleet.run(
        "-vv", "build", "--json", "--build-arg", f"BASE={fleet.base}", "--platform", ",".join(THREE), str(folder)
    )
    for run in (first, second):
        assert run.exit_code == 0, run.stdout + run.stderr
        assert {result["status"] for result in run.json["platforms"]} == {"built"}
    # The second build started amd64-1's buildx before the checks answered (on the gateway helper the first build
    # made), and it went on once the door opened; arm64 alternates between arm64-1 and arm64-2 (balancing).
    started = second.stderr.index(f"run docker buildx build --builder {fleet.builder}--amd64-1 ")
    assert started < second.stderr.index("amd64-1: gateway open")
    used = {result["node"] for run in (first, second) for result in run.json["platforms"]}
    private = {**os.environ, **fleet.env, "BUILDX_CONFIG": str(Path(fleet.env["NODEFLEET_STATE_DIR"]) / "buildx")}
    for node in used:
        stored = read_store(f"{fleet.builder}--{node}", private)
        assert stored is not None and stored.nodes[0].endpoint.startswith("unix://"), stored
        socket_file = Path(stored.nodes[0].endpoint.removeprefix("unix://"))
        assert socket_file.parent.stat().st_mode & 0o777 == 0o700 and not socket_file.exists()  # served only meanwhile
    for name in buildx_builders(fleet.env):
        stored = read_store(name, {**os.environ, **fleet.env})
        assert stored is None or all(not node.endpoint.startswith("unix://") for node in stored.nodes), name


def test_human_report_names_node_mode_and_digest(fleet: Fleet, tmp_path: Path) -> None:
    image = fleet.image("human")
    run = fleet.run(
        "build", "--platform", "linux/amd64", "--build-arg", f"BASE={fleet.base}", "-t", image, "--push",
        str(context(tmp_path)),
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    assert "amd64-1" in run.stdout and "native" in run.stdout and "sha256:" in run.stdout
    assert "1 of 1 platforms built" in run.stdout


def test_platform_without_node_is_refused_in_seconds_then_built_emulated_when_allowed(
    lab: Any, fleet: Fleet, tmp_path: Path
) -> None:
    folder = context(tmp_path)
    image = fleet.image("armv6")
    fleet.build("--platform", "linux/amd64", str(folder))  # every host's platform is known from here on
    started = time.monotonic()
    refused = fleet.build("--platform", "linux/arm/v6", "-t", image, "--push", str(folder))
    seconds = time.monotonic() - started
    assert refused.exit_code == 1, refused.stdout + refused.stderr
    assert seconds < 5, seconds
    (result,) = refused.json["platforms"]
    assert result["platform"] == "linux/arm/v6" and result["status"] == "refused"
    for words in ("no host in the inventory builds it natively", "armv7-1 linux/arm/v7", "[[hosts]]", "nodefleet up"):
        assert words in result["error"], result["error"]
    assert "--allow-emulation" in result["error"]

    allowed = fleet.build("--platform", "linux/arm/v6", "--allow-emulation", "-t", image, "--push", str(folder))
    assert allowed.exit_code == 0, allowed.stdout + allowed.stderr
    (result,) = allowed.json["platforms"]
    assert result["status"] == "built" and result["mode"] == "emulated"
    assert result["node"] in ALL and result["node_platform"] == NATIVE[result["node"]]
    output = host_docker(lab, "amd64-1", "run", "--rm", "--pull", "always", "--platform", "linux/arm/v6", image)
    assert output.strip().endswith("building for linux/arm/v6"), output
    human = fleet.run(
        "build", "--platform", "linux/arm/v6", "--allow-emulation", "--build-arg", f"BASE={fleet.base}", str(folder)
    )
    assert human.exit_code == 0 and "emulated on" in human.stdout, human.stdout


def test_failing_run_step_is_not_retried_and_buildx_error_is_shown(fleet: Fleet, tmp_path: Path) -> None:
    dockerfile = "ARG BASE\nFROM ${BASE}\nRUN echo about to fail && exit 3\n"
    run = fleet.build("--platform", "linux/arm64", str(context(tmp_path, dockerfile)))
    assert run.exit_code == 1
    (result,) = run.json["platforms"]
    assert result["status"] == "failed" and result["error_kind"] == "dockerfile"
    assert len(result["attempts"]) == 1  # another arm64 node was healthy, and still no retry
    assert "did not complete successfully: exit code: 3" in result["error"]
    assert "ERROR:" in run.stderr and "exit code: 3" in run.stderr
    human = fleet.run(
        "build", "--platform", "linux/arm64", "--build-arg", f"BASE={fleet.base}", str(tmp_path / "context")
    )
    assert human.exit_code == 1
    assert "Dockerfile error, not retried" in human.stdout


def test_node_lost_mid_build_is_retried_once_on_the_other_node(lab: Any, fleet: Fleet, tmp_path: Path) -> None:
    dockerfile = "ARG BASE\nFROM ${BASE}\nARG NONCE\nRUN echo $NONCE && sleep 15 && echo slept\n"
    folder = context(tmp_path, dockerfile)
    argv = [sys.executable, "-m", "nodefleet", "build", "-i", str(fleet.inventory), "--json", "--platform"]
    argv += ["linux/arm64", "--build-arg", f"BASE={fleet.base}", "--build-arg", f"NONCE={uuid.uuid4()}", str(folder)]
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **fleet.env}, cwd=REPO
    )
    assert process.stderr is not None
    node, seen = None, []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        seen.append(line)
        if not line:
            break
        if "building natively on" in line:
            node = line.split()[-1]
        if node and "RUN echo" in line:
            break
    assert node in {"arm64-1", "arm64-2"}, "".join(seen)
    time.sleep(2)
    host_docker(lab, node, "rm", "-f", f"buildx_buildkit_{node}")  # the node's BuildKit is gone mid-build
    stdout, stderr = process.communicate(timeout=600)
    try:
        assert process.returncode == 0, "".join(seen) + stderr
        (result,) = json.loads(stdout)["platforms"]
        first, second = result["attempts"]
        assert first["node"] == node and first["status"] == "failed" and first["error_kind"] == "infrastructure"
        assert second["node"] != node and second["status"] == "built"
        assert result["node"] == second["node"] and result["status"] == "built"
        notice = next((line for line in stderr.splitlines() if f"retrying once on {second['node']}" in line), "")
        assert f"{node} failed (infrastructure: " in notice, stderr  # and what happened, in its words
    finally:
        up = fleet.run("up", "--json")  # puts the removed BuildKit container back
        assert up.exit_code == 0, up.stdout


def test_cache_ref_second_build_is_cached_on_every_platform(fleet: Fleet, tmp_path: Path) -> None:
    folder = context(tmp_path)
    nonce = uuid.uuid4().hex
    cache = f"{fleet.registry}/e2e-build/cache-{nonce[:10]}"
    args = ("--platform", ",".join(THREE), "--build-arg", f"NONCE={nonce}", "--cache-ref", cache, str(folder))
    first = fleet.build(*args)
    assert first.exit_code == 0, first.stdout + first.stderr
    for result in platforms(first).values():
        assert result["cached_steps"] < result["steps"], result  # the nonce makes the RUN new
    for platform in THREE:
        tag = f"{cache}:{platform.replace('/', '-')}"
        assert imagetools_raw(fleet, tag)["manifests"], tag  # one cache per platform in the registry
    # Drop every node's local cache: only the registry cache can serve the second build.
    prune = docker_buildx(fleet, "prune", "--builder", fleet.builder, "--all", "--force", timeout=300)
    assert prune.returncode == 0, prune.stderr
    second = fleet.build(*args)
    assert second.exit_code == 0, second.stdout + second.stderr
    for platform, result in platforms(second).items():
        assert result["steps"] and result["cached_steps"] == result["steps"], (platform, result)
