"""``msc terminal``: a line-mode terminal for operators and scripts.

Interactive: shows the banner and asks the operator to acknowledge it (CJIS AC-8), asks for the
user ID, one-time password and password (neither of those two echoed; an answer at the
one-time password prompt that is not a code — most often the password typed there — is not sent:
:func:`termrules.one_time_password`), then sends each typed line as a message
(the header and a message reference are added unless the line already starts with the header)
and prints every output as it arrives, acknowledging it once it is printed.

The session ends — and the client says so and why — when:

- the operator types ``LOGOFF``: logged off, back to the ``User ID:`` prompt (the next operator
  of the station logs on there; Ctrl-D exits);
- msc logs the operator off and keeps the connection (``SYS LOGOFF.IDLE``, ``SESSION MAXIMUM``,
  ``USER DISABLED``, ``USER REMOVED``): back to the ``User ID:`` prompt;
- msc logs off and closes the connection (``SYS LOGOFF.SHUTDOWN``, ``STATION DISABLED``,
  ``REPLACED``), or the connection is closed or reset: the client exits with status 4;
- msc closes a connection that did not log on in time (``N 0 E201 NO LOGON WITHIN 60 S``: the
  console was left at a logon prompt): the client says why and waits for Enter to connect again
  (Ctrl-D exits) — no silent reconnect every minute, no failover; a script exits 4. Any ``N`` of
  xid 0 before a close (E307, E101) is the reason shown, not "CONNECTION LOST".

Each reason is said once, for the session or connection that just ended
(:meth:`Terminal.ending`): after msc ended a session and the client is back at ``User ID:``, a
lost connection is "CONNECTION LOST" (a shutdown "SHUTDOWN", the logon time limit E201), never
the ended session's "USER DISABLED".

Two or more addresses (``--connect A,B``: two switching centres, or the active and standby
msc nodes): the client connects to the first that answers with a banner, trying them in order
and then again from the first — an operator's terminal until one answers (Ctrl-C stops it), a
script for ``--reconnect-for`` seconds (default 120: longer than a PostgreSQL failover under
Patroni). When the connection is lost
(closed, reset) or msc closes it at a shutdown (``SYS LOGOFF.SHUTDOWN``), the session ends as
above — said, with its reason — and the client connects to the *next* address instead of exiting:
the banner is shown again and the operator logs on again (a session does not move between
nodes). A script logs on again with the same credentials, sends the messages it had not sent yet
and goes on waiting for ``--expect``: the outputs wait in msc's queue for the station — except
with ``--otp``: the session that ended used that code, and each is good once on every node, so
the client exits 4 instead of sending it again (an operator who logged on with a one-time password
is told to wait for the next code: :data:`msc.cli.termrules.OTP_USED_AFTER_FAILOVER`). A message
whose answer (A/N) had not arrived when the connection went is not sent again (msc may have
accepted it: sending it again could make a second transaction); the client says so and, unless
its ``--expect`` outputs arrive, exits with status 4. ``STATION DISABLED`` and ``REPLACED`` end
the client as before: another node would say the same. With one address nothing changes (name
one address twice — a virtual IP — to reconnect to it).

Only what is typed after a prompt appears answers it: on a terminal, what is typed while no
prompt waits (a reconnect, a logon being checked, a session ending) is not echoed and is
discarded before each prompt of the logon dialog, so a password typed ahead is never shown in
clear nor taken as the next User ID (CJIS IA-6; :class:`LineReader`).

The terminal's settings (echo) are restored on every way out: a return, an exception, Ctrl-C,
and SIGTERM, SIGHUP or SIGQUIT (:data:`ENDING_SIGNALS`; the client then ends by that signal);
and while it is stopped by Ctrl-Z (SIGTSTP): at ``fg`` echo is off again where it was, and the
prompt that was waiting is shown again. SIGKILL cannot be caught: after ``kill -9`` the terminal
may need ``stty sane``.

A dialog piped in (stdin not a terminal, no ``--user``) is a script's: it is followed as far as the
script could write it (its own ``LOGOFF`` and next logon), but a prompt it could not foresee is not
answered with its next line (:data:`PIPED`) — after a refused logon the client exits 3 (after
a logon msc could not decide, 75); after msc
ends the session, a lost connection, a shutdown or E201, it exits 4 instead of logging on, or
connecting, again.

Ctrl-D (end of input) at any prompt ends the client: at the banner and logon prompts it
disconnects, in a session it logs off first. Nothing blocks on the keyboard in a thread, so a
session that ends while the operator is at a prompt ends the client at once.

Scripted: ``--send TEXT`` (repeatable) sends messages in order after logon, each with its own
header reference (PROTOCOL.md §2: mnemonic + ref, echoed back by the upstream, §4);
``--expect N`` waits for N outputs that answer *these* messages (by header; every part of a
multi-part answer and msc's notice of a request's fate, ``MSC.Exxx``, count — an E302 after a
failover is final, so a script that expected more parts waits out ``--timeout`` and exits 1, its
``timed out`` line naming the notice; when a notice completes the count — ``--expect 2``, part 1
and ``E302 … 1 OF 2 PARTS CAME`` — it exits 5, :data:`termrules.EXIT_NOTICE`, with one stderr line
naming each notice: :func:`termrules.expect_status`), printing and acknowledging any other output
that arrives meanwhile without counting it (without ``--send``, e.g. a ``--bind`` printer, any
output counts, a notice too, and the exit status is 0 as before); then it logs off. ``--bind``
with neither ``--send`` nor ``--expect`` is a printer (:func:`stays_bound`): it stays bound and
prints every output as it comes, until a signal, Ctrl-D at a terminal, or its session ends
(then: the next address, bound again; with one address, exit 4), and by default keeps trying its
addresses like an operator's terminal.
Outputs that arrive after that are neither printed nor acknowledged: they stay queued in msc for
the station's next session. ``--user ID --password-stdin`` logs on with the password from
stdin's first line.

A logon msc could not decide — ``E503`` (its database away), ``E307`` (busy, or the address
throttled), ``E501``, ``E305`` (:mod:`msc.cli.termrules`) — is said to be no wrong password: an
operator is offered the same logon again; a script tries again after a back-off for
``--reconnect-for`` seconds from the first such answer, then exits 75 (with ``--otp``, whose code
may have been used, at once unless the answer was ``E307``). A request msc accepted (``A``)
whose answer had not come when its session ended is named after the next logon (or when the
client ends), with where its answer goes: this station, or — a pooled session's loan having
ended — the pool's printer (PROTOCOL.md §4); a pooled script whose every request went before the
connection was lost exits 1 at once instead of waiting out ``--timeout`` (its line, like the
``timed out`` one, naming each notice that came: :func:`termrules.expect_cut_short`).

Lines printed: ``A xid payload``, ``N xid code reason``, ``M xid text`` (outputs),
``SYS text``. Exit status: 0; 1 an expected output did not arrive in time (or cannot), or a message was
refused with ``--fail-on-nak``, or msc unreachable; 3 logon refused (E202, or the station may not
log on); 4 the session was ended by msc or the connection was lost (with several addresses: and no
other address answered within ``--reconnect-for``, or Ctrl-C stopped the trying, or a message's
fate was left unknown); 5 the ``--expect`` outputs of ``--send`` messages came, but one or more is
msc's notice of a request's fate (``MSC.Exxx``) instead of its answer; 75 (``EX_TEMPFAIL``) the logon could not be decided within
``--reconnect-for``; ended by a signal of :data:`ENDING_SIGNALS`: by that signal (a shell's 128 + N).

The client connection itself (the protocol, failover between addresses) is
:class:`msc.cli.termclient.Terminal`; this module is the command around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys

from msc.cli import termrules
from msc.cli.termclient import LOGON_TIMEOUT, SessionEnded, StoppedTrying, Terminal, TerminalOptions
from msc.cli.termrules import EXIT_AUTH, EXIT_ENDED, EXIT_OK, EXIT_PROBLEM, EXIT_UNAVAILABLE
from msc.cli.termrules import message_key as _message_key
from msc.protocol import framing
from msc.protocol.redact import redact


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


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
        self.tty = _isatty(fd)
        self.saved: list | None = None  # the terminal's settings before the client changed them
        self.prompt: str | None = None  # the prompt of the logon dialog waiting for its answer, if any
        self.at_prompt = False  # the cursor is just after that prompt (msc's own lines start a new line)

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

    # -- the keyboard between prompts (CJIS IA-6: obscure feedback of authentication information) --
    #
    # A line the operator types while no prompt waits for it — during a reconnect, while a logon
    # is checked, as msc ends a session — is meant for a prompt that is gone: on a terminal it is
    # neither shown (echo off: ``hush``) nor kept (``discard`` before each prompt of the logon
    # dialog), so a password typed ahead is never shown in clear nor taken as the next User ID.
    # Lines piped in by a script are not "typed ahead": without a terminal nothing is discarded.

    def _termios(self):
        """The termios module when the input is a terminal, else None."""
        if not self.tty:
            return None
        try:
            import termios
        except ImportError:  # pragma: no cover - not POSIX
            return None
        return termios

    def _echo(self, on: bool) -> None:
        termios = self._termios()
        if termios is None:
            return
        try:
            attrs = termios.tcgetattr(self.fd)
            if self.saved is None:
                self.saved = termios.tcgetattr(self.fd)
            lflag = attrs[3] | termios.ECHO if on else attrs[3] & ~termios.ECHO
            if lflag != attrs[3]:
                attrs[3] = lflag
                termios.tcsetattr(self.fd, termios.TCSANOW, attrs)
        except (termios.error, OSError):
            pass

    def hush(self) -> None:
        """Stop showing what is typed (until the next prompt or session): nothing waits for it."""
        self._echo(False)

    def listen(self) -> None:
        """Show what is typed again (a prompt or a session reads it)."""
        self._echo(True)

    def discard(self) -> int:
        """Drop everything typed and not yet taken: the terminal's input queue
        (``tcflush(TCIFLUSH)``) and this reader's own buffer. Nothing without a terminal. Returns
        how many whole lines were dropped — a prompt says so (:func:`_dropped`), never what they
        were (typed ahead of a logon's prompt, one may be a password)."""
        termios = self._termios()
        if termios is None:
            return 0
        eof, dropped = self.eof, len(self.take_typed())
        # A Ctrl-D typed ahead (read as the end of input) is dropped with the rest: it must not
        # end the prompt's dialog (tests/e2e/test_terminal_failover.py, "end-of-input").
        self.eof = eof
        self.buf = b""
        with contextlib.suppress(termios.error, OSError):
            termios.tcflush(self.fd, termios.TCIFLUSH)
        return dropped

    def take_typed(self) -> list[str]:
        """The whole lines typed and not yet read — this reader's buffer and, without blocking,
        what waits in the terminal's input queue — taken (they are no longer there to read). For a
        session that ended with lines typed for it that were never sent: each is named
        (:func:`_not_sent`), never dropped without a word. A line not ended by Enter is left."""
        import select

        with contextlib.suppress(OSError, ValueError):
            while not self.eof and select.select([self.fd], [], [], 0)[0]:
                before = len(self.buf)
                self._fill()
                if len(self.buf) == before:
                    break
        lines: list[str] = []
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            lines.append(line.decode("utf-8", "replace").rstrip("\r"))
        return lines

    def restore(self) -> None:
        """The terminal as it was before the client changed it (at exit, and while stopped)."""
        termios = self._termios()
        if termios is None or self.saved is None:
            return
        with contextlib.suppress(termios.error, OSError):
            termios.tcsetattr(self.fd, termios.TCSANOW, self.saved)

    def settings(self) -> list | None:
        """The terminal's settings now (None: not a terminal): to put back after a stop."""
        termios = self._termios()
        if termios is None:
            return None
        try:
            return termios.tcgetattr(self.fd)
        except (termios.error, OSError):
            return None

    def resumed(self, settings: list | None) -> None:
        """Continued after a stop (SIGCONT): the client's settings again (``settings``, from
        :meth:`settings` before the stop: echo off at a secret prompt or between prompts), and a
        prompt that was waiting shown again — what was typed at it before the stop is dropped,
        neither shown nor taken (a half-typed password the operator cannot see)."""
        termios = self._termios()
        if termios is None or settings is None:
            return
        with contextlib.suppress(termios.error, OSError):
            termios.tcsetattr(self.fd, termios.TCSANOW, settings)
        if self.prompt is not None:
            self.discard()
            with contextlib.suppress(OSError, ValueError):
                sys.stdout.write("\n" + self.prompt)
                sys.stdout.flush()
                self.at_prompt = True


async def _ask(t: Terminal, stdin: LineReader, prompt: str, *, secret: bool = False) -> str | None:
    """Prompt for one answer of the logon dialog and read it; ``None`` at Ctrl-D. Ends early if
    the connection closes. Only what is typed after the prompt is shown is taken: anything typed
    ahead is discarded first (as ``getpass`` does), a secret is not echoed, and nothing typed
    after the answer is shown until the next prompt (:meth:`LineReader.hush`)."""
    stdin.hush()
    _dropped(stdin.discard())
    if not secret:
        stdin.listen()
    done: set = set()
    task: asyncio.Future | None = None
    try:
        sys.stdout.write(prompt)
        sys.stdout.flush()
        stdin.prompt, stdin.at_prompt = prompt, True
        task = asyncio.ensure_future(stdin.readline())
        done, _ = await asyncio.wait([task, t.closed], return_when=asyncio.FIRST_COMPLETED)
        if task not in done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        stdin.prompt = None
        at_prompt, stdin.at_prompt = stdin.at_prompt, False
        stdin.hush()
        if secret and stdin.tty and task in done:
            print(flush=True)  # the Enter that ended the secret was not shown either
    if task is not None and task in done:
        return task.result()
    if at_prompt:
        print(flush=True)  # (msc's own line, if one came, started a new line already)
    raise t.ending()


async def _prompt(stdin: LineReader, prompt: str, *, secret: bool = False) -> str | None:
    """A prompt while no connection is open: only what is typed after it counts (as ``_ask``)."""
    stdin.hush()
    _dropped(stdin.discard())
    if not secret:
        stdin.listen()
    try:
        sys.stdout.write(prompt)
        sys.stdout.flush()
        stdin.prompt, stdin.at_prompt = prompt, True
        return await stdin.readline()
    finally:
        stdin.prompt, stdin.at_prompt = None, False
        stdin.hush()
        if secret and stdin.tty:
            print(flush=True)


async def _press_enter(stdin: LineReader, ask) -> bool:
    """A prompt only Enter answers (the banner's, "connect again"): True at Enter, False at Ctrl-D.
    On a terminal what is typed there is not shown, and anything but Enter is not taken — said
    (:data:`termrules.NOT_ENTER`, without repeating it) and asked again — so an answer meant for
    the next prompt (a user ID, a password) never moves every later answer one prompt on. A dialog
    piped in is taken as before (its lines were written for these prompts)."""
    while True:
        answer = await ask(secret=stdin.tty)
        if answer is None:
            return False
        if not answer.strip() or not stdin.tty:
            return True
        print(f"{termrules.NOT_ENTER}.", file=sys.stderr, flush=True)


def _unanswered(t: Terminal) -> None:
    """Say which messages the lost connection took without their A/N (OPERATIONS.md "What an
    operator sees during a failover"): their fate is unknown here — msc may have accepted them —
    so they are not sent again; their header finds an answer or an ``MSC.Exxx`` notice of its fate
    (:data:`termrules.FATE_NOTICE`; a pooled session's at the pool's printer, PROTOCOL.md §4)."""
    pooled = set(t.pooled_headers)
    for text in t.take_unanswered():
        t.unknown += 1
        header = text.split(".", 1)[0]
        # A pooled session's loan ended with the connection: its fate goes to the pool's printer.
        where = " at the pool's printer" if header in pooled else ""
        print(f"no A/N for {redact(text)} before the connection was lost: not sent again (msc may have accepted "
              f"it: look for an answer or {termrules.FATE_NOTICE} with header {header}{where}, or ask your "
              f"agency's MSC administrator or an investigator to check the journal for it, before sending it "
              "again)", file=sys.stderr, flush=True)


#: Cursor up one line, then erase that line (ECMA-48 CUU and EL): the echoed answer of a prompt.
UNSHOW = "\x1b[1A\x1b[2K\r"


def _unshow_answer() -> None:
    """Erase the line just answered (its prompt and what was echoed) when stdout is a terminal:
    an answer refused at ``User ID:`` is most often a password typed at the wrong prompt, and it
    was shown as it was typed (newcomer trial hF). A terminal that ignores the sequence shows it
    as before."""
    try:
        tty = os.isatty(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a file (a test's screen)
        tty = False
    if tty:
        sys.stdout.write(UNSHOW)
        sys.stdout.flush()


def _dropped(lines: int) -> None:
    """Lines typed before a prompt — while the client reconnected, or ahead of the dialog — are
    not taken, so that nothing typed ahead is shown or sent in a place it was not meant for: say
    how many, never what (newcomer trial hF: a line typed while reconnecting went without a word)."""
    if lines:
        print(f"{lines} line(s) typed before this prompt were not taken (not shown: one may be a logon's "
              "answer): type again what is still to be sent once logged on", file=sys.stderr, flush=True)


def _not_sent(t: Terminal, why: str) -> None:
    """Name each line typed in the session that ended (``why``) that never left this terminal
    (:func:`_session`): it was not sent — type it again once logged on. (Said after the lines
    sent without an A/N, :func:`_unanswered`.)"""
    for line in t.not_sent:
        print(f"not sent: {redact(line.strip())} — typed before {why}, it never left this terminal: type it "
              "again once logged on", file=sys.stderr, flush=True)
    t.not_sent = []
    if t.not_taken:
        print(f"{t.not_taken} more line(s) typed after that LOGOFF were not taken (not shown: they may be a "
              "logon's answers)", file=sys.stderr, flush=True)
    t.not_taken = 0


#: Why a client whose dialog comes from a pipe or file does not go on to a logon it could not foresee.
PIPED = ("the input is not a terminal: its next lines were written for {session}, and are not taken as "
         "another logon's answers (a script logs on with --user ID --password-stdin and --send, and logs on "
         "again by itself after a failover)")


def _what_ended(t: Terminal) -> str:
    """How the client names what just ended: "Session ended" when someone was logged on (or the
    station bound); else no session ended — only the connection did."""
    return "Session ended" if t.was_logged_on else "Connection to msc ended (no one was logged on)"


def _ended(e: SessionEnded, *, again: bool = False, what: str = "Session ended") -> None:
    if e.closed:
        print(f"{what}: {e.reason}. Disconnected from msc.", file=sys.stderr, flush=True)
    else:
        tail = " Log on again, or Ctrl-D to exit." if again else ""
        print(f"Session ended by msc: {e.reason}.{tail}", file=sys.stderr, flush=True)


async def _find_node(t: Terminal, *, first: int = 0) -> str | None:
    """:meth:`Terminal.connect_any`, which Ctrl-C (SIGINT) stops: then ``None``."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(t.connect_any(first=first))

    def interrupted() -> None:
        # Both: the flag stops the loop at its next try even if a cancellation that came as a
        # try ended were lost (asyncio.wait_for in Python 3.11).
        t.stop_trying = True
        task.cancel()

    saved = signal.getsignal(signal.SIGINT)
    try:
        loop.add_signal_handler(signal.SIGINT, interrupted)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread: Ctrl-C as before
        return await task
    try:
        return await task
    except (asyncio.CancelledError, StoppedTrying):
        if not t.stop_trying or _cancelling():
            raise  # the client itself is being cancelled
        print(flush=True)
        return None
    finally:
        t.stop_trying = False
        loop.remove_signal_handler(signal.SIGINT)
        signal.signal(signal.SIGINT, saved)


def _for_retrying(e: SessionEnded) -> bool:
    """msc closed a connection for how its client kept trying to log on: no logon within its
    time limit (E201), or too many refused messages (E307, PROTOCOL.md §1)."""
    return e.reason.startswith(LOGON_TIMEOUT) or e.reason.startswith("E307 TOO MANY REFUSED")


def _cancelling() -> bool:
    current = asyncio.current_task()
    return current is not None and current.cancelling() > 0


#: Signals whose default action ends the client (a ``kill``, a closed terminal window or SSH
#: connection, Ctrl-\): the terminal's settings are restored first (:func:`_restoring`).
#: SIGKILL cannot be caught: after ``kill -9`` the terminal may be left without echo (``stty sane``).
ENDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def _ended_by(signum: int, stdin: LineReader) -> None:
    """A signal in :data:`ENDING_SIGNALS` came: restore the terminal, then end as that signal's
    default action would (a shell sees 128 + its number: 143 for SIGTERM, 129 for SIGHUP, 131
    for SIGQUIT). Done here, at once, rather than by cancelling the client: nothing the client
    was doing (a reconnect, a logon) can hold it up, and the kernel closes the connection — msc
    ends the session as for a lost connection."""
    stdin.restore()
    name = signal.Signals(signum).name
    with contextlib.suppress(OSError, ValueError):  # SIGHUP: the terminal may be gone
        if signum != signal.SIGHUP:
            print(f"\nmsc terminal: ended by {name}; the connection to msc is closed.", file=sys.stderr)
        sys.stderr.flush()
        sys.stdout.flush()
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


def _stopped(stdin: LineReader) -> None:
    """Ctrl-Z (SIGTSTP): the shell gets the terminal back as the client found it — echo on, also
    at the password prompt — and the client stops as SIGTSTP's default action stops it; when it is
    continued (``fg``: SIGCONT) its own settings come back (echo off again where it was off) and a
    waiting prompt is shown again (:meth:`LineReader.resumed`). Done in the handler, as
    :func:`_ended_by`: the stop happens here, and the client goes on from here. (SIGSTOP cannot be
    caught: the terminal keeps the client's settings while it is stopped that way.)"""
    mine = stdin.settings()
    stdin.restore()
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    loop = asyncio.get_running_loop()
    loop.remove_signal_handler(signal.SIGTSTP)  # (SIG_DFL: its default action, stop)
    try:
        signal.raise_signal(signal.SIGTSTP)  # stopped here until SIGCONT
    finally:
        loop.add_signal_handler(signal.SIGTSTP, _stopped, stdin)
        stdin.resumed(mine)


@contextlib.contextmanager
def _restoring(stdin: LineReader):
    """While the client runs: the terminal's settings (echo) come back on every way out — a
    return, an exception, Ctrl-C, and a signal in :data:`ENDING_SIGNALS` — and while it is
    stopped by Ctrl-Z (SIGTSTP, :func:`_stopped`)."""
    loop = asyncio.get_running_loop()
    handled = []
    for signum in (*ENDING_SIGNALS, signal.SIGTSTP):
        if signal.getsignal(signum) == signal.SIG_IGN:
            continue  # ignored by whoever started the client (nohup, a shell without job control)
        try:
            if signum == signal.SIGTSTP:
                loop.add_signal_handler(signum, _stopped, stdin)
            else:
                loop.add_signal_handler(signum, _ended_by, signum, stdin)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            continue
        handled.append(signum)
    try:
        yield
    finally:
        stdin.restore()
        for signum in handled:
            loop.remove_signal_handler(signum)


async def run(opts: TerminalOptions, stdin: LineReader | None = None) -> int:
    """The command: its exit status as in the module's docstring. ``stdin``: where lines are typed (fd 0)."""
    stdin = stdin if stdin is not None else LineReader(0)
    with _restoring(stdin):
        t = Terminal(opts)
        t.keyboard = stdin  # msc's own lines start on a line of their own when a prompt is open
        return await _connected(t, opts, stdin)


async def _connected(t: Terminal, opts: TerminalOptions, stdin: LineReader) -> int:
    t.expect_left, t.count_any = opts.expect, not opts.send
    if opts.interactive:
        stdin.hush()  # nothing is typed for anyone until the banner's prompt
    try:
        banner = await _find_node(t)
        if banner is None:
            print("Stopped: no msc node answered.", file=sys.stderr, flush=True)
            return EXIT_PROBLEM
        while True:
            try:
                return await _run(t, opts, stdin, banner)
            except SessionEnded as e:
                if opts.interactive:
                    stdin.hush()  # until the next prompt: what is typed now is for no one
                if e.closed:
                    _unanswered(t)
                _not_sent(t, "the connection was lost" if e.closed else "the session ended")
                action = termrules.after_end(
                    closed=e.closed, fails_over=t.fails_over(e), logon_timeout=e.reason.startswith(LOGON_TIMEOUT),
                    for_retrying=_for_retrying(e), interactive=opts.interactive, piped=not stdin.tty,
                    retrying_logon=t.logon_refused_at is not None)
                if action == termrules.NOT_AGAIN:
                    # Piped lines are a script written for this connection's dialog: another
                    # connection's banner and logon prompts would take its next lines (a
                    # message, the next step) as Enter, User ID and password.
                    print(f"{_what_ended(t)}: {e.reason}. Not connecting again: "
                          f"{PIPED.format(session='the session that ended')}.", file=sys.stderr, flush=True)
                    return EXIT_ENDED
                if action == termrules.RETRY_LOGON:
                    # msc closed the connection of a script that kept trying its logon (its logon
                    # time limit, or its refused messages): the same node again, the budget goes on.
                    print(f"{_what_ended(t)}: {e.reason}. Connecting again to try the logon.", file=sys.stderr,
                          flush=True)
                    first = t.at
                elif action == termrules.ASK:
                    # Nobody logged on at this terminal in time: no silent reconnect every
                    # logon_timeout_s (and its CONNECT/DISCONNECT records) — the operator decides.
                    print(f"msc closed the connection: no logon within its time limit ({e.reason}).",
                          file=sys.stderr, flush=True)
                    if not await _press_enter(stdin, lambda secret: _prompt(
                            stdin, "Press Enter to connect again, or Ctrl-D to exit: ", secret=secret)):
                        print(flush=True)
                        return EXIT_OK
                    first = t.at  # the same node: it was not at fault
                elif action == termrules.END:
                    _ended(e, what=_what_ended(t))
                    return EXIT_ENDED
                else:
                    print(f"{_what_ended(t)}: {e.reason}. Connecting to the next msc address.", file=sys.stderr,
                          flush=True)
                    if opts.interactive and t.otp_session:
                        print(termrules.OTP_USED_AFTER_FAILOVER, file=sys.stderr, flush=True)
                    first = t.at + 1
                t.close()
                try:
                    banner = await _find_node(t, first=first)
                except ConnectionError as exc:
                    print(f"error: {exc}", file=sys.stderr, flush=True)
                    return EXIT_ENDED
                if banner is None:
                    print("Stopped: no msc node answered.", file=sys.stderr, flush=True)
                    return EXIT_ENDED
    finally:
        t.close()
        if opts.interactive:
            t.session_over("the client ended")
        _tell_unanswered(t)


async def _run(t: Terminal, opts: TerminalOptions, stdin: LineReader, banner: str) -> int:
    if opts.interactive:
        print(banner, flush=True)
        if not await _press_enter(stdin, lambda secret: _ask(
                t, stdin, "Press Enter to acknowledge this notice and continue: ", secret=secret)):
            print(flush=True)
            return EXIT_OK  # Ctrl-D: the notice was not acknowledged; nothing was sent
    else:
        print(banner, file=sys.stderr, flush=True)
    t._send(framing.ack(0))
    if opts.bind:
        if not await _bind(t, opts):
            return EXIT_PROBLEM
        t.logged_on = True  # (a bound station's connection ending is a session that ended)
        _tell_unanswered(t)  # (bound again after a lost connection: a host's requests are its station's)
    if opts.interactive and opts.user is None and not opts.bind:
        return await _interactive(t, stdin, opts)
    if opts.user is not None:
        if opts.otp is not None and t.otp_session:
            # A failover: the session that ended logged on with this very code (each is good once).
            print(termrules.OTP_USED_SCRIPT, file=sys.stderr, flush=True)
            return EXIT_ENDED
        password = opts.password
        if password is None:
            password = await _ask(t, stdin, "Password: ", secret=True)
            if password is None:
                return EXIT_OK
            opts.password = password  # to log on again at the next address after a failover
        refused = await _script_logon(t, opts, password)
        if refused is not None:
            return refused
        _tell_unanswered(t)
    return await _scripted(t, opts, stdin)


#: A BIND refusal that decided nothing — the journal could not record it (E501, at a node that has
#: just taken over or whose database is away), msc busy (E307), its database away (E503): a
#: printer that stays bound tries again (:func:`_bind`); anything else (E204 the station disabled,
#: E210 not this address) is final.
BIND_TRY_AGAIN = frozenset(("E501", "E307", "E503"))


async def _bind(t: Terminal, opts: TerminalOptions) -> bool:
    """``BIND``; True once bound. A printer (:func:`stays_bound`) refused with a code of
    :data:`BIND_TRY_AGAIN` tries again after the logon back-off, on the same connection, for as
    long as it runs (``SessionEnded`` if msc closes it meanwhile: the reconnect rules); a script
    (``--expect``) and a final refusal: False (exit 1), as before."""
    waits = termrules.backoff()
    while True:
        kind, payload = await t.until(t.request(f"{t.header}.BIND"), opts.timeout)
        if kind == "A":
            return True
        code = payload.strip().split(" ", 1)[0].upper()
        if not stays_bound(opts) or code not in BIND_TRY_AGAIN:
            return False
        wait = next(waits)
        print(f"BIND not decided ({payload.strip()}): trying again in {wait:.1f} s.", file=sys.stderr, flush=True)
        await t.until(asyncio.sleep(wait))


async def _script_logon(t: Terminal, opts: TerminalOptions, password: str) -> int | None:
    """Log a script on; ``None`` once logged on, else its exit status. A refusal that decided
    nothing (E503 the database away, E307 busy or throttled, E501, E305: termrules) is tried
    again after a back-off, for ``--reconnect-for`` seconds from the first such refusal, then
    ends the client with :data:`EXIT_UNAVAILABLE` (75) — never with "logon refused" (3), which a
    wrapper takes for wrong credentials. If msc closes the connection meanwhile (a failover, or
    its logon time limit), :func:`run` connects again and this goes on where it was."""
    loop = asyncio.get_running_loop()
    assert opts.user is not None
    while True:
        t.new_session()
        if await t.until(t.logon(opts.user, opts.otp, password)):
            t.logon_refused_at, t.logon_waits = None, None
            return None
        refusal = t.refused
        assert refusal is not None, "a logon answered N has its refusal"
        if not refusal.transient:
            return EXIT_AUTH
        now = loop.time()
        if t.logon_refused_at is None:
            t.logon_refused_at, t.logon_waits = now, termrules.backoff()
        assert t.logon_waits is not None
        wait = termrules.retry_wait(refusal, first_refused=t.logon_refused_at, now=now,
                                    wait=next(t.logon_waits), budget=opts.reconnect_for,
                                    otp_given=opts.otp is not None)
        if wait is None:
            why = ("the one-time password given may have been used: run again with a new one"
                   if opts.otp is not None and not refusal.otp_unused
                   else f"giving up {now - t.logon_refused_at:.0f} s after the first try (--reconnect-for)")
            print(f"{termrules.explain(refusal)} Not trying again: {why}. Exit {EXIT_UNAVAILABLE}: "
                  "temporarily unavailable.", file=sys.stderr, flush=True)
            return EXIT_UNAVAILABLE
        print(f"{termrules.explain(refusal)} Trying again in {wait:.1f} s.", file=sys.stderr, flush=True)
        await t.until(asyncio.sleep(wait))  # SessionEnded if msc closes the connection meanwhile


def _tell_unanswered(t: Terminal) -> None:
    """Tell the operator (stderr) about own requests msc had accepted whose answer had not come
    when their session ended: where their answer or notice goes (termrules.unanswered_notice)."""
    for u, why in t.take_orphans():
        print(termrules.unanswered_notice(u, why), file=sys.stderr, flush=True)


def stays_bound(opts: TerminalOptions) -> bool:
    """``--bind`` with neither ``--send`` nor ``--expect``: a printer (or a host's monitor) that stays
    attached and prints what comes, rather than a script that binds, waits for N outputs and leaves."""
    return opts.bind and not opts.send and opts.expect == 0


async def _printing(t: Terminal, stdin: LineReader) -> int:
    """A bound printer: every output is printed and acknowledged as it comes (the connection's
    reader does that), for as long as the session lasts. It ends by a signal (Ctrl-C: 0; SIGTERM,
    SIGHUP, SIGQUIT: by that signal), by Ctrl-D when its input is a terminal, or with its
    session — raised as :class:`SessionEnded`, which :func:`_connected` handles by the
    reconnect rules: with several addresses it connects to the next and binds again; with one,
    or ``STATION DISABLED``/``REPLACED``, it exits 4. Its input is not read otherwise (a service
    manager's ``/dev/null`` is at its end at once: that ends nothing)."""
    print(f"Bound as {t.header}: printing its outputs as they come ("
          + ("Ctrl-D, " if stdin.tty else "") + "Ctrl-C or SIGTERM ends it).", file=sys.stderr, flush=True)
    if not stdin.tty:
        await t.until(asyncio.get_running_loop().create_future())  # until the session ends (SessionEnded)
    while True:
        if await t.until(stdin.readline()) is None:
            return EXIT_OK  # Ctrl-D; a typed line is not sent: a printer sends nothing


async def _scripted(t: Terminal, opts: TerminalOptions, stdin: LineReader) -> int:
    if stays_bound(opts):
        return await _printing(t, stdin)
    while t.next_send < len(opts.send):
        text = opts.send[t.next_send]
        t.next_send += 1  # sent at most once, whatever happens to the connection
        kind, _ = await t.until(t.request(t.full(text), own=True), opts.timeout)  # SessionEnded: run() says so
        if kind == "N" and opts.fail_on_nak:
            return EXIT_PROBLEM
        t.accepted += kind == "A"
    if opts.expect > 0:
        if opts.send and t.accepted + t.unknown == 0:
            print(f"no message was accepted: 0 of {opts.expect} outputs", file=sys.stderr)
            return EXIT_PROBLEM
        if t.pooled and not t.count_any and t.sent_in_session == 0 and not t.answered.done():
            # Every own request was sent in an earlier pooled session (a loan that ended with
            # its connection): their outputs go to the pool's printer (said above), none here.
            # (naming any notice that came, as the timed-out line does)
            print(termrules.expect_cut_short(t.counted, opts.expect), file=sys.stderr, flush=True)
            return EXIT_PROBLEM
        try:
            await t.until(asyncio.shield(t.answered), opts.timeout)
        except TimeoutError:
            if t.count_any:  # --expect without --send: whatever came counted, notices or not
                print(f"timed out: {opts.expect - t.expect_left} of {opts.expect} outputs", file=sys.stderr)
            else:  # (naming any notice that came: why the rest may never come)
                print(termrules.expect_said(t.counted, opts.expect), file=sys.stderr)
            return EXIT_PROBLEM
    t.quiet = True
    if opts.user is not None:
        await t.logoff()
    if t.unknown and not (opts.expect > 0 and t.expect_left == 0):
        print(f"{t.unknown} message(s) sent without an answer before a connection was lost: their fate is "
              "unknown", file=sys.stderr, flush=True)
        return EXIT_ENDED
    if opts.expect > 0 and not t.count_any:
        # Its own outputs came — but msc's notice of a request's fate counts as one (an E302 after a
        # failover can complete the count while the answer lacks parts): 5 then (termrules.EXIT_NOTICE).
        said = termrules.expect_said(t.counted, opts.expect)
        if said is not None:
            print(said, file=sys.stderr, flush=True)
        return termrules.expect_status(t.counted, opts.expect)
    return EXIT_OK


async def _interactive(t: Terminal, stdin: LineReader, opts: TerminalOptions) -> int:
    while True:
        # The logon prompt: the station's next operator (Ctrl-D disconnects).
        user = await _ask(t, stdin, "User ID: ")
        if user is None:
            print(flush=True)
            return EXIT_OK
        if not user.strip():
            continue
        try:
            user = termrules.user_id(user)
        except ValueError:
            # Not sent, not repeated: most often a password typed at the wrong prompt, or a user
            # ID with a '.' that would split the LOGON's fields (PROTOCOL.md §2, §7).
            if not stdin.tty:
                print(f"{termrules.NOT_A_USER_ID}. Not asking again: {PIPED.format(session='the logon')}.",
                      file=sys.stderr, flush=True)
                return EXIT_AUTH
            _unshow_answer()  # echoed as typed: if it was a password, it does not stay on screen
            print(f"{termrules.NOT_A_USER_ID}. Type your user ID.", file=sys.stderr, flush=True)
            continue
        otp = await _ask_otp(t, stdin, "One-time password (Enter if none): ")
        if otp is None or isinstance(otp, int):
            return EXIT_OK if otp is None else otp
        password = await _ask(t, stdin, "Password: ", secret=True)
        if password is None:
            return EXIT_OK
        try:
            outcome = await _interactive_logon(t, stdin, opts, user, otp or None, password)
        except SessionEnded as e:
            stdin.hush()
            if e.closed:
                raise
            if not stdin.tty:
                return _not_again(e)
            _ended(e, again=True)
            t.forget_ended()  # told: a later end of the connection is said with its own reason
            continue
        if outcome == "again":
            continue
        if isinstance(outcome, int):
            return outcome
        # Typed while the logon was checked (not shown): meant for no message of this session.
        stdin.discard()
        stdin.listen()
        print(f"Logged on as {t.header}. Type messages (e.g. QW.CA0130000.NAM/SMITH, JOHN.DOB/19800101); "
              "LOGOFF to log off, Ctrl-D to log off and exit.", flush=True)
        _tell_unanswered(t)
        try:
            if await _session(t, stdin, opts) == "eof":
                await t.logoff()
                return EXIT_OK
            print("Logged off.", file=sys.stderr, flush=True)
        except SessionEnded as e:
            stdin.hush()
            if e.closed:
                raise
            _not_sent(t, "the session ended")
            if not stdin.tty:
                return _not_again(e)
            _ended(e, again=True)
            t.forget_ended()  # told: a later end of the connection is said with its own reason
        _tell_unanswered(t)


async def _interactive_logon(t: Terminal, stdin: LineReader, opts: TerminalOptions, user: str, otp: str | None,
                             password: str) -> str | int:
    """An operator's LOGON: ``"on"`` (logged on), ``"again"`` (refused: back to ``User ID:``), or
    the client's exit status. A refusal that decided nothing (E503 the database away, E307 busy,
    E501, E305: termrules) is said to be no wrong password, and the same logon is offered again
    (with a new one-time password if the last may have been used)."""
    while True:
        t.new_session()
        if await t.until(t.logon(user, otp, password), opts.timeout):
            return "on"
        refusal = t.refused
        if refusal is None or not refusal.transient:
            if not stdin.tty:  # the script's next lines were for the session, not another try
                print(f"Logon refused. Not asking again: {PIPED.format(session='the session refused')}.",
                      file=sys.stderr, flush=True)
                return EXIT_AUTH
            print("Logon refused.", file=sys.stderr, flush=True)
            return "again"
        print(termrules.explain(refusal), file=sys.stderr, flush=True)
        if not stdin.tty:  # a dialog piped in: its next line was not written for this question
            print(f"Not trying again: {PIPED.format(session='the session')}. Exit {EXIT_UNAVAILABLE}: "
                  "temporarily unavailable.", file=sys.stderr, flush=True)
            return EXIT_UNAVAILABLE
        answer = await _ask(t, stdin, f"Press Enter to try again as {user}, or type anything to log on "
                                      "as another user (Ctrl-D to exit): ")
        if answer is None:
            print(flush=True)
            return EXIT_OK
        if answer.strip():
            return "again"
        if otp is not None and not refusal.otp_unused:
            again = await _ask_otp(t, stdin, "One-time password (a new code: the last one may have been used): ")
            if again is None or isinstance(again, int):
                return EXIT_OK if again is None else again
            otp = again or None


async def _ask_otp(t: Terminal, stdin: LineReader, prompt: str) -> str | int | None:
    """Ask for the one-time password: the code (``""`` for none), ``None`` at Ctrl-D, or the
    exit status when a piped dialog's line is not a code.

    Not echoed, as the password (CJIS IA-6: authentication information is obscured while it is
    typed): an operator who types the password there by mistake does not show it. An answer
    that is not a code (:func:`termrules.one_time_password`) is not sent — a typed one is asked
    for again, a piped one ends the client with status 3 (the logon was not made)."""
    while True:
        typed = await _ask(t, stdin, prompt, secret=True)
        if typed is None:
            return None
        try:
            return termrules.one_time_password(typed) or ""
        except ValueError:
            if not stdin.tty:
                print(f"{termrules.NOT_A_CODE}. Not asking again: {PIPED.format(session='the logon')}.",
                      file=sys.stderr, flush=True)
                return EXIT_AUTH
            print(f"{termrules.NOT_A_CODE} (if it was your password, it was neither shown nor sent). "
                  "Type the code your authenticator shows.", file=sys.stderr, flush=True)


def _not_again(e: SessionEnded) -> int:
    """msc ended the session and kept the connection, and the input is a pipe: the script's next
    lines are not the next logon's answers (:data:`PIPED`)."""
    print(f"Session ended by msc: {e.reason}. Not logging on again: "
          f"{PIPED.format(session='the session that ended')}.", file=sys.stderr, flush=True)
    return EXIT_ENDED


async def _session(t: Terminal, stdin: LineReader, opts: TerminalOptions) -> str:
    """Send typed lines until the operator logs off ("logoff") or ends input ("eof");
    raises SessionEnded when msc ends the session — after taking the lines typed for it that
    were not sent yet (the client sends a line only after the last one's A/N): they are named
    with the lines sent without an A/N (:func:`_not_sent`), never dropped without a word."""
    try:
        return await _sending(t, stdin, opts)
    except SessionEnded:
        if stdin.tty:  # (a dialog piped in ends here: its next lines were for the session, PIPED)
            typed = [line for line in stdin.take_typed() if line.strip()]
            # Lines after a typed LOGOFF were meant for the logon prompts (a user ID, a password):
            # counted, never shown (CJIS IA-6).
            cut = next((i + 1 for i, line in enumerate(typed) if line.strip().upper() == "LOGOFF"), len(typed))
            t.not_sent += typed[:cut]
            t.not_taken += len(typed) - cut
        raise


async def _sending(t: Terminal, stdin: LineReader, opts: TerminalOptions) -> str:
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
