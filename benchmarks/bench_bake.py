#!/usr/bin/env python3
"""Benchmark `nodefleet bake` beside plain `docker buildx bake` on the same builder, side by side in one run.

Prints one JSON document. Not a test: goals are reported with the ratios, never asserted. Needs root and the
lab's packages; it starts a lab of two amd64 hosts (`amd64:2`) and leaves it running. Each host's BuildKit is held
to a CPU of its own (driver_opts cpuset-cpus 0 and 1): on one machine the two nodes would otherwise share both
cores, and spreading the work could not show.

- six independent CPU-bound targets of one platform (a shell loop of a few seconds each): plain bake sends every
  job to the platform's first node; goal: nodefleet's makespan at most 0.6 of plain bake's;
- the same six targets when they wait instead of compute (`sleep`): goal: at most 1.05 of plain bake's;
- the scheduler's own overhead: nodefleet's makespan against the longest job's buildx time and the jobs' sum.

    python3 benchmarks/bench_bake.py --runs 3
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "lab"))
from tests.e2e.fleetlib import lab_data, write_inventory  # noqa: E402

from benchlib import compile_nodefleet, cpu_calibration, labctl, median, settle  # noqa: E402
from labkit.core import LOCK_FILE  # noqa: E402

NODEFLEET = [sys.executable, "-m", "nodefleet"]
HOSTS = ["amd64-1", "amd64-2"]
TARGETS = 6
GOALS = {"cpu_ratio_max": 0.6, "sleep_ratio_max": 1.05}
DOCKERFILE = """\
ARG BASE
FROM ${BASE}
ARG NONCE
ARG WORK
RUN echo $NONCE && eval "$WORK"
"""
CPU_WORK = "i=0; while [ $i -lt 1500000 ]; do i=$((i+1)); done"
SLEEP_WORK = "sleep 4"


def run(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.monotonic()
    completed = subprocess.run(
        argv, capture_output=True, text=True, check=False, env={**os.environ, **env}, cwd=cwd, timeout=1800
    )
    seconds = round(time.monotonic() - started, 3)
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({completed.returncode}):\n{completed.stdout}{completed.stderr}")
    return seconds, completed


def bake_file(folder: Path, base: str, work: str) -> Path:
    """Six independent targets of linux/amd64, each with a nonce of its own (no cache hit between runs)."""
    nonce = uuid.uuid4().hex
    text = "".join(
        f'target "t{i}" {{\n  platforms = ["linux/amd64"]\n'
        f'  args = {{ BASE = "{base}", NONCE = "{nonce}-{i}", WORK = "{work}" }}\n}}\n'
        for i in range(TARGETS)
    )
    text += 'group "default" { targets = [' + ", ".join(f'"t{i}"' for i in range(TARGETS)) + "] }\n"
    path = folder / f"bake-{nonce[:8]}.hcl"
    path.write_text(text)
    return path


def measure(runs: int) -> dict[str, Any]:
    lab = dict(lab_data(None))
    work = Path(tempfile.mkdtemp(prefix="nodefleet-bench-bake-"))
    (work / "Dockerfile").write_text(DOCKERFILE)
    inventory = write_inventory(lab, work / "inventory.toml", "benchbake", HOSTS)
    text = inventory.read_text()
    for cpu, host in enumerate(HOSTS):  # each node's BuildKit on a CPU of its own
        text = text.replace(f'name = "{host}"\n', f'name = "{host}"\ndriver_opts = {{ "cpuset-cpus" = "{cpu}" }}\n')
    inventory.write_text(text)
    env = {"NODEFLEET_STATE_DIR": str(work / "state")}
    run([*NODEFLEET, "up", "-i", str(inventory)], env, work)
    base = f"{lab['registry']}/lab/busybox:stable"
    results: dict[str, Any] = {"goals": GOALS, "runs": runs, "targets": TARGETS, "cpu_calibration_s": {}}
    results["cpu_calibration_s"]["before"] = cpu_calibration()
    for name, job in (("cpu_bound", CPU_WORK), ("sleeping", SLEEP_WORK)):
        warm = bake_file(work, base, job)
        run([*NODEFLEET, "bake", "-i", str(inventory), "-f", warm.name], env, work)  # helper builders, base image
        run(["docker", "buildx", "bake", "--builder", "benchbake", "-f", warm.name], env, work)
        plain, ours, sums, longest, nodes = [], [], [], [], []
        for _ in range(runs):
            settle()
            plain.append(
                run(
                    ["docker", "buildx", "bake", "--builder", "benchbake", "-f", bake_file(work, base, job).name],
                    env,
                    work,
                )[0]
            )
            settle()
            argv = [*NODEFLEET, "bake", "-i", str(inventory), "--json", "-f", bake_file(work, base, job).name]
            seconds, completed = run(argv, env, work)
            ours.append(seconds)
            report = json.loads(completed.stdout)
            jobs = [result["seconds"] for result in report["platforms"]]
            sums.append(round(sum(jobs), 3))
            longest.append(max(jobs))
            nodes.append(sorted(result["node"] for result in report["platforms"]))
        results[name] = {
            "plain_bake_s": median(plain),
            "nodefleet_bake_s": median(ours),
            "ratio": round(median(ours) / median(plain), 3),
            "jobs_buildx_sum_s": median(sums),
            "longest_job_s": median(longest),
            "overhead_over_longest_job_s": round(median(ours) - median(longest), 3),
            "nodes": nodes[-1],
            "samples": {"plain": plain, "nodefleet": ours},
        }
    results["cpu_calibration_s"]["after"] = cpu_calibration()
    run([*NODEFLEET, "down", "-i", str(inventory)], env, work)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    compile_nodefleet()
    labctl("up", "--hosts", "amd64:2")
    with LOCK_FILE.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)  # as the e2e fixture: no other session takes the lab down meanwhile
        results = measure(args.runs)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
