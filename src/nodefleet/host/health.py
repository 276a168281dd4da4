"""Judging a node's health (pure): is its BuildKit container running, with a worker native for the host; has its
disk the free space its cache budget asks for."""

from __future__ import annotations

from nodefleet.buildx.nodes import container_name
from nodefleet.host.facts import NodeHealth, engine_problem
from nodefleet.inventory import Host
from nodefleet.platforms import same_architecture
from nodefleet.units import human_size


def health_problem(node: str, platform: str | None, health: NodeHealth | None) -> str | None:
    """Why the node cannot build `platform` natively now, in one line; None when it can.

    Healthy means: the container is running, its BuildKit lists a worker (a BuildKit with no worker builds
    nothing: it fails closed), and that worker's native platform has the host's architecture."""
    if health is None:
        return f"BuildKit container {container_name(node)} was not checked"
    if health.engine_error:
        return engine_problem(health.engine_error)
    if health.state != "running":
        return f"BuildKit container {container_name(node)} is {health.state}"
    native = health.native_platform
    if native is None:
        return f"BuildKit in {container_name(node)} reports no worker: it cannot build"
    if platform and not same_architecture(platform, native):
        return (
            f"BuildKit runs {native} natively but the node is pinned to {platform} "
            "(it would emulate): check the BuildKit image's architecture or the host's platforms"
        )
    return None


NEARLY_FULL = 100 * 1000**2  # free bytes under which a failed step is taken as the disk's fault


def low_disk(host: Host, free: int | None) -> str | None:
    """What to say when the disk holding a node's state has less free space than its budget's min_free; None when
    it has enough (or nothing is known)."""
    minimum = host.cache.min_free
    if minimum is None or free is None or free >= minimum:
        return None
    return f"{human_size(free)} free, under its cache.min_free {human_size(minimum)}"
