"""Keepalives over real SSH: a session whose host stops answering (a black hole, as a cut network) is lost within
its keepalives, which is how `nodefleet build` gives up a node mid-build."""

from __future__ import annotations

import asyncio
import contextlib
import time

from nodefleet.ssh import open_session

from .conftest import Server


class BlackHole:
    """A TCP relay to the server that, once `cut`, swallows every byte both ways and answers nothing."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cut = False
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.port)

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    if not self.cut:
                        sink.write(data)
                        await sink.drain()

        await asyncio.gather(pump(reader, upstream_writer), pump(upstream_reader, writer))

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def test_a_session_is_lost_within_its_keepalives_once_the_host_stops_answering(ssh_server: Server) -> None:
    ssh_server.trust()
    hole = BlackHole(ssh_server.port)
    port = await hole.start()
    # known_hosts names the server's own port; the relay's port is another "host": trust the key there too.
    with ssh_server.known_hosts.open("a") as handle:
        handle.write(f"[127.0.0.1]:{port} {ssh_server.host_key.export_public_key().decode().strip()}\n")
    try:
        session = await open_session(ssh_server.target(port=port), attempts=1)
        session.keep_alive(0.3, 3)
        await asyncio.sleep(1.5)  # keepalives answered: still there
        assert (await session.run("echo alive", timeout=5)).stdout.strip() == "alive"
        hole.cut = True
        started = time.monotonic()
        await asyncio.wait_for(session.wait_lost(), timeout=10)
        assert time.monotonic() - started < 3
        await session.close()
    finally:
        hole.close()
