"""Where and how to log in to a host: plain data, importable without the SSH stack (asyncssh takes ~0.2 s to
import, and nodefleet starts its local processes before that; see nodefleet.fleet.load_ssh_stack)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


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
