"""What a host says about itself and its node, parsed from the probe script's `key=value` lines (pure)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from nodefleet.host.scripts import script
from nodefleet.platforms import UnknownMachineError, join_platform, platform_for_machine
from nodefleet.units import UnitError, parse_size

BOOT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Facts(StrEnum):
    """How much of the host the probe asks about besides its node."""

    FULL = "full"  # machine, userland width, OS, engine, disk
    MACHINE = "machine"  # machine and userland width only (a build's quick check of a host of unknown platform)
    NONE = "none"


def probe_script(
    container: str,
    *,
    image: str | None = None,
    known_instance: str | None = None,
    known_boot: str | None = None,
    facts: Facts = Facts.FULL,
    cache: bool = False,
) -> str:
    """The probe (host/scripts/probe.sh) for one host. A `known_boot` that is not a boot id is not sent; with
    `cache`, a running node's BuildKit is asked for its cache's size."""
    boot = known_boot if known_boot and BOOT_ID.fullmatch(known_boot) else ""
    return script("probe", container, known_instance or "", boot, image or "", facts.value, "du" if cache else "")


def parse_keys(output: str) -> dict[str, str]:
    """`key=value` lines into a dict; the first line of a key wins, lines without `=` are ignored."""
    values: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            values.setdefault(key.strip(), value.strip())
    return values


@dataclass(frozen=True)
class HostFacts:
    """What a host is and whether its Docker engine is usable by the SSH user."""

    machine: str
    userland_bits: int | None
    os: str = ""
    docker_cli: bool = True
    engine_version: str | None = None
    engine_error: str | None = None
    disk_free_bytes: int | None = None
    boot_id: str | None = None
    cpus: int | None = None
    disk_size_bytes: int | None = None
    disk_path: str | None = None

    @property
    def platform(self) -> str | None:
        """The OCI platform of the CPU and userland, or None when the machine is unknown (or was not asked)."""
        try:
            return platform_for_machine(self.machine, self.userland_bits) if self.machine else None
        except UnknownMachineError:
            return None

    @property
    def engine_usable(self) -> bool:
        """True when the SSH user can talk to a running engine."""
        return self.engine_version is not None

    def engine_problem(self) -> str | None:
        """One line saying what is wrong with the engine and how to fix it, or None when it is usable."""
        if self.engine_version is not None:
            return None
        return engine_problem(self.engine_error, docker_cli=self.docker_cli)


def engine_problem(error: str | None, *, docker_cli: bool = True) -> str:
    """One line saying why the engine cannot be used and how to fix it, from docker's own error."""
    text = error or "no answer from the engine"
    lowered = text.lower()
    if not docker_cli or "not found" in lowered:
        return "Docker is not installed (install the engine, e.g. with the playbook in ansible/)"
    if "permission denied" in lowered:
        return f"the SSH user cannot use the Docker engine ({text}); add it to the docker group"
    if "cannot connect" in lowered or "daemon running" in lowered:
        return f"the Docker engine is not running ({text}); start it (systemctl start docker)"
    return f"the Docker engine is unusable: {text}"


def parse_facts(values: dict[str, str]) -> HostFacts:
    """The host's facts from the probe's keys."""
    bits_text = values.get("userland_bits", "")
    disk = values.get("disk_free_kb", "")
    size = values.get("disk_size_kb", "")
    boot = values.get("boot_id", "")
    cpus = values.get("cpus", "")
    return HostFacts(
        machine=values.get("machine", ""),
        userland_bits=int(bits_text) if bits_text in {"32", "64"} else None,
        os=values.get("os", ""),
        docker_cli=values.get("docker_cli", "yes") == "yes",
        engine_version=values.get("server_version") or None,
        engine_error=values.get("docker_error") or None,
        disk_free_bytes=int(disk) * 1024 if disk.isdigit() else None,
        boot_id=boot if BOOT_ID.fullmatch(boot) else None,
        cpus=int(cpus) if cpus.isdigit() and int(cpus) > 0 else None,
        disk_size_bytes=int(size) * 1024 if size.isdigit() else None,
        disk_path=values.get("disk_path") or None,
    )


@dataclass(frozen=True)
class NodeHealth:
    """What a node's BuildKit container says about itself. `instance` is "<container id> <started at>"; `asked` is
    False when BuildKit was not asked (a known instance), so version and workers are the caller's to fill in;
    `engine_error` is the engine's answer when it could not say whether the container is there."""

    state: str
    buildkit_version: str | None
    worker_platforms: tuple[str, ...]
    instance: str | None = None
    asked: bool = True
    engine_error: str | None = None

    @property
    def native_platform(self) -> str | None:
        """The first platform a BuildKit worker lists is the one it runs natively."""
        return self.worker_platforms[0] if self.worker_platforms else None

    @property
    def container_id(self) -> str | None:
        """The container's id, when it exists."""
        return self.instance.split()[0] if self.instance else None


def parse_node_health(values: dict[str, str]) -> NodeHealth:
    """The node's health from the probe's keys."""
    version = next(
        (word for word in values.get("buildkit", "").split() if word.startswith("v") and word[1:2].isdigit()), None
    )
    instance = values.get("instance") or None
    return NodeHealth(
        values.get("state") or "missing",
        version,
        _worker_platforms(values.get("workers") or "[]"),
        instance=instance if instance and " " in instance else None,
        asked="workers" in values or "buildkit" in values,
        engine_error=values.get("inspect_error") or None,
    )


def _worker_platforms(text: str) -> tuple[str, ...]:
    """The platforms of the first BuildKit worker (the one buildx uses) in `buildctl debug workers` JSON."""
    try:
        workers: Any = json.loads(text)
    except ValueError:
        return ()
    if not isinstance(workers, list) or not workers or not isinstance(workers[0], dict):
        return ()
    platforms: list[str] = []
    for platform in workers[0].get("platforms") or workers[0].get("Platforms") or []:
        parts = [platform.get(key) or platform.get(key.capitalize()) for key in ("os", "architecture", "variant")]
        try:
            platforms.append(join_platform(*parts))
        except ValueError:
            continue
    return tuple(platforms)


@dataclass(frozen=True)
class CacheUsage:
    """A node's BuildKit cache as `buildctl du` sums it: bytes in all, bytes that a prune may reclaim; `error` when
    BuildKit could not say."""

    total_bytes: int | None = None
    reclaimable_bytes: int | None = None
    error: str | None = None


def parse_cache(values: dict[str, str]) -> CacheUsage | None:
    """The cache figures, or None when they were not asked (or the node is not running)."""
    if "cache_error" in values:
        return CacheUsage(error=values["cache_error"] or "buildctl du failed without a word")
    if "cache_total" not in values:
        return None
    return CacheUsage(_size(values.get("cache_total", "")), _size(values.get("cache_reclaimable", "")))


def _size(text: str) -> int | None:
    try:
        return parse_size(text)
    except UnitError:
        return None


@dataclass(frozen=True)
class Probe:
    """Everything one probe said: the host's facts, its node's health, whether the BuildKit image is there, and
    (when asked) its cache."""

    facts: HostFacts
    health: NodeHealth
    image_present: bool | None
    cache: CacheUsage | None = None


def parse_probe(output: str) -> Probe:
    """The probe's output as facts, health and the image answer (None when it was not asked)."""
    values = parse_keys(output)
    image = values.get("image")
    present = None if image is None else image == "present"
    return Probe(parse_facts(values), parse_node_health(values), present, parse_cache(values))
