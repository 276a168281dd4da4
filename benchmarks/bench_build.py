#!/usr/bin/env python3
"""Benchmark `nodefleet build` on the lab beside plain `docker buildx build --builder` on the same fleet.

Prints one JSON document. Not a test: targets are reported, never asserted. Needs root and the lab's packages;
it starts the lab (`amd64,arm64:2,arm/v7`) if needed and leaves it running.

- overhead of `nodefleet build` over plain buildx for a fully cached build of three platforms, pushed and not;
- time to fail closed when the only host of a requested platform is partitioned (and plain buildx's time to fail);
- time to reroute to the second arm64 host when the first is partitioned.

Before each timed command the script waits (at most 90 s) until the machine is nearly idle: a freshly started
BuildKit on the lab's emulated arm hosts burns CPU for a while, which real arm boards do not.

    python3 benchmarks/bench_build.py --runs 5
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
PLATFORMS = "linux/amd64,linux/arm64,linux/arm/v7"
THREE = ["amd64-1", "arm64-1", "armv7-1"]
CONNECT_TIMEOUT = 5
TARGETS = {"cached_overhead_3_hosts_s": 0.5, "fail_closed_one_down_s": 6.0, "reroute_one_down_s": 6.0}
DOCKERFILE = """\
ARG BASE
FROM --platform=$BUILDPLATFORM ${BASE} AS build
ARG TARGETPLATFORM
ARG BUILDPLATFORM
ARG NONCE
RUN echo "I am running on $BUILDPLATFORM, building for $TARGETPLATFORM ($NONCE)" > /log

FROM ${BASE}
COPY --from=build /log /log
CMD ["cat", "/log"]
"""


def run(argv: list[str], env: dict[str, str] | None = None, *, check: bool = False) -> tuple[float, Any]:
    started = time.monotonic()
    completed = subprocess.run(
        argv, capture_output=True, text=True, check=False, env={**os.environ, **(env or {})}, timeout=900
    )
    seconds = time.monotonic() - started
    if check and completed.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({completed.returncode}):\n{completed.stdout}{completed.stderr}")
    return seconds, completed


class Bench:
    def __init__(self, lab: dict[str, Any], work: Path, builder: str, hosts: list[str]) -> None:
        self.builder = builder
        self.inventory = write_inventory(lab, work / f"{builder}.toml", builder, hosts, connect_timeout=CONNECT_TIMEOUT)
        self.env = {"NODEFLEET_STATE_DIR": str(work / f"{builder}-state")}

    def nodefleet(self, *args: str, check: bool = False) -> tuple[float, Any]:
        return run([*NODEFLEET, *args, "-i", str(self.inventory)], self.env, check=check)


def cached_overhead(lab: dict[str, Any], work: Path, runs: int, context: Path, build_args: list[str]) -> dict[str, Any]:
    registry = lab["registry"]
    bench = Bench(lab, work, "benchbuild", THREE)
    bench.nodefleet("up", check=True)
    image = f"{registry}/bench/build"
    common = ["--platform", PLATFORMS, *build_args]
    variants = {
        "push": (["-t", f"{image}:nodefleet", "--push"], ["-t", f"{image}:plain", "--push"]),
        "no_output": ([], []),
    }
    results: dict[str, Any] = {}
    for name, (nf_args, plain_args) in variants.items():
        plain_argv = ["docker", "buildx", "build", "--builder", bench.builder, "--progress", "plain"]
        plain_argv += [*common, *plain_args, str(context)]
        nf_argv = [*NODEFLEET, "build", "-i", str(bench.inventory), *common, *nf_args, str(context)]
        bench.nodefleet("up", check=True)  # other sessions' `down` of a builder sharing these nodes removes them
        run(plain_argv, check=True)  # warm every node's cache, and the helper builders
        run(nf_argv, bench.env, check=True)
        plain, ours = [], []
        for _ in range(runs):
            settle()
            plain.append(run(plain_argv, check=True)[0])
            settle()
            ours.append(run(nf_argv, bench.env, check=True)[0])
        results[name] = {
            "plain_buildx_s": median(plain),
            "nodefleet_s": median(ours),
            "overhead_s": round(median(ours) - median(plain), 3),
            "samples": {"plain": plain, "nodefleet": ours},
        }
    _, json_run = run([*NODEFLEET, "build", "-i", str(bench.inventory), "--json", *common, str(context)], bench.env)
    results["last_report_seconds"] = {p["platform"]: p["seconds"] for p in json.loads(json_run.stdout)["platforms"]}
    return results


def fail_closed(lab: dict[str, Any], work: Path, runs: int, context: Path, build_args: list[str]) -> dict[str, Any]:
    bench = Bench(lab, work, "benchbuild", THREE)
    bench.nodefleet("up", check=True)
    ours, plain = [], []
    labctl("fault", "armv7-1", "net-cut")
    try:
        for _ in range(runs):
            seconds, completed = bench.nodefleet("build", "--platform", PLATFORMS, *build_args, str(context))
            assert completed.returncode == 1, completed.stdout + completed.stderr
            ours.append(seconds)
        seconds, completed = run(
            [
                "docker",
                "buildx",
                "build",
                "--builder",
                bench.builder,
                "--platform",
                PLATFORMS,
                *build_args,
                str(context),
            ]
        )
        plain.append(seconds)
        plain_exit = completed.returncode
    finally:
        labctl("fault", "armv7-1", "net-restore")
    return {
        "nodefleet_s": median(ours),
        "plain_buildx_s": median(plain),
        "plain_buildx_exit": plain_exit,
        "connect_timeout_s": CONNECT_TIMEOUT,
        "samples": ours,
    }


def reroute(lab: dict[str, Any], work: Path, runs: int, context: Path, build_args: list[str]) -> dict[str, Any]:
    bench = Bench(lab, work, "benchreroute", ["arm64-1", "arm64-2"])
    bench.nodefleet("up", check=True)
    build = ["build", "--json", "--platform", "linux/arm64", *build_args, str(context)]
    # Two warm builds: least-recently-used balancing puts one on each arm64 host, so arm64-1 is preferred next.
    warm = [json.loads(bench.nodefleet(*build, check=True)[1].stdout)["platforms"][0]["node"] for _ in range(2)]
    samples, nodes = [], []
    for _ in range(runs):
        labctl("fault", "arm64-1", "net-cut")
        try:
            seconds, completed = bench.nodefleet(*build, check=True)
        finally:
            labctl("fault", "arm64-1", "net-restore")
        samples.append(seconds)
        nodes.append(json.loads(completed.stdout)["platforms"][0]["node"])
    bench.nodefleet("down")
    return {"nodefleet_s": median(samples), "warm_builds_on": warm, "built_on": nodes, "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    compile_nodefleet()
    labctl("up", "--hosts", "amd64,arm64:2,arm/v7")
    with LOCK_FILE.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)  # as the e2e fixture: no other session takes the lab down meanwhile
        results = measure(args.runs)
    print(json.dumps(results, indent=2))


def measure(runs: int) -> dict[str, Any]:
    lab = dict(lab_data(None))
    work = Path(tempfile.mkdtemp(prefix="nodefleet-bench-build-"))
    context = work / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE)
    build_args = ["--build-arg", f"BASE={lab['registry']}/lab/busybox:stable", "--build-arg", f"NONCE={uuid.uuid4()}"]
    results: dict[str, Any] = {"targets": TARGETS, "runs": runs, "platforms": PLATFORMS}
    results["cpu_calibration_s"] = {"before": cpu_calibration()}
    results["fully_cached_3_hosts"] = cached_overhead(lab, work, runs, context, build_args)
    results["fail_closed_armv7_down"] = fail_closed(lab, work, max(1, runs // 2), context, build_args)
    results["reroute_arm64_1_down"] = reroute(lab, work, max(1, runs // 2), context, build_args)
    Bench(lab, work, "benchbuild", THREE).nodefleet("down")
    results["cpu_calibration_s"]["after"] = cpu_calibration()
    return results


if __name__ == "__main__":
    main()
