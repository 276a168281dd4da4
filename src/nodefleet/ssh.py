"""SSH to build hosts with asyncssh: verified host keys, bounded timeouts, retries for transient faults only."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, stop_after_delay
from tenacity.wait import wait_random_exponential

from nodefleet.errors import AuthError, CommandError, HostKeyError, SSHError, TransientSSHError
from nodefleet.known_hosts import (
    checked_config_known_hosts,
    describe_host_key_problem,
    key_in_files,
    record_new_host_key,
)
from nodefleet.target import HostKeyPolicy, SSHTarget

__all__ = ["CommandResult", "HostKeyPolicy", "SSHTarget", "Session", "open_session"]

log = logging.getLogger(__name__)

_TRANSIENT_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ETIMEDOUT, errno.ECONNABORTED}


@dataclass(frozen=True)
class CommandResult:
    """What a remote command returned."""

    command: str
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        """True when the command exited 0."""
        return self.exit_status == 0

    def check(self) -> CommandResult:
        """Return self, or raise CommandError when the command failed."""
        if not self.ok:
            raise CommandError(self.command, self.exit_status, self.stderr, self.stdout)
        return self


class Session:
    """One logged-in SSH connection to a host; run commands on it, then close it."""

    def __init__(self, target: SSHTarget, connection: asyncssh.SSHClientConnection) -> None:
        self.target = target
        self._connection = connection

    @property
    def host_key(self) -> str | None:
        """The SHA256 fingerprint of the host key the server proved it holds (None after a GSS key exchange)."""
        key = self._connection.get_server_host_key()
        return key.get_fingerprint("sha256") if key is not None else None

    def key_known_in(self, files: Sequence[str], host: str, port: int) -> bool:
        """True when one of these known_hosts files holds, for `host` and `port`, the very key this host proved it
        holds (as OpenSSH would look it up: plain, [host]:port or hashed)."""
        key = self._connection.get_server_host_key()
        return key is not None and key_in_files(key, files, host, port)

    async def run(
        self, command: str, *, timeout: float, stdin: bytes | str | None = None, check: bool = False
    ) -> CommandResult:
        """Run a shell command (already quoted by the caller) and return its result within `timeout`."""
        log.debug("%s: run %s", self.target.name, command)
        try:
            # No input means end-of-file at once, as `ssh host cmd </dev/null`: nothing waits for a terminal.
            redirect: dict[str, Any] = {"input": stdin} if stdin is not None else {"stdin": asyncssh.DEVNULL}
            completed = await self._connection.run(command, timeout=timeout, check=False, encoding=None, **redirect)
        except asyncssh.TimeoutError:
            raise CommandError(command, None, f"timed out after {timeout:g} s") from None
        except (asyncssh.ConnectionLost, asyncssh.ChannelOpenError, OSError) as exc:
            raise TransientSSHError(f"{self.target.name}: connection lost running a command: {exc}") from None
        if completed.exit_status is None and completed.exit_signal is None:
            # The channel closed without an exit status: the server went away (sshd killed, host down).
            raise TransientSSHError(f"{self.target.name}: connection lost running a command (no exit status)")
        result = CommandResult(
            command=command,
            exit_status=completed.exit_status if completed.exit_status is not None else 255,
            stdout=_text(completed.stdout),
            stderr=_text(completed.stderr),
        )
        return result.check() if check else result

    async def write_stream(self, command: str, source: Path, *, timeout: float) -> CommandResult:
        """Run `command` with the contents of a local file as its standard input (e.g. `docker load`), within
        `timeout`. A time-out or a lost connection is a CommandError or TransientSSHError that says so, and the
        remote process is closed whatever happens (never left reading a half-sent stream)."""
        log.debug("%s: run %s < %s", self.target.name, command, source)
        process: asyncssh.SSHClientProcess[bytes] | None = None
        try:
            async with asyncio.timeout(timeout):
                process = await self._connection.create_process(command, encoding=None)
                with source.open("rb") as reader:
                    while chunk := reader.read(1 << 20):
                        process.stdin.write(chunk)
                        await process.stdin.drain()
                process.stdin.write_eof()
                completed = await process.wait()
        except TimeoutError:
            raise CommandError(command, None, f"timed out after {timeout:g} s sending {source.name}") from None
        except (asyncssh.ConnectionLost, asyncssh.ChannelOpenError, BrokenPipeError, ConnectionError) as exc:
            raise TransientSSHError(f"{self.target.name}: connection lost sending {source.name}: {exc}") from None
        finally:
            if process is not None:
                process.close()
        return CommandResult(
            command,
            completed.exit_status if completed.exit_status is not None else 255,
            _text(completed.stdout),
            _text(completed.stderr),
        )

    async def relay(self, command: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Run `command` with a local stream pair as its standard input and output, until both directions end or
        either fails (the connection lost, the local side gone); the local writer is closed at the end."""
        try:
            process = await self._connection.create_process(command, encoding=None, stderr=asyncssh.DEVNULL)
        except (asyncssh.Error, OSError) as exc:
            log.debug("%s: cannot start %s: %s", self.target.name, command, exc)
            writer.close()
            return

        async def upstream() -> None:
            while data := await reader.read(1 << 16):
                process.stdin.write(data)
                await process.stdin.drain()
            process.stdin.write_eof()

        async def downstream() -> None:
            while data := await process.stdout.read(1 << 16):
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        try:
            for finished in asyncio.as_completed(tasks):
                try:
                    await finished
                except (asyncssh.Error, OSError, asyncio.IncompleteReadError) as exc:
                    log.debug("%s: relay of %s ended: %s", self.target.name, command, exc)
                    break
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            process.close()
            writer.close()

    def keep_alive(self, interval: float, count: int) -> None:
        """Send a keepalive every `interval` seconds of silence; after `count` unanswered, the connection is lost."""
        self._connection.set_keepalive(interval, count)

    async def wait_lost(self) -> None:
        """Return when the connection is gone (closed, or lost to unanswered keepalives)."""
        await self._connection.wait_closed()

    async def close(self) -> None:
        """Close the connection and wait for it to go."""
        self._connection.close()
        with contextlib.suppress(TimeoutError, OSError, asyncssh.Error):
            await asyncio.wait_for(self._connection.wait_closed(), timeout=2)

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


async def open_session(
    target: SSHTarget,
    *,
    policy: HostKeyPolicy = HostKeyPolicy.STRICT,
    attempts: int = 3,
    budget: float | None = None,
) -> Session:
    """Log in to a host, retrying refused/reset/timed-out connections with backoff within `budget` seconds.

    Authentication failures and host-key problems are raised at once and never retried.
    """
    deadline = budget if budget is not None else target.connect_timeout * attempts + 2
    if policy is HostKeyPolicy.ACCEPT_NEW:
        await record_new_host_key(target)
    retrying = AsyncRetrying(
        retry=retry_if_exception_type(TransientSSHError),
        stop=stop_after_attempt(attempts) | stop_after_delay(deadline),
        wait=wait_random_exponential(multiplier=0.25, max=2.0),
        reraise=True,
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    async for attempt in retrying:
        with attempt:
            remaining = max(0.5, deadline - (loop.time() - started))
            connection = await _connect_once(target, min(target.connect_timeout, remaining))
    return Session(target, connection)


def _connect_options(target: SSHTarget) -> dict[str, Any]:
    options: dict[str, Any] = {"host": target.address}
    if target.port is not None:
        options["port"] = target.port
    if target.user is not None:
        options["username"] = target.user
    if target.identity_file is not None:
        options["client_keys"] = [str(target.identity_file)]
    if target.known_hosts is not None:
        # A known_hosts file that does not exist yet trusts nobody (it is not an error to have none).
        exists = target.known_hosts.exists()
        options["known_hosts"] = str(target.known_hosts) if exists else asyncssh.import_known_hosts("")
    else:
        options.update(checked_config_known_hosts(target))
    return options


async def _connect_once(target: SSHTarget, timeout: float) -> asyncssh.SSHClientConnection:
    try:
        async with asyncio.timeout(timeout + 1):
            return await asyncssh.connect(
                **_connect_options(target),
                connect_timeout=timeout,
                login_timeout=timeout,
                keepalive_interval=15,
            )
    except asyncssh.HostKeyNotVerifiable as exc:
        raise HostKeyError(describe_host_key_problem(target, str(exc.reason))) from None
    except asyncssh.PermissionDenied:
        raise AuthError(
            f"{target.name}: SSH login refused for {_who(target)} (check the user and identity_file)"
        ) from None
    except (TimeoutError, asyncssh.ConnectionLost) as exc:
        reason = str(exc) or f"no answer within {round(timeout, 1):g} s"  # a TimeoutError has no message
        raise TransientSSHError(f"{target.name}: SSH to {_who(target)} timed out or dropped ({reason})") from None
    except asyncssh.KeyImportError as exc:
        raise AuthError(f"{target.name}: cannot use identity_file {target.identity_file}: {exc}") from None
    except asyncssh.Error as exc:
        raise SSHError(f"{target.name}: SSH to {_who(target)} failed: {exc.reason}") from None
    except OSError as exc:
        message = f"{target.name}: cannot connect to {_who(target)}: {exc.strerror or exc}"
        if exc.errno in _TRANSIENT_ERRNOS or isinstance(exc, ConnectionError):
            raise TransientSSHError(message) from None
        raise SSHError(message) from None


def _who(target: SSHTarget) -> str:
    user = f"{target.user}@" if target.user else ""
    port = f":{target.port}" if target.port else ""
    return f"{user}{target.address}{port}"
