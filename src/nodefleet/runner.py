"""Local processes (docker, buildx, ssh): run one within a timeout, and kill and reap a process with its group.

Every process is started in a session of its own (start_new_session), so that killing it also kills what it
started: buildx starts ssh, ssh may start a ProxyCommand."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nodefleet.errors import CommandError
from nodefleet.redact import shown_command

log = logging.getLogger(__name__)

REAP_TIMEOUT = 5.0  # seconds a killed process gets to be reaped before it is left to the event loop's child watcher


@dataclass(frozen=True)
class LocalResult:
    """What a local command returned."""

    argv: tuple[str, ...]
    exit_status: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        """True when the command exited 0."""
        return self.exit_status == 0


async def run_local(
    argv: Sequence[str],
    *,
    timeout: float,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> LocalResult:
    """Run a local command within `timeout`; on time-out or cancel, kill it and its group and reap it."""
    log.debug("run %s", shown_command(argv))
    started = time.monotonic()
    process = await start(argv, stdin=stdin is not None, env=env)
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin), timeout)
    except TimeoutError:
        await kill_and_reap(process)
        raise CommandError(shown_command(argv), None, f"timed out after {timeout:g} s") from None
    except asyncio.CancelledError:
        await kill_and_reap(process)
        raise
    result = LocalResult(
        tuple(argv),
        process.returncode if process.returncode is not None else -1,
        out.decode(errors="replace"),
        err.decode(errors="replace"),
        time.monotonic() - started,
    )
    if check and not result.ok:
        raise CommandError(shown_command(argv), result.exit_status, result.stderr, result.stdout)
    return result


async def start(
    argv: Sequence[str],
    *,
    stdin: bool = False,
    stdout: bool = True,
    stderr: bool = True,
    env: Mapping[str, str] | None = None,
) -> asyncio.subprocess.Process:
    """Start a process in a session of its own; each stream is a pipe when asked, else stdin is /dev/null and the
    output streams are ours. A missing program is a CommandError naming it, not a raw OSError."""
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if stdout else None,
            stderr=asyncio.subprocess.PIPE if stderr else None,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            limit=1 << 20,
        )
    except FileNotFoundError:
        raise CommandError(shown_command(argv), None, f"{argv[0]}: command not found on this machine") from None


def kill_group(process: asyncio.subprocess.Process) -> None:
    """Kill a process started in a session of its own and everything it started."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


async def kill_and_reap(process: asyncio.subprocess.Process) -> None:
    """Kill a process and its group, then wait for it to exit so that no zombie is left behind. The wait is
    shielded: a second cancel while reaping still reaps (within REAP_TIMEOUT), and is passed on afterwards."""
    kill_group(process)
    if process.returncode is not None:
        return
    waiter = asyncio.ensure_future(asyncio.wait_for(process.wait(), REAP_TIMEOUT))
    try:
        await asyncio.shield(waiter)
    except asyncio.CancelledError:
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await waiter
        raise
    except TimeoutError:
        log.debug("pid %s did not exit within %g s of SIGKILL", process.pid, REAP_TIMEOUT)
