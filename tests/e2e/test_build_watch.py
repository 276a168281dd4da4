"""A node cut off in the middle of its build, for good: nodefleet gives it up after its keepalives go unanswered and
builds on the other node of that platform, instead of waiting for TCP. Real lab, nothing mocked."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .fleetlib import REPO, Run, lab_data, nodefleet, write_inventory

pytestmark = pytest.mark.e2e

HOSTS = ["arm64-1", "arm64-2"]
CONNECT_TIMEOUT = 3  # keepalives 3 s apart, the node given up after 3 unanswered: about 9-12 s
SLOW = "ARG BASE\nFROM ${BASE}\nARG NONCE\nRUN echo start $NONCE && sleep 40 && echo slept\n"


@pytest.fixture(scope="module")
def watched(
    lab: Any, buildx_variant: str, buildx: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, dict[str, str]]]:
    """Runs with both buildx variants (conftest.py), each with its own builder name and buildx store."""
    root = tmp_path_factory.mktemp("watch")
    builder = f"e2ewatch-{buildx_variant}"
    inventory = write_inventory(lab, root / "inventory.toml", builder, HOSTS, connect_timeout=CONNECT_TIMEOUT)
    env = {"NODEFLEET_STATE_DIR": str(root / "state"), **buildx}
    up = nodefleet("up", "--json", "-i", str(inventory), env=env)
    assert up.exit_code == 0, up.stdout + up.stderr
    yield inventory, env
    nodefleet("down", "--json", "-i", str(inventory), env=env)


def test_node_cut_off_mid_build_is_given_up_and_the_build_retried_elsewhere(
    lab: Any, lab_fault: Any, watched: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    inventory, env = watched
    folder = tmp_path / "context"
    folder.mkdir()
    (folder / "Dockerfile").write_text(SLOW)
    base = f"{lab_data(lab)['registry']}/lab/busybox:stable"
    argv = [sys.executable, "-m", "nodefleet", "build", "-i", str(inventory), "--json", "--platform", "linux/arm64"]
    argv += ["--build-arg", f"BASE={base}", "--build-arg", f"NONCE={uuid.uuid4()}", str(folder)]
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env}, cwd=REPO
    )
    assert process.stderr is not None and process.stdout is not None
    node, seen = None, []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        seen.append(line)
        if match := re.search(r"building natively on (\S+)", line):
            node = match.group(1)
        if node and "echo start" in line:
            break
    assert node in HOSTS, "".join(seen)
    with lab_fault(node, "net-cut"):
        cut = time.monotonic()
        stdout, stderr = process.communicate(timeout=300)
        seconds = time.monotonic() - cut
    run = Run(process.returncode, stdout, "".join(seen) + stderr)
    assert run.exit_code == 0, run.stdout + run.stderr
    (result,) = run.json["platforms"]
    first, second = result["attempts"]
    assert first["node"] == node and first["error_kind"] == "infrastructure", first
    assert f"{node} stopped answering" in first["error"], first
    assert second["node"] != node and second["status"] == "built"
    assert result["status"] == "built" and result["mode"] == "native"
    # Given up within its keepalives (3 x 3 s, plus one interval of slack), then the retry's own 40 s RUN.
    assert seconds < 4 * CONNECT_TIMEOUT + 40 + 60, seconds
