"""The steps of `up`, each a small function returning a short detail for its one line of output."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import clientfiles, hosts, network, pki, registry, userland
from .core import STATE_MARKER, Journal, LabError, LabPaths, Log, tail_file, wait_for
from .spec import BRIDGE, REGISTRY, Host, spec_of

LAB_DIR = Path(__file__).resolve().parent.parent
# The override exists to try the lab with a stand-in before/without the real artifact build.
ARTIFACTS_SCRIPT = Path(os.environ.get("NODEFLEET_LAB_ARTIFACTS_SCRIPT", LAB_DIR / "buildkit" / "build.sh"))
ARTIFACTS_TIMEOUT = 45 * 60

# binary -> where it comes from, for the message naming what is missing
REQUIRED = {
    "ip": "iproute2",
    "nsenter": "util-linux",
    "mount": "mount",
    "dockerd": "docker.io (from trixie)",
    "containerd": "containerd (with docker.io)",
    "runc": "runc (with docker.io)",
    "/usr/bin/docker": "docker-cli (with docker.io)",
    "/usr/sbin/sshd": "openssh-server",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "docker-registry": "docker-registry",
    "openssl": "openssl",
    "update-ca-certificates": "ca-certificates",
    "useradd": "passwd",
    "dpkg-deb": "dpkg",
    "apt-get": "apt",
    "ldd": "libc-bin",
    "bash": "bash",
}
# The names both bookworm's and trixie's qemu-user-static ship (bookworm's has no plain qemu-aarch64); the binfmt
# rules point at them through /usr/libexec/qemu-binfmt.
REQUIRED_EMULATED = {"qemu-aarch64-static": "qemu-user-static", "qemu-arm-static": "qemu-user-static"}


class UpRun:
    """State shared by the steps of one `up`."""

    def __init__(self, paths: LabPaths, lab_hosts: list[Host]) -> None:
        self.paths = paths
        self.hosts = lab_hosts
        self.journal = Journal(paths.journal)
        self.artifacts: subprocess.Popen[bytes] | None = None
        self.user: tuple[int, int, int] | None = None

    @property
    def deb_arches(self) -> set[str]:
        return {str(h.platform.deb_arch) for h in self.hosts if h.platform.emulated}

    def steps(self) -> list[tuple[str, Callable[[Log], str]]]:
        return [
            ("prerequisites", self.prerequisites),
            ("binfmt", self.binfmt),
            ("userland", self.userland),
            ("artifacts", self.start_artifacts),
            ("pki", self.pki),
            ("ssh keys", self.ssh_keys),
            ("user", self.user_account),
            ("network", self.network),
            ("registry", self.registry),
            ("engines", self.engines),
            ("sshd", self.sshd),
            ("images", self.images),
            ("client files", self.client_files),
            ("verify", self.verify),
        ]

    # ---- steps ----

    def prerequisites(self, log: Log) -> str:
        wanted = dict(REQUIRED)
        if self.deb_arches:
            wanted.update(REQUIRED_EMULATED)
        missing = [f"{name} ({package})" for name, package in wanted.items() if not _have(name)]
        if missing:
            raise LabError(f"missing: {'; '.join(missing)}. Run lab/install-deps.sh")
        if not ARTIFACTS_SCRIPT.is_file():
            raise LabError(f"missing {ARTIFACTS_SCRIPT} (builds the BuildKit and busybox artifacts)")
        log.write("all prerequisites found")
        return f"{len(self.hosts)} hosts ({spec_of(self.hosts)})"

    def make_state_dir(self) -> None:
        self.paths.state.mkdir(parents=True, exist_ok=True)
        self.paths.state.chmod(0o755)
        (self.paths.state / STATE_MARKER).write_text("made by nodefleet lab/labctl.py; removed by `down`\n")
        for folder in (self.paths.logs, self.paths.run, self.paths.sockets):
            folder.mkdir(parents=True, exist_ok=True)

    def binfmt(self, log: Log) -> str:
        if not self.deb_arches:
            return "not needed"
        return userland.ensure_binfmt(self.deb_arches, self.journal, log)

    def userland(self, log: Log) -> str:
        built = userland.ensure_userlands(self.paths, self.deb_arches, log)
        if not self.deb_arches:
            return "not needed"
        return f"built {', '.join(built)}" if built else f"cached ({', '.join(sorted(self.deb_arches))})"

    def start_artifacts(self, log: Log) -> str:
        """lab/buildkit/build.sh runs in the background while the hosts come up; `images` waits for it."""
        log_path = self.paths.logs / "artifacts.log"
        env = dict(os.environ, NODEFLEET_LAB_CACHE=str(self.paths.cache))
        with log_path.open("ab") as out:
            self.artifacts = subprocess.Popen(
                ["bash", str(ARTIFACTS_SCRIPT)], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=env, start_new_session=True,
            )  # fmt: skip
        log.write(f"started {ARTIFACTS_SCRIPT} pid {self.artifacts.pid}, log {log_path}")
        return "started in background"

    def stop_artifacts(self) -> None:
        if self.artifacts is not None and self.artifacts.poll() is None:
            os.killpg(self.artifacts.pid, 15)
            try:
                self.artifacts.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.artifacts.pid, 9)
                self.artifacts.wait(timeout=10)

    def pki(self, log: Log) -> str:
        pki.make_ca_and_registry_cert(self.paths, log)
        pki.trust_ca(self.paths, self.journal, log)
        return "CA trusted by the machine and the engines"

    def ssh_keys(self, log: Log) -> str:
        clientfiles.make_lab_key(self.paths, log)
        for host in self.hosts:
            hosts.make_host_key(self.paths, host, log)
        return f"lab key + {len(self.hosts)} host keys"

    def user_account(self, log: Log) -> str:
        self.user = hosts.ensure_user(self.paths, log)
        return f"builder uid {self.user[0]}, group {hosts.DOCKER_GROUP} gid {self.user[2]}"

    def network(self, log: Log) -> str:
        network.create_bridge(log)
        for host in self.hosts:
            network.create_host_network(host, log)
        return f"bridge {BRIDGE} + {len(self.hosts)} namespaces"

    def registry(self, log: Log) -> str:
        registry.start(self.paths, log)
        return f"https://{REGISTRY}"

    def engines(self, log: Log) -> str:
        small = [hosts.mount_data_root(self.paths, h, self.journal, log) for h in self.hosts if h.data_root_size]
        for host in self.hosts:
            hosts.start_engine(self.paths, host)
        timeout = hosts.ENGINE_READY_TIMEOUT + 3 * len(self.hosts)
        _parallel(self.hosts, lambda h: hosts.wait_engine(self.paths, h, timeout))
        return "; ".join([f"{len(self.hosts)} engines answer", *small])

    def sshd(self, log: Log) -> str:
        assert self.user is not None
        uid, gid, docker_gid = self.user
        hosts.ensure_privsep_dir(self.journal)
        for arch in sorted(self.deb_arches):
            rootfs = self.paths.userland(arch)
            data_roots = [hosts.data_root(self.paths, h) for h in self.hosts]
            userland.prepare_for_sessions(self.paths, rootfs, (uid, gid), docker_gid, data_roots, self.journal, log)
        authorized = self.paths.state / "authorized_keys"
        for host in self.hosts:
            hosts.write_sshd_config(self.paths, host, authorized)
            hosts.start_sshd(self.paths, host, log)
        _parallel(self.hosts, lambda h: hosts.wait_sshd(self.paths, h))
        return f"{len(self.hosts)} sshd answer"

    def images(self, log: Log) -> str:
        assert self.artifacts is not None
        proc = self.artifacts
        wait_for("lab/buildkit/build.sh", lambda: proc.poll() is not None, ARTIFACTS_TIMEOUT)
        if proc.returncode != 0:
            log.write(tail_file(self.paths.logs / "artifacts.log", 30), "artifacts.log: ")
            raise LabError(f"{ARTIFACTS_SCRIPT} exited {proc.returncode} (its output: artifacts.log)")
        return registry.push_lab_images(self.paths, log)

    def client_files(self, log: Log) -> str:
        clientfiles.write_known_hosts(self.paths, self.hosts)
        clientfiles.write_ssh_config(self.paths)
        clientfiles.add_include(self.paths, self.journal)
        clientfiles.write_buildkitd_toml(self.paths)
        inventory = clientfiles.write_inventory(self.paths, self.hosts)
        log.write(f"wrote {inventory}")
        return str(inventory)

    def verify(self, log: Log) -> str:
        """Log in to every host the way buildx will (plain ssh through root's config) and ask uname + engine."""
        _parallel(self.hosts, lambda h: check_session(h, log))
        for host in self.hosts:
            if not hosts.data_root_ok(self.paths, host):
                raise LabError(f"{host.name}: its data root is not the lab's tmpfs of {host.data_root_size} bytes")
        clientfiles.write_lab_json(self.paths, self.hosts)
        return f"{len(self.hosts)} hosts answer over ssh"


def check_session(host: Host, log: Log) -> None:
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", host.address,
            "uname -m; docker version --format '{{.Server.Version}}'"]  # fmt: skip
    log.write(f"$ {shlex.join(argv)}", f"{host.name}: ")
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise LabError(f"{host.name}: ssh {host.address} did not answer within 60s") from None
    log.write(result.stdout + result.stderr, f"{host.name}: ")
    lines = result.stdout.split()
    if result.returncode != 0 or len(lines) < 2:
        raise LabError(f"{host.name}: ssh {host.address} failed: {result.stderr.strip()[-300:]}")
    if lines[0] != host.platform.uname:
        raise LabError(f"{host.name}: uname -m says {lines[0]}, expected {host.platform.uname}")


def _parallel(items: list[Host], work: Callable[[Host], None]) -> None:
    """Run work(item) for all items at once; after all finished, raise what failed."""
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(items)))) as pool:
        futures = [pool.submit(work, item) for item in items]
        errors = [error for error in (f.exception() for f in futures) if error is not None]
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise LabError("; ".join(str(e) for e in errors))


def _have(name: str) -> bool:
    return Path(name).is_file() if name.startswith("/") else shutil.which(name) is not None
