"""Helpers for end-to-end tests: inventories for a subset of lab hosts, running the real CLI, host engines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def lab_data(lab: Any) -> Mapping[str, Any]:
    """The lab's lab.json, whatever shape the fixture hands over."""
    if isinstance(lab, Mapping):
        return lab
    for attribute in ("data", "raw", "json"):
        value = getattr(lab, attribute, None)
        if isinstance(value, Mapping):
            return value
    state_dir = Path(getattr(lab, "state_dir", os.environ.get("NODEFLEET_LAB_DIR", "/var/lib/nodefleet-lab")))
    return json.loads((state_dir / "lab.json").read_text())


def lab_hosts(lab: Any) -> dict[str, Mapping[str, Any]]:
    """Lab hosts by name."""
    return {host["name"]: host for host in lab_data(lab)["hosts"]}


def write_inventory(
    lab: Any,
    path: Path,
    builder: str,
    hosts: Iterable[str],
    *,
    extra_defaults: str = "",
    connect_timeout: float = 3,
) -> Path:
    """An inventory for some lab hosts, in the lab's settings, with its own builder name."""
    data = lab_data(lab)
    by_name = lab_hosts(lab)
    lines = [
        "[builder]",
        f'name = "{builder}"',
        "[defaults]",
        'user = "builder"',
        f'identity_file = "{data["ssh_key"]}"',
        f'known_hosts = "{data["known_hosts"]}"',
        f"connect_timeout = {connect_timeout}",
        f'buildkitd_config = "{data["buildkitd_config"]}"',
        extra_defaults,
    ]
    for name in hosts:
        host = by_name[name]
        lines += ["[[hosts]]", f'name = "{name}"', f'address = "{host["address"]}"']
        if host.get("buildkit_image"):
            lines.append(f'buildkit_image = "{host["buildkit_image"]}"')
        if host.get("driver_opts"):
            opts = ", ".join(f'"{key}" = "{value}"' for key, value in sorted(host["driver_opts"].items()))
            lines.append(f"driver_opts = {{ {opts} }}")
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Run:
    """A finished CLI run."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.stdout)

    def hosts(self) -> dict[str, dict[str, Any]]:
        return {host["name"]: host for host in self.json["hosts"]}


def nodefleet(*args: str, env: Mapping[str, str] | None = None, timeout: float = 600) -> Run:
    """Run the real command line, as a user would."""
    completed = subprocess.run(
        [sys.executable, "-m", "nodefleet", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO,
        check=False,
    )
    return Run(completed.returncode, completed.stdout, completed.stderr)


def host_docker(lab: Any, host: str, *args: str, check: bool = True) -> str:
    """Run the docker CLI against one lab host's engine (through its socket, from the root namespace)."""
    docker_host = lab_hosts(lab)[host]["docker_host"]
    if not docker_host.startswith("unix://"):
        docker_host = "unix://" + docker_host
    completed = subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DOCKER_HOST": docker_host},
        check=False,
    )
    if check and completed.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} on {host}: {completed.stderr}")
    return completed.stdout


def container_id(lab: Any, host: str, node: str) -> str:
    """ID of a node's BuildKit container on its host ('' when there is none)."""
    return host_docker(lab, host, "ps", "-aq", "--no-trunc", "--filter", f"name=^buildx_buildkit_{node}$").strip()


def volume_exists(lab: Any, host: str, node: str) -> bool:
    """Whether a node's BuildKit state volume exists on its host."""
    names = host_docker(lab, host, "volume", "ls", "-q").split()
    return f"buildx_buildkit_{node}_state" in names


def buildx_builders(env: Mapping[str, str] | None = None) -> set[str]:
    """Names of the builders in buildx's store on this machine (read from the store, contacting no node)."""
    from nodefleet.buildx.store import store_dir

    instances = store_dir({**os.environ, **(env or {})}) / "instances"
    return {path.name for path in instances.iterdir()} if instances.is_dir() else set()


BUILDX_VARIANTS = ("trixie", "unstable")
_UNSTABLE_BUILDX = (
    Path(os.environ.get("NODEFLEET_LAB_CACHE", "/var/cache/nodefleet-lab")) / "buildx/unstable/docker-buildx"
)


def buildx_env(variant: str, config_dir: Path) -> dict[str, str]:
    """Environment that makes the docker CLI use one buildx version: the system's (trixie) or unstable's.

    The unstable plugin lives in its own DOCKER_CONFIG, which also gives it a store of its own.
    """
    if variant == "trixie":
        return {}
    if not _UNSTABLE_BUILDX.is_file():
        raise AssertionError(f"{_UNSTABLE_BUILDX} is missing: run ./lab/install-deps.sh")
    plugins = config_dir / "cli-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    link = plugins / "docker-buildx"
    if not link.exists():
        link.symlink_to(_UNSTABLE_BUILDX)
    return {"DOCKER_CONFIG": str(config_dir)}


def buildx_version(env: Mapping[str, str] | None = None) -> str:
    """The version `docker buildx version` gives in that environment (e.g. 0.29.1+ds1); '?' if it says none."""
    result = subprocess.run(
        ["docker", "buildx", "version"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
        check=False,
    )
    words = result.stdout.split()
    return words[1] if len(words) > 1 else "?"
