"""The buildx nodes nodefleet makes: their names, endpoints and settings (NodeSpec), and the names of what the
docker-container driver makes for them on a host."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from nodefleet.inventory import Host

DRIVER = "docker-container"
# The digest of the node's buildkitd config, kept in buildx's store with the node (as an environment variable of
# its BuildKit container, which BuildKit ignores): what `up` applied can be read back from buildx's store itself,
# so a lost or damaged nodefleet record does not make every node look changed.
DIGEST_OPT = "env.NODEFLEET_CONFIG_DIGEST"
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
        """Driver options as buildx stores them, the image and the config's digest included."""
        digest = {DIGEST_OPT: self.config_digest} if self.config_digest else {}
        return {"image": self.image, **self.driver_opts, **digest}


def node_spec(host: Host, platforms: tuple[str, ...], config: Path | None, digest: str) -> NodeSpec:
    """The buildx node nodefleet makes for a host, pinning `platforms`; identical in every builder it joins."""
    return NodeSpec(
        name=host.name,
        endpoint=ssh_endpoint(host.address, host.user, host.port),
        platforms=platforms,
        image=host.buildkit_image,
        driver_opts=dict(host.driver_opts),
        buildkitd_config=config,
        config_digest=digest,
    )
