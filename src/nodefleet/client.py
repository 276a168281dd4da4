"""The local side of every command: the docker CLI, its buildx plugin (and that plugin's version) and the OpenSSH
client, checked before any host is contacted, each missing piece named in one line with how to install it."""

from __future__ import annotations

import asyncio
import re
import shutil
from dataclasses import dataclass

from nodefleet.errors import CommandError, NodefleetError
from nodefleet.runner import run_local

MIN_BUILDX = (0, 13, 0)  # `create --append` and `ls --format json` as nodefleet uses them
_VERSION_RE = re.compile(r"\bv?(\d+)\.(\d+)\.(\d+)")


class ClientError(NodefleetError):
    """A tool nodefleet needs on this machine is missing or too old."""


@dataclass(frozen=True)
class Client:
    """The versions of the local tools."""

    docker: str
    buildx: str
    openssh: str

    def as_json(self) -> dict[str, str]:
        """Stable JSON keys."""
        return {"docker": self.docker, "buildx": self.buildx, "openssh": self.openssh}


def parse_buildx_version(output: str) -> tuple[int, int, int] | None:
    """`github.com/docker/buildx v0.29.1 abc` or `... 0.13.1+ds1 ...` -> (0, 29, 1)."""
    for word in output.split()[1:]:
        match = _VERSION_RE.match(word)
        if match:
            major, minor, patch = (int(part) for part in match.groups())
            return major, minor, patch
    return None


def require_programs() -> None:
    """The docker CLI and the OpenSSH client are on PATH (no process started)."""
    if shutil.which("docker") is None:
        raise ClientError(
            "no `docker` command on this machine: install the Docker CLI with its buildx plugin "
            "(Debian: apt-get install docker.io docker-buildx; or Docker's docker-ce-cli and docker-buildx-plugin)"
        )
    if shutil.which("ssh") is None:
        raise ClientError(
            "no `ssh` command on this machine: install the OpenSSH client (apt-get install openssh-client)"
        )


async def check_client(timeout: float = 30.0, *, versions: bool = True) -> Client:
    """Check the local tools, in parallel; raise ClientError naming what is missing and how to install it. Without
    `versions`, only the buildx plugin is asked (a build has no use for the others' versions, and every process on
    its way to the hosts is time)."""
    require_programs()
    asks = [run_local(["docker", "buildx", "version"], timeout=timeout, check=False)]
    if versions:
        asks += [
            run_local(["docker", "version", "--format", "{{.Client.Version}}"], timeout=timeout, check=False),
            run_local(["ssh", "-V"], timeout=timeout, check=False),
        ]
    buildx, *others = await asyncio.gather(*asks, return_exceptions=True)
    docker, openssh = others if others else (None, None)
    buildx_text = buildx.stdout if not isinstance(buildx, BaseException) else ""
    version = parse_buildx_version(buildx_text)
    if version is None:
        why = str(buildx) if isinstance(buildx, CommandError) else "`docker buildx version` did not answer"
        if not isinstance(buildx, BaseException) and buildx.stderr.strip():
            why = buildx.stderr.strip().splitlines()[-1]
        raise ClientError(
            f"the docker CLI has no usable buildx plugin ({why}): install it "
            "(Debian: apt-get install docker-buildx; or Docker's docker-buildx-plugin)"
        )
    if version < MIN_BUILDX:
        have = ".".join(map(str, version))
        need = ".".join(map(str, MIN_BUILDX))
        raise ClientError(f"buildx {have} is too old: nodefleet needs buildx {need} or newer; upgrade the plugin")
    return Client(
        docker=_first_line(docker) or "unknown",
        buildx="v" + ".".join(map(str, version)),
        openssh=_first_line(openssh, stderr=True).split(",")[0] or "unknown",
    )


def _first_line(result: object, *, stderr: bool = False) -> str:
    text = getattr(result, "stderr" if stderr else "stdout", "") if not isinstance(result, BaseException) else ""
    lines = str(text).strip().splitlines()
    return lines[0].strip() if lines else ""
