"""``msc stub``: a simulator of an upstream system (the CLETS host, NCIC, Nlets, DMV).

It speaks PROTOCOL.md §4 from the upstream's side: answers every ``M`` with ``A`` (or ``N`` at
``--fail-rate``), then sends the response as ``M`` ``HEADER.TEXT`` after ``--latency-ms`` — in
several parts for the keys given ``--parts`` (``QR=2@1500``: two parts 1.5 s apart; ``QW=1-3``:
one to three, by a seeded rule on the inquiry); it answers heartbeats and sends its own; it
pushes unsolicited traffic typed into its ``--control`` port: one message text per line (with
``\\r``, ``\\n``, ``\\t``, ``\\f`` and ``\\xHH`` for any byte), or ``NOTIFY KIND DEST [ORI]`` for a
generated NCIC/Nlets notification (``NOTIFY $.L. ICS2 CA0130000``); the control client gets
back ``A``, ``N <code> <reason>``, ``NOCONN`` once the switch has answered, or ``ERR <why>``.
``BURST COUNT LINE`` pushes COUNT copies of LINE (a text, or a ``NOTIFY`` — each then a new
notification) back to back without waiting for each answer, as a switching centre flushing its
backlog after an outage does, and answers one line once every copy is answered:
``BURST <count> A=<n> <code>=<n> …`` (refusals by code; ``NOCONN``/``TIMEOUT`` when so).
``--log`` records every message received, one per line, as received (CR and LF
inside a message are written as ``\\r`` and ``\\n``).

A response the switch refuses with a transient code (``E501`` journal unavailable, ``E307``
queue full) is sent again after ``--resend-s`` seconds, up to ``--resend-max`` times, as an
upstream switching centre retries a delivery (0 turns that off).

``--redeliver``: what the stub sent (responses and pushed traffic) and the switch had not
answered ``A`` or ``N`` when its connection ended is kept and sent again, with new xids, on the
next connection the switch makes — as a switching centre keeps what it has not had acknowledged
(PROTOCOL.md §4 "Messages msc journaled and could not acknowledge"). Without it such messages are
dropped with their connection.

Faults it can play, from the command line or as control-port commands (a line starting with
``/``; answered ``OK`` or ``ERR <why>``):

* ``--half-dead`` / ``/half-dead on|off``: a host that accepts TCP connections and reads, but
  never answers anything — no ``A``/``N``, no ``H``, no response — and never closes.
* ``/hold on|off``: acknowledge requests but keep their responses until ``/hold off``.
* ``/resend SECONDS``: change ``--resend-s`` (0: never send a refused response again).
* ``/answer-size BYTES``: lengthen every response to at least BYTES with record lines (a long
  criminal history: one arrest cycle per CR LF line), 0 for the natural length.

It shares only the wire format with the switch (``msc.protocol``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import signal
import time
from dataclasses import dataclass, field
from typing import IO

from msc.protocol import framing, grammar
from msc.protocol.codes import FramingError, ProtocolError, Reject
from msc.protocol.framing import Framer
from msc.protocol.message import format_upstream, parse_input
from msc.stubs.responses import ROLE_KEYS, answer_parts, lengthen, notification, parts_count

HEARTBEAT_S = 30.0


@dataclass
class StubConfig:
    role: str = "clets"
    host: str = "127.0.0.1"
    port: int = 7501
    control: tuple[str, int] | None = None
    log_path: str | None = None
    latency_ms: float = 0.0
    fail_rate: float = 0.0
    seed: int = 1
    heartbeat_s: float = HEARTBEAT_S
    tls_cert: str | None = None  # serve TLS (as a state switching centre would)
    tls_key: str | None = None
    half_dead: bool = False  # accept and read, never answer (see the module doc)
    resend_s: float = 2.0  # send a response refused E501/E307 again after this long (0: never)
    resend_max: int = 5
    redeliver: bool = False  # keep what a lost connection left unanswered; send it on the next one
    #: Message key → (fewest parts, most parts, milliseconds between parts): answers in parts.
    parts: dict[str, tuple[int, int, float]] = field(default_factory=dict)


#: Refusals of a response that an upstream retries (PROTOCOL.md §6: journal unavailable, queue full).
TRANSIENT = frozenset(("E501", "E307"))


PARTS_RE = re.compile(r"([A-Z0-9]{2,6})=([1-9])(?:-([1-9]))?(?:@([0-9]+(?:\.[0-9]+)?))?\Z")


def parse_parts(spec: str) -> tuple[str, tuple[int, int, float]]:
    """``--parts`` value ``KEY=N[-M][@GAP_MS]`` → (key, (N, M, gap)); raises ValueError."""
    m = PARTS_RE.match(spec)
    if m is None:
        raise ValueError(f"{spec!r} is not KEY=N[-M][@GAP_MS] (e.g. QR=2@1500, QW=1-3@200)")
    lo = int(m.group(2))
    hi = int(m.group(3) or lo)
    if hi < lo:
        raise ValueError(f"{spec!r}: {hi} < {lo}")
    return m.group(1), (lo, hi, float(m.group(4) or 0))


@dataclass
class Stats:
    received: int = 0
    answered: int = 0
    failed: int = 0
    unsolicited: int = 0
    resent: int = 0  # responses sent again after a transient refusal
    refused: int = 0  # responses the switch refused (N)
    parts: int = 0  # answer parts sent (>= answered)
    started: float = field(default_factory=time.time)


class _Conn(asyncio.Protocol):
    def __init__(self, stub: Stub) -> None:
        self.stub = stub
        self.framer = Framer(max_frame=1024 * 1024)
        self.transport: asyncio.Transport | None = None
        self.xid = 0
        self.waiting: dict[int, asyncio.Future] = {}
        self.responses: dict[int, tuple[bytes, int]] = {}  # xid -> (response, times sent again)
        self.pushed: dict[int, bytes] = {}  # xid -> pushed text, until answered (--redeliver)
        self.hb_probe: int | None = None
        self.last_rx = self.last_tx = time.monotonic()

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.stub.conns.add(self)
        if self.stub.unanswered:  # --redeliver: what the last connection left unanswered, first
            unanswered, self.stub.unanswered = self.stub.unanswered, []
            for text, fut, attempts in unanswered:
                if fut is None:
                    self.respond(text, attempts)
                else:
                    self._push(text, fut)

    def connection_lost(self, exc) -> None:
        self.stub.conns.discard(self)
        if self.stub.cfg.redeliver:
            # Kept in the order sent (xids rise), answered or not by the next connection.
            kept: list[tuple[int, bytes, asyncio.Future | None, int]] = [
                (xid, text, None, attempts) for xid, (text, attempts) in self.responses.items()]
            kept += [(xid, self.pushed[xid], fut, 0) for xid, fut in self.waiting.items() if not fut.done()]
            self.stub.unanswered += [(text, fut, attempts) for _x, text, fut, attempts in sorted(kept, key=lambda k: k[0])]
            self.responses.clear()
        for fut in self.waiting.values():
            if not fut.done() and not self.stub.cfg.redeliver:
                fut.set_result("NOCONN")
        self.waiting.clear()
        self.pushed.clear()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.last_tx = time.monotonic()

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        if self.stub.half_dead:
            return  # read, never answer
        try:
            frames = self.framer.feed(data)
        except FramingError as exc:
            self.write(framing.nak(0, exc.code, exc.detail))
            self.close()
            return
        out: list[bytes] = []
        for f in frames:
            if f.type == framing.MSG:
                self.stub._request(self, f.xid, f.payload, out)
            elif f.type == framing.HEARTBEAT:
                # Answer probes; an H carrying our own probe's xid is the answer to it.
                if f.xid == self.hb_probe:
                    self.hb_probe = None
                else:
                    out.append(framing.heartbeat(f.xid))
            elif f.type in (framing.ACK, framing.NAK):
                self.pushed.pop(f.xid, None)
                fut = self.waiting.pop(f.xid, None)
                if fut is not None and not fut.done():
                    fut.set_result("A" if f.type == framing.ACK else "N " + f.payload.decode("ascii", "replace"))
                sent = self.responses.pop(f.xid, None)
                if sent is not None and f.type == framing.NAK:
                    self.stub._refused(self, sent, f.payload)
        if out:
            self.write(b"".join(out))
        if self.framer.failed is not None:
            self.write(framing.nak(0, Reject.E101.code, self.framer.failed.detail))
            self.close()

    def respond(self, response: bytes, attempts: int = 0) -> None:
        """Send one response and remember it until the switch answers A or N."""
        self.xid = (self.xid % framing.MAX_XID) + 1
        self.responses[self.xid] = (response, attempts)
        self.write(framing.message(self.xid, response))

    def push(self, text: bytes) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self._push(text, fut)
        return fut

    def _push(self, text: bytes, fut: asyncio.Future) -> None:
        self.xid = (self.xid % framing.MAX_XID) + 1
        self.waiting[self.xid] = fut
        if self.stub.cfg.redeliver:
            self.pushed[self.xid] = text
        self.write(framing.message(self.xid, text))


class Stub:
    """One simulated upstream."""

    def __init__(self, cfg: StubConfig) -> None:
        self.cfg = cfg
        self.keys = ROLE_KEYS.get(cfg.role)
        self.rng = random.Random(cfg.seed)
        self.conns: set[_Conn] = set()
        self.stats = Stats()
        self._log: IO[str] | None = None
        self._servers: list[asyncio.Server] = []
        self._tasks: list[asyncio.Task] = []
        self.half_dead = cfg.half_dead
        self.hold = False
        self.held: list[tuple[_Conn, bytes]] = []
        self.answer_size = 0
        self._notified = 0
        #: --redeliver: (text, the push's future or None for a response, times resent) left
        #: unanswered by a lost connection, for the next one.
        self.unanswered: list[tuple[bytes, asyncio.Future | None, int]] = []

    async def start(self) -> None:
        if self.cfg.log_path:
            self._log = open(self.cfg.log_path, "a", buffering=1, encoding="ascii", errors="backslashreplace")
        loop = asyncio.get_running_loop()
        ctx = None
        if self.cfg.tls_cert:
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(self.cfg.tls_cert, self.cfg.tls_key)
        srv = await loop.create_server(lambda: _Conn(self), self.cfg.host, self.cfg.port, reuse_address=True,
                                       backlog=1024, ssl=ctx)
        self._servers.append(srv)
        if self.cfg.control:
            host, port = self.cfg.control
            self._servers.append(await asyncio.start_server(self._control, host, port, reuse_address=True))
        self._tasks.append(asyncio.create_task(self._heartbeats()))

    @property
    def port(self) -> int:
        return self._servers[0].sockets[0].getsockname()[1]

    @property
    def control_port(self) -> int | None:
        return self._servers[1].sockets[0].getsockname()[1] if len(self._servers) > 1 else None

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for s in self._servers:
            s.close()
        for c in list(self.conns):
            if c.transport:
                c.transport.abort()
        if self._log:
            self._log.close()

    # -- requests -------------------------------------------------------------------------

    def _request(self, conn: _Conn, xid: int, payload: bytes, out: list[bytes]) -> None:
        self.stats.received += 1
        if self._log is not None:
            self._log.write(payload.decode("ascii", "backslashreplace").replace("\r", "\\r").replace("\n", "\\n") + "\n")
        try:
            inp = parse_input(payload)
        except ProtocolError as exc:
            out.append(framing.nak(xid, exc.code, exc.detail))
            return
        if self.keys is not None and inp.mke not in self.keys and inp.mke != "AM":
            out.append(framing.nak(xid, Reject.E301.code, f"{self.cfg.role.upper()} DOES NOT ANSWER {inp.mke}"))
            return
        if self.cfg.fail_rate and self.rng.random() < self.cfg.fail_rate:
            self.stats.failed += 1
            out.append(framing.nak(xid, Reject.E302.code, f"{self.cfg.role.upper()} SYSTEM UNAVAILABLE"))
            return
        out.append(framing.ack(xid))
        rule = self.cfg.parts.get(inp.mke)
        n = parts_count(self.cfg.seed, inp, rule[0], rule[1]) if rule else 1
        texts = answer_parts(self.cfg.seed, inp, n)
        if not texts:
            return
        self.stats.answered += 1
        self.stats.parts += len(texts)
        gap = rule[2] if rule else 0.0
        for i, text in enumerate(texts):
            if len(text) < self.answer_size:
                text = lengthen(text, self.answer_size)
            response = format_upstream(inp.header, text)
            delay = self.cfg.latency_ms + i * gap
            if self.hold:
                self.held.append((conn, response))
            elif delay > 0:
                asyncio.get_running_loop().call_later(delay / 1000, self._respond, conn, response)
            else:
                conn.xid = (conn.xid % framing.MAX_XID) + 1
                conn.responses[conn.xid] = (response, 0)
                out.append(framing.message(conn.xid, response))

    def _respond(self, conn: _Conn, response: bytes, attempts: int = 0) -> None:
        if self.half_dead:
            return
        if conn.transport is None or conn.transport.is_closing():
            if self.cfg.redeliver:  # its connection is gone: the next one takes it
                live = [c for c in self.conns if c.transport and not c.transport.is_closing()]
                if live:
                    live[0].respond(response, attempts)
                else:
                    self.unanswered.append((response, None, attempts))
            return
        conn.respond(response, attempts)

    def _refused(self, conn: _Conn, sent: tuple[bytes, int], payload: bytes) -> None:
        """The switch answered a response N: send it again later if the refusal is transient."""
        self.stats.refused += 1
        response, attempts = sent
        code = payload[:4].decode("ascii", "replace")
        if code in TRANSIENT and self.cfg.resend_s > 0 and attempts < self.cfg.resend_max:
            self.stats.resent += 1
            asyncio.get_running_loop().call_later(self.cfg.resend_s, self._respond, conn, response, attempts + 1)

    def command(self, line: str) -> str:
        """A control-port command (without its leading ``/``): ``half-dead on|off``,
        ``hold on|off``, ``resend SECONDS``. Returns ``OK`` or ``ERR <why>``."""
        words = line.split()
        if len(words) == 2 and words[0] in ("half-dead", "hold") and words[1] in ("on", "off"):
            on = words[1] == "on"
            if words[0] == "half-dead":
                self.half_dead = on
            else:
                self.hold = on
                if not on:
                    held, self.held = self.held, []
                    for conn, response in held:
                        self._respond(conn, response)
            return "OK"
        if len(words) == 2 and words[0] == "answer-size":
            if not words[1].isdigit() or int(words[1]) > 16 * 1024 * 1024:
                return "ERR BYTES MUST BE 0 TO 16777216"
            self.answer_size = int(words[1])
            return "OK"
        if len(words) == 2 and words[0] == "resend":
            try:
                seconds = float(words[1])
            except ValueError:
                return "ERR SECONDS MUST BE A NUMBER"
            if not seconds >= 0:
                return "ERR SECONDS MUST BE >= 0"
            self.cfg.resend_s = seconds
            return "OK"
        return "ERR UNKNOWN COMMAND (half-dead on|off, hold on|off, resend SECONDS, answer-size BYTES)"

    # -- unsolicited traffic ---------------------------------------------------------------

    async def push(self, text: str, timeout: float = 10.0) -> str:
        """Send one unsolicited message to the connected switch; return its answer."""
        conns = [c for c in self.conns if c.transport and not c.transport.is_closing()]
        if not conns:
            return "NOCONN"
        self.stats.unsolicited += 1
        fut = conns[0].push(text.encode("latin-1", "replace"))
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return "TIMEOUT"

    def notification_text(self, command: str) -> str | None:
        """``NOTIFY KIND DEST [ORI]`` → the message text to push (None: not such a command).

        ``ORI`` (the agency the notice concerns) defaults to ``DEST`` when that is an ORI.
        Raises ValueError for a NOTIFY it cannot make."""
        words = command.split()
        if not words or words[0] != "NOTIFY":
            return None
        if len(words) not in (3, 4):
            raise ValueError("NOTIFY KIND DEST [ORI]")
        kind, dest = words[1], words[2]
        ori = words[3] if len(words) == 4 else dest
        if grammar.ORI_RE.match(ori) is None:
            raise ValueError(f"{ori} IS NOT AN ORI")
        self._notified += 1
        return notification(self.cfg.seed, kind, dest, ori, self._notified)

    async def burst(self, count: int, line: str, timeout: float = 300.0) -> str:
        """``BURST COUNT LINE``: push ``count`` copies of ``line`` (a text, or a ``NOTIFY`` — a new
        notification each time) without waiting between them; tally the switch's answers.

        Returns ``BURST <count> A=<n> E307=<n> …`` (codes of ``N`` answers, ``NOCONN``, ``TIMEOUT``).
        Raises ValueError for a NOTIFY it cannot make."""
        conns = [c for c in self.conns if c.transport and not c.transport.is_closing()]
        if not conns:
            return f"BURST {count} NOCONN={count}"
        texts = []
        for _ in range(count):
            generated = self.notification_text(line)
            texts.append(generated if generated is not None else control_unescape(line))
        conn = conns[0]
        futs = []
        for text in texts:
            self.stats.unsolicited += 1
            futs.append(conn.push(text.encode("latin-1", "replace")))
        del texts
        done, not_done = await asyncio.wait(futs, timeout=timeout) if futs else (set(), set())
        tally: dict[str, int] = {}
        for f in futs:
            result = f.result() if f in done else "TIMEOUT"
            key = "A" if result == "A" else result.split(" ")[1] if result.startswith("N ") else result
            tally[key] = tally.get(key, 0) + 1
        for f in not_done:
            f.cancel()
        order = sorted(tally, key=lambda k: (k != "A", k))
        return f"BURST {count} " + " ".join(f"{k}={tally[k]}" for k in order)

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                text = line.decode("ascii", "replace").rstrip("\r\n")
                if not text:
                    continue
                if text.startswith("/"):
                    writer.write((self.command(text[1:]) + "\n").encode())
                    await writer.drain()
                    continue
                try:
                    words = text.split(" ", 2)
                    if words[0] == "BURST":
                        if len(words) != 3 or not words[1].isdigit() or not 1 <= int(words[1]) <= 1_000_000:
                            raise ValueError("BURST COUNT LINE (COUNT 1 TO 1000000)")
                        writer.write((await self.burst(int(words[1]), words[2]) + "\n").encode())
                        await writer.drain()
                        continue
                    generated = self.notification_text(text)
                except ValueError as exc:
                    writer.write(f"ERR {exc}\n".encode())
                    await writer.drain()
                    continue
                result = await self.push(generated if generated is not None else control_unescape(text))
                writer.write((result + "\n").encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _heartbeats(self) -> None:
        hb = self.cfg.heartbeat_s
        while True:
            await asyncio.sleep(min(1.0, hb / 3))
            now = time.monotonic()
            if self.half_dead:
                continue  # sends nothing, closes nothing
            for c in list(self.conns):
                if now - c.last_rx > 3 * hb and c.transport:
                    c.transport.abort()
                elif now - c.last_tx >= hb:
                    c.xid = (c.xid % framing.MAX_XID) + 1
                    c.hb_probe = c.xid
                    c.write(framing.heartbeat(c.xid))


_ESCAPE_RE = re.compile(r"\\(?:x([0-9A-Fa-f]{2})|([rntf\\]))")
_SIMPLE = {"r": "\r", "n": "\n", "t": "\t", "f": "\f", "\\": "\\"}


def control_unescape(line: str) -> str:
    """A control-port line as the text to push: ``\\r``, ``\\n``, ``\\t``, ``\\f``, ``\\\\`` and
    ``\\xHH`` (any byte, 00–FF) stand for the bytes they name, so any byte can be sent."""
    return _ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)) if m.group(1) else _SIMPLE[m.group(2)], line)


async def run(cfg: StubConfig, *, ready=None) -> None:
    stub = Stub(cfg)
    await stub.start()
    if ready is not None:
        ready(stub)
    # SIGTERM (msc demo stopping it, a service manager) and SIGINT stop the stub cleanly.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await stub.stop()
