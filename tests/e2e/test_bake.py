"""`nodefleet bake` against the lab: real sshd, dockerd, buildx, BuildKit and registry; nothing mocked.

Every test runs with trixie's buildx (0.13) and with unstable's (0.29): the `buildx` fixture (conftest.py)."""

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

from .fleetlib import Run, host_docker, lab_data, nodefleet, write_inventory
from .test_build import imagetools_raw, index_platforms

pytestmark = pytest.mark.e2e

ALL = ["amd64-1", "arm64-1", "arm64-2", "armv7-1"]
NATIVE = {"amd64-1": "linux/amd64", "arm64-1": "linux/arm64", "arm64-2": "linux/arm64", "armv7-1": "linux/arm/v7"}
THREE = ["linux/amd64", "linux/arm64", "linux/arm/v7"]

# base is the `target:` context of app; app inherits _common's build args; every image prints where it was built.
BAKE_FILE = """\
variable "REGISTRY" {}
variable "TAG" { default = "x" }
variable "BASE" {}
target "_common" {
  args = { BASE = "${BASE}", GREETING = "hello" }
  platforms = ["linux/amd64", "linux/arm64", "linux/arm/v7"]
}
target "base" {
  inherits = ["_common"]
  dockerfile = "base.Dockerfile"
  tags = ["${REGISTRY}/e2e-bake/base:${TAG}"]
}
target "app" {
  inherits = ["_common"]
  dockerfile = "app.Dockerfile"
  contexts = { base = "target:base" }
  args = { NAME = "app" }
  tags = ["${REGISTRY}/e2e-bake/app:${TAG}"]
}
target "tool" {
  inherits = ["_common"]
  dockerfile = "leaf.Dockerfile"
  args = { NAME = "tool" }
  tags = ["${REGISTRY}/e2e-bake/tool:${TAG}"]
}
target "cli" {
  inherits = ["_common"]
  dockerfile = "leaf.Dockerfile"
  args = { NAME = "cli" }
  tags = ["${REGISTRY}/e2e-bake/cli:${TAG}", "${REGISTRY}/e2e-bake/cli:latest"]
}
group "default" { targets = ["base", "app", "tool", "cli"] }
"""
BASE_DOCKERFILE = """\
ARG BASE
FROM ${BASE}
ARG BUILDPLATFORM
ARG TARGETPLATFORM
RUN echo "base built on $BUILDPLATFORM for $TARGETPLATFORM" > /base
CMD ["cat", "/base"]
"""
APP_DOCKERFILE = """\
FROM base
ARG BUILDPLATFORM
ARG TARGETPLATFORM
ARG NAME
ARG GREETING
RUN echo "$GREETING from $NAME: built on $BUILDPLATFORM for $TARGETPLATFORM" > /log && cat /base >> /log
CMD ["cat", "/log"]
"""
LEAF_DOCKERFILE = """\
ARG BASE
FROM ${BASE}
ARG BUILDPLATFORM
ARG TARGETPLATFORM
ARG NAME
ARG GREETING
ARG SLEEP=0
RUN echo "$GREETING from $NAME: built on $BUILDPLATFORM for $TARGETPLATFORM" > /log && sleep $SLEEP
CMD ["cat", "/log"]
"""


class Fleet:
    """A test fleet: its inventory, builder, state dir, the buildx variant's environment, the lab registry."""

    def __init__(self, lab: Any, root: Path, builder: str, hosts: list[str], variant: str, buildx: dict[str, str]):
        self.builder = f"{builder}-{variant}"
        self.inventory = write_inventory(lab, root / "inventory.toml", self.builder, hosts)
        self.env = {"NODEFLEET_STATE_DIR": str(root / "state"), **buildx}
        self.registry = lab_data(lab)["registry"]
        self.base = f"{self.registry}/lab/busybox:stable"

    def run(self, *args: str, cwd: Path | None = None, timeout: float = 900) -> Run:
        if cwd is None:
            return nodefleet(*args, "-i", str(self.inventory), env=self.env, timeout=timeout)
        completed = subprocess.run(
            [sys.executable, "-m", "nodefleet", *args, "-i", str(self.inventory)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **self.env},
            cwd=cwd,
            check=False,
        )
        return Run(completed.returncode, completed.stdout, completed.stderr)


def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir(exist_ok=True)
    (folder / "docker-bake.hcl").write_text(BAKE_FILE)
    (folder / "base.Dockerfile").write_text(BASE_DOCKERFILE)
    (folder / "app.Dockerfile").write_text(APP_DOCKERFILE)
    (folder / "leaf.Dockerfile").write_text(LEAF_DOCKERFILE)
    return folder


def results(run: Run) -> dict[tuple[str, str], dict[str, Any]]:
    return {(result["target"], result["platform"]): result for result in run.json["platforms"]}


@pytest.fixture(scope="module")
def fleet(
    lab: Any, buildx_variant: str, buildx: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp(f"bake-{buildx_variant}")
    built = Fleet(lab, root, "e2ebake", ALL, buildx_variant, buildx)
    up = built.run("up", "--json")
    assert up.exit_code == 0, up.stdout + up.stderr
    yield built
    built.run("down", "--json")


def test_a_bake_file_of_four_targets_is_built_natively_on_three_platforms_and_pushed(
    lab: Any, fleet: Fleet, tmp_path: Path
) -> None:
    folder = project(tmp_path)
    tag = uuid.uuid4().hex[:10]
    sets = ("--set", f"*.args.BASE={fleet.base}")
    variables = {"REGISTRY": fleet.registry, "TAG": tag, "BASE": fleet.base}
    env = {**fleet.env, **variables}
    completed = subprocess.run(
        [sys.executable, "-m", "nodefleet", "bake", "-i", str(fleet.inventory), "--json", "--push", *sets],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, **env},
        cwd=folder,
        check=False,
    )
    run = Run(completed.returncode, completed.stdout, completed.stderr)
    assert run.exit_code == 0, run.stdout + run.stderr
    found = results(run)
    assert set(found) == {(target, platform) for target in ("base", "app", "tool", "cli") for platform in THREE}
    for (target, platform), result in found.items():
        assert result["status"] == "built" and result["mode"] == "native", (target, result)
        assert NATIVE[result["node"]] == platform, (target, result)
    assert found[("base", "linux/arm64")]["node"] == found[("app", "linux/arm64")]["node"]  # built together
    indexes = {index["target"]: index for index in run.json["indexes"]}
    assert set(indexes) == {"base", "app", "tool", "cli"}
    assert indexes["cli"]["names"] == [f"{fleet.registry}/e2e-bake/cli:{tag}", f"{fleet.registry}/e2e-bake/cli:latest"]
    for target in ("app", "tool", "cli"):
        image = f"{fleet.registry}/e2e-bake/{target}:{tag}"
        index = index_platforms(imagetools_raw(fleet, image))  # type: ignore[arg-type]
        assert index == {platform: found[(target, platform)]["manifest_digest"] for platform in THREE}
        for platform in THREE:
            output = host_docker(lab, "amd64-1", "run", "--rm", "--pull", "always", "--platform", platform, image)
            first = output.strip().splitlines()[0]
            assert first == f"hello from {target}: built on {platform} for {platform}", (target, platform, output)
            if target == "app":
                assert output.strip().splitlines()[1] == f"base built on {platform} for {platform}"
    assert run.json["makespan"] > 0


def test_a_compose_file_with_two_services_builds_the_same_way(lab: Any, fleet: Fleet, tmp_path: Path) -> None:
    folder = project(tmp_path)
    tag = uuid.uuid4().hex[:10]
    (folder / "compose.yaml").write_text(
        "services:\n"
        + "".join(
            f"  {name}:\n"
            f"    image: {fleet.registry}/e2e-bake/compose-{name}:{tag}\n"
            "    build:\n"
            "      context: .\n"
            "      dockerfile: leaf.Dockerfile\n"
            f"      args: {{ BASE: {fleet.base}, NAME: {name}, GREETING: hello }}\n"
            "      x-bake:\n"
            "        platforms: [linux/amd64, linux/arm64]\n"
            for name in ("web", "worker")
        )
    )
    run = fleet.run("bake", "--json", "--push", "-f", "compose.yaml", cwd=folder)
    assert run.exit_code == 0, run.stdout + run.stderr
    found = results(run)
    assert set(found) == {(n, p) for n in ("web", "worker") for p in ("linux/amd64", "linux/arm64")}
    for (name, platform), result in found.items():
        assert NATIVE[result["node"]] == platform and result["status"] == "built"
        image = f"{fleet.registry}/e2e-bake/compose-{name}:{tag}"
        output = host_docker(lab, "amd64-1", "run", "--rm", "--pull", "always", "--platform", platform, image)
        assert output.strip() == f"hello from {name}: built on {platform} for {platform}"


def test_a_platforms_jobs_are_shared_by_its_nodes(fleet: Fleet, tmp_path: Path) -> None:
    folder = project(tmp_path)
    names = [f"leaf{i}" for i in range(4)]
    (folder / "many.hcl").write_text(
        "".join(
            f'target "{name}" {{\n  dockerfile = "leaf.Dockerfile"\n  platforms = ["linux/arm64"]\n'
            f'  args = {{ BASE = "{fleet.base}", NAME = "{name}", GREETING = "{uuid.uuid4().hex}" }}\n}}\n'
            for name in names
        )
        + f'group "default" {{ targets = {json.dumps(names)} }}\n'
    )
    run = fleet.run("bake", "--json", "-f", "many.hcl", cwd=folder)
    assert run.exit_code == 0, run.stdout + run.stderr
    nodes = [result["node"] for result in run.json["platforms"]]
    assert sorted(nodes) == ["arm64-1", "arm64-1", "arm64-2", "arm64-2"], nodes


def test_a_node_cut_mid_bake_moves_its_job_to_the_standby(
    lab: Any, lab_fault: Any, fleet: Fleet, tmp_path: Path
) -> None:
    folder = project(tmp_path)
    names = ["slow1", "slow2"]
    (folder / "slow.hcl").write_text(
        "".join(
            f'target "{name}" {{\n  dockerfile = "leaf.Dockerfile"\n  platforms = ["linux/arm64"]\n'
            f'  args = {{ BASE = "{fleet.base}", NAME = "{name}", SLEEP = "15",\n'
            f'           GREETING = "{uuid.uuid4().hex}" }}\n}}\n'
            for name in names
        )
        + f'group "default" {{ targets = {json.dumps(names)} }}\n'
    )
    argv = [sys.executable, "-m", "nodefleet", "bake", "-i", str(fleet.inventory), "--json", "-f", "slow.hcl"]
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **fleet.env}, cwd=folder
    )
    assert process.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + 180
    on: dict[str, str] = {}
    while time.monotonic() < deadline and len([line for line in seen if "RUN echo" in line]) < 2:
        line = process.stderr.readline()
        if not line:
            break
        seen.append(line)
        if "building natively on" in line:
            on[line.split(":")[1].split()[0]] = line.split()[-1]
    assert sorted(on.values()) == ["arm64-1", "arm64-2"], "".join(seen)
    victim = next(name for name, node in on.items() if node == "arm64-1")
    time.sleep(2)
    with lab_fault("arm64-1", "net-cut"):  # arm64-1 cut off mid-bake: its keepalives go unanswered
        stdout, stderr = process.communicate(timeout=600)
    try:
        assert process.returncode == 0, "".join(seen) + stderr
        found = {result["target"]: result for result in json.loads(stdout)["platforms"]}
        moved = found[victim]
        assert [attempt["node"] for attempt in moved["attempts"]] == ["arm64-1", "arm64-2"]
        assert moved["attempts"][0]["error_kind"] == "infrastructure" and moved["status"] == "built"
        other = found[next(name for name in names if name != victim)]
        assert other["status"] == "built" and [a["node"] for a in other["attempts"]] == ["arm64-2"]
    finally:
        up = fleet.run("up", "--json")  # arm64-1 back, healthy
        assert up.exit_code == 0, up.stdout


def test_a_dockerfile_error_fails_the_targets_built_with_it_and_no_other(fleet: Fleet, tmp_path: Path) -> None:
    folder = project(tmp_path)
    (folder / "base.Dockerfile").write_text("ARG BASE\nFROM ${BASE}\nRUN echo broken && exit 3\n")
    nonce = uuid.uuid4().hex
    (folder / "broken.hcl").write_text(
        f'target "base" {{\n  dockerfile = "base.Dockerfile"\n  platforms = ["linux/amd64"]\n'
        f'  args = {{ BASE = "{fleet.base}" }}\n}}\n'
        f'target "app" {{\n  dockerfile = "app.Dockerfile"\n  contexts = {{ base = "target:base" }}\n'
        f'  platforms = ["linux/amd64"]\n  args = {{ NAME = "app", GREETING = "{nonce}" }}\n}}\n'
        f'target "tool" {{\n  dockerfile = "leaf.Dockerfile"\n  platforms = ["linux/arm64"]\n'
        f'  args = {{ BASE = "{fleet.base}", NAME = "tool", GREETING = "{nonce}" }}\n}}\n'
        'group "default" { targets = ["base", "app", "tool"] }\n'
    )
    run = fleet.run("bake", "--json", "-f", "broken.hcl", cwd=folder)
    assert run.exit_code == 1, run.stdout + run.stderr
    found = {result["target"]: result for result in run.json["platforms"]}
    for target in ("base", "app"):  # built together (app uses base as a context): both failed, with base's error
        assert found[target]["status"] == "failed" and found[target]["error_kind"] == "dockerfile", found[target]
        assert len(found[target]["attempts"]) == 1  # a Dockerfile error is not retried
        assert "exit code: 3" in found[target]["error"]
    assert found["tool"]["status"] == "built"  # a job on another node goes on
