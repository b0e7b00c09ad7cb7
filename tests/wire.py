"""An independent client of the msc wire protocol, written from PROTOCOL.md alone.

It deliberately imports nothing from msc (as h11 tests against the stdlib's HTTP client), so
tests that use it check the switch against the published contract, not against its own codec.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

from tests.waiting import HANG_S

HEAD = struct.Struct(">IBI")


@dataclass
class Frame:
    type: str
    xid: int
    payload: bytes

    @property
    def text(self) -> str:
        return self.payload.decode("ascii", "replace")

    @property
    def code(self) -> str | None:
        return self.text.split(" ", 1)[0] if self.type == "N" else None


def frame(ftype: str, xid: int, payload: bytes = b"") -> bytes:
    return HEAD.pack(len(payload) + 5, ord(ftype), xid) + payload


class WireClient:
    """Speaks the frames; records everything received; answers H; optionally acks outputs."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, auto_ack: bool = True):
        self.reader, self.writer = reader, writer
        self.auto_ack = auto_ack
        self.xid = 0
        self.buf = b""
        self.answers: dict[int, asyncio.Future] = {}
        self.outputs: asyncio.Queue[Frame] = asyncio.Queue()
        self.sys: asyncio.Queue[Frame] = asyncio.Queue()
        self.closed = asyncio.get_running_loop().create_future()
        self.received: list[Frame] = []
        self._task = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1", *, ssl=None, auto_ack: bool = True) -> WireClient:
        r, w = await asyncio.open_connection(host, port, ssl=ssl)
        return cls(r, w, auto_ack=auto_ack)

    async def _read(self) -> None:
        try:
            while data := await self.reader.read(65536):
                self.buf += data
                while len(self.buf) >= 9:
                    length, t, xid = HEAD.unpack_from(self.buf)
                    if len(self.buf) < 4 + length:
                        break
                    f = Frame(chr(t), xid, self.buf[9 : 4 + length])
                    self.buf = self.buf[4 + length :]
                    self._frame(f)
        except (ConnectionError, OSError):
            pass
        finally:
            if not self.closed.done():
                self.closed.set_result(None)
            # Nothing can answer a request any more: its sender hears so now, not at its timeout
            # (a test that loads a switch it then kills would otherwise wait out every timeout).
            for fut in self.answers.values():
                if not fut.done():
                    fut.set_exception(ConnectionResetError("the connection closed before the answer"))
            self.answers.clear()

    def _frame(self, f: Frame) -> None:
        self.received.append(f)
        if f.type == "M":
            if f.text.startswith("SYS."):
                self.sys.put_nowait(f)
            else:
                if self.auto_ack:
                    self.send_raw(frame("A", f.xid))
                self.outputs.put_nowait(f)
        elif f.type in ("A", "N"):
            fut = self.answers.pop(f.xid, None)
            if fut is not None and not fut.done():
                fut.set_result(f)
            elif f.xid == 0 and f.type == "N":
                self.sys.put_nowait(f)
        elif f.type == "H":
            self.send_raw(frame("H", f.xid))

    def send_raw(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    async def banner(self, ack: bool = True, timeout: float = HANG_S) -> str:
        f = await asyncio.wait_for(self.sys.get(), timeout)
        assert f.text.startswith("SYS.BANNER."), f.text
        if ack:
            self.send_raw(frame("A", f.xid))
        return f.text

    def ack(self, xid: int, payload: bytes = b"") -> None:
        self.send_raw(frame("A", xid, payload))

    async def send(self, text: str | bytes, timeout: float = HANG_S) -> Frame:
        """Send one M; return the A or N that answers it. Raises TimeoutError when nothing answers
        within ``timeout`` seconds, ConnectionResetError when the connection closes first."""
        if self.closed.done():
            raise ConnectionResetError("the connection is closed")
        self.xid += 1
        fut = asyncio.get_running_loop().create_future()
        self.answers[self.xid] = fut
        self.send_raw(frame("M", self.xid, text.encode("ascii") if isinstance(text, str) else text))
        return await asyncio.wait_for(fut, timeout)

    async def output(self, timeout: float = HANG_S) -> Frame:
        return await asyncio.wait_for(self.outputs.get(), timeout)

    async def logon(self, header: str, user: str, password: str, otp: str = "-") -> Frame:
        return await self.send(f"{header}.LOGON.{user}.{otp}.{password}")

    async def wait_closed(self, timeout: float = HANG_S) -> None:
        await asyncio.wait_for(asyncio.shield(self.closed), timeout)

    def close(self) -> None:
        self.writer.close()
