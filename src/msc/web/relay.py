"""One browser operator's connection to the switch: an ordinary terminal session (PROTOCOL.md).

:class:`SwitchLink` opens a TCP (optionally TLS) connection to the switch's ``proxy_protocol``
listener, sends the PROXY v2 header naming the browser's own address and, when the browser
presented a client certificate that verified, its subject CN (so the switch's TAF and its
station/pool binding — by address or by ``client_cert_cn`` — are the browser's, CONFIG.md
"Listeners behind a relay"), and then speaks the frames of PROTOCOL.md §1 with
:mod:`msc.protocol.framing`: it waits for ``SYS.BANNER``, acknowledges it only when told to (after
the person did), sends messages and awaits their ``A``/``N``, answers heartbeats, hands every
output (``M`` with an OSN) and every ``SYS`` message to its owner, and acknowledges an output
(``A`` with its OSN) only when the owner says the page has shown it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_mod
from collections.abc import Callable

import structlog

from msc.aio import bounded
from msc.protocol import framing
from msc.protocol.codes import FramingError
from msc.protocol.framing import Frame, Framer
from msc.protocol.proxy import format_v2

log = structlog.get_logger("msc.web.relay")


class LinkClosed(Exception):
    """The switch closed the connection (or it was lost)."""


class SwitchLink:
    """See the module docstring. ``on_output(osn, payload)``, ``on_sys(text)`` and
    ``on_closed(why)`` are called on the event loop."""

    def __init__(self, *, on_output: Callable[[int, bytes], None], on_sys: Callable[[str], None],
                 on_closed: Callable[[str], object], max_frame: int = framing.DEFAULT_MAX_FRAME) -> None:
        self.on_output = on_output
        self.on_sys = on_sys
        self.on_closed = on_closed
        self.framer = Framer(max_frame=max_frame)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.xid = 0
        self.pending: dict[int, asyncio.Future[Frame]] = {}
        self.banner: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task | None = None
        self.closed = False

    async def connect(self, host: str, port: int, *, client: tuple[str, int], server: tuple[str, int],
                      client_cn: str | None = None, ssl: ssl_mod.SSLContext | None = None,
                      server_hostname: str | None = None, timeout: float = 10.0) -> None:
        """Connect and send the PROXY v2 header for ``client`` (the browser) → ``server`` (this web
        server's own address as the browser reached it); ``client_cn``: the CN of the browser's
        client certificate, **only** when it verified (the switch takes it as the session's
        certificate, PROXY ``PP2_TYPE_SSL``); None sends no SSL TLV — no certificate identity.
        Raises ValueError (before connecting) for an address or CN a header cannot carry."""
        header = format_v2(client, server, ssl_cn=client_cn)
        self.reader, self.writer = await bounded(
            asyncio.open_connection(host, port, ssl=ssl, server_hostname=server_hostname if ssl else None), timeout)
        assert self.writer is not None
        self.writer.write(header)
        self._task = asyncio.get_running_loop().create_task(self._read(), name="switch-link")

    async def wait_banner(self, timeout: float = 10.0) -> str:
        return await asyncio.wait_for(asyncio.shield(self.banner), timeout)

    def ack_banner(self) -> None:
        self._write(framing.ack(0))

    async def request(self, text: str, timeout: float = 30.0) -> Frame:
        """Send one message; return the switch's ``A`` or ``N`` for it."""
        if self.closed:
            raise LinkClosed("closed")
        self.xid = self.xid % framing.MAX_XID + 1
        fut: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self.pending[self.xid] = fut
        self._write(framing.message(self.xid, text.encode("ascii")))
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self.pending.pop(self.xid, None)

    def ack(self, osn: int) -> None:
        """The output ``osn`` was shown: it is delivered (PROTOCOL.md §5)."""
        self._write(framing.ack(osn))

    def _write(self, data: bytes) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(data)

    async def _read(self) -> None:
        why = "CONNECTION CLOSED BY MSC"
        assert self.reader is not None
        try:
            while data := await self.reader.read(65536):
                for f in self.framer.feed(data):
                    self._frame(f)
                if self.framer.failed is not None:
                    raise self.framer.failed
        except FramingError:
            why = "FRAMING ERROR FROM MSC"
        except (ConnectionError, OSError, ssl_mod.SSLError):
            why = "CONNECTION TO MSC LOST"
        except asyncio.CancelledError:
            why = "CLOSED"
            raise
        finally:
            self._closed(why)

    def _frame(self, f: Frame) -> None:
        if f.type == framing.MSG:
            if f.xid == 0:
                text = f.payload.decode("ascii", "replace")
                if text.startswith("SYS.BANNER.") and not self.banner.done():
                    self.banner.set_result(text[len("SYS.BANNER."):])
                else:
                    self.on_sys(text[4:] if text.startswith("SYS.") else text)
            else:
                self.on_output(f.xid, f.payload)
        elif f.type in (framing.ACK, framing.NAK):
            fut = self.pending.get(f.xid)
            if fut is not None and not fut.done():
                fut.set_result(f)
            elif f.xid == 0 and f.type == framing.NAK:
                self.on_sys("REFUSED." + f.payload.decode("ascii", "replace"))
        elif f.type == framing.HEARTBEAT:
            self._write(framing.heartbeat(f.xid))

    def _closed(self, why: str) -> None:
        if self.closed:
            return
        self.closed = True
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(LinkClosed(why))
        if not self.banner.done():
            self.banner.set_exception(LinkClosed(why))
            self.banner.exception()  # retrieved: nobody may be waiting
        with contextlib.suppress(Exception):
            self.on_closed(why)

    async def close(self) -> None:
        self.closed = True
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
