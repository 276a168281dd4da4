"""The few operations nodefleet carries out on a host: the BuildKit image made present, a node's container
removed."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from nodefleet.buildx.nodes import container_name, state_volume_name
from nodefleet.errors import NodefleetError, tail
from nodefleet.host.scripts import script

if TYPE_CHECKING:
    from nodefleet.ssh import Session

IMAGE_LOAD_COMMAND = "docker load -q"


def image_present_command(image: str) -> str:
    """Remote shell command exiting 0 when the image is on the host."""
    return f"docker image inspect {shlex.quote(image)} >/dev/null 2>&1"


def image_pull_command(image: str) -> str:
    """Remote shell command pulling the image."""
    return f"docker pull -q {shlex.quote(image)}"


def remove_node_command(node: str, *, keep_state: bool) -> str:
    """Remote command removing a node's BuildKit container (and, unless keep_state, its state volume)."""
    return script("remove_node", container_name(node), "" if keep_state else state_volume_name(node))


async def ensure_image(
    session: Session, image: str, archive: Path | None, *, timeout: float, present: bool | None = None
) -> str:
    """Make the BuildKit image present on the host: already there, loaded from `archive` when one is given (an
    archive means "load this": no pull is tried, which on an air-gapped network costs a DNS time-out per host), or
    pulled. `present` is what the caller already asked the host, if it did."""
    if present is None:
        present = (await session.run(image_present_command(image), timeout=timeout)).ok
    if present:
        return "present"
    if archive is not None:
        loaded = await session.write_stream(IMAGE_LOAD_COMMAND, archive, timeout=timeout)
        if not loaded.ok:
            raise NodefleetError(f"cannot load {archive} on the host: {tail(loaded.stderr or loaded.stdout)}")
        if not (await session.run(image_present_command(image), timeout=timeout)).ok:
            raise NodefleetError(f"{archive} does not contain BuildKit image {image}")
        return "loaded"
    pulled = await session.run(image_pull_command(image), timeout=timeout)
    if not pulled.ok:
        raise NodefleetError(
            f"cannot pull BuildKit image {image}: {tail(pulled.stderr or pulled.stdout)} "
            "(set defaults.buildkit_image_archive to load it over SSH instead)"
        )
    return "pulled"


async def remove_node_container(session: Session, node: str, *, keep_state: bool, timeout: float) -> None:
    """Remove a node's BuildKit container (and, unless keep_state, its state volume) from the host."""
    result = await session.run(remove_node_command(node, keep_state=keep_state), timeout=timeout)
    if not result.ok:
        # The script's own last words (the engine's error, or "... is still there"), not the script itself.
        raise NodefleetError(tail(result.stderr or result.stdout, lines=1) or f"exit status {result.exit_status}")
