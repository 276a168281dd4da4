#!/usr/bin/env python3
"""Benchmark `nodefleet up`, `status` and `--help` on the lab, beside the same work done with plain buildx.

Prints one JSON document. Not a test: targets are reported, never asserted. Needs root and the lab's
packages; it starts the lab with the hosts it needs (`--hosts`), and leaves it running.

Before each timed command the script waits (at most 90 s) until the machine is nearly idle: a freshly started
BuildKit on the lab's emulated arm hosts burns CPU for a while, which real arm boards do not.

    python3 benchmarks/bench_fleet.py --hosts amd64,arm64,arm/v7 --runs 3
    python3 benchmarks/bench_fleet.py --hosts amd64:20 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.e2e.fleetlib import lab_data, write_inventory  # noqa: E402

from benchlib import compile_nodefleet, cpu_calibration, labctl, median, settle  # noqa: E402

LAB_DIR = Path(os.environ.get("NODEFLEET_LAB_DIR", "/var/lib/nodefleet-lab"))
NODEFLEET = [sys.executable, "-m", "nodefleet"]
TARGETS = {
    "up_warm_20_hosts_s": 3.0,
    "status_3_hosts_s": 1.0,
    "status_one_down_s": "connect_timeout + 1",
    "help_s": 0.15,
}


def timed(argv: list[str], *, check: bool = False) -> float:
    started = time.monotonic()
    completed = subprocess.run(argv, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if check and completed.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({completed.returncode}): {completed.stdout}{completed.stderr}")
    return seconds


def plain_buildx(builder: str, lab: dict, names: list[str]) -> float:
    """create/append each node with pinned platform, then inspect --bootstrap: the by-hand way."""
    hosts = {host["name"]: host for host in lab["hosts"]}
    started = time.monotonic()
    for index, name in enumerate(names):
        host = hosts[name]
        argv = ["docker", "buildx", "create", "--name", builder, "--node", name, "--driver", "docker-container"]
        argv += ["--platform", host["platform"], "--driver-opt", f"image={host['buildkit_image']}"]
        for key, value in sorted((host.get("driver_opts") or {}).items()):
            argv += ["--driver-opt", f"{key}={value}"]
        argv += ["--buildkitd-config", lab["buildkitd_config"]]
        if index:
            argv.append("--append")
        argv.append(f"ssh://{host['user']}@{host['address']}")
        subprocess.run(argv, capture_output=True, check=True)
    subprocess.run(
        ["docker", "buildx", "inspect", "--bootstrap", "--builder", builder], capture_output=True, check=False
    )
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", default="amd64,arm64,arm/v7", help="lab host spec (labctl up --hosts)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    compile_nodefleet()
    labctl("up", "--hosts", args.hosts)
    lab = dict(lab_data(None))
    names = [host["name"] for host in lab["hosts"]]
    work = Path(tempfile.mkdtemp(prefix="nodefleet-bench-"))
    inventory = write_inventory(lab, work / "inventory.toml", "bench", names, connect_timeout=5)
    inv = ["-i", str(inventory)]
    results: dict[str, object] = {"hosts": len(names), "spec": args.hosts, "runs": args.runs, "targets": TARGETS}
    calibration = {"before": cpu_calibration()}

    help_samples = [timed([str(Path(sys.executable).parent / "nodefleet"), "--help"]) for _ in range(max(5, args.runs))]
    results["help_s"] = median(help_samples)

    cold, warm, status_ok, status_down, plain = [], [], [], [], []
    settled: list[float] = []
    for _ in range(args.runs):
        timed([*NODEFLEET, "down", *inv])
        settled.append(settle())
        cold.append(timed([*NODEFLEET, "up", *inv], check=True))
        settled.append(settle())  # the new BuildKit containers start up (slowly, where emulated)
        warm.append(timed([*NODEFLEET, "up", *inv], check=True))
        settled.append(settle())
        status_ok.append(timed([*NODEFLEET, "status", *inv], check=True))
        labctl("fault", names[-1], "net-cut")
        try:
            status_down.append(timed([*NODEFLEET, "status", *inv]))
        finally:
            labctl("fault", names[-1], "net-restore")
    timed([*NODEFLEET, "down", *inv])
    for run in range(args.runs):
        builder = f"benchplain{run}"
        settled.append(settle())
        plain.append(plain_buildx(builder, lab, names))
        subprocess.run(["docker", "buildx", "rm", "--force", builder], capture_output=True, check=False)
    results.update(
        up_cold_s=median(cold),
        up_warm_s=median(warm),
        status_healthy_s=median(status_ok),
        status_one_down_s=median(status_down),
        connect_timeout_s=5,
        plain_buildx_create_append_bootstrap_s=median(plain),
        settle_waits_s=settled,
        cpu_calibration_s={**calibration, "after": cpu_calibration()},
        samples={"up_cold": cold, "up_warm": warm, "status": status_ok, "status_down": status_down, "plain": plain},
    )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
