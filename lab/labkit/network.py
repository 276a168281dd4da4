"""The lab network: bridge nflab0 (10.231.0.1/24) in the root namespace and one namespace + veth per host."""

from __future__ import annotations

import socket
from pathlib import Path

from .core import LabError, Log, run
from .spec import BRIDGE, GATEWAY, Host


def create_bridge(log: Log) -> None:
    if link_exists(BRIDGE):
        raise LabError(f"bridge {BRIDGE} already exists (a lab not made by this state dir?); run `labctl.py down`")
    run(["ip", "link", "add", BRIDGE, "type", "bridge"], log)
    run(["ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE], log)
    run(["ip", "link", "set", BRIDGE, "up"], log)


def create_host_network(host: Host, log: Log) -> None:
    """A namespace whose eth0 has the host's address, cabled into the bridge. No default route: lab only."""
    prefix = f"{host.name}: "
    run(["ip", "netns", "add", host.netns], log, prefix=prefix)
    run(
        ["ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.netns],
        log,
        prefix=prefix,
    )
    run(["ip", "link", "set", host.veth, "master", BRIDGE, "up"], log, prefix=prefix)
    run(["ip", "-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0"], log, prefix=prefix)
    run(["ip", "-n", host.netns, "link", "set", "eth0", "up"], log, prefix=prefix)
    run(["ip", "-n", host.netns, "link", "set", "lo", "up"], log, prefix=prefix)


def cut(host: Host, log: Log) -> None:
    run(["ip", "link", "set", host.veth, "down"], log)


def restore(host: Host, log: Log) -> None:
    run(["ip", "link", "set", host.veth, "up"], log)


def link_is_up(name: str) -> bool:
    """Administratively up (IFF_UP), which is what `net-cut` turns off."""
    try:
        flags = int(Path(f"/sys/class/net/{name}/flags").read_text(), 16)
    except (OSError, ValueError):
        return False
    return bool(flags & 1)


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def lab_netns_names() -> list[str]:
    try:
        return sorted(p.name for p in Path("/run/netns").iterdir() if p.name.startswith("nflab-"))
    except FileNotFoundError:
        return []


def lab_links() -> list[str]:
    """Root-namespace links the lab made: the bridge and host veths (named nflv<octet>)."""
    names = [p.name for p in Path("/sys/class/net").iterdir()]
    return sorted(n for n in names if n == BRIDGE or (n.startswith("nflv") and n[4:].isdigit()))


def remove_network(log: Log) -> None:
    for name in lab_netns_names():
        run(["ip", "netns", "del", name], log, check=False)
    for name in lab_links():
        run(["ip", "link", "del", name], log, check=False)


def tcp_open(address: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def ssh_banner(address: str, timeout: float = 1.0) -> bool:
    """True when an SSH server answers on port 22 with its identification string."""
    try:
        with socket.create_connection((address, 22), timeout=timeout) as conn:
            conn.settimeout(timeout)
            return conn.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def netns_inodes() -> dict[tuple[int, int], str]:
    """(dev, inode) of each lab netns -> name, to find processes that live in one."""
    found = {}
    for name in lab_netns_names():
        try:
            st = Path(f"/run/netns/{name}").stat()
        except OSError:
            continue
        found[(st.st_dev, st.st_ino)] = name
    return found
