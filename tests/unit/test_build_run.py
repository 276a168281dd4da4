"""Running one buildx process: stopped when its node is given up, never because the watch itself failed."""

from __future__ import annotations

import asyncio
import sys
import time

from nodefleet.build.options import BuildOptions
from nodefleet.build.run import run_streaming

SLEEPER = [sys.executable, "-c", "import time; time.sleep(30)"]
QUICK = [sys.executable, "-c", "import time; time.sleep(0.5)"]


async def test_a_lost_node_stops_the_build_and_says_why() -> None:
    async def lost() -> str:
        await asyncio.sleep(0.2)
        return "arm64-1 stopped answering"

    started = time.monotonic()
    run = await run_streaming(
        SLEEPER, label="", options=BuildOptions(), stdin=None, inherit_stderr=False, lost=asyncio.ensure_future(lost())
    )
    assert time.monotonic() - started < 10
    assert run.exit_status == -1 and run.lost == "arm64-1 stopped answering"


async def test_a_watch_that_fails_does_not_stop_the_build() -> None:
    async def broken() -> str:
        raise RuntimeError("the watch broke, not the node")

    run = await run_streaming(
        QUICK, label="", options=BuildOptions(), stdin=None, inherit_stderr=False, lost=asyncio.ensure_future(broken())
    )
    assert run.exit_status == 0 and run.lost is None


async def test_abort_still_stops_the_build() -> None:
    abort = asyncio.Event()
    asyncio.get_running_loop().call_later(0.2, abort.set)
    never: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    run = await run_streaming(
        SLEEPER, label="", options=BuildOptions(), stdin=None, inherit_stderr=False, abort=abort, lost=never
    )
    assert run.exit_status == -1 and run.lost is None
