"""The shell scripts nodefleet runs to learn about a host and its node (facts, BuildKit health, the quick check
before a build), and the pure functions that parse what they print."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass

from nodefleet.platforms import UnknownMachineError, normalize_platform, platform_for_machine

# POSIX sh that also runs under busybox. Each fact is one `key=value` line; docker's own errors are kept
# (one line each) so the user sees why the engine is unusable. Every command is a process to start, which is slow
# on a small board or an emulated userland: `docker version` answers for the engine, `set --` splits df's output,
# and the boot id is read by the shell itself. `docker info` costs several times `docker version` (the CLI starts
# every CLI plugin for its metadata, and the engine runs its runtimes for their versions): it is asked only for the
# engine's data root, and only when the shell does not have it in `container_root` (node_health_script sets it
# from the node's state volume). `@KNOWN_BOOT@` is replaced by facts_script.
_FACTS_TEMPLATE = r"""
set -f
nl='
'
boot=
read -r boot 2>/dev/null </proc/sys/kernel/random/boot_id
echo "boot_id=$boot"
if [ -z "$boot" ] || [ "$boot" != @KNOWN_BOOT@ ]; then
  echo "machine=$(uname -m 2>/dev/null)"
  bits=$(getconf LONG_BIT 2>/dev/null)
  if [ -z "$bits" ]; then
    case "$(od -An -tx1 -j4 -N1 /bin/sh 2>/dev/null | tr -d ' ')" in 01) bits=32;; 02) bits=64;; esac
  fi
  echo "userland_bits=$bits"
fi
if [ -r /etc/os-release ]; then . /etc/os-release; echo "os=${PRETTY_NAME:-$ID}"; else echo "os=$(uname -s)"; fi
root=/
if command -v docker >/dev/null 2>&1; then
  echo "docker_cli=yes"
  # An engine that does not answer leaves the version empty (and its error on stderr).
  out=$(docker version --format 'server_version={{.Server.Version}}' 2>&1)
  version=
  case "$out" in *server_version=*) version=${out#*server_version=}; version=${version%%$nl*};; esac
  if [ -n "$version" ]; then
    echo "server_version=$version"
    root=${container_root:-$(docker info --format '{{.DockerRootDir}}' 2>/dev/null)}
    echo "docker_root=$root"
    [ -d "$root" ] || root=/
  else
    echo "docker_error=$(printf '%s\n' "$out" | grep -v -e '^server_version=' | grep . | tail -n 1)"
  fi
else
  echo "docker_cli=no"
fi
set -- $(df -Pk "$root" 2>/dev/null)
echo "disk_free_kb=${11}"
"""
_BOOT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def facts_script(known_boot: str | None = None) -> str:
    """The script printing a host's facts. `known_boot` is a boot id whose machine and userland width the caller
    has: a host still in that boot prints only its boot id for them, sparing `uname` and `getconf` (two processes,
    each tens of milliseconds where the userland is emulated). A CPU does not change without a reboot."""
    known = known_boot if known_boot and _BOOT_ID.fullmatch(known_boot) else ""
    return _FACTS_TEMPLATE.replace("@KNOWN_BOOT@", shlex.quote(known))


@dataclass(frozen=True)
class HostFacts:
    """What a host is and whether its Docker engine is usable by the SSH user."""

    machine: str
    userland_bits: int | None
    os: str
    docker_cli: bool
    engine_version: str | None
    engine_error: str | None
    disk_free_bytes: int | None
    boot_id: str | None = None

    @property
    def platform(self) -> str | None:
        """The OCI platform of the CPU and userland, or None when the machine is unknown (or was not asked)."""
        try:
            return platform_for_machine(self.machine, self.userland_bits) if self.machine else None
        except UnknownMachineError:
            return None

    @property
    def engine_usable(self) -> bool:
        """True when the SSH user can talk to a running engine."""
        return self.engine_version is not None

    def engine_problem(self) -> str | None:
        """One line saying what is wrong with the engine and how to fix it, or None when it is usable."""
        if not self.docker_cli:
            return "Docker is not installed (install the engine, e.g. with the playbook in ansible/)"
        if self.engine_version is not None:
            return None
        error = self.engine_error or "no answer from the engine"
        if "permission denied" in error.lower():
            return f"the SSH user cannot use the Docker engine ({error}); add it to the docker group"
        if "cannot connect" in error.lower() or "daemon running" in error.lower():
            return f"the Docker engine is not running ({error}); start it (systemctl start docker)"
        return f"the Docker engine is unusable: {error}"


def parse_facts(output: str) -> HostFacts:
    """Turn facts_script's output into HostFacts; unknown lines are ignored."""
    values: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and key.strip() not in values:
            values[key.strip()] = value.strip()
    bits_text = values.get("userland_bits", "")
    disk = values.get("disk_free_kb", "")
    boot = values.get("boot_id", "")
    return HostFacts(
        machine=values.get("machine", ""),
        userland_bits=int(bits_text) if bits_text in {"32", "64"} else None,
        os=values.get("os", ""),
        docker_cli=values.get("docker_cli") == "yes",
        engine_version=values.get("server_version") or None,
        engine_error=values.get("docker_error") or None,
        disk_free_bytes=int(disk) * 1024 if disk.isdigit() else None,
        boot_id=boot if _BOOT_ID.fullmatch(boot) else None,
    )


_STATE_DIR = "/var/lib/buildkit"  # where the docker-container driver mounts a node's state volume
INSPECT_FORMAT = (
    "{{.State.Status}} {{.Id}} {{.State.StartedAt}} {{.Config.Image}} "
    f'{{{{range .Mounts}}}}{{{{if eq .Destination "{_STATE_DIR}"}}}}{{{{.Source}}}}{{{{end}}}}{{{{end}}}}'
)


def node_health_script(container: str, known: str | None = None) -> str:
    """Shell script reporting a BuildKit container's state and instance, and BuildKit's version and worker platforms.

    Both questions go to the running daemon through buildctl: `buildkitd --version` would start a second daemon
    binary, which takes over a second where BuildKit is emulated (BuildKit before v0.11, without `buildctl debug
    info`, falls back to it). `known` is the instance ("<id> <started at>") whose answers the caller already has: a
    container that is still that instance runs the same image, so BuildKit is not asked again (no `docker exec`).
    The shell keeps the container's state and image reference in `container_state` and `container_image`, and the
    engine's data root (the folder holding its state volume) in `container_root`."""
    quoted = shlex.quote(container)
    skip = f' && [ "$container_instance" != {shlex.quote(known)} ]' if known else ""
    return (
        "set -f\n"
        f"set -- $(docker inspect -f '{INSPECT_FORMAT}' {quoted} 2>/dev/null)\n"
        'container_state=${1:-missing} container_instance="$2 $3" container_image=$4 container_root=\n'
        'echo "state=$container_state"\n'
        'echo "instance=$container_instance"\n'
        # The state volume's folder, the last field (spaces and all), is <data root>/volumes/<volume>/_data.
        'if [ $# -gt 4 ]; then shift 4; container_root="$*"; container_root=${container_root%/volumes/*/_data}; fi\n'
        f'if [ "$container_state" = running ]{skip}; then\n'
        f"  info=$(docker exec {quoted} buildctl debug info 2>/dev/null) ||\n"
        f"    info=$(docker exec {quoted} buildkitd --version 2>/dev/null)\n"
        "  nl='\n'\n"
        '  echo "buildkit=${info%%$nl*}"\n'
        f"  {node_workers_script(container)}"
        "fi\n"
    )


def image_present_script(image: str) -> str:
    """One `image=present|absent` line: is the BuildKit image on the host."""
    quoted = shlex.quote(image)
    return f"if docker image inspect {quoted} >/dev/null 2>&1; then echo image=present; else echo image=absent; fi\n"


def probe_script(
    container: str, *, image: str | None = None, known: str | None = None, known_boot: str | None = None
) -> str:
    """facts_script, node_health_script and the image check in one round trip: their keys do not overlap.

    A running container made from `image` answers the image check without another process: the engine does not
    remove the image of a running container. Otherwise `docker image inspect` is asked."""
    script = node_health_script(container, known) + facts_script(known_boot)  # health first: container_root
    if image:
        running = f'[ "$container_state" = running ] && [ "$container_image" = {shlex.quote(image)} ]'
        script += f"if {running}; then echo image=present; else\n{image_present_script(image)}fi\n"
    return script


@dataclass(frozen=True)
class NodeHealth:
    """What a node's BuildKit container says about itself. `instance` is "<container id> <started at>"; `asked` is
    False when BuildKit was not asked (a known instance), so version and workers are the caller's to fill in."""

    state: str
    buildkit_version: str | None
    worker_platforms: tuple[str, ...]
    instance: str | None = None
    asked: bool = True

    @property
    def native_platform(self) -> str | None:
        """The first platform a BuildKit worker lists is the one it runs natively."""
        return self.worker_platforms[0] if self.worker_platforms else None


def parse_node_health(output: str) -> NodeHealth:
    """Turn node_health_script's output into NodeHealth."""
    values: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values.setdefault(key.strip(), value.strip())
    version = None
    words = values.get("buildkit", "").split()
    for word in words:
        if word.startswith("v") and word[1:2].isdigit():
            version = word
            break
    platforms: list[str] = []
    try:
        workers = json.loads(values.get("workers") or "[]")
    except ValueError:
        workers = []
    for worker in workers if isinstance(workers, list) else []:
        for platform in worker.get("platforms") or worker.get("Platforms") or []:
            parts = [platform.get(key) or platform.get(key.capitalize()) for key in ("os", "architecture", "variant")]
            text = "/".join(part for part in parts if part)
            try:
                platforms.append(normalize_platform(text))
            except ValueError:
                continue
        break  # the first worker is the one buildx uses
    instance = values.get("instance") or None
    return NodeHealth(
        values.get("state") or "missing",
        version,
        tuple(platforms),
        instance=instance if instance and " " in instance else None,
        asked="workers" in values or "buildkit" in values,
    )


def parse_image_present(output: str) -> bool | None:
    """image_present_script's answer: True, False, or None when it printed nothing."""
    for line in output.splitlines():
        if line.startswith("image="):
            return line.strip() == "image=present"
    return None


def node_check_script(container: str, *, machine: bool = True) -> str:
    """Shell script printing a BuildKit container's id and state (the quick check before a build), and the host's
    machine and userland width unless `machine` is False."""
    container = shlex.quote(container)
    facts = 'echo "machine=$(uname -m 2>/dev/null)"\necho "userland_bits=$(getconf LONG_BIT 2>/dev/null)"\n'
    inspect = f"echo \"container=$(docker inspect -f '{{{{.Id}}}} {{{{.State.Status}}}}' {container} 2>&1)\"\n"
    return (facts if machine else "") + inspect


def node_workers_script(container: str) -> str:
    """The worker platforms of a running BuildKit container, through its buildctl (buildkitd itself may be emulated
    and slow to start, so its version is not asked here)."""
    quoted = shlex.quote(container)
    return f"echo \"workers=$(docker exec {quoted} buildctl debug workers --format '{{{{json .}}}}' 2>/dev/null)\"\n"


def parse_node_check(output: str) -> tuple[str | None, str, str | None]:
    """(container id, state, engine problem) from node_check_script's output."""
    # The inspect is the script's last output, and docker may print an empty line before its error (Docker 26 does
    # for a missing object): everything after "container=" is its answer.
    value = " ".join(output.partition("container=")[2].split())
    words = value.split()
    if len(words) == 2 and len(words[0]) == 64 and all(char in "0123456789abcdef" for char in words[0]):
        return words[0], words[1], None
    if "no such object" in value.lower() or "no such container" in value.lower():
        return None, "missing", None
    facts = HostFacts(
        machine="",
        userland_bits=None,
        os="",
        docker_cli="not found" not in value,
        engine_version=None,
        engine_error=value or None,
        disk_free_bytes=None,
    )
    return None, "unknown", facts.engine_problem()
