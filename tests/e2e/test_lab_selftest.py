"""The lab itself, without nodefleet: what lab/CONTRACT.md promises, and a plain buildx multi-platform build on it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lab"))
from labkit.core import LabError
from labkit.spec import format_size, parse_spec, spec_of

from .conftest import SMALL_DISK

REPO = Path(__file__).resolve().parents[2]


def labctl(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "lab" / "labctl.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def ssh(address: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Plain OpenSSH through root's ~/.ssh/config, as buildx's ssh:// endpoints do."""
    return subprocess.run(
        ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", address, command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def reachable(address: str) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=2):
            return True
    except OSError:
        return False


def test_spec_names_and_numbers_hosts_in_order() -> None:
    hosts = parse_spec("amd64,arm64:2,linux/arm/v7")
    assert [(h.name, h.address, h.platform.platform) for h in hosts] == [
        ("amd64-1", "10.231.0.11", "linux/amd64"),
        ("arm64-1", "10.231.0.12", "linux/arm64"),
        ("arm64-2", "10.231.0.13", "linux/arm64"),
        ("armv7-1", "10.231.0.14", "linux/arm/v7"),
    ]
    assert spec_of(parse_spec(spec_of(hosts))) == spec_of(hosts)


@pytest.mark.parametrize("spec", ["", "amd64,,arm64", "riscv64", "amd64:0", "amd64:x", "amd64,amd64", "amd64:201"])
def test_bad_spec_is_refused(spec: str) -> None:
    with pytest.raises(LabError):
        parse_spec(spec)


@pytest.mark.e2e
def test_every_host_answers_with_its_own_architecture_and_engine(lab: dict[str, Any]) -> None:
    for host in lab["hosts"]:
        result = ssh(host["address"], "uname -m; docker version --format '{{.Server.Os}}'")
        assert result.returncode == 0, f"{host['name']}: {result.stderr}"
        assert result.stdout.split() == [host["uname"], "linux"], host["name"]


@pytest.mark.e2e
def test_second_up_is_a_no_op(lab: dict[str, Any]) -> None:
    started = time.monotonic()
    small_disks = [f"--small-disk={h['name']}={h['data_root_size']}" for h in lab["hosts"] if h["data_root_size"]]
    again = labctl("up", "--hosts", lab["spec"], *small_disks)
    assert again.returncode == 0, again.stderr
    assert "already up" in again.stdout
    assert time.monotonic() - started < 15


@pytest.mark.e2e
def test_faults_break_and_restore_one_host(lab: dict[str, Any], lab_fault: Any) -> None:
    arm64_2 = next(h for h in lab["hosts"] if h["name"] == "arm64-2")
    with lab_fault("arm64-2", "net-cut"):
        assert not reachable(arm64_2["address"])
        assert ssh("10.231.0.11", "true").returncode == 0  # the others are untouched
    assert reachable(arm64_2["address"])
    with lab_fault("arm64-2", "engine-stop"):
        assert "Cannot connect" in ssh(arm64_2["address"], "docker version").stderr
    assert ssh(arm64_2["address"], "docker version").returncode == 0
    with lab_fault("arm64-2", "rekey"):
        assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in ssh(arm64_2["address"], "true").stderr
    assert ssh(arm64_2["address"], "true").returncode == 0
    status = labctl("status")
    assert status.returncode == 0, status.stdout


@pytest.mark.e2e
def test_selftest_builds_each_platform_on_its_own_host(lab: dict[str, Any]) -> None:
    """`labctl.py selftest`: buildx with one ssh:// node per architecture, pinned; each image names its build."""
    result = labctl("selftest", timeout=1800)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 platforms built natively" in result.stdout


@pytest.mark.e2e
def test_small_disk_host_keeps_its_engine_data_on_a_filesystem_of_that_size(lab: dict[str, Any]) -> None:
    """`up --small-disk arm64-1=1G`: that host's engine (the one its SSH sessions use) keeps its data root, with
    overlay2, on a 1 GiB tmpfs, and `df` of that data root in the host's session (as on a real host, also in the
    arm userland) says 1 GiB; a container writing more than that fails with ENOSPC; the other hosts keep theirs
    on the machine's disk."""
    by_name = {h["name"]: h for h in lab["hosts"]}
    assert {name: h["data_root_size"] for name, h in by_name.items() if h["data_root_size"] is not None} == SMALL_DISK
    state_dev = Path(lab["state_dir"]).stat().st_dev
    machine_kb = os.statvfs(lab["state_dir"]).f_blocks * os.statvfs(lab["state_dir"]).f_frsize // 1024
    for name, host in by_name.items():
        info = ssh(host["address"], "docker info --format '{{.DockerRootDir}} {{.Driver}}'")
        assert info.returncode == 0, f"{name}: {info.stderr}"
        assert info.stdout.split() == [host["data_root"], "overlay2"], name
        on_own_filesystem = Path(host["data_root"]).stat().st_dev != state_dev
        assert on_own_filesystem == (name in SMALL_DISK), name
        df = ssh(host["address"], "id -un; df -Pk \"$(docker info --format '{{.DockerRootDir}}')\" | tail -n 1")
        assert df.returncode == 0, f"{name}: {df.stderr}"
        user, df_line = df.stdout.splitlines()
        assert user == "builder"
        assert int(df_line.split()[1]) == SMALL_DISK.get(name, machine_kb * 1024) // 1024, f"{name}: {df_line}"
    for name, size in SMALL_DISK.items():
        fs = os.statvfs(by_name[name]["data_root"])
        assert fs.f_blocks * fs.f_frsize == size, name
        fill = subprocess.run(
            ["docker", "run", "--rm", "--pull", "always", lab["busybox_image"],
             "dd", "if=/dev/zero", "of=/fill", "bs=1M", f"count={size // (1 << 20) + 64}"],
            env=dict(os.environ, DOCKER_HOST=by_name[name]["docker_host"]),
            capture_output=True, text=True, timeout=300, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert fill.returncode != 0 and "No space left on device" in fill.stderr, fill.stdout + fill.stderr
        after = os.statvfs(by_name[name]["data_root"])
        assert after.f_bavail * after.f_frsize > size // 2, f"{name}: the filled container's space was not freed"
    status = labctl("status")
    assert status.returncode == 0, status.stdout
    lines = {line.split()[0]: line for line in status.stdout.splitlines()[1:]}
    for name, size in SMALL_DISK.items():
        assert f"data root tmpfs {format_size(size)} ok" in lines[name], status.stdout
