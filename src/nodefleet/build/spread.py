"""Spreading a platform's jobs over its healthy native nodes (pure).

Each node's capacity is its relative `speed` times `max_jobs`, the jobs it runs at once (by default twice its CPU
count: BuildKit overlaps one job's waits with another's work, so a node that held one job per CPU would idle on
jobs that wait). A platform's jobs are shared in proportion to capacity, all dispatched at once; a job goes back
to the node that last built it (its cache is there) as long as that node stays within its fair share."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nodefleet.inventory import Host


@dataclass(frozen=True)
class Capacity:
    """What one node can take: a relative speed and how many jobs it runs at once."""

    node: str
    speed: float = 1.0
    max_jobs: int = 2

    @property
    def weight(self) -> float:
        """Its share of the work, relative to the other nodes of the platform."""
        return self.speed * self.max_jobs


def default_max_jobs(cpus: int | None) -> int:
    """Jobs a node runs at once when the inventory does not say: twice its CPUs, at least 2."""
    return max(2, 2 * (cpus or 1))


def capacity(host: Host, cpus: int | None) -> Capacity:
    """A host's capacity from the inventory (speed, max_jobs) and, for max_jobs' default, its CPU count."""
    return Capacity(host.name, host.speed, host.max_jobs or default_max_jobs(cpus))


def spread(jobs: Sequence[str], nodes: Sequence[Capacity], last: Mapping[str, str]) -> dict[str, str]:
    """Assign each job (by key, in order) to a node: first the jobs whose last node is here and still within its
    fair share (ceil of the jobs times its weight over the total), then each other job to the node whose load
    after taking it is the lowest relative to its weight (inventory order on ties)."""
    if not nodes:
        return {}
    total = sum(node.weight for node in nodes)
    share = {node.node: math.ceil(len(jobs) * node.weight / total) for node in nodes}
    order = {node.node: index for index, node in enumerate(nodes)}
    weight = {node.node: node.weight for node in nodes}
    loads = dict.fromkeys(weight, 0)
    assigned: dict[str, str] = {}
    for job in jobs:
        preferred = last.get(job)
        if preferred in loads and loads[preferred] < share[preferred]:
            assigned[job] = preferred
            loads[preferred] += 1
    for job in jobs:
        if job in assigned:
            continue
        node = min(weight, key=lambda name: ((loads[name] + 1) / weight[name], order[name]))
        assigned[job] = node
        loads[node] += 1
    return assigned
