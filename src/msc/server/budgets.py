"""What refused and unauthenticated traffic may cost the journal (JOURNAL.md "Refused traffic").

The switch's one :class:`Budgets`: the per-session refusal limits (:class:`RefusalLimits`) and
the per-address budget of records of connections that have not logged on
(:class:`AddressBudget`), with the records and once-a-minute summaries written within them.
Sessions use it through :class:`msc.server.services.Services`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from msc.journal.records import Entry, Kind
from msc.protocol.message import decode_lossy
from msc.protocol.redact import redact
from msc.server.refusals import AddressBudget, RefusalLimits, Tally

SUMMARY = "SUMMARY"  # the code of summary records (refusals counted, not recorded one by one)


class Budgets:
    def __init__(self, journal_cfg, *, journal: Callable[[], Any], metrics, clock: Callable[[], float],
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

    def configure(self, j) -> None:
        """A reload: new limits apply to the next refusal."""
        self.limits = RefusalLimits(j.refused_full_per_minute, j.refused_full_chars_per_minute,
                                    j.refused_records_per_minute)
        self.budget.configure(j.unauthenticated_records_per_minute, j.unauthenticated_records_per_minute_total)

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

    def summaries(self, *, force: bool = False) -> None:
        """Once a minute: one SESSION record (code SUMMARY) per address whose activity was counted
        (at most refusals.MAX_SUMMARIES, the rest in one "other addresses" record)."""
        for summary in self.budget.due(self._clock(), force=force):
            taf: str | None
            if summary.source is None:
                src, taf = f"{summary.sources} OTHER ADDRESSES", None
            else:
                src, taf = summary.source, self._taf_for(summary.source.split("/")[0])
            self._journal().submit([Entry(kind=Kind.SESSION, code=SUMMARY, taf=taf, text=(
                f"UNAUTHENTICATED SUMMARY FROM {src}: {summary.tally.render(decode_lossy, redact)}"))])

    def tls_failed(self, h, reason: str, detail: str) -> None:
        """A TLS handshake timed out or failed: a record within the address's budget."""
        shown: str | None
        what, shown = {"tls_handshake_timeout": ("TLS HANDSHAKE TIMEOUT", None),
                        "evicted": ("TLS HANDSHAKE ABANDONED", "SLOT TAKEN BY A NEWER CONNECTION")}.get(
            reason, ("TLS HANDSHAKE FAILED", detail[:80].upper()))
        self.unauthenticated(h.source, what, lambda: Entry(
            kind=Kind.SESSION, peer=None, taf=self._taf_for(h.peer_ip), code=None,
            text=f"{what} FROM {h.peer_ip}" + (f": {shown}" if shown else "")))
