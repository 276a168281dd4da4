"""One `nodefleet build` in progress: what it was asked (inventory, request, options), its state (the builder's
files, the probe cache), and how it reaches each node: the node's door (nodefleet.buildx.gateway) served over
nodefleet's own SSH session, or the node's `ssh://` helper builder when another build serves that door."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from nodefleet.build.checks import Checks, NodeCheck
from nodefleet.build.cmdline import BuildRequest
from nodefleet.build.options import BuildOptions
from nodefleet.build.routing import NodeView
from nodefleet.buildx.config import applied_node_config, config_digest, has_own_config, resolve_buildkitd_config
from nodefleet.buildx.gateway import Gateway, buildx_environment, socket_path
from nodefleet.buildx.helpers import GATEWAYS, HELPERS, helper_name, make_helper, up_to_date
from nodefleet.buildx.nodes import NodeSpec, node_spec
from nodefleet.buildx.store import CorruptStoreError, read_store
from nodefleet.errors import NodefleetError
from nodefleet.host.cache import ProbeCache
from nodefleet.inventory import Inventory
from nodefleet.platforms import same_architecture
from nodefleet.state import BuilderState, private_dir
from nodefleet.target import ssh_target

if TYPE_CHECKING:
    from nodefleet.ssh import Session

log = logging.getLogger(__name__)


@dataclass
class Context:
    """One build: its inputs, state, abort flag, node views, and the builders it reached each node with."""

    inventory: Inventory
    request: BuildRequest
    options: BuildOptions
    state: BuilderState
    abort: asyncio.Event = field(default_factory=asyncio.Event)
    views: dict[str, NodeView] = field(default_factory=dict)
    used: dict[str, tuple[str, Mapping[str, str] | None]] = field(default_factory=dict)  # node: builder, env
    gateways: dict[str, Gateway | None] = field(default_factory=dict)  # None: another build serves that door now

    def __post_init__(self) -> None:
        self.hosts = {host.name: host for host in self.inventory.enabled_hosts}
        self.cache = ProbeCache(self.state.root)
        self.configs: dict[str, tuple[Path | None, str]] = {}
        self.gateway_env = buildx_environment(self.state.root)
        self.helper_lock = asyncio.Lock()
        self.session_lock = asyncio.Lock()
        self.tmp = Path(tempfile.mkdtemp(prefix="nodefleet-build-"))

    def remove_tmp(self) -> None:
        """Remove the build's temporary folder (the metadata files of its platforms)."""
        with contextlib.suppress(OSError):
            for path in self.tmp.iterdir():
                path.unlink()
            self.tmp.rmdir()

    # ------------------------------------------------------------------------------------------ doors and helpers

    async def serve(self, node: str) -> Gateway | None:
        """The node's door, served from now on by this build (shut until opened); None when it cannot be."""
        if node not in self.gateways:
            gateway = Gateway.for_node(self.state.root, self.inventory.builder, node)
            try:
                served = await gateway.start()
            except OSError as exc:
                log.debug("%s: cannot serve its gateway: %s", node, exc)
                served = False
            if not served:
                await gateway.close()
            self.gateways[node] = gateway if served else None
        return self.gateways[node]

    @functools.cached_property
    def builder_config(self) -> tuple[Path | None, str]:
        """The builder's buildkitd config and its digest, which every node without a config of its own gets."""
        path = resolve_buildkitd_config(self.inventory, self.state)
        return path, config_digest(path)

    def config(self, node: str) -> tuple[Path | None, str]:
        """The buildkitd config (and its digest) `up` gave the node."""
        host = self.hosts[node]
        if not has_own_config(self.inventory, host):
            return self.builder_config
        if node not in self.configs:
            path = applied_node_config(self.state, host)
            self.configs[node] = (path, config_digest(path))
        return self.configs[node]

    def spec(self, node: str, platforms: tuple[str, ...], *, gateway: bool) -> NodeSpec:
        """The node of a helper builder: the node as `up` makes it, reached through its door or over ssh://."""
        spec = node_spec(self.hosts[node], platforms, *self.config(node))
        if not gateway:
            return spec
        return replace(spec, endpoint=f"unix://{socket_path(self.state.root, self.inventory.builder, node)}")

    def gateway_ready(self, node: str, platforms: tuple[str, ...]) -> str | None:
        """The node's gateway helper when it is there as this build would make it (so buildx may start at once)."""
        if not platforms:
            return None
        name = helper_name(self.inventory.builder, node)
        try:
            stored = read_store(name, self.gateway_env)
        except CorruptStoreError:
            return None
        recorded = self.state.helper_record.load()[GATEWAYS].get(name)
        return name if up_to_date(stored, self.spec(node, platforms, gateway=True), recorded) else None

    async def helper(self, node: str, *, gateway: bool) -> str:
        """The node's helper builder, made (or made again) when needed. A gateway helper lives in nodefleet's private
        store and needs its door open, as buildx connects when it makes a builder."""
        spec = self.spec(node, self.views[node].platforms, gateway=gateway)
        env = self.gateway_env if gateway else None
        if gateway:
            private_dir(Path(self.gateway_env["BUILDX_CONFIG"]))
        timeout = self.inventory.defaults.connect_timeout * 2 + 60
        async with self.helper_lock:
            name, made = await make_helper(self.state, GATEWAYS if gateway else HELPERS, spec, env, timeout=timeout)
        if made and not gateway:
            self.options.notice(f"prepared builder {name} (node {node}, sharing its BuildKit container)")
        return name

    async def session(self, checks: Checks, node: str) -> Session:
        """An open SSH session to the node: the one its health check kept, or a new one."""
        async with self.session_lock:
            session = checks.session(node)
            if session is None:
                interval = self.inventory.defaults.connect_timeout
                from nodefleet.ssh import open_session  # imported by the checks already

                session = await open_session(
                    ssh_target(self.inventory, self.hosts[node]), attempts=2, budget=2 * interval + 1
                )
                checks.adopt(node, session)
            return session

    async def builder_for(self, node: str, checks: Checks) -> tuple[str, Mapping[str, str] | None]:
        """The builder a platform's buildx uses on `node` (and its environment): the node's gateway helper when this
        build serves its door, else the `ssh://` helper."""
        gateway = await self.serve(node)
        if gateway is not None:
            try:
                gateway.open(await self.session(checks, node))
                self.used[node] = (await self.helper(node, gateway=True), self.gateway_env)
                return self.used[node]
            except (NodefleetError, OSError) as exc:
                log.debug("%s: gateway helper not usable (%s); using the ssh:// helper", node, exc)
        self.used[node] = (await self.helper(node, gateway=False), None)
        return self.used[node]

    async def close_gateways(self) -> None:
        """Stop serving the doors."""
        await asyncio.gather(*(gateway.close() for gateway in self.gateways.values() if gateway is not None))

    # ------------------------------------------------------------------------------------------ the record

    async def mark_used(self, nodes: Iterable[str]) -> None:
        """Record that these nodes start a build now (the least recently used goes next)."""
        now = time.time()
        async with self.state.build_record.update() as record:
            for node in nodes:
                record["nodes"].setdefault(node, {})["last_used"] = now

    async def remember(self, checks: Iterable[NodeCheck]) -> None:
        """Record each checked host's platform (a host whose worker is of another architecture is asked again)."""
        async with self.state.build_record.update() as record:
            for check in checks:
                if check.result.platform is None:
                    continue
                entry = record["nodes"].setdefault(check.result.name, {})
                entry["platforms"] = [check.result.platform]
                native = check.worker_platforms[0] if check.worker_platforms else None
                if native and not same_architecture(native, check.result.platform):
                    entry.pop("platforms")  # a stale record (the host changed): ask the host next time
