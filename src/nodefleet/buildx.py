"""The docker buildx CLI: pure argv builders, a reader of buildx's builder store, and one command runner.

nodefleet never writes buildx's state files; it only reads them, and backs them up and restores them around
changes, because buildx's own rollback after a failed append drops every node's pinned platforms.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodefleet.errors import CommandError, NodefleetError
from nodefleet.platforms import normalize_platform
from nodefleet.state import private_dir, write_private

log = logging.getLogger(__name__)

DRIVER = "docker-container"
CONTAINER_PREFIX = "buildx_buildkit_"


def container_name(node: str) -> str:
    """Name of the BuildKit container the docker-container driver runs for a node."""
    return CONTAINER_PREFIX + node


def state_volume_name(node: str) -> str:
    """Name of the volume holding a node's BuildKit state and cache."""
    return CONTAINER_PREFIX + node + "_state"


def ssh_endpoint(address: str, user: str | None, port: int | None) -> str:
    """The ssh:// endpoint buildx (through docker's connection helper) connects to."""
    host = f"[{address}]" if ":" in address else address
    return "ssh://" + (f"{user}@" if user else "") + host + (f":{port}" if port else "")


@dataclass(frozen=True)
class NodeSpec:
    """A buildx node as nodefleet wants it."""

    name: str
    endpoint: str
    platforms: tuple[str, ...]
    image: str
    driver_opts: Mapping[str, str] = field(default_factory=dict)
    buildkitd_config: Path | None = None
    config_digest: str = ""

    def all_driver_opts(self) -> dict[str, str]:
        """Driver options as buildx stores them, the image included."""
        return {"image": self.image, **self.driver_opts}


@dataclass(frozen=True)
class StoredNode:
    """A buildx node as buildx's store has it."""

    name: str
    endpoint: str
    platforms: tuple[str, ...]
    driver_opts: Mapping[str, str]


@dataclass(frozen=True)
class StoredBuilder:
    """A builder as buildx's store has it."""

    name: str
    driver: str
    nodes: tuple[StoredNode, ...]

    def node(self, name: str) -> StoredNode | None:
        """The stored node of that name, if any."""
        return next((node for node in self.nodes if node.name == name), None)


# ---------------------------------------------------------------------------------------------- argv builders


def create_argv(builder: str, node: NodeSpec, *, append: bool) -> list[str]:
    """`docker buildx create` that creates the builder with `node`, or adds/updates `node` in it."""
    argv = ["docker", "buildx", "create", "--name", builder, "--node", node.name, "--driver", DRIVER]
    if append:
        argv.append("--append")
    if node.platforms:
        argv += ["--platform", ",".join(node.platforms)]
    for key, value in sorted(node.all_driver_opts().items()):
        argv += ["--driver-opt", f"{key}={value}"]
    if node.buildkitd_config is not None:
        argv += ["--buildkitd-config", str(node.buildkitd_config)]
    argv.append(node.endpoint)
    return argv


def leave_argv(builder: str, node: str) -> list[str]:
    """`docker buildx create --leave`: drop a node from the store without contacting its host."""
    return ["docker", "buildx", "create", "--name", builder, "--node", node, "--leave"]


def bootstrap_argv(builder: str) -> list[str]:
    """`docker buildx inspect --bootstrap`: start every node's BuildKit container."""
    return ["docker", "buildx", "inspect", "--bootstrap", "--builder", builder]


def rm_argv(builder: str, *, keep_state: bool, keep_daemon: bool = False) -> list[str]:
    """`docker buildx rm` for a whole builder."""
    argv = ["docker", "buildx", "rm", "--force"]
    if keep_state:
        argv.append("--keep-state")
    if keep_daemon:
        argv.append("--keep-daemon")
    return [*argv, builder]


def version_argv() -> list[str]:
    """`docker buildx version`."""
    return ["docker", "buildx", "version"]


_VERSION_RE = re.compile(r"\bv?(\d+)\.(\d+)\.(\d+)")


def parse_buildx_version(output: str) -> tuple[int, int, int] | None:
    """`github.com/docker/buildx v0.29.1 abc` or `... 0.13.1+ds1 ...` -> (0, 29, 1)."""
    for word in output.split()[1:]:
        match = _VERSION_RE.match(word)
        if match:
            major, minor, patch = (int(part) for part in match.groups())
            return major, minor, patch
    return None


# ---------------------------------------------------------------------------------------------- the store


def store_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where buildx keeps its state: $BUILDX_CONFIG, else $DOCKER_CONFIG/buildx, else ~/.docker/buildx."""
    env = os.environ if environ is None else environ
    if env.get("BUILDX_CONFIG"):
        return Path(env["BUILDX_CONFIG"])
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"]) / "buildx"
    return Path(env.get("HOME", str(Path.home()))) / ".docker" / "buildx"


def instance_file(builder: str, environ: Mapping[str, str] | None = None) -> Path:
    """The store file of one builder."""
    return store_dir(environ) / "instances" / builder


class CorruptStoreError(NodefleetError):
    """buildx's store file for the builder cannot be read."""


def parse_store(text: str) -> StoredBuilder:
    """Parse a buildx store instance file (a JSON NodeGroup)."""
    try:
        data = json.loads(text)
        nodes = tuple(_parse_stored_node(node) for node in data.get("Nodes") or [])
        return StoredBuilder(name=str(data["Name"]), driver=str(data.get("Driver", "")), nodes=nodes)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptStoreError(f"buildx builder state is not valid: {exc}") from None


def _parse_stored_node(node: Mapping[str, Any]) -> StoredNode:
    platforms = []
    for platform in node.get("Platforms") or []:
        text = "/".join(
            part for part in (platform.get("os"), platform.get("architecture"), platform.get("variant")) if part
        )
        platforms.append(normalize_platform(text))
    return StoredNode(
        name=str(node["Name"]),
        endpoint=str(node.get("Endpoint", "")),
        platforms=tuple(platforms),
        driver_opts=dict(node.get("DriverOpts") or {}),
    )


def read_store(builder: str, environ: Mapping[str, str] | None = None) -> StoredBuilder | None:
    """The builder as buildx's store has it, or None when it does not exist."""
    path = instance_file(builder, environ)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return parse_store(text)


def backup_store(builder: str, backup_dir: Path, environ: Mapping[str, str] | None = None) -> Path | None:
    """Copy the builder's store file aside (mode 0600), keeping the five newest copies; None if absent."""
    source = instance_file(builder, environ)
    if not source.exists():
        return None
    private_dir(backup_dir)
    target = backup_dir / f"{builder}.{time.time_ns()}.json"
    write_private(target, source.read_bytes())
    for old in sorted(backup_dir.glob(f"{builder}.*.json"))[:-5]:
        old.unlink(missing_ok=True)
    return target


def restore_store(builder: str, backup: Path | None, environ: Mapping[str, str] | None = None) -> None:
    """Put a backed-up store file back (or remove the builder's file when there was none before)."""
    target = instance_file(builder, environ)
    if backup is None:
        target.unlink(missing_ok=True)
        return
    private_dir(target.parent)
    write_private(target, backup.read_bytes())


def latest_backup(builder: str, backup_dir: Path) -> Path | None:
    """The newest backup of a builder's store file that parses, if any."""
    for candidate in sorted(backup_dir.glob(f"{builder}.*.json"), reverse=True):
        try:
            parse_store(candidate.read_text())
        except (OSError, CorruptStoreError):
            continue
        return candidate
    return None


# ---------------------------------------------------------------------------------------------- running


@dataclass(frozen=True)
class LocalResult:
    """What a local command returned."""

    argv: tuple[str, ...]
    exit_status: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        """True when the command exited 0."""
        return self.exit_status == 0


async def run_local(
    argv: Sequence[str],
    *,
    timeout: float,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> LocalResult:
    """Run a local command (docker, ssh) within `timeout`; kill it and its group when the time is up."""
    log.debug("run %s", shlex.join(argv))
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env) if env is not None else None,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin), timeout)
    except TimeoutError:
        kill_group(process)
        await process.wait()
        raise CommandError(shlex.join(argv), None, f"timed out after {timeout:g} s") from None
    except asyncio.CancelledError:
        kill_group(process)
        raise
    result = LocalResult(
        tuple(argv),
        process.returncode if process.returncode is not None else -1,
        out.decode(errors="replace"),
        err.decode(errors="replace"),
        time.monotonic() - started,
    )
    if check and not result.ok:
        raise CommandError(shlex.join(argv), result.exit_status, result.stderr, result.stdout)
    return result


def kill_group(process: asyncio.subprocess.Process) -> None:
    """Kill a process started with start_new_session and everything it started."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, 9)
