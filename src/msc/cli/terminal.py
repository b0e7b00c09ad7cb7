"""``msc terminal``: a line-mode terminal for operators and scripts.

Interactive: shows the banner and asks the operator to acknowledge it (CJIS AC-8), asks for the
user ID, one-time password and password (without echo), then sends each typed line as a message
(the header is added unless the line already starts with it) and prints every output as it
arrives, acknowledging it.

Scripted: ``--send TEXT`` (repeatable) sends messages in order after logon; ``--expect N`` waits
for N outputs; ``--user ID --password-stdin`` logs on with the password from stdin's first line.
Lines printed: ``A xid payload``, ``N xid code reason``, ``M xid text`` (outputs), ``SYS text``.
Exit status: 0, or 1 if an expected output did not arrive in time or a message was refused
with ``--fail-on-nak``.
"""

from __future__ import annotations

import asyncio
import getpass
import re
import ssl
import sys
from dataclasses import dataclass, field

from msc.protocol import framing
from msc.protocol.codes import FramingError
from msc.protocol.framing import Framer
from msc.protocol.message import parse_pairs


@dataclass
class TerminalOptions:
    host: str
    port: int
    header: str
    send: list[str] = field(default_factory=list)
    expect: int = 0
    user: str | None = None
    password: str | None = None
    otp: str | None = None
    timeout: float = 30.0
    tls: bool = False
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    interactive: bool = True
    fail_on_nak: bool = False
    bind: bool = False


class Terminal:
    def __init__(self, opts: TerminalOptions, out=sys.stdout) -> None:
        self.opts = opts
        self.out = out
        self.header = opts.header
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.framer = Framer(max_frame=1024 * 1024)
        self.xid = 0
        self.answers: dict[int, asyncio.Future] = {}
        self.outputs = asyncio.Queue()
        self.banner = asyncio.get_running_loop().create_future()
        self.seen: set[int] = set()
        self.naks = 0
        self.closed = asyncio.get_running_loop().create_future()

    def print(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    async def connect(self) -> None:
        ctx = None
        if self.opts.tls:
            ctx = ssl.create_default_context(cafile=self.opts.ca)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            if self.opts.cert:
                ctx.load_cert_chain(self.opts.cert, self.opts.key)
        self.reader, self.writer = await asyncio.open_connection(self.opts.host, self.opts.port, ssl=ctx)
        asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            while data := await self.reader.read(65536):
                for f in self.framer.feed(data):
                    self._frame(f)
        except (ConnectionError, FramingError):
            pass
        finally:
            if not self.banner.done():
                self.banner.set_exception(ConnectionError("connection closed before the banner"))
            if not self.closed.done():
                self.closed.set_result(None)
            for fut in self.answers.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("connection closed"))

    def _frame(self, f: framing.Frame) -> None:
        if f.type == framing.MSG:
            text = f.payload.decode("ascii", "replace")
            if f.xid == 0 and text.startswith("SYS."):
                if text.startswith("SYS.BANNER.") and not self.banner.done():
                    self.banner.set_result(text[len("SYS.BANNER."):])
                else:
                    self.print(f"SYS {text[4:]}")
                self.writer.write(framing.ack(0))
                return
            self.writer.write(framing.ack(f.xid))
            if f.xid in self.seen:
                return  # at-least-once delivery: discard a repeat
            self.seen.add(f.xid)
            self.print(f"M {f.xid} {text}")
            self.outputs.put_nowait(text)
        elif f.type in (framing.ACK, framing.NAK):
            kind = "A" if f.type == framing.ACK else "N"
            payload = f.payload.decode("ascii", "replace")
            self.print(f"{kind} {f.xid} {payload}".rstrip())
            if kind == "N":
                self.naks += 1
            fut = self.answers.pop(f.xid, None)
            if fut is not None and not fut.done():
                fut.set_result((kind, payload))
        elif f.type == framing.HEARTBEAT:
            self.writer.write(framing.heartbeat(f.xid))

    async def request(self, text: str) -> tuple[str, str]:
        self.xid += 1
        fut = asyncio.get_running_loop().create_future()
        self.answers[self.xid] = fut
        self.writer.write(framing.message(self.xid, text.encode("ascii", "replace")))
        return await asyncio.wait_for(fut, self.opts.timeout)

    def full(self, line: str) -> str:
        """Add the header unless the line already starts with it (optionally with a ref)."""
        line = line.strip()
        first = line.split(".", 1)[0]
        if first.startswith(self.header) and re.fullmatch(r"[A-Z0-9]{4,10}", first):
            return line
        return f"{self.header}.{line}"

    async def logon(self, user: str, otp: str | None, password: str) -> bool:
        kind, payload = await self.request(f"{self.header}.LOGON.{user}.{otp or '-'}.{password}")
        if kind == "A":
            pairs = parse_pairs(payload.encode())
            if "MNE" in pairs:
                self.header = pairs["MNE"]
            return True
        return False


async def _ainput(prompt: str, *, secret: bool = False) -> str:
    loop = asyncio.get_running_loop()
    if secret:
        return await loop.run_in_executor(None, getpass.getpass, prompt)
    return await loop.run_in_executor(None, input, prompt)


async def run(opts: TerminalOptions) -> int:
    t = Terminal(opts)
    await t.connect()
    banner = await asyncio.wait_for(t.banner, opts.timeout)
    if opts.interactive:
        print(banner, flush=True)
        await _ainput("Press Enter to acknowledge this notice and continue: ")
    else:
        print(banner, file=sys.stderr, flush=True)
    t.writer.write(framing.ack(0))
    if opts.bind:
        kind, _ = await t.request(f"{t.header}.BIND")
        if kind != "A":
            return 1
    user, password, otp = opts.user, opts.password, opts.otp
    if opts.interactive and user is None and not opts.bind:
        user = (await _ainput("User ID: ")).strip().upper()
        otp = (await _ainput("One-time password (Enter if none): ")).strip() or None
        password = await _ainput("Password: ", secret=True)
    if user is not None:
        if password is None:
            password = getpass.getpass("Password: ")
        if not await t.logon(user, otp, password):
            return 3
    for text in opts.send:
        kind, _ = await t.request(t.full(text))
        if kind == "N" and opts.fail_on_nak:
            return 1
    got = 0
    try:
        while got < opts.expect:
            await asyncio.wait_for(t.outputs.get(), opts.timeout)
            got += 1
    except asyncio.TimeoutError:
        print(f"timed out: {got} of {opts.expect} outputs", file=sys.stderr)
        return 1
    if opts.interactive and not opts.send:
        print(f"Logged on as {t.header}. Type messages (e.g. QW.CA0130000.NAM/SMITH, JOHN.DOB/19800101); "
              "Ctrl-D to log off.", flush=True)
        while True:
            try:
                line = await _ainput("")
            except EOFError:
                break
            if line.strip():
                try:
                    await t.request(t.full(line))
                except asyncio.TimeoutError:
                    print("no answer from msc", file=sys.stderr)
        try:
            await t.request(f"{t.header}.LOGOFF")
        except (asyncio.TimeoutError, ConnectionError):
            pass
    t.writer.close()
    return 0
