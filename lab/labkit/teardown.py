"""`down`: undo everything `up` made (also a half-made lab), and touch nothing else.

Lab things are found three ways: the daemon records (PID + start time), the journal (changes to shared system
state such as binfmt or /run/sshd), and the lab's own names (netns nflab-*, links nflab0/nflv*, cgroups nflab-*,
user `builder` marked nodefleet-lab, group nflab-docker, the CA files, the marked Include line), so a crashed `up`
that left no record is cleaned as well.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import clientfiles, hosts, network, pki, userland
from .core import STATE_MARKER, Journal, LabError, LabPaths, Log, all_daemons, run, stop_daemon, wait_for

CGROUP_ROOT = Path("/sys/fs/cgroup")


def teardown_steps(paths: LabPaths) -> list[tuple[str, Callable[[Log], str]]]:
    """The steps of `down`, in order; each returns a short detail for its line."""
    return [
        ("daemons", lambda log: stop_daemons(paths, log)),
        ("processes", lambda log: kill_leftovers(paths, log)),
        ("mounts", lambda log: unmount_all(paths, log)),
        ("network", remove_network),
        ("cgroups", remove_cgroups),
        ("user", remove_user),
        ("trust", remove_trust),
        ("ssh include", lambda log: remove_include()),
        ("system changes", lambda log: undo_journal(paths, log)),
        ("files", lambda log: remove_files(paths, log)),
    ]


def stop_daemons(paths: LabPaths, log: Log) -> str:
    """sshd first (no new sessions), then engines in parallel (they stop their containers), registry last."""
    records = all_daemons(paths)
    order = [r for r in records if r.key.endswith(".sshd")]
    order += [r for r in records if r not in order and not r.key.endswith(".dockerd")]
    engines = [r for r in records if r.key.endswith(".dockerd")]
    for record in order:
        log.write(f"stopping {record.key} pid {record.pid}")
        stop_daemon(paths, record.key, timeout=10)
    for record in engines:
        log.write(f"stopping {record.key} pid {record.pid}")
    with ThreadPoolExecutor(max_workers=max(1, min(len(engines), 16))) as pool:
        list(pool.map(lambda r: stop_daemon(paths, r.key, 40), engines))
    return f"{len(records)} stopped" if records else "none running"


def lab_cgroup_dirs() -> list[Path]:
    found: list[Path] = []
    if not CGROUP_ROOT.is_dir():
        return found
    for hierarchy in [CGROUP_ROOT, *[p for p in CGROUP_ROOT.iterdir() if p.is_dir()]]:
        try:
            found += [p for p in hierarchy.iterdir() if p.is_dir() and p.name.startswith("nflab-")]
        except OSError:
            continue
    return found


DAEMON_NAMES = {"docker-registry", "dockerd", "containerd", "containerd-shim-runc-v2", "sshd"}


def lab_processes(paths: LabPaths) -> list[int]:
    """PIDs in a lab netns, in a lab cgroup, owned by the lab user, or a daemon started with a lab path."""
    netns = network.netns_inodes()
    uid = hosts.lab_uid()
    markers = (str(paths.state) + "/", str(paths.run) + "/")
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            st = (entry / "ns/net").stat()
            owner = entry.stat().st_uid
            cgroups = (entry / "cgroup").read_text()
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if (
            (st.st_dev, st.st_ino) in netns
            or "/nflab-" in cgroups
            or (uid is not None and owner == uid)
            or (Path(argv[0]).name in DAEMON_NAMES and any(m in arg for m in markers for arg in argv))
        ):
            found.append(int(entry.name))
    return found


def kill_leftovers(paths: LabPaths, log: Log) -> str:
    """Whatever the daemons left behind (containers, shims, SSH sessions) dies here."""
    pids = lab_processes(paths)
    if not pids:
        return "none left"
    for pid in pids:
        log.write(f"SIGKILL {pid}: {_cmdline(pid)}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    try:
        wait_for("lab processes to exit", lambda: not lab_processes(paths), 15)
    except LabError:
        return f"{len(lab_processes(paths))} refuse to die: {lab_processes(paths)}"
    return f"{len(pids)} killed"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:200]
    except OSError:
        return "?"


def lab_mounts(paths: LabPaths) -> list[Path]:
    """Mounts under the lab's folders, and the socket folder bind-mounted into userlands of any cache dir."""
    roots = [paths.state, paths.run, paths.cache / "userland"]
    found = [
        m
        for m in userland.mount_points()
        if any(m == r or r in m.parents for r in roots) or str(m).endswith(str(paths.sockets))
    ]
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def unmount_all(paths: LabPaths, log: Log) -> str:
    """Deepest first, so an engine's own mounts go before the small-disk tmpfs under them; then any data-root tmpfs
    the journal names that was not among them (none is expected: the data roots are in the state dir)."""
    mounts = lab_mounts(paths)
    for point in mounts:
        result = run(["umount", str(point)], log, check=False)
        if result.returncode != 0:
            run(["umount", "--lazy", str(point)], log, check=False)
    mounts += [Path(p) for p in hosts.unmount_data_roots(paths, Journal(paths.journal), log)]
    left = lab_mounts(paths)
    if left:
        raise LabError(f"still mounted: {', '.join(map(str, left))}")
    return f"{len(mounts)} unmounted" if mounts else "none"


def remove_network(log: Log) -> str:
    names = network.lab_netns_names() + network.lab_links()
    network.remove_network(log)
    left = network.lab_netns_names() + network.lab_links()
    if left:
        raise LabError(f"could not remove {', '.join(left)}")
    return f"{len(names)} removed" if names else "none"


def remove_cgroups(log: Log) -> str:
    removed = 0
    for top in lab_cgroup_dirs():
        for folder in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            _rmdir(folder, log)
        removed += _rmdir(top, log)
    return f"{removed} removed" if removed else "none"


def _rmdir(folder: Path, log: Log) -> int:
    for attempt in range(50):
        try:
            folder.rmdir()
            return 1
        except FileNotFoundError:
            return 0
        except OSError as exc:  # EBUSY while the kernel finishes tearing down exited tasks
            if attempt == 49:
                log.write(f"cannot remove cgroup {folder}: {exc}")
                raise LabError(f"cannot remove cgroup {folder}: {exc}") from exc
            time.sleep(0.1)
    return 0


def remove_user(log: Log) -> str:
    hosts.remove_user(log)
    return "removed"


def remove_trust(log: Log) -> str:
    pki.untrust_ca(log)
    return "CA removed"


def remove_include() -> str:
    clientfiles.remove_include()
    return "removed"


def undo_journal(paths: LabPaths, log: Log) -> str:
    journal = Journal(paths.journal)
    userland.undo_binfmt(journal, log)
    for entry in reversed(journal.entries()):
        path = Path(entry.get("path", ""))
        if entry["kind"] == "created_file" and path.is_file() and path.stat().st_size == 0:
            path.unlink()
        elif entry["kind"] == "created_dir" and path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return f"{len(journal.entries())} undone"


def remove_files(paths: LabPaths, log: Log) -> str:
    userland.clean_userlands(paths, Journal(paths.journal), log)
    if paths.run.is_dir():
        shutil.rmtree(paths.run)
    if paths.state.is_dir():
        if not (paths.state / STATE_MARKER).exists() and any(paths.state.iterdir()):
            raise LabError(f"{paths.state} has no {STATE_MARKER} marker; not removing a folder the lab did not make")
        shutil.rmtree(paths.state)
    return f"{paths.state} and {paths.run} removed"


def anything_left(paths: LabPaths) -> list[str]:
    """What of a lab exists right now (empty list: nothing)."""
    left = []
    if paths.state.exists():
        left.append(str(paths.state))
    if paths.run.exists():
        left.append(str(paths.run))
    left += [f"netns {n}" for n in network.lab_netns_names()]
    left += [f"link {n}" for n in network.lab_links()]
    left += [f"cgroup {p}" for p in lab_cgroup_dirs()]
    if hosts.lab_uid() is not None:
        left.append("user builder")
    if pki.SYSTEM_CA.exists() or pki.ENGINE_CA.exists():
        left.append("lab CA")
    return left
