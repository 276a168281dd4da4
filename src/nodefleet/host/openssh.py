"""buildx's own way to a host: the OpenSSH client docker's connection helper runs for an ssh:// endpoint, checked
end to end (`docker system dial-stdio` answering an HTTP ping), and the settings OpenSSH would use for it (`ssh -G`),
which must verify the host's key as strictly as nodefleet does: buildx, and a user's plain `docker buildx build` on
the builder nodefleet made, go that way with only the user's ~/.ssh/config."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from nodefleet.errors import CommandError, UsageError, tail
from nodefleet.runner import run_local
from nodefleet.target import SSHTarget

# An HTTP ping through `docker system dial-stdio`: exactly the path buildx's ssh:// endpoint takes.
_PING = b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n"


def _login(target: SSHTarget) -> list[str]:
    argv = []
    if target.user:
        argv += ["-l", target.user]
    if target.port:
        argv += ["-p", str(target.port)]
    return argv


def openssh_argv(target: SSHTarget, *remote: str) -> list[str]:
    """The OpenSSH command docker's connection helper runs for an ssh:// endpoint, non-interactive, checking the
    host key strictly (against the inventory's known_hosts when it names one, as nodefleet's own session does)."""
    argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={math.ceil(target.connect_timeout)}"]
    argv += ["-o", "StrictHostKeyChecking=yes"]
    if target.known_hosts is not None:
        argv += ["-o", f"UserKnownHostsFile={_config_value(str(target.known_hosts))}"]
    return [*argv, *_login(target), "-T", "--", target.address, *remote]


def openssh_config_argv(target: SSHTarget) -> list[str]:
    """`ssh -G`: the settings OpenSSH takes for this host from the user's config, as buildx's ssh:// would."""
    return ["ssh", "-G", *_login(target), "--", target.address]


def _config_value(value: str) -> str:
    """A path as one ssh_config value: `%` starts a token (so it is doubled), whitespace splits (so the value is
    double-quoted), and a double quote cannot be written at all."""
    if '"' in value:
        raise UsageError(f"known_hosts {value!r}: OpenSSH cannot be given a path with a double quote")
    value = value.replace("%", "%%")
    return f'"{value}"' if any(char.isspace() for char in value) else value


@dataclass(frozen=True)
class OpenSSHConfig:
    """What `ssh -G` says OpenSSH checks a host's key against: the StrictHostKeyChecking setting, the known_hosts
    files, and the name and port the key is looked up under."""

    strict: str
    known_hosts: tuple[str, ...]
    host: str
    port: int


def parse_openssh_config(text: str) -> OpenSSHConfig:
    """`ssh -G` output: one `keyword value...` line per setting (keywords lowercase)."""
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        words = line.split()
        if words:
            values.setdefault(words[0].lower(), words[1:])
    files = tuple(values.get("userknownhostsfile", []) + values.get("globalknownhostsfile", []))
    alias = values.get("hostkeyalias", [])
    port = values.get("port", ["22"])[0]
    return OpenSSHConfig(
        strict=(values.get("stricthostkeychecking") or ["ask"])[0].lower(),
        known_hosts=files,
        host=(alias or values.get("hostname") or [""])[0],
        port=int(port) if port.isdigit() else 22,
    )


def strictness_problem(config: OpenSSHConfig, target: SSHTarget) -> str | None:
    """Why OpenSSH, with the user's settings, would not verify this host's key; None when it would."""
    where = f"for {target.address} in ~/.ssh/config (buildx and plain `docker buildx build` connect that way)"
    if config.strict in {"no", "false", "off"}:
        # `ssh -G` prints `false` for the `no` the user wrote: name the setting as it is written.
        return f"OpenSSH would not check the host key: StrictHostKeyChecking no {where}; set it to yes"
    if not [path for path in config.known_hosts if path not in {"/dev/null", "none"}]:
        return (
            f"OpenSSH would trust no known_hosts file: UserKnownHostsFile {' '.join(config.known_hosts) or 'none'} "
            f"{where}; name a real known_hosts file"
        )
    return None


def takes_unknown_keys(config: OpenSSHConfig) -> bool:
    """Whether OpenSSH, with these settings, would connect to a host whose key is in none of its known_hosts files
    (`accept-new` records whatever key answers). `yes`, and `ask` without a terminal (buildx's ssh runs without
    one), refuse such a host: buildx then reaches nothing there."""
    return config.strict not in {"yes", "true", "ask"}


@dataclass(frozen=True)
class OpenSSHCheck:
    """buildx's OpenSSH path to a host: what went wrong end to end (None when the engine answered), and the
    settings OpenSSH uses for the host (None when `ssh -G` could not say)."""

    problem: str | None
    config: OpenSSHConfig | None
    untrusted: str | None = None  # why OpenSSH's settings would not verify the host's key


async def check_openssh(target: SSHTarget, timeout: float) -> OpenSSHCheck:
    """buildx's OpenSSH path end to end, and OpenSSH's settings for the host, both at once."""
    path, settings = await asyncio.gather(
        check_openssh_path(target, timeout), run_local(openssh_config_argv(target), timeout=timeout, check=False)
    )
    config = parse_openssh_config(settings.stdout) if settings.ok else None
    return OpenSSHCheck(path, config, strictness_problem(config, target) if config is not None else None)


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
            "check the key in known_hosts (`nodefleet up --accept-new-host-keys` records a host seen for the first "
            "time)"
        )
    if "Permission denied" in error:
        return (
            f"buildx's ssh client cannot log in to {target.address} ({error}); "
            "give OpenSSH the key: IdentityFile in ~/.ssh/config for this host, or ssh-add it"
        )
    return f"buildx's ssh path to {target.address} failed: {error}"
