"""Helper builders: the single-node builders `<builder>--<node>` through which builds reach one node each (the same
node name and endpoint as the main builder's node, hence the same BuildKit container and cache).

Two kinds, each recorded in the builder's helper record when nodefleet makes one: `helpers` reach the node over
`ssh://` and live in the user's buildx store; `gateways` reach it through nodefleet's own SSH session (see
nodefleet.buildx.gateway) and live in nodefleet's private store. A helper is known by that record, never by its
name alone: a user's own builder that happens to be called `<builder>--<node>` is never touched."""

from __future__ import annotations

import shlex
from collections.abc import Collection, Mapping
from typing import Any

from nodefleet.buildx.argv import create_argv, rm_argv
from nodefleet.buildx.nodes import DRIVER, NodeSpec
from nodefleet.buildx.store import CorruptStoreError, StoredBuilder, instance_file, read_store
from nodefleet.errors import CommandError, NodefleetError
from nodefleet.runner import run_local
from nodefleet.state import BuilderState

SEPARATOR = "--"
HELPERS = "helpers"  # ssh:// helpers, in the user's buildx store
GATEWAYS = "gateways"  # gateway helpers, in nodefleet's private buildx store


def helper_name(builder: str, node: str) -> str:
    """The single-node builder that reaches one node of `builder`."""
    return f"{builder}{SEPARATOR}{node}"


def same_node(stored: StoredBuilder | None, spec: NodeSpec) -> bool:
    """True when a stored single-node builder is `spec`'s node as buildx keeps it."""
    if stored is None or stored.driver != DRIVER or len(stored.nodes) != 1:
        return False
    node = stored.nodes[0]
    return (
        node.name == spec.name
        and node.endpoint == spec.endpoint
        and set(node.platforms) == set(spec.platforms)
        and dict(node.driver_opts) == spec.all_driver_opts()
    )


def up_to_date(stored: StoredBuilder | None, spec: NodeSpec, recorded: Mapping[str, Any] | None) -> bool:
    """A helper as it would be made now: in the store as `spec`, recorded as made with the same config."""
    return same_node(stored, spec) and (recorded or {}).get("config_digest") == spec.config_digest


async def make_helper(
    state: BuilderState, kind: str, spec: NodeSpec, env: Mapping[str, str] | None, *, timeout: float
) -> tuple[str, bool]:
    """The helper of `spec`'s node in the store `env` names, made (or made again when it or its config changed):
    (its name, whether it was made now). A builder of that name that nodefleet did not make is refused."""
    name = helper_name(state.builder, spec.name)
    async with state.helper_record.update() as record:
        try:
            stored = read_store(name, env)
        except CorruptStoreError:
            stored = None
        entry = record[kind].get(name)
        if up_to_date(stored, spec, entry):
            return name, False
        if instance_file(name, env).exists():
            if entry is None:
                raise NodefleetError(
                    f"a buildx builder named {name} exists that nodefleet did not make; rename or remove it "
                    f"(docker buildx rm {shlex.quote(name)}) or use another builder name"
                )
            await run_local(rm_argv(name, keep_state=True, keep_daemon=True), timeout=120, env=env)
        await run_local(create_argv(name, spec, append=False), timeout=timeout, env=env)
        record[kind][name] = {"node": spec.name, "config_digest": spec.config_digest}
    return name, True


def recorded_helpers(state: BuilderState, kind: str) -> dict[str, str]:
    """The helpers of this kind nodefleet made for the builder: name -> node."""
    entries = state.helper_record.load()[kind]
    return {str(name): str(entry.get("node", "")) for name, entry in entries.items() if isinstance(entry, dict)}


async def remove_helpers(state: BuilderState, *, skip: Collection[str] = ()) -> list[str]:
    """Drop the `ssh://` helpers nodefleet made for the builder from the user's buildx store, keeping the BuildKit
    containers they share; returns notes. Helpers of the nodes in `skip` (hosts that could not be cleaned) stay:
    `buildx rm` would wait on them."""
    notes = []
    async with state.helper_record.update() as record:
        for name, entry in sorted(record[HELPERS].items()):
            node = str(entry.get("node", "")) if isinstance(entry, dict) else ""
            if node in skip:
                notes.append(f"builder {name} kept: {node} could not be cleaned; the next `nodefleet down` removes it")
                continue
            if instance_file(name).exists():
                try:
                    await run_local(rm_argv(name, keep_state=True, keep_daemon=True), timeout=60)
                except CommandError as exc:
                    # buildx removes the store entry and then may complain about a node it could not inspect.
                    if instance_file(name).exists():
                        notes.append(f"docker buildx rm {shlex.quote(name)} failed: {exc}")
                        continue
            del record[HELPERS][name]
    return notes
