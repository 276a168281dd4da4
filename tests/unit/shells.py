"""The shells nodefleet's remote scripts (host/scripts/*.sh) must run under: a host's login shell runs them as
`SHELL -c SCRIPT`. bash (most hosts), dash (Debian's /bin/sh) and busybox sh (Alpine, OpenWrt, small boards; with
Debian's busybox-static, its applets stand in for uname, od, df, grep, tail...).

A missing shell fails the test instead of skipping it: lab/install-deps.sh installs them (busybox-static; dash
and bash are essential on Debian)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

SHELLS: dict[str, tuple[str, ...]] = {
    "bash": ("bash", "-c"),
    "dash": ("dash", "-c"),
    "busybox": ("busybox", "sh", "-c"),
}
PACKAGES = {"bash": "bash", "dash": "dash", "busybox": "busybox-static"}

# Use as @pytest.mark.parametrize("shell", SHELL_NAMES) or through the `shell` fixture of a test module.
SHELL_NAMES = tuple(SHELLS)


def shell_argv(shell: str, script: str) -> list[str]:
    """The argv running `script` the way sshd does under that login shell; fails when the shell is missing."""
    program, *options = SHELLS[shell]
    path = shutil.which(program)
    if path is None:
        pytest.fail(f"{program} is not installed: apt-get install {PACKAGES[shell]}")
    return [path, *options, script]


def run_script(
    shell: str, script: str, env: Mapping[str, str] | None = None, *, check: bool = True, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `script` under `shell` with `env` (default: the test's own environment); text in and out."""
    return subprocess.run(
        shell_argv(shell, script),
        capture_output=True,
        text=True,
        check=check,
        timeout=30,
        env=dict(os.environ) if env is None else dict(env),
        cwd=cwd,
    )


def stub_docker(folder: Path, body: str) -> Path:
    """A `docker` stub (a /bin/sh script with `body`) in `folder`; returns the folder, to put first on PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    docker = folder / "docker"
    docker.write_text(f"#!/bin/sh\n{body}\n")
    docker.chmod(0o755)
    return folder
