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
        self.answering = asyncio.Event()  # the server's bytes reach the client (cut_answers clears it)
        self.answering.set()
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

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, *gates: asyncio.Event) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    for gate in gates:  # cut: what was read goes nowhere, and nothing more is read
                        await gate.wait()
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer, self.open), pump(up_reader, writer, self.open, self.answering))

    def cut(self) -> None:
        self.loop.call_soon_threadsafe(self.open.clear)

    def cut_answers(self) -> None:
        """Only the server's side goes nowhere: what a client sends still reaches the server, which
        runs it and commits — and the answer never comes back (a network path lost one way, a
        reply dropped): the client sees a timeout for a statement that took effect."""
        self.loop.call_soon_threadsafe(self.answering.clear)

    def mend(self) -> None:
        """Both directions cross again (for connections opened from now on: a connection whose
        answers were held is ended by its client, which gave up on it)."""
        self.loop.call_soon_threadsafe(self.open.set)
        self.loop.call_soon_threadsafe(self.answering.set)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(HANG_S)
