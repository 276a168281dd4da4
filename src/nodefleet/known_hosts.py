"""known_hosts: which file a host's key is checked against (the inventory's, else what ~/.ssh/config names),
how a problem with a key is told (naming the file and line), trust on first use, and whether a file holds a key
as OpenSSH would look it up."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncssh

from nodefleet.errors import HostKeyError
from nodefleet.target import SSHTarget

log = logging.getLogger(__name__)


def default_known_hosts() -> Any:
    path = Path("~/.ssh/known_hosts").expanduser()
    return str(path) if path.is_file() else asyncssh.import_known_hosts("")


def configured_known_hosts(host: str, port: int | None = None, user: str | None = None) -> Any:
    """What asyncssh would take from ~/.ssh/config for this host's known_hosts: None means `none`."""
    settings: dict[str, Any] = {"host": host, "config": ()}  # () = ~/.ssh/config, as asyncssh.connect reads
    if port is not None:
        settings["port"] = port
    if user is not None:
        settings["username"] = user
    try:
        options = asyncssh.SSHClientConnectionOptions(**settings)
    except (OSError, ValueError, asyncssh.Error):
        return ()  # a config asyncssh cannot read fails the real connection attempt with its own reason
    return options.known_hosts, options.tunnel


def checked_config_known_hosts(target: SSHTarget) -> dict[str, Any]:
    """Known hosts from ~/.ssh/config, never "none": asyncssh reads `UserKnownHostsFile none` as "trust any
    host key", which nodefleet never does. The host is then checked against ~/.ssh/known_hosts; a ProxyJump
    hop configured that way is refused (asyncssh opens hops with the config alone)."""
    resolved = configured_known_hosts(target.address, target.port, target.user)
    if not resolved:
        return {}
    known_hosts, tunnel = resolved
    if isinstance(tunnel, str):
        for hop in tunnel.split(","):
            user, _, rest = hop.rpartition("@")
            host, _, port = rest.partition(":")
            hop_resolved = configured_known_hosts(host, int(port) if port.isdigit() else None, user or None)
            if hop_resolved and hop_resolved[0] is None:
                raise HostKeyError(
                    f"{target.name}: ~/.ssh/config sets `UserKnownHostsFile none` for the ProxyJump host {hop}; "
                    "nodefleet never connects without checking host keys: name a known_hosts file there"
                )
    return {"known_hosts": default_known_hosts()} if known_hosts is None else {}


def known_host_lines(path: Path, host: str, port: int) -> list[int]:
    """Line numbers of `path` whose entries match the host (plain, [host]:port or hashed)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    found = []
    for number, line in enumerate(lines, start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        try:
            keys = asyncssh.import_known_hosts(entry).match(host, host, port)
        except (asyncssh.KeyImportError, ValueError):
            continue
        if any(keys[:3]):
            found.append(number)
    return found


def known_hosts_file(target: SSHTarget) -> Path:
    """The known_hosts file the connection checks this host against: the inventory's, else the first
    UserKnownHostsFile ~/.ssh/config names for this host, else ~/.ssh/known_hosts. New keys are recorded there, so
    that they are found where they will be checked."""
    if target.known_hosts is not None:
        return target.known_hosts
    resolved = configured_known_hosts(target.address, target.port, target.user)
    configured = resolved[0] if resolved else None
    if isinstance(configured, list | tuple) and configured and isinstance(configured[0], str):
        return Path(configured[0]).expanduser()
    return target.known_hosts_path


def describe_host_key_problem(target: SSHTarget, reason: str = "") -> str:
    """One line telling whether a host key is unknown or changed, naming the known_hosts file and line."""
    path = known_hosts_file(target)
    lines = known_host_lines(path, target.address, target.port or 22)
    if lines:
        where = ", ".join(f"{path}:{line}" for line in lines)
        return (
            f"{target.name}: host key of {target.address} does NOT match known_hosts ({where}); refusing to connect. "
            f"If the host was reinstalled, verify the new key and remove the old line (ssh-keygen -R {target.address})"
        )
    return (
        f"{target.name}: host key of {target.address} is not in {path}; verify it and add it "
        "(ssh-keyscan), or run with --accept-new-host-keys to trust it on first use"
        + (f" [{reason}]" if reason and "not verifiable" not in reason.lower() else "")
    )


async def record_new_host_key(target: SSHTarget) -> None:
    """Trust on first use: record the key of a host that has NO entry in known_hosts. Never replaces one."""
    path = known_hosts_file(target)
    port = target.port or 22
    if known_host_lines(path, target.address, port):
        return
    try:
        async with asyncio.timeout(target.connect_timeout + 1):
            key = await asyncssh.get_server_host_key(target.address, port)
    except (OSError, TimeoutError, asyncssh.Error):
        return  # the real connection attempt reports the fault
    if key is None:
        return
    host = target.address if port == 22 else f"[{target.address}]:{port}"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    line = f"{host} {key.export_public_key('openssh').decode().strip()}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as handle:
        handle.write(line)
    log.warning(
        "%s: trusted new host key %s for %s on first use (recorded in %s)",
        target.name,
        key.get_fingerprint(),
        target.address,
        path,
    )


def key_in_files(key: asyncssh.SSHKey, files: Sequence[str], host: str, port: int) -> bool:
    """True when one of these known_hosts files holds `key` for `host` and `port`, as OpenSSH looks it up."""
    wanted = key.public_data
    # OpenSSH looks a host on another port up as [host]:port only; asyncssh's match would fall back to the plain
    # host, so it is given the name OpenSSH looks up, and no port.
    name_looked_up = host if port == 22 else f"[{host}]:{port}"
    for name in files:
        try:
            text = Path(name).expanduser().read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            try:
                trusted = asyncssh.import_known_hosts(entry).match(name_looked_up, "", None)[0]
            except (asyncssh.KeyImportError, ValueError):
                continue
            if any(known.public_data == wanted for known in trusted):
                return True
    return False
