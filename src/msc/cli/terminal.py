"""``msc terminal``: a line-mode terminal for operators and scripts.

Interactive: shows the banner and asks the operator to acknowledge it (CJIS AC-8), asks for the
user ID, one-time password and password (without echo), then sends each typed line as a message
(the header and a message reference are added unless the line already starts with the header)
and prints every output as it arrives, acknowledging it once it is printed.

The session ends — and the client says so and why — when:

- the operator types ``LOGOFF``: logged off, back to the ``User ID:`` prompt (the next operator
  of the station logs on there; Ctrl-D exits);
- msc logs the operator off and keeps the connection (``SYS LOGOFF.IDLE``, ``SESSION MAXIMUM``,
  ``USER DISABLED``, ``USER REMOVED``): back to the ``User ID:`` prompt;
- msc logs off and closes the connection (``SYS LOGOFF.SHUTDOWN``, ``STATION DISABLED``,
  ``REPLACED``), or the connection is closed or reset: the client exits with status 4.

Two or more addresses (``--connect A,B``: two switching centres, or the active and standby
msc nodes): the client connects to the first that answers with a banner, trying them in order
and then again from the first, for up to ``--timeout`` seconds. When the connection is lost
(closed, reset) or msc closes it at a shutdown (``SYS LOGOFF.SHUTDOWN``), the session ends as
above — said, with its reason — and the client connects to the *next* address instead of exiting:
the banner is shown again and the operator logs on again (a session does not move between
nodes). A script logs on again with the same credentials, sends the messages it had not sent yet
and goes on waiting for ``--expect``: the outputs wait in msc's queue for the station. A message
whose answer (A/N) had not arrived when the connection went is not sent again (msc may have
accepted it: sending it again could make a second transaction); the client says so and, unless
its ``--expect`` outputs arrive, exits with status 4. ``STATION DISABLED`` and ``REPLACED`` end
the client as before: another node would say the same. With one address nothing changes (name
one address twice — a virtual IP — to reconnect to it).

Ctrl-D (end of input) at any prompt ends the client: at the banner and logon prompts it
disconnects, in a session it logs off first. Nothing blocks on the keyboard in a thread, so a
session that ends while the operator is at a prompt ends the client at once.

Scripted: ``--send TEXT`` (repeatable) sends messages in order after logon, each with its own
header reference (PROTOCOL.md §2: mnemonic + ref, echoed back by the upstream, §4);
``--expect N`` waits for N outputs that answer *these* messages (by header; every part of a
multi-part answer and an ``MSC.E30x`` notice count), printing and acknowledging any other output
that arrives meanwhile without counting it (without ``--send``, e.g. a ``--bind`` printer, any
output counts); then it logs off.
Outputs that arrive after that are neither printed nor acknowledged: they stay queued in msc for
the station's next session. ``--user ID --password-stdin`` logs on with the password from
stdin's first line.

Lines printed: ``A xid payload``, ``N xid code reason``, ``M xid text`` (outputs),
``SYS text``. Exit status: 0; 1 an expected output did not arrive in time, or a message was
refused with ``--fail-on-nak``, or msc unreachable; 3 logon refused; 4 the session was ended by
msc or the connection was lost (with several addresses: and no other address answered within
``--timeout``, or a message's fate was left unknown).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import ssl
import sys
from dataclasses import dataclass, field

from msc.protocol import framing
from msc.protocol.codes import FramingError
from msc.protocol.framing import Framer
from msc.protocol.message import parse_pairs

EXIT_OK, EXIT_PROBLEM, EXIT_AUTH, EXIT_ENDED = 0, 1, 3, 4

# SYS LOGOFF reasons after which msc closes the connection (server/switch.py stop, a station
# disabled by a reload, a newer session of the same station: Session.close); after the others
# (IDLE, SESSION MAXIMUM, USER DISABLED, USER REMOVED) the connection stays open for the next
# logon. PROTOCOL.md §3.
CLOSING_REASONS = frozenset(("SHUTDOWN", "STATION DISABLED", "REPLACED"))
# Closing reasons another node would repeat: no failover to the next address after these.
FINAL_REASONS = frozenset(("STATION DISABLED", "REPLACED"))

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

    @property
    def targets(self) -> list[tuple[str, int]]:
        return self.addresses or [(self.host, self.port)]


class SessionEnded(Exception):
    """The session ended (``reason``) while the client waited; ``closed``: the connection too."""

    def __init__(self, reason: str, closed: bool) -> None:
        super().__init__(reason)
        self.reason, self.closed = reason, closed


def _wake(ready: asyncio.Future[None]) -> None:
    """The reader callback: the descriptor is readable (the first call wins)."""
    if not ready.done():
        ready.set_result(None)


class LineReader:
    """Lines typed on a file descriptor (stdin), read by the event loop — not by a thread.

    A thread blocked in ``input()`` cannot be cancelled: a client whose session ended while the
    operator sat at a prompt would hang until Enter. ``readline`` returns ``None`` at end of
    input (Ctrl-D on a terminal, end of a pipe or file).
    """

    def __init__(self, fd: int = 0) -> None:
        self.fd = fd
        self.buf = b""
        self.eof = False

    def _fill(self) -> None:
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.buf += data
        else:
            self.eof = True

    async def readline(self) -> str | None:
        loop = asyncio.get_running_loop()
        while b"\n" not in self.buf and not self.eof:
            ready: asyncio.Future[None] = loop.create_future()
            try:
                loop.add_reader(self.fd, _wake, ready)
            except (PermissionError, OSError, ValueError):
                self._fill()  # a regular file or /dev/null: a read never blocks
                continue
            try:
                await ready
            finally:
                loop.remove_reader(self.fd)
            self._fill()
        if b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
        elif self.buf:
            line, self.buf = self.buf, b""
        else:
            return None
        return line.decode("utf-8", "replace").rstrip("\r")

    @contextlib.contextmanager
    def no_echo(self):
        """Echo off while a secret is typed, when the input is a terminal (like ``getpass``).
        Set before the prompt is shown and without flushing, so nothing typed ahead is lost
        or shown."""
        try:
            import termios

            old = termios.tcgetattr(self.fd)
        except (ImportError, OSError, ValueError):
            yield
            return
        new = list(old)
        new[3] &= ~termios.ECHO
        termios.tcsetattr(self.fd, termios.TCSANOW, new)
        try:
            yield
        finally:
            termios.tcsetattr(self.fd, termios.TCSANOW, old)
            print(flush=True)


class Terminal:
    def __init__(self, opts: TerminalOptions, out=sys.stdout) -> None:
        self.opts = opts
        self.out = out
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
        self.ended = loop.create_future()  # result: the SYS LOGOFF reason of this session
        # Header references: 4 random characters, then a counter — unique to this run, so an
        # answer to an earlier run's message (queued for the station) is never taken for ours.
        self._ref_base = "".join(secrets.choice(_REF_ALPHABET) for _ in range(4))
        self._ref_n = 0
        self.own_headers: set[str] = set()
        self.expect_left = 0
        self.count_any = False  # --expect without --send: any output counts (a printer, a watch)
        self.answered = loop.create_future()
        self.quiet = False  # stopped taking outputs: neither printed nor acknowledged
        self.at = 0  # index of the address in opts.targets connected to (or last tried)
        self.next_send = 0  # index of the first --send message not sent yet
        self.accepted = 0  # --send messages msc acknowledged (A)
        self.unknown = 0  # messages whose answer was lost with a connection (not sent again)

    # -- output -----------------------------------------------------------------------------

    def print(self, line: str) -> None:
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
        # A new connection is a new session: frames, output ids (msc numbers them per connection:
        # an id printed on the last one says nothing about this one), the banner and how it ends.
        self.framer = Framer(max_frame=1024 * 1024)
        self.answers = {}
        self.seen = set()
        self.banner = loop.create_future()
        self.closed = loop.create_future()
        self.ended = loop.create_future()
        self.header = self.opts.header  # a pool's mnemonic was this session's
        self.quiet = self.answered.done()  # after --expect was met, outputs stay queued in msc
        host, port = self.opts.targets[self.at]
        self.reader, self.writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=ctx),
                                                          min(self.opts.timeout, 10.0))
        self._reader_task = loop.create_task(self._read())

    async def connect_any(self, *, first: int = 0) -> str:
        """Connect to the first address, from ``first`` on and round again, that sends a banner
        within ``opts.timeout`` in all; returns the banner. With one address: one try.

        Raises ConnectionError (or OSError, asyncio.TimeoutError with one address) when none did.
        """
        targets = self.opts.targets
        if len(targets) == 1:
            self.at = 0
            await self.connect()
            return await asyncio.wait_for(self.banner, self.opts.timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.opts.timeout
        # One address that accepts but never sends its banner (a hung node) must not use up the
        # whole wait: each attempt gets a share of it, 1 to 5 s.
        per_try = max(1.0, min(5.0, self.opts.timeout / len(targets)))
        pause, tries = 0.05, 0
        while True:
            self.at = (first + tries) % len(targets)
            tries += 1
            try:
                await asyncio.wait_for(self.connect(), max(min(per_try, deadline - loop.time()), 0.01))
                banner = await asyncio.wait_for(self.banner, max(min(per_try, deadline - loop.time()), 0.01))
                if len(targets) > 1:
                    print(f"Connected to msc at {self.address}.", file=sys.stderr, flush=True)
                return banner
            except (TimeoutError, OSError, ConnectionError) as exc:
                self.close()
                why = _why(exc)
                if loop.time() >= deadline:
                    raise ConnectionError(f"msc unreachable at {', '.join(_fmt(a) for a in targets)} "
                                          f"within {self.opts.timeout:g} s (last: {self.address}: {why})") from None
                nxt = _fmt(targets[(first + tries) % len(targets)])
                print(f"msc at {self.address}: {why}; trying {nxt}", file=sys.stderr, flush=True)
                if tries % len(targets) == 0:  # a whole round refused: wait a little, then again
                    await asyncio.sleep(min(pause, max(deadline - loop.time(), 0)))
                    pause = min(pause * 2, 1.0)

    def fails_over(self, e: SessionEnded) -> bool:
        """Whether this ended session moves on to the next address: the connection went (or msc
        shut down) and there is another address to go to."""
        return len(self.opts.targets) > 1 and e.closed and e.reason not in FINAL_REASONS

    async def _read(self) -> None:
        # This connection's own futures: after a failover ``self`` has the next connection's.
        reader, framer, banner, closed, answers = self.reader, self.framer, self.banner, self.closed, self.answers
        assert reader is not None, "_read runs on an open connection"
        why = "CONNECTION CLOSED BY MSC"
        try:
            while data := await reader.read(65536):
                for f in framer.feed(data):
                    self._frame(f)
        except ConnectionResetError:
            why = "CONNECTION RESET"
        except (ConnectionError, OSError):
            why = "CONNECTION LOST"
        except FramingError as exc:
            why = f"FRAMING ERROR {exc}"
        finally:
            if not banner.done():
                banner.set_exception(ConnectionError("connection closed before the banner"))
                banner.exception()  # retrieved: no "never retrieved" warning
            if not closed.done():
                closed.set_result(why)
            for fut in answers.values():
                if not fut.done():
                    fut.set_exception(SessionEnded(why, True))
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
                    if text.startswith("SYS.LOGOFF.") and not self.ended.done():
                        self.ended.set_result(text[len("SYS.LOGOFF."):])
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
            if self.expect_left > 0 and (self.count_any or text.split(".", 1)[0] in self.own_headers):
                self.expect_left -= 1
                if self.expect_left == 0:
                    self.quiet = True  # what was asked for is here; the rest stays queued
                    if not self.answered.done():
                        self.answered.set_result(None)
        elif f.type in (framing.ACK, framing.NAK):
            kind = "A" if f.type == framing.ACK else "N"
            payload = f.payload.decode("ascii", "replace")
            fut = self.answers.pop(f.xid, None)
            self.print(f"{kind} {f.xid} {payload}".rstrip())
            if kind == "N":
                self.naks += 1
            if fut is not None and not fut.done():
                fut.set_result((kind, payload))
        elif f.type == framing.HEARTBEAT:
            self._send(framing.heartbeat(f.xid))

    # -- requests ---------------------------------------------------------------------------

    def new_session(self) -> None:
        """Forget how the last session ended (before the next logon)."""
        if self.ended.done():
            self.ended = asyncio.get_running_loop().create_future()

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
        reason = ended.result() if ended.done() else closed.result()
        raise SessionEnded(reason, closed.done() or reason in CLOSING_REASONS)

    async def request(self, text: str, *, own: bool = False) -> tuple[str, str]:
        """Send ``text``; returns msc's (``"A"``|``"N"``, payload). ``own``: its answers count for
        ``--expect`` (its header carries this run's reference)."""
        self.xid += 1
        fut = asyncio.get_running_loop().create_future()
        self.answers[self.xid] = fut
        if self.closed.done():
            raise SessionEnded(self.closed.result(), True)
        if own:
            self.own_headers.add(text.split(".", 1)[0])
        self._send(framing.message(self.xid, text.encode("ascii", "replace")))
        return await asyncio.wait_for(fut, self.opts.timeout)

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
                self.header = pairs["MNE"]
            return True
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


def _message_key(text: str) -> str:
    """The message key of a full input text (after the header and any OIF/TAF)."""
    for part in text.split(".")[1:]:
        if not part.startswith(("*", "#")):
            return part
    return ""


async def _ask(t: Terminal, stdin: LineReader, prompt: str, *, secret: bool = False) -> str | None:
    """Prompt and read one line; ``None`` at Ctrl-D. Ends early if the connection closes."""
    with stdin.no_echo() if secret else contextlib.nullcontext():
        sys.stdout.write(prompt)
        sys.stdout.flush()
        task = asyncio.ensure_future(stdin.readline())
        done, _ = await asyncio.wait([task, t.closed], return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    print(flush=True)
    raise SessionEnded(t.ended.result() if t.ended.done() else t.closed.result(), True)


def _ended(e: SessionEnded, *, again: bool = False) -> None:
    if e.closed:
        print(f"Session ended: {e.reason}. Disconnected from msc.", file=sys.stderr, flush=True)
    else:
        tail = " Log on again, or Ctrl-D to exit." if again else ""
        print(f"Session ended by msc: {e.reason}.{tail}", file=sys.stderr, flush=True)


async def run(opts: TerminalOptions) -> int:
    t = Terminal(opts)
    stdin = LineReader(0)
    t.expect_left, t.count_any = opts.expect, not opts.send
    try:
        banner = await t.connect_any()
        while True:
            try:
                return await _run(t, opts, stdin, banner)
            except SessionEnded as e:
                if not t.fails_over(e):
                    _ended(e)
                    return EXIT_ENDED
                print(f"Session ended: {e.reason}. Connecting to the next msc address.", file=sys.stderr, flush=True)
                t.close()
                try:
                    banner = await t.connect_any(first=t.at + 1)
                except ConnectionError as exc:
                    print(f"error: {exc}", file=sys.stderr, flush=True)
                    return EXIT_ENDED
    finally:
        t.close()


async def _run(t: Terminal, opts: TerminalOptions, stdin: LineReader, banner: str) -> int:
    if opts.interactive:
        print(banner, flush=True)
        if await _ask(t, stdin, "Press Enter to acknowledge this notice and continue: ") is None:
            print(flush=True)
            return EXIT_OK  # Ctrl-D: the notice was not acknowledged; nothing was sent
    else:
        print(banner, file=sys.stderr, flush=True)
    t._send(framing.ack(0))
    if opts.bind:
        kind, _ = await t.until(t.request(f"{t.header}.BIND"), opts.timeout)
        if kind != "A":
            return EXIT_PROBLEM
    if opts.interactive and opts.user is None and not opts.bind:
        return await _interactive(t, stdin, opts)
    if opts.user is not None:
        password = opts.password
        if password is None:
            password = await _ask(t, stdin, "Password: ", secret=True)
            if password is None:
                return EXIT_OK
            opts.password = password  # to log on again at the next address after a failover
        t.new_session()
        if not await t.until(t.logon(opts.user, opts.otp, password)):
            return EXIT_AUTH
    return await _scripted(t, opts)


async def _scripted(t: Terminal, opts: TerminalOptions) -> int:
    while t.next_send < len(opts.send):
        text = opts.send[t.next_send]
        t.next_send += 1  # sent at most once, whatever happens to the connection
        try:
            kind, _ = await t.until(t.request(t.full(text), own=True), opts.timeout)
        except SessionEnded as e:
            if t.fails_over(e):
                t.unknown += 1
                print(f"no answer to {text!r} before the connection was lost: not sent again "
                      "(msc may have accepted it)", file=sys.stderr, flush=True)
            raise
        if kind == "N" and opts.fail_on_nak:
            return EXIT_PROBLEM
        t.accepted += kind == "A"
    if opts.expect > 0:
        if opts.send and t.accepted + t.unknown == 0:
            print(f"no message was accepted: 0 of {opts.expect} outputs", file=sys.stderr)
            return EXIT_PROBLEM
        try:
            await t.until(asyncio.shield(t.answered), opts.timeout)
        except TimeoutError:
            print(f"timed out: {opts.expect - t.expect_left} of {opts.expect} outputs", file=sys.stderr)
            return EXIT_PROBLEM
    t.quiet = True
    if opts.user is not None:
        await t.logoff()
    if t.unknown and not (opts.expect > 0 and t.expect_left == 0):
        print(f"{t.unknown} message(s) sent without an answer before a connection was lost: their fate is "
              "unknown", file=sys.stderr, flush=True)
        return EXIT_ENDED
    return EXIT_OK


async def _interactive(t: Terminal, stdin: LineReader, opts: TerminalOptions) -> int:
    while True:
        # The logon prompt: the station's next operator (Ctrl-D disconnects).
        user = await _ask(t, stdin, "User ID: ")
        if user is None:
            print(flush=True)
            return EXIT_OK
        user = user.strip().upper()
        if not user:
            continue
        otp = await _ask(t, stdin, "One-time password (Enter if none): ")
        if otp is None:
            print(flush=True)
            return EXIT_OK
        password = await _ask(t, stdin, "Password: ", secret=True)
        if password is None:
            return EXIT_OK
        t.new_session()
        try:
            ok = await t.until(t.logon(user, otp.strip() or None, password), opts.timeout)
        except SessionEnded as e:
            if e.closed:
                raise
            _ended(e, again=True)
            continue
        if not ok:
            print("Logon refused.", file=sys.stderr, flush=True)
            continue
        print(f"Logged on as {t.header}. Type messages (e.g. QW.CA0130000.NAM/SMITH, JOHN.DOB/19800101); "
              "LOGOFF to log off, Ctrl-D to log off and exit.", flush=True)
        try:
            if await _session(t, stdin, opts) == "eof":
                await t.logoff()
                return EXIT_OK
            print("Logged off.", file=sys.stderr, flush=True)
        except SessionEnded as e:
            if e.closed:
                raise
            _ended(e, again=True)


async def _session(t: Terminal, stdin: LineReader, opts: TerminalOptions) -> str:
    """Send typed lines until the operator logs off ("logoff") or ends input ("eof");
    raises SessionEnded when msc ends the session."""
    while True:
        line = await t.until(stdin.readline())
        if line is None:
            return "eof"
        if not line.strip():
            continue
        if line.strip().upper() == "LOGOFF":
            line = "LOGOFF"  # the operator's own command, in whatever case it was typed
        text = t.full(line)
        try:
            kind, _ = await t.until(t.request(text, own=True), opts.timeout)
        except TimeoutError:
            print("no answer from msc", file=sys.stderr, flush=True)
            continue
        if kind == "A" and _message_key(text) == "LOGOFF":
            return "logoff"
