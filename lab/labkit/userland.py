"""Arm session userlands made from Debian's arm packages, run under qemu-user binfmt, and those binfmt entries.

An arm host's sshd (native) chroots its sessions into one of these folders, so `uname -m` and every command in
the session are emulated arm, while the Docker CLI in it is a native x86_64 binary (Go under qemu can hang) that
talks to the host's native engine through the socket folder bind-mounted at the same path as outside.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

from .core import Journal, LabError, LabPaths, Log, run

LAYOUT_VERSION = "1"  # bump when the userland layout changes, so cached ones are rebuilt
PACKAGES = ["busybox-static", "libc6", "libc-bin"]  # libc-bin: getconf (userland width), ldd
QEMU_ENTRY = {"arm64": "qemu-aarch64", "armhf": "qemu-arm", "armel": "qemu-arm"}
BINFMT = Path("/proc/sys/fs/binfmt_misc")
DOCKER_CLI = Path("/usr/bin/docker")
APT_SETUP = Path(__file__).resolve().parent.parent / "apt-setup.sh"
DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}


# ---- binfmt ----


def ensure_binfmt(deb_arches: set[str], journal: Journal, log: Log) -> str:
    """Register (or enable) the qemu-user entries the userlands need; the F flag makes them work in chroots."""
    if not (BINFMT / "register").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], log)
        journal.record("mounted", path=str(BINFMT))
    done = []
    for name in sorted({QEMU_ENTRY[arch] for arch in deb_arches}):
        entry = BINFMT / name
        if not entry.exists():
            (BINFMT / "register").write_text(binfmt_rule(name))
            journal.record("binfmt_registered", name=name)
            done.append(f"registered {name}")
        elif entry.read_text().splitlines()[0] == "disabled":
            entry.write_text("1")
            journal.record("binfmt_enabled", name=name)
            done.append(f"enabled {name}")
        flags = next((line for line in entry.read_text().splitlines() if line.startswith("flags:")), "")
        if "F" not in flags.split(":", 1)[-1]:
            raise LabError(f"binfmt entry {name} lacks the F flag, so it cannot run inside chroots ({flags})")
        log.write(entry.read_text(), f"{name}: ")
    return ", ".join(done) or "already registered"


def binfmt_rule(name: str) -> str:
    """The registration line Debian's qemu-user-binfmt ships for systemd-binfmt (used here without systemd)."""
    for directory in ("/usr/lib/binfmt.d", "/etc/binfmt.d"):
        path = Path(directory) / f"{name}.conf"
        if path.is_file():
            lines = [line for line in path.read_text().splitlines() if line.startswith(":")]
            if lines:
                return lines[0]
    raise LabError(f"no binfmt rule for {name} in /usr/lib/binfmt.d (install qemu-user-binfmt / qemu-user-static)")


def undo_binfmt(journal: Journal, log: Log) -> None:
    for entry in reversed(journal.entries()):
        path = BINFMT / entry.get("name", "-")
        if entry["kind"] == "binfmt_registered" and path.exists():
            path.write_text("-1")
            log.write(f"unregistered {path.name}")
        elif entry["kind"] == "binfmt_enabled" and path.exists():
            path.write_text("0")
            log.write(f"disabled {path.name}")
        elif entry["kind"] == "mounted" and entry["path"] == str(BINFMT) and (BINFMT / "register").exists():
            run(["umount", str(BINFMT)], log, check=False)


# ---- userland folders (cached) ----


def stamp_text(deb_arch: str) -> str:
    st = DOCKER_CLI.stat()
    return f"layout {LAYOUT_VERSION} arch {deb_arch} docker-cli {st.st_size}:{st.st_mtime_ns}\n"


def ensure_userlands(paths: LabPaths, deb_arches: set[str], log: Log) -> list[str]:
    """Build the userlands whose cached copy is missing or stale; return the architectures built now."""
    stale = sorted(arch for arch in deb_arches if not _is_current(paths, arch))
    if not stale:
        return []
    debs = download_packages(paths, stale, log)
    for arch in stale:
        build_userland(paths, arch, debs[arch], log)
    return stale


def _is_current(paths: LabPaths, deb_arch: str) -> bool:
    stamp = paths.userland(deb_arch) / ".nflab-stamp"
    return stamp.is_file() and stamp.read_text() == stamp_text(deb_arch)


def build_userland(paths: LabPaths, deb_arch: str, debs: list[Path], log: Log) -> None:
    """Unpack into a staging folder, then swap it in, so a half-built userland is never used."""
    rootfs = paths.userland(deb_arch)
    staging = rootfs.with_name(rootfs.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    staging.chmod(0o755)
    for deb in debs:
        run(["dpkg-deb", "-x", str(deb), str(staging)], log)
    install_busybox_applets(staging, log)
    install_native_docker_cli(staging, log)
    make_base_files(staging)
    (staging / ".nflab-stamp").write_text(stamp_text(deb_arch))
    if rootfs.exists():
        if is_mount_point_under(rootfs):
            raise LabError(f"{rootfs} is stale but still has mounts; run `labctl.py down` first")
        shutil.rmtree(rootfs)
    staging.rename(rootfs)


def download_packages(paths: LabPaths, deb_arches: list[str], log: Log) -> dict[str, list[Path]]:
    """One `apt-get download` for all architectures (apt's start-up dominates the time)."""
    foreign = subprocess.run(["dpkg", "--print-foreign-architectures"], capture_output=True, text=True, check=False)
    if not set(deb_arches) <= set(foreign.stdout.split()):
        run(["bash", str(APT_SETUP)], log, timeout=600)
    folder = paths.cache / "debs"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    wanted = [f"{name}:{arch}" for arch in deb_arches for name in PACKAGES]
    run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", *wanted], log, cwd=folder, timeout=600)
    found = {arch: sorted(folder.glob(f"*_{arch}.deb")) for arch in deb_arches}
    for arch, debs in found.items():
        if len(debs) != len(PACKAGES):
            raise LabError(f"apt-get download gave {len(debs)} packages for {arch}, expected {len(PACKAGES)}")
    return found


def install_busybox_applets(rootfs: Path, log: Log) -> None:
    """Link every applet to busybox; running the arm binary here already goes through binfmt."""
    busybox = next((p for p in (rootfs / "bin/busybox", rootfs / "usr/bin/busybox") if p.is_file()), None)
    if busybox is None:
        raise LabError(f"busybox-static did not unpack a busybox binary into {rootfs}")
    inside = "/" + str(busybox.relative_to(rootfs))
    applets = run([str(busybox), "--list-full"], log, timeout=60).stdout.split()
    for applet in applets:
        link = rootfs / applet
        if os.path.lexists(link):
            continue  # a real program from another package (getconf, ldd, ...) wins
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(inside)
    if not os.path.lexists(rootfs / "bin/sh"):
        raise LabError("busybox has no sh applet")


def install_native_docker_cli(rootfs: Path, log: Log) -> None:
    """Debian's x86_64 docker CLI and exactly the shared libraries it loads."""
    if not DOCKER_CLI.is_file():
        raise LabError(f"{DOCKER_CLI} missing (Debian package docker-cli)")
    target = rootfs / "usr/bin/docker"
    target.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(target):
        target.unlink()
    shutil.copy2(DOCKER_CLI, target)
    for library in shared_libraries(DOCKER_CLI, log):
        copy = rootfs / library.relative_to("/")
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(library.resolve(), copy)


def shared_libraries(binary: Path, log: Log) -> list[Path]:
    out = run(["ldd", str(binary)], log).stdout
    found = []
    for line in out.splitlines():
        words = line.split()
        if "=>" in words and len(words) > words.index("=>") + 1 and words[words.index("=>") + 1].startswith("/"):
            found.append(Path(words[words.index("=>") + 1]))
        elif words and words[0].startswith("/"):
            found.append(Path(words[0]))  # the dynamic loader
    return found


def make_base_files(rootfs: Path) -> None:
    for name in ("etc", "tmp", "proc", "root", "dev", "run"):
        (rootfs / name).mkdir(exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    (rootfs / "root").chmod(0o700)
    (rootfs / "etc/nsswitch.conf").write_text("passwd: files\ngroup: files\nhosts: files\n")
    (rootfs / "etc/hosts").write_text("127.0.0.1 localhost\n")
    for name, (major, minor) in DEVICES.items():
        node = rootfs / "dev" / name
        if not node.exists():
            os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
            node.chmod(0o666)


# ---- per-`up` preparation of a userland for the lab's user ----


def prepare_for_sessions(
    paths: LabPaths,
    rootfs: Path,
    user: tuple[int, int],
    docker_gid: int,
    data_roots: list[Path],
    journal: Journal,
    log: Log,
) -> None:
    """Accounts with the machine's ids, the user's home, the hosts' docker sockets at the same path, /proc
    (a real host has one: nodefleet reads the boot id there), and the engines' data roots at the same path (a real
    host's session sees the disk `docker info` names: `df` of it tells its size and free space)."""
    journal.record("prepared_userland", path=str(rootfs))
    uid, gid = user
    (rootfs / "etc/passwd").write_text(
        f"root:x:0:0:root:/root:/bin/sh\nbuilder:x:{uid}:{gid}:nodefleet-lab:{paths.home}:/bin/sh\n"
    )
    (rootfs / "etc/group").write_text(f"root:x:0:\nbuilder:x:{gid}:\nnflab-docker:x:{docker_gid}:builder\n")
    home = rootfs / paths.home.relative_to("/")
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, uid, gid)
    sockets = rootfs / paths.sockets.relative_to("/")
    sockets.mkdir(parents=True, exist_ok=True)
    if not os.path.ismount(sockets):
        run(["mount", "--bind", str(paths.sockets), str(sockets)], log)
    proc = rootfs / "proc"
    if not os.path.ismount(proc):
        run(["mount", "-t", "proc", "proc", str(proc)], log)
    for data_root in data_roots:
        inside = rootfs / data_root.relative_to("/")
        inside.mkdir(parents=True, exist_ok=True)
        if not os.path.ismount(inside):
            # Not recursive, and private: the engine's own later mounts (containers) do not show up in here.
            run(["mount", "--bind", str(data_root), str(inside)], log)
            run(["mount", "--make-private", str(inside)], log)


def is_mount_point_under(folder: Path) -> bool:
    return any(mount == folder or folder in mount.parents for mount in mount_points())


def mount_points() -> list[Path]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        points.append(Path(point))
    return points


def clean_userlands(paths: LabPaths, journal: Journal, log: Log) -> None:
    """Remove what `prepare_for_sessions` put into the userlands (mounts are gone by now): those the journal
    names (whatever cache dir `up` used) and those in this cache dir."""
    base = paths.cache / "userland"
    roots = {Path(entry["path"]) for entry in journal.entries("prepared_userland")}
    roots |= set(base.iterdir()) if base.is_dir() else set()
    for rootfs in sorted(roots):
        if not (rootfs / ".nflab-stamp").exists():
            continue
        for made in (paths.home, paths.sockets, paths.state / "hosts"):
            inside = rootfs / made.relative_to("/")
            if inside.is_dir() and not is_mount_point_under(inside):
                shutil.rmtree(inside)
                log.write(f"removed {inside}")
