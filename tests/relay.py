"""A TCP relay to a server that a test can cut: newcomer8's network cut between the active node
only and PostgreSQL (issue 16). Used by tests/integration/test_ha_lease_pg.py and
tests/e2e/test_ha_nodes.py."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from tests.waiting import HANG_S


class Relay:
    """A TCP relay 127.0.0.1:port → PostgreSQL, run in a thread of the test (newcomer8 step 9's
    network cut between the active node only and its database). :meth:`cut` makes it a blackhole,
    as a SIGSTOPped relay, a dead switch port or a firewall drop is: open connections stay open and
    nothing more crosses in either direction; a new connection is accepted (the kernel's handshake)
    and then hears nothing. Nothing is reset, nothing refused."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.loop = asyncio.new_event_loop()
        self.open = asyncio.Event()
        self.port = 0
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
            self.port = server.sockets[0].getsockname()[1]
            self.open.set()
            started.set()
            self.loop.run_forever()
            server.close()
            tasks = asyncio.all_tasks(self.loop)  # the connections it still relays (or holds, cut)
            for task in tasks:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self.loop.close()

        self.thread = threading.Thread(target=serve, name="pg-relay", daemon=True)
        self.thread.start()
        started.wait(HANG_S)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.open.wait()
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    await self.open.wait()  # cut: what was read goes nowhere, and nothing more is read
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    def cut(self) -> None:
        self.loop.call_soon_threadsafe(self.open.clear)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(HANG_S)
