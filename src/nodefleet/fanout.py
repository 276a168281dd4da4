"""Work on many hosts at once, at most `limit` at a time, where one host's fault never hides another's result:
every job's failure, expected or not, is caught for that host alone and recorded as one line (as fabric's
GroupResult does), and the others go on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from nodefleet.errors import NodefleetError

log = logging.getLogger(__name__)

T = TypeVar("T")


def describe(exc: BaseException) -> str:
    """One line for an exception: nodefleet's own say what to do; anything else is named as unexpected."""
    if isinstance(exc, NodefleetError):
        return str(exc)
    if isinstance(exc, OSError | TimeoutError):
        return str(exc) or type(exc).__name__
    return f"unexpected {type(exc).__name__}: {exc}"


async def guarded(name: str, job: Awaitable[None], fail: Callable[[str], None]) -> None:
    """Await one host's job; any exception but a cancel becomes `fail(one line)` for that host alone."""
    try:
        await job
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # one host's surprise must not hide the other hosts' results
        if not isinstance(exc, NodefleetError):
            log.debug("%s: failed", name, exc_info=True)
        fail(describe(exc))


async def each(
    limit: int,
    items: Iterable[T],
    job: Callable[[T], Awaitable[None]],
    fail: Callable[[T, str], None],
    name: Callable[[T], str] = str,
) -> None:
    """Run `job(item)` for every item, at most `limit` at a time; an item whose job raises is `fail`ed with one
    line and the others go on. Returns when every job has ended."""
    semaphore = asyncio.Semaphore(max(1, limit))

    async def one(item: T) -> None:
        async with semaphore:
            await guarded(name(item), job(item), lambda message: fail(item, message))

    await asyncio.gather(*(one(item) for item in items))
