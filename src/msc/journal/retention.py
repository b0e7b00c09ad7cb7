"""Retention (JOURNAL.md "Retention"; PPP §1.7.1 A: journals searchable for three years).

When may a month be purged? Not when the wall clock says so: a clock set three years ahead would
destroy the current month. A month ``M`` is purged only when **both** agree that it ended more
than ``retention_days`` ago:

* the clock: ``M`` ended ``retention_days`` before now, and it is not the current month;
* the journal's own timeline: from the end of ``M`` to the newest record, the journal's record
  timestamps cover at least ``retention_days`` — *not counting* any gap of more than
  :data:`TIMELINE_GAP_S` between two consecutive records. While the switch runs it writes a
  signed checkpoint (a record) at least every hour, so such a gap means the switch was stopped or
  the clock jumped; the journal cannot vouch for that time, so it does not count (a real outage
  only delays a purge, which is always allowed: retention is a minimum).

The purge refuses altogether — an ``ADMIN`` record says why, and the command fails — when the
clock and the journal disagree: the clock is behind the journal's newest record (by more than
:data:`CLOCK_SKEW_S`), or it makes a month due that the journal's timeline says is still more
than :data:`DISAGREEMENT_S` short of retention (a clock far ahead, or a journal that has not
seen the time the clock claims passed).

Each purge is proven by its **purge record**: an ``ADMIN`` record with ``code = "PURGE"`` and
``txn = "PURGE:<month>:<first>-<last>:<retention_days>"`` in its sealed (plaintext) metadata,
committed and covered by a signed checkpoint *before* anything is deleted. ``msc journal verify``
and the start-up self-check accept a purged month only with such a record, written when the
month was older than the retention by the journal's timeline. When the month holding purge
records is purged in turn, their sealed bytes are kept in ``meta.db`` (their leaf hashes are in
the signed tree, so they cannot be forged), so the proof outlives them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from msc.journal.records import Entry, JournalError, Kind, unseal_meta
from msc.journal.schema import PURGE_CODE as PURGE_CODE  # the rules' constants live with the tables
from msc.journal.schema import TIMELINE_GAP_S as TIMELINE_GAP_S

if TYPE_CHECKING:
    from msc.journal.interfaces import JournalReader
    from msc.keyring import KeyRing, PeriodKeys

MIN_RETENTION_DAYS = 1096  # PPP §1.7.1 A: three years
CLOCK_SKEW_S = 300  # the clock may be this far behind the newest record before it is "behind"
DISAGREEMENT_S = 30 * 86400  # clock-due but this much short by the journal: refuse, not wait
_TXN = re.compile(r"PURGE:(\d{4}-\d{2}):(\d+)-(\d+):(\d+)\Z")


class PurgeRefused(JournalError):
    """The clock and the journal's timeline disagree: nothing was purged (JOURNAL.md "Retention")."""


def month_end(period: str) -> float:
    """The first instant after the month (Unix seconds, UTC)."""
    y, m = map(int, period.split("-"))
    return dt.datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=dt.UTC).timestamp()


def current_month(now: float) -> str:
    d = dt.datetime.fromtimestamp(now, dt.UTC)
    return f"{d.year:04d}-{d.month:02d}"


def month_expired(period: str, retention_days: int, now: float) -> bool:
    """Has the whole month ended more than ``retention_days`` before ``now`` (by this clock)?"""
    return month_end(period) + retention_days * 86400 <= now


def purge_txn(period: str, first: int, last: int, retention_days: int) -> str:
    return f"PURGE:{period}:{first}-{last}:{retention_days}"


def parse_purge_txn(txn: str | None) -> tuple[str, int, int, int] | None:
    m = _TXN.match(txn or "")
    return (m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))) if m else None


def purge_entry(period: str, first: int, last: int, retention_days: int, actor: str | None, why: str) -> Entry:
    """The purge record, written and checkpointed before the month is deleted."""
    return Entry(kind=Kind.ADMIN, user=actor, code=PURGE_CODE, txn=purge_txn(period, first, last, retention_days),
                 text=f"RETENTION PURGE {period} SEQ/{first}-{last} RETENTION_DAYS/{retention_days} KEY DESTROYED ({why})")


def observed_seconds(start: float, end: float, gaps: Sequence[tuple[float, float]]) -> float:
    """Seconds of [start, end] the journal observed: the span minus every gap (in seconds) in it."""
    if end <= start:
        return 0.0
    missing = sum(max(0.0, min(b, end) - max(a, start)) for a, b in gaps)
    return end - start - missing


@dataclass(frozen=True)
class Timeline:
    """What the journal itself knows of time: its months (oldest first) with their sequence
    ranges, its newest record's time (seconds), and the gaps (seconds) it did not observe."""

    months: tuple[tuple[str, int, int], ...]
    last_ts: float
    gaps: tuple[tuple[float, float], ...] = ()


@dataclass
class Plan:
    """``due``: months to purge now (oldest first); ``waiting``: (month, why not yet);
    ``refused``: why nothing may be purged (the clock and the journal disagree), or None."""

    due: list[tuple[str, int, int]] = field(default_factory=list)
    waiting: list[tuple[str, str]] = field(default_factory=list)
    refused: str | None = None


def plan(timeline: Timeline, retention_days: int, now: float) -> Plan:
    """Which months may go (pure: the clock ``now`` and the journal's ``timeline`` only)."""
    if retention_days < MIN_RETENTION_DAYS:
        raise JournalError(f"retention_days must be >= {MIN_RETENTION_DAYS} (PPP §1.7.1 A)")
    out = Plan()
    keep = retention_days * 86400
    if timeline.last_ts and now < timeline.last_ts - CLOCK_SKEW_S:
        out.refused = (f"THE CLOCK ({_iso(now)}) IS BEHIND THE JOURNAL'S NEWEST RECORD ({_iso(timeline.last_ts)})")
        return out
    current = current_month(now)
    stop = False
    for period, first, last in timeline.months:
        by_clock = period < current and month_expired(period, retention_days, now)
        seen = observed_seconds(month_end(period), timeline.last_ts, timeline.gaps)
        if by_clock and seen < keep - DISAGREEMENT_S:
            out.due.clear()
            out.refused = (f"THE CLOCK ({_iso(now)}) SAYS {period} ENDED {(now - month_end(period)) / 86400:.0f} DAYS AGO, "
                           f"THE JOURNAL'S TIMELINE ONLY {seen / 86400:.0f} DAYS (RETENTION {retention_days} DAYS)"
                           + (f"; IT DID NOT SEE {len(timeline.gaps)} GAP(S), THE LONGEST "
                              f"{max(b - a for a, b in timeline.gaps) / 86400:.1f} DAYS" if timeline.gaps else ""))
            return out
        if stop:
            continue
        if by_clock and seen >= keep:
            out.due.append((period, first, last))
            continue
        stop = True  # months go oldest first, without leaving a hole behind
        if by_clock:
            out.waiting.append((period, f"{(keep - seen) / 86400:.1f} days short of retention by the journal's timeline"))
    return out


async def purge(journal: Any, retention_days: int, *, now: float, actor: str | None = None) -> list[tuple[str, int, int]]:
    """Delete whole months of ``journal`` (a :class:`msc.journal.journal.Journal`) older than
    ``retention_days`` and destroy their keys.

    Only months that both the clock and the journal's own timeline say ended more than
    ``retention_days`` ago (:func:`plan`). If the two disagree nothing is deleted: an ADMIN
    record says why and :class:`PurgeRefused` is raised. Each month's purge record is committed
    and covered by a signed checkpoint before the month's files and key are destroyed (by the
    journal's writer, :class:`msc.journal.interfaces.JournalWriter`). Returns (month, first
    seq, last seq) per month purged.
    """
    await journal.flush()
    timeline = await asyncio.to_thread(journal.with_reader, load_timeline)
    decision = plan(timeline, retention_days, now)  # raises JournalError below the minimum
    if decision.refused:
        with contextlib.suppress(JournalError):
            await journal.append(Entry(kind=Kind.ADMIN, user=actor, code="E502", text=(
                f"RETENTION PURGE REFUSED: {decision.refused}; NOTHING WAS PURGED (RETENTION_DAYS/{retention_days})")))
        raise PurgeRefused(f"retention purge refused: {decision.refused}; nothing was purged")
    done = []
    for period, first, last in decision.due:
        seen = observed_seconds(month_end(period), timeline.last_ts, timeline.gaps) / 86400
        [purge_seq] = await journal.append(purge_entry(period, first, last, retention_days, actor,
                                                       f"ENDED {period} + 1 MONTH; {seen:.0f} DAYS AGO BY THE JOURNAL'S TIMELINE"))
        cp = await journal.checkpoint()
        if cp is None or cp.tree_size < purge_seq:
            raise JournalError(f"the purge record of {period} could not be covered by a signed checkpoint; nothing deleted")
        span = await journal.writer.purge_period(period, purge_seq)
        if span is None:
            continue
        if tuple(span) != (first, last):
            raise JournalError(f"{period} changed while it was being purged ({first}..{last} became {span[0]}..{span[1]})")
        # Crypto-shredding: without the month's key its records (and any backup copy of
        # them) cannot be read. The leaf hashes kept above keep the tree verifiable.
        await asyncio.to_thread(journal.keyring.destroy_period, period)
        await journal.writer.delete_partition(period)
        done.append((period, first, last))
    return done


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def load_timeline(source: Path | JournalReader) -> Timeline:
    """The journal's timeline (read-only; the writer's recorded gaps): ``source`` a SQLite
    journal directory or any backend's reader (the caller's to close)."""
    from msc.journal.reader import Reader

    reader = Reader(source) if isinstance(source, Path) else source
    try:
        months, last_ts = [], 0
        for period in reader.periods():
            r = reader.period_range(period)
            if r is None:
                continue
            months.append((period, r[0], r[1]))
            last_ts = next(reader.records(period, r[1])).values[1]
        gaps = reader.gaps()
    finally:
        if isinstance(source, Path):
            reader.close()
    return Timeline(tuple(months), last_ts / 1e6, tuple((a / 1e6, b / 1e6) for a, b in gaps))


# -- proof of a purge ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PurgeClaim:
    """A purge record as read from its sealed metadata."""

    seq: int
    ts: float  # seconds
    period: str
    first: int
    last: int
    retention_days: int


def claim_of(blob: bytes, seq: int) -> PurgeClaim | str:
    """The purge claim in a record's sealed bytes, or why they are not a purge record."""
    try:
        meta = unseal_meta(blob).meta
    except msgspec.DecodeError:
        return "its bytes do not decode"
    if meta.seq != seq:
        return f"its bytes belong to sequence {meta.seq}"
    parsed = parse_purge_txn(meta.txn) if meta.kind == Kind.ADMIN and meta.code == PURGE_CODE else None
    if parsed is None:
        return "it is not a purge record"
    return PurgeClaim(seq, meta.ts / 1e6, *parsed)


def judge(claim: PurgeClaim, period: str, first: int, last: int, gaps: Sequence[tuple[float, float]] = ()) -> str | None:
    """Does this purge record justify the purge of ``period`` (``first``..``last``)? None if so."""
    if (claim.period, claim.first, claim.last) != (period, first, last):
        return (f"its purge record (seq {claim.seq}) is for {claim.period} {claim.first}..{claim.last}, "
                f"not {period} {first}..{last}")
    if claim.seq <= last:
        return f"its purge record (seq {claim.seq}) comes before the month's own records"
    if claim.retention_days < MIN_RETENTION_DAYS:
        return f"its purge record (seq {claim.seq}) used a retention of {claim.retention_days} days (< {MIN_RETENTION_DAYS})"
    seen = observed_seconds(month_end(period), claim.ts, gaps)
    if seen < claim.retention_days * 86400:
        return (f"it was purged (seq {claim.seq}, {_iso(claim.ts)}) {seen / 86400:.0f} days after it ended by the "
                f"journal's timeline, before its retention of {claim.retention_days} days")
    return None


def leaf_of_purged(reader: JournalReader, purged: Sequence[tuple[str, int, int]], seq: int) -> bytes | None:
    """The kept leaf hash of record ``seq`` of a purged month, or None."""
    for period, first, last in purged:
        if first <= seq <= last:
            leaf = reader.purged_leaves(period, seq - first, 1)
            return leaf if len(leaf) == 32 else None
    return None


def check_purge_evidence(reader: JournalReader, keyring: KeyRing, purged: Sequence[tuple[str, int, int]], *,
                         signed_size: int) -> list[tuple[int | None, str]]:
    """The start-up check of every purged month's proof (by the purge record each purged month
    points at; the full walk in ``msc journal verify`` finds the records itself), through the
    reader interface (any backend). Returns (seq, problem)s."""
    problems: list[tuple[int | None, str]] = []
    if not purged:
        return problems
    seqs = reader.purge_seqs()
    kept: dict[int, bytes] | None = None
    for period, first, last in purged:
        seq = seqs.get(period)
        if seq is None:
            problems.append((first, f"month {period} is marked purged, but no purge record says so"))
            continue
        if seq > signed_size:
            problems.append((seq, f"the purge record of {period} is not covered by a signed checkpoint"))
            continue
        found = reader.blob(seq)
        blob: bytes | None
        if found is not None:
            blob = found[1]
            stored = next(iter(reader.records(found[0], seq, 1)), None)
            keys = keyring.period(found[0], create=False)
            if (stored is None or stored.seq != seq or hashlib.sha256(b"\x00" + blob).digest() != stored.leaf
                    or not _authentic(keys, blob)):
                problems.append((seq, f"the purge record of {period} was modified or forged"))
                continue
        else:
            if kept is None:
                kept = reader.kept()
            blob = kept.get(seq)
            leaf = leaf_of_purged(reader, purged, seq)
            if blob is None or leaf is None or hashlib.sha256(b"\x00" + blob).digest() != leaf:
                problems.append((seq, f"month {period} is marked purged, but its purge record (seq {seq}) is missing or altered"))
                continue
        claim = claim_of(blob, seq)
        if isinstance(claim, str):
            problems.append((seq, f"month {period} is marked purged, but record {seq} is no proof: {claim}"))
            continue
        why = judge(claim, period, first, last)
        if why:
            problems.append((seq, f"month {period} was not purged properly: {why}"))
    return problems


def _authentic(keys: PeriodKeys | None, blob: bytes) -> bool:
    """The record's AES-GCM tag verifies under its month's key (only the switch can make one)."""
    from cryptography.exceptions import InvalidTag

    from msc.journal.records import open_sealed

    if keys is None:
        return False
    try:
        open_sealed(keys.aead, unseal_meta(blob))
    except (InvalidTag, msgspec.DecodeError):
        return False
    return True
