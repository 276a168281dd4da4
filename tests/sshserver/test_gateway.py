"""nodefleet.buildx.gateway against a real asyncssh server: a node's door is shut until opened, then relays both
ways."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from nodefleet.buildx.gateway import Gateway, socket_path
from nodefleet.ssh import open_session

from .conftest import Server


async def _gateway(tmp_path: Path) -> Gateway:
    gateway = Gateway("node-1", socket_path(tmp_path / "state", "fleet", "node-1"))
    assert await gateway.start()
    return gateway


async def test_door_is_shut_until_opened_then_relays_both_ways(ssh_server: Server, tmp_path: Path) -> None:
    ssh_server.trust()
    gateway = await _gateway(tmp_path)
    session = await open_session(ssh_server.target(), attempts=1)
    try:
        assert gateway.path.stat().st_mode & 0o777 == 0o600
        reader, writer = await asyncio.open_unix_connection(str(gateway.path))
        writer.write(b"GET /_ping HTTP/1.1\r\n\r\n")
        await writer.drain()
        with pytest.raises(TimeoutError):  # nothing reaches the node before the build chose it
            await asyncio.wait_for(reader.read(1), timeout=0.3)
        gateway.open(session)
        assert await asyncio.wait_for(reader.readexactly(23), timeout=5) == b"GET /_ping HTTP/1.1\r\n\r\n"
        writer.write(b"more")
        writer.write_eof()  # buildx done: the remote end sees the end and closes its side too
        assert await asyncio.wait_for(reader.read(), timeout=5) == b"more"
        writer.close()
    finally:
        await gateway.close()
        await session.close()
    assert not gateway.path.exists()


async def test_refused_door_closes_waiting_connections(tmp_path: Path) -> None:
    gateway = await _gateway(tmp_path)
    try:
        reader, writer = await asyncio.open_unix_connection(str(gateway.path))
        await asyncio.sleep(0.05)
        gateway.refuse()
        assert await asyncio.wait_for(reader.read(), timeout=5) == b""
        writer.close()
    finally:
        await gateway.close()


async def test_one_build_serves_a_door_at_a_time(tmp_path: Path) -> None:
    first = await _gateway(tmp_path)
    second = Gateway("node-1", first.path)
    assert not await second.start()
    assert first.path.exists()  # the second build left the first one's socket alone
    await second.close()
    await first.close()
    third = Gateway("node-1", first.path)
    assert await third.start()  # released on close
    await third.close()


def test_socket_path_is_stable_and_short(tmp_path: Path) -> None:
    path = socket_path(tmp_path, "fleet", "arm64-1")
    assert path == socket_path(tmp_path, "fleet", "arm64-1")
    assert path != socket_path(tmp_path, "fleet", "arm64-2")
    deep = tmp_path / ("x" * 120)
    fallback = socket_path(deep, "fleet", "arm64-1")
    assert len(str(fallback)) <= 100 and not str(fallback).startswith(str(deep))


async def test_lost_session_ends_the_relay(ssh_server: Server, tmp_path: Path) -> None:
    ssh_server.trust()
    gateway = await _gateway(tmp_path)
    session = await open_session(ssh_server.target(), attempts=1)
    try:
        gateway.open(session)
        reader, writer = await asyncio.open_unix_connection(str(gateway.path))
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), timeout=5) == b"ping"
        await session.close()  # the node gone: buildx must see its connection end, not hang
        assert await asyncio.wait_for(reader.read(), timeout=5) == b""
        writer.close()
    finally:
        await gateway.close()


async def test_refused_door_opens_later_for_a_retry(ssh_server: Server, tmp_path: Path) -> None:
    ssh_server.trust()
    gateway = await _gateway(tmp_path)
    session = await open_session(ssh_server.target(), attempts=1)
    try:
        gateway.refuse()  # not chosen at first...
        gateway.open(session)  # ...then a retry goes to this node
        reader, writer = await asyncio.open_unix_connection(str(gateway.path))
        writer.write(b"retry")
        assert await asyncio.wait_for(reader.readexactly(5), timeout=5) == b"retry"
        writer.close()
    finally:
        await gateway.close()
        await session.close()
