"""The ``msc terminal`` client's connection to msc: :class:`Terminal` speaks the client protocol
(PROTOCOL.md §1–§5: the banner, LOGON, messages with their header references, outputs
acknowledged once printed, heartbeats) over one or more addresses, and says why a session ended
(:class:`SessionEnded`). The command around it — prompts, scripts, exit status — is
:mod:`msc.cli.terminal`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import ssl
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from msc.aio import bounded
from msc.cli.termrules import LogonRefusal, Unanswered, awaits_answer, message_key
from msc.protocol import framing
from msc.protocol.codes import FramingError
from msc.protocol.framing import Framer
from msc.protocol.message import parse_pairs

# SYS LOGOFF reasons after which msc closes the connection (server/switch.py stop, a station
# disabled by a reload, a newer session of the same station: Session.close); after the others
# (IDLE, SESSION MAXIMUM, USER DISABLED, USER REMOVED) the connection stays open for the next
# logon. PROTOCOL.md §3.
CLOSING_REASONS = frozenset(("SHUTDOWN", "STATION DISABLED", "REPLACED"))
# Closing reasons another node would repeat: no failover to the next address after these.
FINAL_REASONS = frozenset(("STATION DISABLED", "REPLACED"))
# msc closed a connection that did not log on within the listener's logon_timeout_s: N xid 0
# "E201 NO LOGON WITHIN 60 S" (PROTOCOL.md §1). Nobody was at the terminal: no failover either.
LOGON_TIMEOUT = "E201"

# How long a script keeps trying the addresses of a pair when none answers: longer than the
# documented worst failover — Patroni's promotion (ttl 30 s + loop_wait 10 s in config/patroni/)
# plus msc's own takeover (lease_ttl_s and the start, ~6 s) — with room for a loaded machine.
SCRIPT_RECONNECT_S = 120.0
# While no address answers, one "still trying" line after this long, then at doubling
# intervals up to once a minute (each address's reason is said when it changes).
_STILL_TRYING_FIRST_S, _STILL_TRYING_MAX_S = 10.0, 60.0

_REF_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


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
    #: every address to try, in order (``--connect A,B``); empty: just (host, port)
    addresses: list[tuple[str, int]] = field(default_factory=list)
    #: with several addresses, how long to keep trying them when none answers (``--reconnect-for``,
    #: seconds); None: until one does (an operator's terminal; Ctrl-C ends it)
    reconnect_for: float | None = SCRIPT_RECONNECT_S

    @property
    def targets(self) -> list[tuple[str, int]]:
        return self.addresses or [(self.host, self.port)]


class SessionEnded(Exception):
    """The session ended (``reason``) while the client waited; ``closed``: the connection too."""

    def __init__(self, reason: str, closed: bool) -> None:
        super().__init__(reason)
        self.reason, self.closed = reason, closed


class StoppedTrying(Exception):
    """:meth:`Terminal.connect_any` was told to stop (``stop_trying``: Ctrl-C)."""


class Terminal:
    def __init__(self, opts: TerminalOptions, out=None) -> None:
        self.opts = opts
        self.out = out if out is not None else sys.stdout  # (the stdout of now, not of the import)
        self.header = opts.header
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.framer = Framer(max_frame=1024 * 1024)
        self.xid = 0
        loop = asyncio.get_running_loop()
        self.answers: dict[int, asyncio.Future] = {}
        self.banner = loop.create_future()
        self.seen: set[int] = set()
        self.naks = 0
        self.closed = loop.create_future()  # result: why the connection ended
        # result: the SYS LOGOFF reason of this session — forgotten once taken (forget_ended), so
        # that it is never the reason given for a later session's end or a later lost connection.
        self.ended = loop.create_future()
        self.closing: str | None = None  # a closing SYS LOGOFF (SHUTDOWN …) msc sent on this connection
        # Header references: 4 random characters, then a counter — unique to this run, so an
        # answer to an earlier run's message (queued for the station) is never taken for ours.
        self._ref_base = "".join(secrets.choice(_REF_ALPHABET) for _ in range(4))
        self._ref_n = 0
        self.own_headers: set[str] = set()
        self.expect_left = 0
        self.count_any = False  # --expect without --send: any output counts (a printer, a watch)
        self.counted: list[str] = []  # the outputs that counted towards --expect, as they came (every session)
        self.answered = loop.create_future()
        self.quiet = False  # stopped taking outputs: neither printed nor acknowledged
        self.at = 0  # index of the address in opts.targets connected to (or last tried)
        self.next_send = 0  # index of the first --send message not sent yet
        self.accepted = 0  # --send messages msc acknowledged (A)
        self.unknown = 0  # messages whose answer was lost with a connection (not sent again)
        self.stop_trying = False  # set (Ctrl-C): connect_any stops at its next try
        self.pending: dict[int, str] = {}  # own messages sent on this connection without an A/N yet
        self.not_sent: list[str] = []  # lines typed in a session that ended before they were sent
        self.not_taken = 0  # lines typed after a LOGOFF among those (a logon's answers): counted only
        #: the LineReader whose prompt may be open (msc terminal's keyboard): msc's own lines start on
        #: a new line of their own, never after the prompt (``at_prompt``)
        self.keyboard: Any = None
        self.logged_on = False  # an operator is logged on (or a station bound) on this connection
        self.was_logged_on = False  # ... when the session or connection that just ended ended
        # Own requests msc accepted (A) with no output of their header yet, by header, in this
        # session; and those of ended sessions with how the session ended, until told (termrules).
        self.open: dict[str, Unanswered] = {}
        self.orphans: list[tuple[Unanswered, str]] = []
        self.pooled = False  # this session's mnemonic was lent by a pool (LOGON's MNE is not the header)
        self.sent_in_session = 0  # own requests sent since the last logon
        self.pooled_headers: set[str] = set()  # own headers sent in a pooled session, still without A/N
        self.refused: LogonRefusal | None = None  # msc's N to the last LOGON
        self.otp_session = False  # the last successful logon gave a one-time password (now used)
        # A script's logon refused "try again" (termrules): when first, and its next waits.
        self.logon_refused_at: float | None = None
        self.logon_waits: Iterator[float] | None = None

    # -- output -----------------------------------------------------------------------------

    def print(self, line: str) -> None:
        kb = self.keyboard
        if kb is not None and getattr(kb, "at_prompt", False):
            kb.at_prompt = False  # the prompt still waits; its answer is typed below this line
            line = "\n" + line
        print(line, file=self.out, flush=True)

    def _send(self, data: bytes) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(data)

    @property
    def address(self) -> str:
        host, port = self.opts.targets[self.at]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def connect(self) -> None:
        """Open a connection to ``opts.targets[self.at]`` (state of any earlier one forgotten)."""
        ctx = None
        if self.opts.tls:
            ctx = ssl.create_default_context(cafile=self.opts.ca)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            if self.opts.cert:
                ctx.load_cert_chain(self.opts.cert, self.opts.key)
        loop = asyncio.get_running_loop()
        self.session_over("the connection was lost")  # (if the old connection's reader has not said so)
        # A new connection is a new session: frames, output ids (msc numbers them per connection:
        # an id printed on the last one says nothing about this one), the banner and how it ends.
        self.framer = Framer(max_frame=1024 * 1024)
        self.answers = {}
        self.pending = {}
        self.refusal: str | None = None  # msc's N xid 0 on this connection: why it closes it
        self.closing = None
        self.seen = set()
        self.banner = loop.create_future()
        self.closed = loop.create_future()
        self.ended = loop.create_future()
        self.header = self.opts.header  # a pool's mnemonic was this session's
        self.quiet = self.answered.done()  # after --expect was met, outputs stay queued in msc
        host, port = self.opts.targets[self.at]
        self.reader, self.writer = await bounded(asyncio.open_connection(host, port, ssl=ctx),
                                                  min(self.opts.timeout, 10.0))
        self._reader_task = loop.create_task(self._read())

    async def connect_any(self, *, first: int = 0) -> str:
        """Connect to the first address, from ``first`` on and round again, that sends a banner;
        returns the banner. With one address: one try. With several: for up to
        ``opts.reconnect_for`` seconds (None: until one answers), saying each address's reason
        when it changes and, while none answers, a rate-limited "still trying" line.

        Raises ConnectionError (or OSError, asyncio.TimeoutError with one address) when none did.
        """
        targets = self.opts.targets
        if len(targets) == 1:
            self.at = 0
            await self.connect()
            return await asyncio.wait_for(self.banner, self.opts.timeout)
        loop = asyncio.get_running_loop()
        start = loop.time()
        bound = self.opts.reconnect_for
        deadline = None if bound is None else start + bound
        # One address that accepts but never sends its banner (a hung node) must not use up the
        # whole wait: each attempt gets a share of it, 1 to 5 s.
        per_try = 5.0 if bound is None else max(1.0, min(5.0, bound / len(targets)))
        said: dict[int, str] = {}  # address index -> the reason last shown for it
        note_every = _STILL_TRYING_FIRST_S
        next_note = start + note_every
        pause, tries = 0.05, 0
        while True:
            if self.stop_trying:
                raise StoppedTrying
            self.at = (first + tries) % len(targets)
            tries += 1
            left = per_try if deadline is None else max(min(per_try, deadline - loop.time()), 0.01)
            try:
                await bounded(self.connect(), left)
                left = per_try if deadline is None else max(min(per_try, deadline - loop.time()), 0.01)
                banner = await asyncio.wait_for(self.banner, left)
                print(f"Connected to msc at {self.address}.", file=sys.stderr, flush=True)
                return banner
            except (TimeoutError, OSError, ConnectionError) as exc:
                self.close()
                why = _why(exc)
                now = loop.time()
                if deadline is not None and now >= deadline:
                    raise ConnectionError(f"msc unreachable at {', '.join(_fmt(a) for a in targets)} "
                                          f"within {bound:g} s (last: {self.address}: {why})") from None
                if said.get(self.at) != why:
                    said[self.at] = why
                    nxt = _fmt(targets[(first + tries) % len(targets)])
                    print(f"msc at {self.address}: {why}; trying {nxt}", file=sys.stderr, flush=True)
                if now >= next_note:
                    reasons = "; ".join(f"{_fmt(targets[i])}: {said[i]}" for i in sorted(said))
                    tail = ("Ctrl-C to stop" if deadline is None
                            else f"giving up {bound:g} s after the first try")
                    print(f"still trying: no msc node has answered for {now - start:.0f} s ({reasons}); {tail}",
                          file=sys.stderr, flush=True)
                    note_every = min(note_every * 2, _STILL_TRYING_MAX_S)
                    next_note = now + note_every
                if tries % len(targets) == 0:  # a whole round refused: wait a little, then again
                    wait = pause if deadline is None else min(pause, max(deadline - loop.time(), 0))
                    await asyncio.sleep(wait)
                    pause = min(pause * 2, 1.0)

    def fails_over(self, e: SessionEnded) -> bool:
        """Whether this ended session moves on to the next address: the connection went (or msc
        shut down) and there is another address to go to — not after msc closed it for want of a
        logon (E201: the operator was away, another node would do the same)."""
        return (len(self.opts.targets) > 1 and e.closed and e.reason not in FINAL_REASONS
                and not e.reason.startswith(LOGON_TIMEOUT))

    async def _read(self) -> None:
        # This connection's own futures: after a failover ``self`` has the next connection's.
        reader, framer, banner, closed, answers = self.reader, self.framer, self.banner, self.closed, self.answers
        assert reader is not None, "_read runs on an open connection"

        def closing() -> str | None:  # this connection's closing SYS LOGOFF (not a later one's)
            return self.closing if closed is self.closed else None

        why = "CONNECTION LOST"
        try:
            while data := await reader.read(65536):
                for f in framer.feed(data):
                    self._frame(f)
            # End of file. After a closing SYS LOGOFF (SHUTDOWN, STATION DISABLED, REPLACED) msc
            # closed it; without one nobody said why — the node died (kill -9, a crash: the kernel
            # closes its sockets) or the network went — so "closed by msc" would be untrue
            # (OPERATIONS.md "What an operator sees during a failover"). A SYS LOGOFF that kept the
            # connection (USER DISABLED, IDLE …) says nothing about a close that came later.
            why = "CONNECTION CLOSED BY MSC" if closing() else "CONNECTION LOST"
        except ConnectionResetError:
            why = "CONNECTION RESET"
        except (ConnectionError, OSError):
            why = "CONNECTION LOST"
        except FramingError as exc:
            why = f"FRAMING ERROR {exc}"
        finally:
            if self.refusal is not None:
                # msc said why it closes the connection (an N with xid 0: E201 no logon in time,
                # E307 too many connections or refusals, E101 framing): that is the reason, not
                # "lost" — whether the close then came as an end of file or a reset.
                why = self.refusal
            if not banner.done():
                banner.set_exception(ConnectionError("connection closed before the banner"))
                banner.exception()  # retrieved: no "never retrieved" warning
            if not closed.done():
                closed.set_result(why)
            said = closing()
            if closed is self.closed:  # (not a connection a failover already left behind)
                if not said:  # (after a closing SYS LOGOFF: as that said)
                    self.was_logged_on = self.logged_on
                self.logged_on = False
                self.session_over(f"msc ended the session ({said})" if said else "the connection was lost")
            for fut in answers.values():
                if not fut.done():
                    fut.set_exception(SessionEnded(said or why, True))
                    fut.exception()

    def _frame(self, f: framing.Frame) -> None:
        if f.type == framing.MSG:
            if self.quiet:
                return  # not printed, so not acknowledged: msc keeps it for the next session
            text = f.payload.decode("ascii", "replace")
            if f.xid == 0 and text.startswith("SYS."):
                if text.startswith("SYS.BANNER.") and not self.banner.done():
                    self.banner.set_result(text[len("SYS.BANNER."):])
                else:
                    self.print(f"SYS {text[4:]}")
                    self._send(framing.ack(0))
                    if text.startswith("SYS.LOGOFF."):
                        self._logged_off(text[len("SYS.LOGOFF."):])
                return
            if f.xid in self.seen:
                self._send(framing.ack(f.xid))  # at-least-once delivery: printed before, discard
                return
            try:
                self.print(f"M {f.xid} {text}")
            except (BrokenPipeError, ValueError):
                self.quiet = True  # could not print it: do not acknowledge it
                return
            self.seen.add(f.xid)
            self._send(framing.ack(f.xid))
            self.answer_came(text.split(".", 1)[0])
            if self.expect_left > 0 and (self.count_any or text.split(".", 1)[0] in self.own_headers):
                self.expect_left -= 1
                self.counted.append(text)
                if self.expect_left == 0:
                    self.quiet = True  # what was asked for is here; the rest stays queued
                    if not self.answered.done():
                        self.answered.set_result(None)
        elif f.type in (framing.ACK, framing.NAK):
            kind = "A" if f.type == framing.ACK else "N"
            payload = f.payload.decode("ascii", "replace")
            fut = self.answers.pop(f.xid, None)
            sent = self.pending.pop(f.xid, None)
            if sent is not None:
                self.pooled_headers.discard(sent.split(".", 1)[0])  # (kept only while without A/N)
                if kind == "A":
                    self.accepted_own(f.xid, sent)
            if f.xid == 0 and kind == "N":
                self.refusal = payload.strip() or "REFUSED"
            self.print(f"{kind} {f.xid} {payload}".rstrip())
            if kind == "N":
                self.naks += 1
            if fut is not None and not fut.done():
                fut.set_result((kind, payload))
        elif f.type == framing.HEARTBEAT:
            self._send(framing.heartbeat(f.xid))

    # -- requests ---------------------------------------------------------------------------

    def _logged_off(self, reason: str) -> None:
        """msc's ``SYS LOGOFF.reason``: this session ended (PROTOCOL.md §3). Each one is the reason
        of the session it ends: one still untaken from an earlier session (which a prompt kept)
        gives way to it."""
        if reason in CLOSING_REASONS:
            self.closing = reason
        if self.ended.done():
            self.ended = asyncio.get_running_loop().create_future()
        self.ended.set_result(reason)
        self.was_logged_on, self.logged_on = self.logged_on, False
        self.session_over(f"msc ended the session ({reason})")

    def forget_ended(self) -> None:
        """The end of the last session was told (the client is back at ``User ID:``): its
        reason is forgotten, so that what ends the connection later — lost, msc's SHUTDOWN, its
        logon time limit (E201) — is said with its own reason, not the old session's."""
        if self.ended.done():
            self.ended = asyncio.get_running_loop().create_future()

    def ending(self) -> SessionEnded:
        """Why the session or its connection ended, as of now (the connection closed, or a SYS
        LOGOFF came). Once the connection is closed, its own reason: the closing SYS LOGOFF msc
        sent on it (SHUTDOWN, STATION DISABLED, REPLACED), else how it went (CONNECTION LOST,
        CONNECTION RESET, msc's ``N 0`` such as E201) — never a session's logoff that had kept
        the connection open (USER DISABLED, IDLE …), which was told when it came."""
        if self.closed.done():
            return SessionEnded(self.closing or self.closed.result(), True)
        reason = self.ended.result()
        return SessionEnded(reason, reason in CLOSING_REASONS)

    def new_session(self) -> None:
        """Forget how the last session ended (before the next logon)."""
        self.forget_ended()
        self.session_over("the session ended")  # a logon ends the one before it, if any
        self.refused = None

    # -- accepted requests without an answer (what the operator is told: msc.cli.termrules) --

    def accepted_own(self, xid: int, text: str) -> None:
        """msc acknowledged own request ``text``: until an output with its header comes, it is
        open (a key answered by its A alone — LOGOFF, PWD, a one-way key — is not)."""
        key = message_key(text)
        if key == "LOGOFF":
            self.logged_on = False
            self.session_over("the session ended (LOGOFF)")
        elif awaits_answer(key):
            self.open[text.split(".", 1)[0]] = Unanswered(text, xid, self.header, self.pooled)

    def answer_came(self, header: str) -> None:
        """An output with ``header`` was printed: a part of an answer, or a notice of its fate."""
        self.open.pop(header, None)
        if self.orphans:
            self.orphans = [(u, why) for u, why in self.orphans if u.header != header]

    def session_over(self, why: str) -> None:
        """The session ended (``why``, e.g. "the connection was lost"): its open requests'
        answers no longer come to it (termrules.unanswered_notice says where they go)."""
        self.orphans += [(u, why) for u in self.open.values()]
        self.open = {}
        self.pooled = False
        self.header = self.opts.header  # the next LOGON names the station, or the pool (PROTOCOL.md §3)

    def take_orphans(self) -> list[tuple[Unanswered, str]]:
        """Accepted requests of ended sessions still without an output of their header (each
        with how its session ended), forgotten once taken."""
        taken, self.orphans = self.orphans, []
        return taken

    async def until(self, aw, timeout: float | None = None):
        """Await ``aw`` unless the connection closes or msc ends the session first."""
        task = asyncio.ensure_future(aw)
        closed, ended = self.closed, self.ended
        done, _ = await asyncio.wait([task, closed, ended], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        if not done:
            raise TimeoutError
        raise self.ending()

    async def request(self, text: str, *, own: bool = False) -> tuple[str, str]:
        """Send ``text``; returns msc's (``"A"``|``"N"``, payload). ``own``: its answers count for
        ``--expect`` (its header carries this run's reference)."""
        self.xid += 1
        fut = asyncio.get_running_loop().create_future()
        self.answers[self.xid] = fut
        if self.closed.done():
            raise self.ending()
        if own:
            self.own_headers.add(text.split(".", 1)[0])
            self.pending[self.xid] = text
            self.sent_in_session += 1
            if self.pooled:
                self.pooled_headers.add(text.split(".", 1)[0])
        self._send(framing.message(self.xid, text.encode("ascii", "replace")))
        return await asyncio.wait_for(fut, self.opts.timeout)

    def take_unanswered(self) -> list[str]:
        """The own messages sent on the connection that ended without their A/N (in the order
        sent), forgotten once taken: msc may have accepted them, and they are not sent again."""
        texts = [self.pending[x] for x in sorted(self.pending)]
        self.pending = {}
        self.pooled_headers = set()
        return texts

    def next_ref(self) -> str:
        self._ref_n += 1
        if self._ref_n >= 36 * 36:
            self._ref_base = "".join(secrets.choice(_REF_ALPHABET) for _ in range(4))
            self._ref_n = 1
        n = self._ref_n
        return self._ref_base + _REF_ALPHABET[n // 36] + _REF_ALPHABET[n % 36]

    def full(self, line: str) -> str:
        """Add the header (and a fresh message reference) unless the line starts with the
        header already (with or without its own reference, which is then kept)."""
        line = line.strip()
        first, _, rest = line.partition(".")
        if first == self.header:
            return f"{self.header}{self.next_ref()}.{rest}"  # a bare header: answers need a reference
        if first.startswith(self.header) and re.fullmatch(r"[A-Z0-9]{4,10}", first):
            return line
        return f"{self.header}{self.next_ref()}.{line}"

    async def logon(self, user: str, otp: str | None, password: str) -> bool:
        kind, payload = await self.request(f"{self.header}.LOGON.{user}.{otp or '-'}.{password}")
        if kind == "A":
            pairs = parse_pairs(payload.encode())
            if "MNE" in pairs:
                # A pool's session: the Access Control Point lent this mnemonic (PROTOCOL.md §3).
                self.pooled = pairs["MNE"] != self.header
                self.header = pairs["MNE"]
            self.sent_in_session = 0
            self.otp_session = otp is not None  # its code is used now (termrules.OTP_USED_AFTER_FAILOVER)
            self.logged_on = True
            return True
        self.refused = LogonRefusal.parse(payload)
        return False

    async def logoff(self) -> None:
        with contextlib.suppress(asyncio.TimeoutError, SessionEnded, ConnectionError):
            await self.until(self.request(f"{self.header}.LOGOFF"), self.opts.timeout)

    def close(self) -> None:
        self.quiet = True
        if self.writer is not None:
            self.writer.close()
        task = getattr(self, "_reader_task", None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()  # no frame of this connection is taken for the next one's


def _fmt(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _why(exc: BaseException) -> str:
    """A short reason for a failed connection attempt, for the operator."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, asyncio.TimeoutError):
        return "no answer"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
