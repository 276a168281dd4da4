"""Where and how to log in to a host, and how an inventory host becomes one: plain data, importable without the
SSH stack (asyncssh takes ~0.2 s to import, and nodefleet starts its local processes before that; see
load_ssh_stack)."""

from __future__ import annotations

import asyncio
import importlib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from nodefleet.inventory import Host, Inventory


class HostKeyPolicy(StrEnum):
    """What to do with a host whose key is not in known_hosts. A changed key is refused under both."""

    STRICT = "strict"
    ACCEPT_NEW = "accept-new"


@dataclass(frozen=True)
class SSHTarget:
    """Where and how to log in to one host; None means "as ~/.ssh/config and OpenSSH's defaults say"."""

    name: str
    address: str
    user: str | None = None
    port: int | None = None
    identity_file: Path | None = None
    known_hosts: Path | None = None
    connect_timeout: float = 5.0

    @property
    def known_hosts_path(self) -> Path:
        """The known_hosts file used for diagnostics and for recording new keys."""
        return self.known_hosts or Path("~/.ssh/known_hosts").expanduser()


def ssh_target(inventory: Inventory, host: Host) -> SSHTarget:
    """How to log in to an inventory host."""
    return SSHTarget(
        name=host.name,
        address=host.address,
        user=host.user,
        port=host.port,
        identity_file=host.identity_file,
        known_hosts=inventory.defaults.known_hosts,
        connect_timeout=inventory.defaults.connect_timeout,
    )


def target_from_endpoint(inventory: Inventory, name: str, endpoint: str) -> SSHTarget | None:
    """How to log in to a node that is in buildx's store but no longer in the inventory."""
    parts = urlsplit(endpoint)
    if parts.scheme != "ssh" or not parts.hostname:
        return None
    defaults = inventory.defaults
    return SSHTarget(
        name=name,
        address=parts.hostname,
        user=parts.username or defaults.user,
        port=parts.port or defaults.port,
        identity_file=defaults.identity_file,
        known_hosts=defaults.known_hosts,
        connect_timeout=defaults.connect_timeout,
    )


async def load_ssh_stack() -> None:
    """Import the SSH stack (asyncssh: about 0.2 s) in a thread. Commands call it right after starting the local
    processes they start first (buildx's OpenSSH path checks, a build's buildx), which run meanwhile."""
    await asyncio.to_thread(importlib.import_module, "nodefleet.ssh")
