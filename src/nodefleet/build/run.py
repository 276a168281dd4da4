"""Running one `docker buildx build` (or imagetools) for `nodefleet build`: its progress passed on line by line (or
held back, for a buildx started before its node was chosen), steps counted, killed with its process group on abort,
on cancel, or when its node stops answering."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nodefleet.build.options import BuildOptions
from nodefleet.build.output import StepCounter
from nodefleet.redact import mask, secret_values, shown_command
from nodefleet.runner import kill_and_reap, kill_group, start

log = logging.getLogger(__name__)


@dataclass
class Run:
    """A finished buildx process."""

    exit_status: int
    seconds: float
    lines: deque[str]
    counts: tuple[int, int] | None
    stdout: bytes
    lost: str | None = None  # why the node was given up while buildx ran on it


async def run_streaming(
    argv: Sequence[str],
    *,
    label: str,
    options: BuildOptions,
    stdin: bytes | None,
    inherit_stderr: bool,
    abort: asyncio.Event | None = None,
    lost: asyncio.Future[str] | None = None,
    env: Mapping[str, str] | None = None,
    hold: asyncio.Future[bool] | None = None,
) -> Run:
    """Run buildx, passing each progress line on as it comes; killed (with its process group) on abort, on cancel,
    or when `lost` answers (the node stopped answering: its reason is kept in the result). With `hold`, its lines
    are kept back until `hold` answers True (a buildx started before its node was chosen), and dropped otherwise."""
    log.debug("run %s", shown_command(argv))
    secrets = secret_values(argv)  # BuildKit shows RUN steps with their build arguments expanded
    started = time.monotonic()
    process = await start(
        argv, stdin=stdin is not None, stdout=not options.inherit_stdout, stderr=not inherit_stderr, env=env
    )
    lines: deque[str] = deque(maxlen=400)
    counter = StepCounter()
    stdout = bytearray()
    show = _Shown(options, label, hold)

    async def feed() -> None:
        if process.stdin is not None and stdin is not None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                process.stdin.write(stdin)
                await process.stdin.drain()
            process.stdin.close()

    async def read_err() -> None:
        if process.stderr is None:
            return
        while raw := await process.stderr.readline():
            line = mask(raw.decode(errors="replace").rstrip("\r\n"), secrets)
            lines.append(line)
            counter.feed(line)
            show.line(line)

    async def read_out() -> None:
        if process.stdout is not None:
            stdout.extend(await process.stdout.read())

    async def finish() -> int:
        await asyncio.gather(feed(), read_err(), read_out())
        return await process.wait()

    waiter = asyncio.ensure_future(finish())
    try:
        code, reason = await _supervise(process, waiter, abort, lost)
    except asyncio.CancelledError:
        waiter.cancel()
        await kill_and_reap(process)
        raise
    return Run(code, time.monotonic() - started, lines, counter.counts, bytes(stdout), lost=reason)


async def _supervise(
    process: asyncio.subprocess.Process,
    waiter: asyncio.Future[int],
    abort: asyncio.Event | None,
    lost: asyncio.Future[str] | None,
) -> tuple[int, str | None]:
    """Wait for buildx to end, or kill it (and its group) on abort or when the node is lost: (exit status, -1 when
    killed; why the node was given up, if it was)."""
    stopper = asyncio.ensure_future(abort.wait()) if abort is not None else None
    try:
        watched = {w for w in (waiter, stopper, lost) if w is not None}
        while True:
            done, _ = await asyncio.wait(watched, return_when="FIRST_COMPLETED")
            if lost is None or lost not in done or (not lost.cancelled() and lost.exception() is None):
                break
            # The watch itself failed (or was stopped), not the node: the build goes on unwatched.
            log.debug("node watch ended without an answer", exc_info=None if lost.cancelled() else lost.exception())
            watched.discard(lost)
            lost = None
        if waiter not in done:
            kill_group(process)
            await waiter
            return -1, lost.result() if lost is not None and lost in done and not lost.cancelled() else None
        return waiter.result(), None
    finally:
        if stopper is not None:
            stopper.cancel()


class _Shown:
    """Passes a buildx's progress lines on, or, while `hold` has not answered, keeps them back: shown when it answers
    True, dropped when it answers False."""

    def __init__(self, options: BuildOptions, label: str, hold: asyncio.Future[bool] | None) -> None:
        self.options = options
        self.label = label
        self.held: list[str] | None = None
        if hold is not None and not hold.done():
            self.held = []
            hold.add_done_callback(self._decided)

    def line(self, line: str) -> None:
        if self.held is not None:
            self.held.append(line)
        else:
            self.options.progress(self.label, line)

    def _decided(self, hold: asyncio.Future[bool]) -> None:
        if self.held is not None and not hold.cancelled() and hold.result():
            held, self.held = self.held, None
            for line in held:
                self.options.progress(self.label, line)
