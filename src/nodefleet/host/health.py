"""Judging a node's health (pure): is its BuildKit container running, with a worker native for the host."""

from __future__ import annotations

from nodefleet.buildx.nodes import container_name
from nodefleet.host.facts import NodeHealth, engine_problem
from nodefleet.platforms import same_architecture


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
