"""buildx's own way to a host: the OpenSSH client docker's connection helper runs for an ssh:// endpoint, checked
end to end (`docker system dial-stdio` answering an HTTP ping), as buildx will use it."""

from __future__ import annotations

import math

from nodefleet.errors import CommandError, tail
from nodefleet.runner import run_local
from nodefleet.target import SSHTarget

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
