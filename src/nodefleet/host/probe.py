"""Asking a host the probe (host/scripts/probe.sh) over its SSH session, with the probe cache: what a host and its
node answered before and cannot have changed since is not asked again, and is filled in from the cache."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from nodefleet.buildx.nodes import container_name
from nodefleet.host.cache import ProbeCache
from nodefleet.host.facts import Facts, HostFacts, NodeHealth, Probe, parse_probe, probe_script

if TYPE_CHECKING:
    from nodefleet.ssh import Session


async def probe(
    session: Session,
    node: str,
    cache: ProbeCache,
    *,
    timeout: float,
    image: str | None = None,
    facts: Facts = Facts.FULL,
    cache_usage: bool = False,
) -> Probe:
    """The host's facts, its node's health and (with `image`) whether that image is there, in one round trip; with
    `cache_usage`, the size of a running node's BuildKit cache as well."""
    address = f"{session.target.address}:{session.target.port or ''}"
    node_key = f"{address} {container_name(node)}"
    # A host's machine is cached under its address and SSH host key: the boot id alone does not tell hosts apart
    # (containers share their kernel's, and an address may be given to another machine).
    fingerprint = session.host_key
    machine_key = f"{address} {fingerprint}" if fingerprint else None
    machine = cache.machine(machine_key) if machine_key and facts is not Facts.NONE else None
    script = probe_script(
        container_name(node),
        image=image,
        known_instance=cache.instance(node_key),
        known_boot=machine[0] if machine else None,
        facts=facts,
        cache=cache_usage,
    )
    output = await session.run(script, timeout=timeout, check=True)
    answer = parse_probe(output.stdout)
    health = health_with_cache(answer.health, cache, node_key)
    host = machine_with_cache(answer.facts, cache, machine_key) if machine_key else answer.facts
    return replace(answer, facts=host, health=health)


def machine_with_cache(facts: HostFacts, cache: ProbeCache, key: str) -> HostFacts:
    """Record the machine a host reported with its boot id; fill it in from the cache when the host, still in the
    boot the cache knows, did not report it."""
    if facts.machine:
        if facts.boot_id:
            cache.put_machine(key, facts.boot_id, facts.machine, facts.userland_bits)
        return facts
    cached = cache.machine(key)
    if cached is not None and facts.boot_id == cached[0]:
        return replace(facts, machine=cached[1], userland_bits=cached[2])
    return facts


def health_with_cache(health: NodeHealth, cache: ProbeCache, key: str) -> NodeHealth:
    """Record what a running BuildKit said; fill in what it was not asked (a known instance) from the cache."""
    if health.state != "running" or health.instance is None:
        return health
    if health.asked:
        if health.worker_platforms:
            cache.put(key, health.instance, health.buildkit_version, health.worker_platforms)
        return health
    cached = cache.get(key)
    if cached is not None and cached[0] == health.instance:
        return replace(health, buildkit_version=cached[1], worker_platforms=cached[2])
    return health
