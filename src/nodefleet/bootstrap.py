"""Everything a host needs for buildx apart from the engine: the OpenSSH path, the BuildKit image, the config."""

from __future__ import annotations

import hashlib
import math
import shlex
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nodefleet.buildx import container_name, run_local, state_volume_name
from nodefleet.errors import CommandError, NodefleetError, UsageError, tail
from nodefleet.inventory import Registry
from nodefleet.target import SSHTarget

if TYPE_CHECKING:
    from nodefleet.ssh import Session

# An HTTP ping through `docker system dial-stdio`: exactly the path buildx's ssh:// endpoint takes.
_PING = b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n"


def openssh_argv(target: SSHTarget, *remote: str) -> list[str]:
    """The OpenSSH command docker's connection helper runs for an ssh:// endpoint, non-interactive."""
    argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={math.ceil(target.connect_timeout)}"]
    if target.user:
        argv += ["-l", target.user]
    if target.port:
        argv += ["-p", str(target.port)]
    return [*argv, "-T", "--", target.address, *remote]


async def check_openssh_path(target: SSHTarget, timeout: float) -> str | None:
    """Check that buildx's OpenSSH path reaches the engine; return a one-line problem with the fix, or None."""
    argv = openssh_argv(target, "docker", "system", "dial-stdio")
    try:
        result = await run_local(argv, timeout=timeout, stdin=_PING, check=False)
    except CommandError as exc:
        return f"buildx's ssh client to {target.address} did not answer: {exc.stderr}"
    if "OK" in result.stdout.splitlines()[-1:] or result.stdout.rstrip().endswith("OK"):
        return None
    error = tail(result.stderr) or f"exit {result.exit_status}"
    if "Host key verification failed" in error or "REMOTE HOST IDENTIFICATION HAS CHANGED" in result.stderr:
        return (
            f"buildx's ssh client does not trust the host key of {target.address} ({error}); "
            "OpenSSH reads ~/.ssh/known_hosts (or UserKnownHostsFile in ~/.ssh/config), not nodefleet's known_hosts "
            "setting: add the key there"
        )
    if "Permission denied" in error:
        return (
            f"buildx's ssh client cannot log in to {target.address} ({error}); "
            "give OpenSSH the key: IdentityFile in ~/.ssh/config for this host, or ssh-add it"
        )
    return f"buildx's ssh path to {target.address} failed: {error}"


def render_buildkitd_config(registries: Iterable[Registry]) -> str:
    """A buildkitd.toml trusting each registry's CA, with its mirrors and plain-HTTP setting."""
    lines: list[str] = []
    for registry in registries:
        lines.append(f"[registry.{_toml_key(registry.host)}]")
        if registry.mirrors:
            lines.append("  mirrors = [" + ", ".join(_toml_string(m) for m in registry.mirrors) + "]")
        if registry.insecure:
            lines.append("  http = true")
            lines.append("  insecure = true")
        if registry.ca_file is not None:
            lines.append(f"  ca = [{_toml_string(str(registry.ca_file))}]")
        lines.append("")
    return "\n".join(lines)


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_key(value: str) -> str:
    return _toml_string(value)


def config_digest(path: Path | None) -> str:
    """A digest of a buildkitd.toml and every file it names (CAs, key pairs), which buildx copies into nodes."""
    if path is None:
        return ""
    digest = hashlib.sha256()
    try:
        raw = path.read_bytes()
        digest.update(raw)
        document = tomllib.loads(raw.decode())
    except OSError as exc:
        raise UsageError(f"buildkitd_config {path}: cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"buildkitd_config {path}: not valid TOML: {exc}") from None
    for name in sorted(_referenced_files(document)):
        file = Path(name) if Path(name).is_absolute() else path.parent / name
        try:
            digest.update(name.encode() + b"\0" + file.read_bytes())
        except OSError as exc:
            raise UsageError(f"buildkitd_config {path}: names {name}, which cannot be read: {exc.strerror}") from None
    return digest.hexdigest()[:16]


def _referenced_files(document: dict[str, Any]) -> set[str]:
    files: set[str] = set()
    for settings in (document.get("registry") or {}).values():
        if not isinstance(settings, dict):
            continue
        files.update(str(ca) for ca in settings.get("ca") or [])
        for pair in settings.get("keypair") or []:
            if isinstance(pair, dict):
                files.update(str(pair[key]) for key in ("key", "cert") if pair.get(key))
    return files


def image_present_command(image: str) -> str:
    """Remote shell command exiting 0 when the image is on the host."""
    return f"docker image inspect {shlex.quote(image)} >/dev/null 2>&1"


def image_pull_command(image: str) -> str:
    """Remote shell command pulling the image."""
    return f"docker pull -q {shlex.quote(image)}"


IMAGE_LOAD_COMMAND = "docker load -q"


def remove_node_container_command(node: str, *, keep_state: bool) -> str:
    """Remote shell command removing a node's BuildKit container (and, unless keep_state, its state volume).

    It fails when the engine does not answer or the container is still there: a stopped engine would start the
    container again (restart unless-stopped), so "removed" must mean removed. A missing container is fine.
    """
    container = shlex.quote(container_name(node))
    lines = [
        "out=$(docker version --format '{{.Server.Version}}' 2>&1) || "
        "{ printf '%s\\n' \"$out\" | grep . | tail -n 1 >&2; exit 1; }",
        f"docker rm -f {container} >/dev/null 2>&1",
    ]
    if not keep_state:
        lines.append(f"docker volume rm -f {shlex.quote(state_volume_name(node))} >/dev/null 2>&1")
    lines.append(
        f"if docker container inspect {container} >/dev/null 2>&1; then "
        f"echo {shlex.quote(f'{container_name(node)} is still there')} >&2; exit 1; fi"
    )
    return "\n".join(lines) + "\n"


async def ensure_image(
    session: Session, image: str, archive: Path | None, *, timeout: float, present: bool | None = None
) -> str:
    """Make the BuildKit image present on the host: already there, pulled, or loaded from an archive. `present` is
    what the caller already asked the host, if it did."""
    if present is None:
        present = (await session.run(image_present_command(image), timeout=timeout)).ok
    if present:
        return "present"
    pulled = await session.run(image_pull_command(image), timeout=timeout)
    if pulled.ok:
        return "pulled"
    if archive is None:
        raise NodefleetError(
            f"cannot pull BuildKit image {image}: {tail(pulled.stderr or pulled.stdout)} "
            "(set defaults.buildkit_image_archive to load it over SSH instead)"
        )
    loaded = await session.write_stream(IMAGE_LOAD_COMMAND, archive, timeout=timeout)
    if not loaded.ok:
        raise NodefleetError(f"cannot load {archive} on the host: {tail(loaded.stderr or loaded.stdout)}")
    again = await session.run(image_present_command(image), timeout=timeout)
    if not again.ok:
        raise NodefleetError(f"{archive} does not contain BuildKit image {image}")
    return "loaded"


async def remove_node_container(session: Session, node: str, *, keep_state: bool, timeout: float) -> None:
    """Remove a node's BuildKit container (and, unless keep_state, its state volume) from the host."""
    result = await session.run(remove_node_container_command(node, keep_state=keep_state), timeout=timeout)
    if not result.ok:
        # The script's own last words (the engine's error, or "... is still there"), not the script itself.
        raise NodefleetError(tail(result.stderr or result.stdout, lines=1) or f"exit status {result.exit_status}")
