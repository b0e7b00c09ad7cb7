"""Refusing a message, and a connection that keeps sending what is refused (issue 14's bounds:
JOURNAL.md "Refused traffic", SECURITY.md "Bounded under abuse").

A layer of :class:`msc.server.session.Session`, above :class:`~msc.server.connection.Connection`.
Every refused message is journaled before its ``N`` — in full, compactly, or counted in a summary record — within the session's refusal
window and, while the connection has not logged on, its address's budget. A pending connection
has ``logon_timeout_s`` to log on, may lose its slot to a newer connection, and is closed at its
``max_refused``-th refusal; an established one at ``max_refused_per_minute``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Container
from typing import TYPE_CHECKING

from msc.journal.records import Entry, Kind
from msc.protocol import framing
from msc.protocol.codes import Reject
from msc.protocol.message import Input, Logon, decode_lossy
from msc.protocol.redact import redact
from msc.server.budgets import SUMMARY
from msc.server.connection import Connection
from msc.server.machine import BOUND_STATES, Event, State
from msc.server.refusals import Form, Tally, compact, iso, shared_form

if TYPE_CHECKING:
    from msc.config.model import Config

LINGER_S = 2.0  # a connection closed for its refused traffic waits this long for its peer to close


def sent_by(inp: Input | None, mnemonic: str | None, pools: Container[str]) -> dict[str, str | None]:
    """Who sent a refused message, for its ``session.reject`` line: the ``header`` as sent and the
    ``mnemonic`` it names (its first 4 characters; the rest is the client's message reference,
    PROTOCOL.md §2). A header that is a pool's name is no mnemonic — a pooled client's ``LOGON``
    (``ECMDT.LOGON…``) names the pool ``ECMDT``, not mnemonic ``ECMD`` with reference ``T`` (newcomer
    trial F9) —: ``pool`` says it, and ``mnemonic`` is the session's own (the one lent; None before).
    Without a parsed message: the session's mnemonic."""
    if inp is None:
        return {"mnemonic": mnemonic}
    if inp.header in pools:
        return {"header": inp.header, "pool": inp.header, "mnemonic": mnemonic}
    return {"header": inp.header, "mnemonic": inp.mnemonic}


class Refusing(Connection):
    """Refusals and the closes they cause (see the module docstring)."""

    # -- the connection table (msc.server.listener) ------------------------------------------

    @property
    def evictable(self) -> bool:
        """May a newer connection take this one's slot? Not once it logged on, nor while its
        LOGON is being checked."""
        return self.pending and not self.checking

    @property
    def acknowledged(self) -> bool:
        """It acknowledged the banner and is not closing (the listener evicts those last)."""
        return self.state is State.READY or self.state in BOUND_STATES

    def evict(self, reason: str) -> None:
        """The listener gave this pending connection's slot to a newer one."""
        if self.out.eof_sent:  # already closing (lingering after its refused traffic): now
            self.abort()
            return
        self.close_reason = ("TOO MANY CONNECTIONS FROM THIS ADDRESS NOT LOGGED ON" if reason == "address_limit"
                             else "SLOT TAKEN BY A NEWER CONNECTION, LISTENER FULL")
        self.metrics.reject(Reject.E307.code)
        self._write(framing.nak(0, Reject.E307.code, "TOO MANY CONNECTIONS"))
        self.close()

    def _logon_deadline(self) -> None:
        self._deadline = None
        if not self.pending or self.state is State.CLOSED:
            return
        if self.checking:  # its LOGON is being checked: the answer decides (within logon_wait_s)
            self._deadline = asyncio.get_running_loop().call_later(1.0, self._logon_deadline)
            return
        timeout = self.listener.cfg.logon_timeout_s
        self.close_reason = "LOGON TIMEOUT"
        self.metrics.connections_closed.labels("logon_timeout").inc()
        self.metrics.reject(Reject.E201.code)
        self._write(framing.nak(0, Reject.E201.code, f"NO LOGON WITHIN {timeout:g} S"))
        self.close()

    def _established(self) -> None:
        """Logged on or bound: the connection is no longer pending (for good)."""
        if not self.pending:
            return
        self.pending = False
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.listener.established(self)
        if not self.connect_recorded:
            # Its CONNECT was only counted (its address's budget was spent): a session that logs
            # on has its own record of when and from where it connected.
            self.connect_recorded = True
            self._journal_session(f"CONNECT AT {iso(self.connected_wall)}")

    def _pending_again(self) -> None:
        """Logged off (LOGOFF, or msc logged it off) and the connection stays open: it is pending
        again — the logon deadline runs again, its slot may go to a newer connection, and it is
        closed at its ``max_refused``-th refusal from now on (probe14 cases 2 and 5)."""
        if self.pending or self.state is State.CLOSED or self.state is State.DRAINING:
            return
        self.pending = True
        self.refused_total = Tally()
        self.listener.pending_again(self)
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = asyncio.get_running_loop().call_later(self.listener.cfg.logon_timeout_s,
                                                               self._logon_deadline)

    def _event(self, what: str, *, text: str | None = None) -> bool:
        """A SESSION record of this connection: always once it logged on; while pending, within
        its address's budget (else counted in the address's summary). True if recorded."""
        if not self.pending:
            self._journal_session(text or what)
            return True
        return self.svc.budgets.unauthenticated(self.source, what, lambda: self._session_entry(text or what))

    # -- rejections -----------------------------------------------------------------------

    def _reject(self, xid: int, reject: Reject, detail: str | None, text: str | None = None, inp: Input | None = None,
                *, payload: bytes | None = None, always: bool = False, counts: bool = True) -> None:
        """Refuse a message: its ``N`` goes to the client once its record is committed — a
        ``REJECTED`` record in full or compact, or no record of its own but a count in a summary
        (JOURNAL.md "Refused traffic", :mod:`msc.server.refusals`). ``text``: the full journal
        text if known (else made from ``payload``: decoded, secrets redacted); ``always``: it
        gets a record of its own whatever the budgets (a checked LOGON, an internal error);
        ``counts``: False for the switch's own refusal (a request shed under overload,
        :mod:`msc.routing.shedding`), which never closes the connection."""
        self.metrics.reject(reject.code)
        category = self.svc.admission.category(inp) if inp is not None else None
        if category:
            self.metrics.messages.labels(category, "rejected").inc()
        nak = framing.nak(xid, reject.code, detail or reject.reason)
        now = self.svc.clock()
        raw = payload if payload is not None else (text or "").encode("ascii", "backslashreplace")
        full: list[str] = [text] if text is not None else []

        def full_text() -> str:
            if not full:
                full.append(redact(decode_lossy(raw)))
            return full[0]

        pending = self.pending
        budgets = self.svc.budgets
        if pending:
            self.refused_total.refused(reject.code, raw, now)
        ended = self.refusals.roll(now)
        if ended:
            self._summary_record(ended)
        windows = [self.refusals]
        if not pending:
            # A logged-on or bound connection's refusals count in its user's (station's) and its
            # address's windows too: reconnecting does not buy a fresh budget (probe14 case 2).
            windows += budgets.windows(self.user or self._peer_name(), self.source, now)
        form = shared_form(windows, now, logged_on=self.state in BOUND_STATES, chars=lambda: len(full_text()),
                           always=always, counts=counts)
        if form is Form.COMPACT and pending and not always and not budgets.take(self.source, now):
            form = Form.COUNTED
        self.metrics.refusals.labels(form.value).inc()
        lc = self.listener.cfg
        # Closed at max_refused while pending (again after a LOGOFF); once logged on, beyond
        # max_refused_per_minute of the connection or of its user (not of its address: a NAT's
        # other users are not closed for one's traffic, only journaled compactly).
        close = counts and (self.refused_total.messages >= lc.max_refused if pending
                            else max(w.refused for w in windows[:1] + windows[2:]) >= lc.max_refused_per_minute)
        if close:
            # Closed once this refusal is answered: nothing more of it is read or recorded.
            self._doom()
        if form is Form.COUNTED:
            (budgets.count(self.source, now) if pending else self.refusals.tally).refused(reject.code, raw, now)
            self._write(nak)
            if close:
                self._close_refused()
            return
        user = self.user
        if inp is not None:
            # A refused LOGON is recorded under the user ID it tried (logon failures by user).
            user = inp.body.user if isinstance(inp.body, Logon) else (inp.oif or self.user)
        # Who sent it, as session.reject says it: a pooled client's LOGON under the pool's header
        # (ECMDT) names the pool — its peer — and no mnemonic yet, not "ECMD" (newcomer trial F9).
        who = sent_by(inp, self.mnemonic, self.svc.directory().pools)
        entry = Entry(kind=Kind.REJECTED, direction="in", peer=self._peer_name() or who.get("pool"),
                      mnemonic=who["mnemonic"],
                      user=user, taf=(inp.taf if inp and inp.taf else self.taf),
                      ori=inp.ori if inp else None, mke=inp.mke if inp else None, code=reject.code,
                      text=full_text() if form is Form.FULL else compact(full_text()))
        self._perform(self.machine.committing())
        fut = self.svc.journal.submit([entry])

        def done(f: asyncio.Future[list[int]]) -> None:
            self._perform(self.machine.committed())
            if not f.cancelled() and f.exception() is not None:
                self.metrics.reject(Reject.E501.code)
            self._write(nak)
            if close:
                self._close_refused()

        fut.add_done_callback(done)
        self.log.info("session.reject", code=reject.code, **who, form=form.value)

    def _storage_unavailable(self, xid: int, inp: Input, why: str) -> None:
        """The storage this message needed (the run-time state: an account's lockout count, TOTP
        step, last logon) could not be used now — its database unreachable, restarting, or not
        answering within its bound: E503 (PROTOCOL.md §6), nothing was done; a log line names the
        storage and its error, once per outage for every session (``Services.storage``: a line per
        logon was one per terminal trying again). Not a bug: no correlation id, no traceback. The
        refusal is journaled like any other (when the journal can be written)."""
        self.svc.storage.failed(why, mke=inp.mke, peer=self.peer_ip)
        self._reject(xid, Reject.E503, None, inp.journal_text(), inp, always=True)

    def _internal_error(self, xid: int, inp: Input) -> None:
        """A bug while handling ``inp``: E502 with a correlation id in the log and the N."""
        corr = self.svc.admission.new_txn()
        self.log.exception("session.internal_error", correlation=corr)
        self._reject(xid, Reject.E502, f"INTERNAL ERROR {corr}", inp.journal_text(), inp, always=True)

    def _doom(self) -> None:
        """Read nothing more (the connection closes once what it is owed is written)."""
        if not self.machine.closing:
            self.machine.handle(Event.DRAIN)
        self.out.pause_reading()

    def _close_refused(self) -> None:
        """A peer that keeps sending refused traffic is closed (``max_refused``,
        ``max_refused_per_minute``)."""
        if self.close_reason is not None or not self.out.open:
            return
        self.close_reason = "TOO MANY REFUSED MESSAGES"
        self.metrics.connections_closed.labels("refused_messages").inc()
        self.metrics.reject(Reject.E307.code)
        self.log.info("session.closed", reason="refused_messages")
        self._doom()
        self._write(framing.nak(0, Reject.E307.code, "TOO MANY REFUSED MESSAGES, CONNECTION CLOSED"))
        self.out.flush()
        t = self.transport
        if t is not None and t.can_write_eof():
            # A lingering close: closing a socket with the peer's unread data in it sends a reset,
            # and the reset can destroy the N frames before the peer reads them. So: FIN after
            # them, and the close LINGER_S later (reading stays paused: what the peer still
            # sends costs nothing but kernel buffer).
            t.write_eof()
            self.out.eof_sent = True
            asyncio.get_running_loop().call_later(LINGER_S, t.abort)
        else:
            self.close()

    def _summary_record(self, tally: Tally) -> None:
        """A ``REJECTED`` record with code ``SUMMARY``: what this session had refused in a minute
        beyond its records (JOURNAL.md "Refused traffic")."""
        self.svc.journal.submit([Entry(
            kind=Kind.REJECTED, direction="in", peer=self._peer_name(), mnemonic=self.mnemonic, user=self.user,
            taf=self.taf, code=SUMMARY, text=f"SUMMARY {tally.render(decode_lossy, redact)}")])

    def tick(self, now: float, cfg: Config) -> None:
        """About once a second: the refusal summary of a minute that ended, then the machine's
        heartbeats and timeouts."""
        self.summarize_refusals()
        super().tick(now, cfg)

    def summarize_refusals(self, *, force: bool = False) -> None:
        tally = self.refusals.take() if force else self.refusals.roll(self.svc.clock())
        if tally:
            self._summary_record(tally)
