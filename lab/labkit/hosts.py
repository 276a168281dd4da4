"""What runs on each lab host: the SSH user, its Docker Engine and its OpenSSH server, each with its own files."""

from __future__ import annotations

import dataclasses
import grp
import http.client
import os
import pwd
import socket
from pathlib import Path

from .core import Journal, LabError, LabPaths, Log, daemon_alive, load_daemon, run, start_daemon, stop_daemon, wait_for
from .network import ssh_banner
from .spec import LAB_USER, Host, Platform, format_size

DOCKER_GROUP = "nflab-docker"
USER_MARK = "nodefleet-lab"  # the account's comment: how `down` knows the lab made it
ENGINE_READY_TIMEOUT = 60
SSHD_READY_TIMEOUT = 20


# ---- the SSH user ----


def ensure_user(paths: LabPaths, log: Log) -> tuple[int, int, int]:
    """Create group nflab-docker and user `builder` (key login only). Returns (uid, gid, docker gid)."""
    try:
        grp.getgrnam(DOCKER_GROUP)
    except KeyError:
        run(["groupadd", "--system", DOCKER_GROUP], log)
    try:
        existing = pwd.getpwnam(LAB_USER)
    except KeyError:
        existing = None
    if existing is not None and existing.pw_gecos != USER_MARK:
        raise LabError(f"a user named {LAB_USER!r} exists and was not made by the lab; remove or rename it")
    if existing is None:
        run(["useradd", "--system", "--user-group", "--comment", USER_MARK, "--home-dir", str(paths.home),
             "--no-create-home", "--shell", "/bin/sh", "--groups", DOCKER_GROUP, LAB_USER], log)  # fmt: skip
    # A locked account ("!") refuses key logins too; "*" means "no password" without locking.
    run(["usermod", "--password", "*", "--home", str(paths.home), "--groups", DOCKER_GROUP, LAB_USER], log)
    entry = pwd.getpwnam(LAB_USER)
    paths.home.mkdir(parents=True, exist_ok=True)
    os.chown(paths.home, entry.pw_uid, entry.pw_gid)
    paths.home.chmod(0o750)
    return entry.pw_uid, entry.pw_gid, grp.getgrnam(DOCKER_GROUP).gr_gid


def remove_user(log: Log) -> None:
    try:
        entry = pwd.getpwnam(LAB_USER)
    except KeyError:
        entry = None
    if entry is not None and entry.pw_gecos == USER_MARK:
        run(["userdel", LAB_USER], log, check=False)
    try:
        grp.getgrnam(DOCKER_GROUP)
    except KeyError:
        return
    run(["groupdel", DOCKER_GROUP], log, check=False)


def lab_uid() -> int | None:
    try:
        entry = pwd.getpwnam(LAB_USER)
    except KeyError:
        return None
    return entry.pw_uid if entry.pw_gecos == USER_MARK else None


# ---- Docker Engine ----


def engine_socket(paths: LabPaths, host: Host) -> Path:
    return paths.sockets / f"{host.name}.sock"


def engine_key(host: Host) -> str:
    return f"{host.name}.dockerd"


def data_root(paths: LabPaths, host: Host) -> Path:
    return paths.host_dir(host.name) / "docker"


# ---- a small disk: the engine's data root on a tmpfs of a fixed size (`up --small-disk HOST=SIZE`) ----


def data_root_source(host: Host) -> str:
    """The tmpfs's source name in /proc/self/mountinfo: how the lab knows a mount is the one it made."""
    return f"nflab-{host.name}"


def mount_at(point: Path) -> tuple[str, str] | None:
    """(fstype, source) of the top mount at exactly `point` in this mount namespace, or None."""
    found = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        target = _unescape(before.split()[4])
        if Path(target) == point:
            fstype, source = after.split()[:2]
            found = (fstype, _unescape(source))  # the last one listed is on top
    return found


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mount_data_root(paths: LabPaths, host: Host, journal: Journal, log: Log) -> str:
    """Mount a tmpfs of the host's data_root_size at its data root, before its dockerd starts. Refuses to mount over
    anything but an empty folder; a folder already holding the lab's own tmpfs of that size is kept."""
    size = host.data_root_size
    if size is None:
        return ""
    point = data_root(paths, host)
    current = mount_at(point)
    if current == ("tmpfs", data_root_source(host)) and filesystem_size(point) == size:
        return f"{host.name} data root: tmpfs {format_size(size)} (already mounted)"
    if current is not None:
        raise LabError(f"{point} is already a mount ({current[0]} {current[1]}) the lab did not make for this size")
    point.mkdir(parents=True, exist_ok=True)
    if any(point.iterdir()):
        raise LabError(f"{point} is not empty: not mounting a tmpfs over files")
    # mode 0710 as dockerd makes its data root; it sets the owner itself.
    run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0710", data_root_source(host), str(point)], log)
    journal.record("mounted_data_root", path=str(point), source=data_root_source(host))
    actual = filesystem_size(point)
    if actual != size:
        raise LabError(f"{point}: the tmpfs holds {actual} bytes, asked for {size}")
    return f"{host.name} data root: tmpfs {format_size(size)}"


def filesystem_size(point: Path) -> int:
    stat = os.statvfs(point)
    return stat.f_blocks * stat.f_frsize


def data_root_ok(paths: LabPaths, host: Host) -> bool:
    """A host without a small disk has nothing to check; one with it needs the lab's tmpfs of that size there."""
    if host.data_root_size is None:
        return True
    point = data_root(paths, host)
    try:
        return mount_at(point) == ("tmpfs", data_root_source(host)) and filesystem_size(point) == host.data_root_size
    except OSError:
        return False


def unmount_data_roots(paths: LabPaths, journal: Journal, log: Log) -> list[str]:
    """Unmount the data-root tmpfs mounts the journal says the lab made (gone already: fine). Only a mount that is
    still the lab's (a tmpfs with the lab's source name) is touched."""
    done = []
    for entry in journal.entries("mounted_data_root"):
        point = Path(entry["path"])
        if mount_at(point) != ("tmpfs", entry["source"]):
            continue
        result = run(["umount", str(point)], log, check=False)
        if result.returncode != 0:
            run(["umount", "--lazy", str(point)], log, check=False)
        done.append(str(point))
    return done


def start_engine(paths: LabPaths, host: Host) -> None:
    """dockerd inside the host's netns (nsenter, not `ip netns exec`, which hides the cgroup mounts)."""
    data = data_root(paths, host)
    exec_root = paths.host_run_dir(host.name) / "exec"
    for folder in (data, exec_root, paths.sockets):
        folder.mkdir(parents=True, exist_ok=True)
    config = paths.host_dir(host.name) / "daemon.json"
    config.write_text("{}\n")  # never read the machine's /etc/docker/daemon.json
    argv = [
        "dockerd",
        f"--config-file={config}",
        f"--data-root={data}",
        f"--exec-root={exec_root}",
        f"--pidfile={paths.host_run_dir(host.name) / 'dockerd.pid'}",
        f"--host=unix://{engine_socket(paths, host)}",
        f"--group={DOCKER_GROUP}",
        f"--cgroup-parent=nflab-{host.name}",
        "--ip6tables=false",
    ]
    log_path = paths.logs / f"{host.name}-dockerd.log"
    start_daemon(paths, engine_key(host), argv, log_path, netns=host.netns)


def wait_engine(paths: LabPaths, host: Host, timeout: float = ENGINE_READY_TIMEOUT) -> None:
    record = load_daemon(paths, engine_key(host))
    try:
        wait_for(
            f"{host.name} engine", lambda: engine_answers(paths, host), timeout, alive=lambda: daemon_alive(record)
        )
    except LabError as exc:
        raise LabError(f"{exc} (log: {paths.logs / f'{host.name}-dockerd.log'})") from exc


def engine_answers(paths: LabPaths, host: Host) -> bool:
    """GET /_ping on the engine's unix socket."""
    conn = _UnixHTTPConnection(str(engine_socket(paths, host)), timeout=2)
    try:
        conn.request("GET", "/_ping")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def stop_engine(paths: LabPaths, host: Host) -> None:
    """SIGTERM lets dockerd stop its containers and its containerd; SIGKILL after 40 s."""
    stop_daemon(paths, engine_key(host), timeout=40)


def engine_running(paths: LabPaths, host: Host) -> bool:
    return daemon_alive(load_daemon(paths, engine_key(host)))


# ---- OpenSSH server ----


def sshd_key(host: Host) -> str:
    return f"{host.name}.sshd"


def host_key_path(paths: LabPaths, host: Host) -> Path:
    return paths.host_dir(host.name) / "ssh_host_ed25519_key"


def make_host_key(paths: LabPaths, host: Host, log: Log) -> None:
    key = host_key_path(paths, host)
    key.parent.mkdir(parents=True, exist_ok=True)
    for old in (key, key.with_suffix(".pub")):
        old.unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{host.name}", "-f", str(key)], log)


def replace_host_key(paths: LabPaths, host: Host, log: Log) -> None:
    """A new host key; the first one is kept aside so `rekey-restore` can put it back."""
    key = host_key_path(paths, host)
    original = key.with_name(key.name + ".orig")
    if not original.exists():
        key.rename(original)
        key.with_suffix(".pub").rename(original.with_name(original.name + ".pub"))
    make_host_key(paths, host, log)


def restore_host_key(paths: LabPaths, host: Host) -> None:
    key = host_key_path(paths, host)
    original = key.with_name(key.name + ".orig")
    if original.exists():
        original.replace(key)
        original.with_name(original.name + ".pub").replace(key.with_suffix(".pub"))


def host_public_key(paths: LabPaths, host: Host) -> str:
    """`ssh-ed25519 AAAA...` without the comment, for known_hosts."""
    return " ".join(host_key_path(paths, host).with_suffix(".pub").read_text().split()[:2])


def write_sshd_config(paths: LabPaths, host: Host, authorized_keys: Path) -> Path:
    env = [f"DOCKER_HOST=unix://{engine_socket(paths, host)}"]
    if host.platform.qemu_cpu:
        env.append(f"QEMU_CPU={host.platform.qemu_cpu}")  # qemu-arm's default CPU would say armv8
    lines = [
        f"ListenAddress {host.address}:22",
        f"HostKey {host_key_path(paths, host)}",
        f"PidFile {paths.host_run_dir(host.name) / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized_keys}",
        f"AllowUsers {LAB_USER}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin no",
        "UsePAM no",
        "PrintMotd no",
        "PrintLastLog no",
        "LogLevel VERBOSE",
        # buildx opens a new ssh connection for every dial; many hosts x parallel tests need room.
        "MaxStartups 200:30:400",
        "MaxSessions 200",
        f"SetEnv {' '.join(env)}",
    ]
    if host.platform.emulated:
        lines.append(f"ChrootDirectory {paths.userland(str(host.platform.deb_arch))}")
    config = paths.host_dir(host.name) / "sshd_config"
    config.write_text("\n".join(lines) + "\n")
    return config


def ensure_privsep_dir(journal: Journal) -> None:
    """sshd refuses to start without /run/sshd (normally made by the service unit, absent here)."""
    privsep = Path("/run/sshd")
    if not privsep.is_dir():
        privsep.mkdir(mode=0o755)
        journal.record("created_dir", path=str(privsep))


def start_sshd(paths: LabPaths, host: Host, log: Log) -> None:
    config = paths.host_dir(host.name) / "sshd_config"
    paths.host_run_dir(host.name).mkdir(parents=True, exist_ok=True)
    run(["/usr/sbin/sshd", "-t", "-f", str(config)], log, prefix=f"{host.name}: ")
    log_path = paths.logs / f"{host.name}-sshd.log"
    argv = ["/usr/sbin/sshd", "-D", "-f", str(config), "-E", str(log_path)]
    start_daemon(paths, sshd_key(host), argv, paths.logs / f"{host.name}-sshd.out", netns=host.netns)


def wait_sshd(paths: LabPaths, host: Host, timeout: float = SSHD_READY_TIMEOUT) -> None:
    record = load_daemon(paths, sshd_key(host))
    wait_for(f"{host.name} sshd", lambda: ssh_banner(host.address), timeout, alive=lambda: daemon_alive(record))


def stop_sshd(paths: LabPaths, host: Host) -> None:
    stop_daemon(paths, sshd_key(host), timeout=10)


def sshd_running(paths: LabPaths, host: Host) -> bool:
    return daemon_alive(load_daemon(paths, sshd_key(host)))


def _authorized_keys(paths: LabPaths, host: Host) -> Path:
    """The AuthorizedKeysFile the host's sshd config names."""
    config = paths.host_dir(host.name) / "sshd_config"
    for line in config.read_text().splitlines():
        if line.startswith("AuthorizedKeysFile "):
            return Path(line.split(" ", 1)[1])
    raise LabError(f"{config} names no AuthorizedKeysFile")


def reinstall_as(paths: LabPaths, host: Host, platform: Platform, log: Log) -> None:
    """The host reinstalled as a machine of another platform at the same address: a new SSH host key (known_hosts
    keeps the old one) and sessions in that platform's userland. Its engine stays (empty it to make it fresh).
    `reinstall_restore` puts the host back as it was."""
    if platform.emulated and not paths.userland(str(platform.deb_arch)).is_dir():
        raise LabError(f"no {platform.platform} userland in {paths.userland(str(platform.deb_arch))}: "
                       f"bring the lab up with a {platform.platform} host")  # fmt: skip
    authorized = _authorized_keys(paths, host)
    replace_host_key(paths, host, log)
    write_sshd_config(paths, dataclasses.replace(host, platform=platform), authorized)


def reinstall_restore(paths: LabPaths, host: Host) -> None:
    authorized = _authorized_keys(paths, host)
    restore_host_key(paths, host)
    write_sshd_config(paths, host, authorized)
