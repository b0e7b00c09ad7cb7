"""What refused and unauthenticated traffic may cost the journal (JOURNAL.md "Refused traffic").

The switch's one :class:`Budgets`: the per-session refusal limits (:class:`RefusalLimits`) and
the per-address budget of records of connections that have not logged on
(:class:`AddressBudget`), with the records and once-a-minute summaries written within them.
Sessions use it through :class:`msc.server.services.Services`; the router through
:meth:`Budgets.upstream` — what an upstream link sends that is refused (a full queue's E307, an
unknown destination's E304 …) has a refusal window of its own per link, the same limits as a
logged-on session's, whatever connection of the link it came on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from msc.journal.records import Entry, Kind
from msc.protocol.message import decode_lossy
from msc.protocol.redact import redact
from msc.server.refusals import AddressBudget, Form, RefusalLimits, RefusalWindow, SharedWindows, Tally, compact

if TYPE_CHECKING:
    from msc.config.model import JournalSection
    from msc.ops.metrics import Metrics
    from msc.server.listener import Handshake

SUMMARY = "SUMMARY"  # the code of summary records (refusals counted, not recorded one by one)


class Budgets:
    def __init__(self, journal_cfg: JournalSection, *, journal: Callable[[], Any], metrics: Metrics,
                 clock: Callable[[], float],
                 taf_for: Callable[[str | None], str]) -> None:
        j = journal_cfg
        self.limits = RefusalLimits(j.refused_full_per_minute, j.refused_full_chars_per_minute,
                                    j.refused_records_per_minute)
        self.budget = AddressBudget(j.unauthenticated_records_per_minute,
                                    j.unauthenticated_records_per_minute_total, clock())
        self._journal = journal
        self._metrics = metrics
        self._clock = clock
        self._taf_for = taf_for
        #: Refusal windows of users (and bound stations) and source addresses: a reconnect does
        #: not buy them again (issue 14, probe14 case 2).
        self.shared = SharedWindows(self.limits)
        #: One refusal window per upstream link (by name: it outlives the link's connections).
        self._links: dict[str, RefusalWindow] = {}

    def configure(self, j: JournalSection) -> None:
        """A reload: new limits apply to the next refusal."""
        self.limits = RefusalLimits(j.refused_full_per_minute, j.refused_full_chars_per_minute,
                                    j.refused_records_per_minute)
        self.budget.configure(j.unauthenticated_records_per_minute, j.unauthenticated_records_per_minute_total)
        self.shared.limits = self.limits

    def windows(self, who: str | None, source: str, now: float) -> list[RefusalWindow]:
        """The shared refusal windows of a logged-on or bound connection: its user's (or
        station's, ``who``) and its source address's, rolled to ``now``."""
        out = [self.shared.get(f"addr {source}", now)]
        if who:
            out.append(self.shared.get(f"who {who}", now))
        return out

    def take(self, source: str, now: float) -> bool:
        """May a connection from ``source`` that has not logged on write one more record now?"""
        return self.budget.take(source, now)

    def count(self, source: str, now: float) -> Tally:
        """The tally of ``source``'s activity counted instead of recorded."""
        return self.budget.count(source, now)

    def unauthenticated(self, source: str, event: str, entry: Callable[[], Entry]) -> bool:
        """Journal ``entry()`` (a SESSION record of a connection not logged on) within the
        address's budget, else count ``event`` in the address's summary. True if journaled."""
        now = self._clock()
        if self.budget.take(source, now):
            self._metrics.unauthenticated_events.labels("recorded").inc()
            self._journal().submit([entry()])
            return True
        self._metrics.unauthenticated_events.labels("counted").inc()
        self.budget.count(source, now).event(event, now)
        return False

    def upstream(self, link: str, code: str, payload: bytes, text: Callable[[], str], *,
                 always: bool = False) -> str | None:
        """The journal text of a message from upstream ``link`` refused with ``code``: ``text()``
        (its whole text) for the link's first refusals of the minute (``refused_full_per_minute``,
        ``refused_full_chars_per_minute``), :func:`~msc.server.refusals.compact` up to
        ``refused_records_per_minute`` records, else None — counted in the link's ``SUMMARY``
        record of the minute (``always``: never None, the refusal needs a record of its own)."""
        now = self._clock()
        w = self._links.get(link)
        if w is None:
            w = self._links[link] = RefusalWindow(self.limits)
        w.limits = self.limits
        ended = w.roll(now)
        if ended:
            self._link_summary(link, ended)
        full: list[str] = []

        def whole() -> str:
            if not full:
                full.append(text())
            return full[0]

        form = w.form(now, logged_on=True, chars=lambda: len(whole()), always=always)
        self._metrics.refusals.labels(form.value).inc()
        if form is Form.COUNTED:
            w.tally.refused(code, payload, now)
            return None
        return whole() if form is Form.FULL else compact(whole())

    def _link_summary(self, link: str, tally: Tally) -> None:
        self._journal().submit([Entry(kind=Kind.REJECTED, direction="in", peer=link, code=SUMMARY,
                                      text=f"SUMMARY {tally.render(decode_lossy, redact)}")])

    def summaries(self, *, force: bool = False) -> None:
        """Once a minute: one SESSION record (code SUMMARY) per address whose activity was counted
        (at most refusals.MAX_SUMMARIES, the rest in one "other addresses" record), and one
        REJECTED record (code SUMMARY) per upstream link whose refusals were counted."""
        now = self._clock()
        for link, w in self._links.items():
            tally = w.take() if force else w.roll(now)
            if tally:
                self._link_summary(link, tally)
        for summary in self.budget.due(self._clock(), force=force):
            taf: str | None
            if summary.source is None:
                src, taf = f"{summary.sources} OTHER ADDRESSES", None
            else:
                src, taf = summary.source, self._taf_for(summary.source.split("/")[0])
            self._journal().submit([Entry(kind=Kind.SESSION, code=SUMMARY, taf=taf, text=(
                f"UNAUTHENTICATED SUMMARY FROM {src}: {summary.tally.render(decode_lossy, redact)}"))])

    def tls_failed(self, h: Handshake, reason: str, detail: str) -> None:
        """A TLS handshake timed out or failed: a record within the address's budget."""
        shown: str | None
        what, shown = {"tls_handshake_timeout": ("TLS HANDSHAKE TIMEOUT", None),
                        "evicted": ("TLS HANDSHAKE ABANDONED", "SLOT TAKEN BY A NEWER CONNECTION")}.get(
            reason, ("TLS HANDSHAKE FAILED", detail[:80].upper()))
        self.unauthenticated(h.source, what, lambda: Entry(
            kind=Kind.SESSION, peer=None, taf=self._taf_for(h.peer_ip), code=None,
            text=f"{what} FROM {h.peer_ip}" + (f": {shown}" if shown else "")))
