"""Journal search for investigators (JOURNAL.md "Search, print, export"; PPP §1.10.1).

Filters combine with AND and results come in sequence order. Metadata filters are SQL on the
plaintext columns of each month's partition, driven by the month's batch-built index (user,
mnemonic, transaction id, tokens; :mod:`msc.journal.indexer`) with the unindexed tail scanned; a
time range becomes a sequence range by binary search on the timestamp, which never decreases
with the sequence; ``--token TAG:VALUE`` is matched through the month's blind index, then every
candidate is decrypted and confirmed, so a truncated-HMAC collision never produces a false hit.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msc.journal.interfaces import JournalReader
from msc.journal.reader import Reader, seq_bound
from msc.journal.records import Record, open_sealed, to_record, unseal_meta
from msc.journal.tokens import matches, token
from msc.keyring import KeyRing

FILTER_COLUMNS = ("mnemonic", "user", "ori", "mke", "kind", "taf", "txn", "code")


@dataclass
class Query:
    start: int | None = None  # microseconds since the epoch, inclusive
    end: int | None = None  # exclusive
    mnemonic: str | None = None
    user: str | None = None
    ori: str | None = None
    mke: str | None = None
    kind: str | None = None
    taf: str | None = None
    txn: str | None = None
    code: str | None = None  # disposition/reject code, e.g. E201, or SUMMARY (JOURNAL.md "Refused traffic")
    tokens: list[tuple[str, str]] = field(default_factory=list)
    limit: int | None = None

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {k: getattr(self, k) for k in FILTER_COLUMNS if getattr(self, k) is not None}
        if self.start is not None:
            d["from"] = iso(self.start)
        if self.end is not None:
            d["to"] = iso(self.end)
        if self.tokens:
            # The AUDIT record names the values searched for (whom the investigator looked up:
            # issue 13 item 3). They are CJI: the record's text is sealed like message text
            # (AES-256-GCM under the month's data key), never in the plaintext metadata.
            d["tokens"] = [f"{t}:{v}" for t, v in self.tokens]
        if self.limit is not None:
            d["limit"] = self.limit
        return d


def iso(ts_us: int) -> str:
    return dt.datetime.fromtimestamp(ts_us / 1e6, dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(value: str) -> int:
    """``2026-01-01`` or ``2026-01-01T08:30`` (UTC unless an offset is given) → µs."""
    d = dt.datetime.fromisoformat(value)
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.UTC)
    return int(d.timestamp() * 1_000_000)


def _periods_between(periods: list[str], start: int | None, end: int | None) -> list[str]:
    def key(ts: int) -> str:
        d = dt.datetime.fromtimestamp(ts / 1e6, dt.UTC)
        return f"{d.year:04d}-{d.month:02d}"

    lo = key(start) if start is not None else None
    hi = key(end - 1) if end is not None else None
    return [p for p in periods if (lo is None or p >= lo) and (hi is None or p <= hi)]


def search(source: Path | JournalReader, keyring: KeyRing, q: Query) -> Iterator[Record]:
    """Yield matching records, decrypted, in sequence order. ``source``: a SQLite journal
    directory, or any backend's :class:`~msc.journal.interfaces.JournalReader` (the caller's to
    close). The reader narrows each month to candidates (:meth:`JournalReader.candidates`:
    metadata equal, blind-index tokens present, the time range); decryption confirms every hit."""
    reader: JournalReader = Reader(source) if isinstance(source, Path) else source
    produced = 0
    where = {}
    try:
        where = {col: getattr(q, col) for col in FILTER_COLUMNS if getattr(q, col) is not None}
        for period in _periods_between(reader.periods(), q.start, q.end):
            keys = keyring.period(period, create=False)
            if keys is None:
                continue  # purged: crypto-shredded
            toks = [token(keys.index_key, tag, value) for tag, value in q.tokens]
            for blob in reader.candidates(period, where=where, tokens=toks, start=q.start, end=q.end):
                sealed = unseal_meta(blob)
                private = open_sealed(keys.aead, sealed)
                if q.tokens and not all(matches(private.text, private.requester, private.recipient, t, v)
                                        for t, v in q.tokens):
                    continue
                yield to_record(sealed.meta, private)
                produced += 1
                if q.limit is not None and produced >= q.limit:
                    return
    finally:
        if isinstance(source, Path):
            reader.close()


def read(source: Path | JournalReader, keyring: KeyRing, seqs: list[int]) -> Iterator[Record]:
    """Records by sequence number (for export and redelivery), in the order given; ``source`` as
    for :func:`search`."""
    reader: JournalReader = Reader(source) if isinstance(source, Path) else source
    try:
        for seq in seqs:
            found = reader.blob(seq)
            if found is None:
                continue
            period, blob = found
            keys = keyring.period(period, create=False)
            if keys is None:
                continue
            sealed = unseal_meta(blob)
            yield to_record(sealed.meta, open_sealed(keys.aead, sealed))
    finally:
        if isinstance(source, Path):
            reader.close()


def output_records_since(directory: Path, since: int) -> Iterator[tuple[int, int, str, str | None, str | None, int, str | None]]:
    """(seq, ts, kind, direction, mnemonic, osn, txn) of records after ``since`` that carry an
    OSN — what store-and-forward replays after a restart. Metadata only; nothing is decrypted."""
    reader = Reader(directory)
    try:
        for period in reader.periods():
            r = reader.period_range(period)
            if r is None or r[1] <= since:
                continue
            yield from reader.conn(period).execute(
                "SELECT seq, ts, kind, direction, mnemonic, osn, txn FROM records "
                "WHERE seq > ? AND osn IS NOT NULL ORDER BY seq", (since,))
    finally:
        reader.close()


def texts(source: Path | JournalReader, keyring: KeyRing, seqs: list[int]) -> dict[int, str]:
    """Decrypted message texts by sequence number (redelivery of stored outputs, read back in
    batches: one query per partition). A record not found, or in a month whose key was
    destroyed, is missing from the answer. ``source`` as for :func:`search`."""
    reader: JournalReader = Reader(source) if isinstance(source, Path) else source
    try:
        out: dict[int, str] = {}
        for seq, (period, blob) in reader.blobs(seqs).items():
            keys = keyring.period(period, create=False)
            if keys is None:
                continue
            sealed = unseal_meta(blob)
            out[seq] = to_record(sealed.meta, open_sealed(keys.aead, sealed)).text
        return out
    finally:
        if isinstance(source, Path):
            reader.close()


def refused_answers(directory: Path, since_seq: int) -> set[str]:
    """Transaction ids with an answer msc could not record (``REJECTED`` ``E501`` records with a
    txn, from ``since_seq`` on): after a restart their operators are told ``E501``, not ``E302``.
    Metadata only; a range scan by sequence number."""
    reader = Reader(directory)
    try:
        out: set[str] = set()
        for period in reader.periods()[-2:]:
            out.update(t for (t,) in reader.conn(period).execute(
                "SELECT DISTINCT txn FROM records WHERE seq >= ? AND kind = 'REJECTED' AND code = 'E501' "
                "AND txn IS NOT NULL", (since_seq,)))
        return out
    finally:
        reader.close()


def _journal_end(reader: Reader, periods: list[str], up_to: int | None) -> tuple[int, int] | None:
    """(last sequence number, its time) of the journal, or of its records up to ``up_to``, from
    the newest month; None for an empty journal."""
    if not periods:
        return None
    conn = reader.conn(periods[-1])
    last = up_to if up_to is not None else conn.execute("SELECT MAX(seq) FROM records").fetchone()[0]
    if last is None:
        return None
    row = conn.execute("SELECT ts FROM records WHERE seq <= ? ORDER BY seq DESC LIMIT 1", (last,)).fetchone()
    return None if row is None else (last, row[0])


def _open_records(conn: sqlite3.Connection, keyring: KeyRing, period: str, seqs: list[int]) -> list[Record]:
    """The records ``seqs`` of one month, decrypted (none if the month's key is destroyed)."""
    keys = keyring.period(period, create=False) if seqs else None
    if keys is None:
        return []
    out = []
    for seq in seqs:
        (blob,) = conn.execute("SELECT blob FROM records WHERE seq = ?", (seq,)).fetchone()
        sealed = unseal_meta(blob)
        out.append(to_record(sealed.meta, open_sealed(keys.aead, sealed)))
    return out


def open_answers(directory: Path, keyring: KeyRing, windows: dict[str, float], *, up_to: int | None = None) -> list[Record]:
    """FORWARDED requests (up to sequence ``up_to``) that had part of an answer and whose answer
    window — ``windows``: message key → seconds, for keys answered in several parts — had not
    ended by the last record up to ``up_to``, with no notice since (no ``RECEIVED`` record of key
    ``MSC`` for their txn). Used after a restart: further parts may never be linked to them.
    """
    if not windows:
        return []
    reader = Reader(directory)
    try:
        periods = reader.periods()
        end = _journal_end(reader, periods, up_to)
        if end is None:
            return []
        last, stopped = end
        since = stopped - int(max(windows.values()) * 1e6)
        out = []
        for period in periods[-2:]:  # the window may straddle a month boundary
            c = reader.conn(period)
            lo = seq_bound(c, since)
            if lo is None:
                continue
            rows = c.execute(
                "SELECT fseq, fts, fmke FROM (SELECT MAX(CASE WHEN kind = 'FORWARDED' THEN seq END) AS fseq, "
                "MAX(CASE WHEN kind = 'FORWARDED' THEN ts END) AS fts, "
                "MAX(CASE WHEN kind = 'FORWARDED' THEN mke END) AS fmke, "
                "MAX(CASE WHEN kind = 'RECEIVED' THEN seq END) AS rseq, "
                "SUM(kind = 'RECEIVED' AND mke = 'MSC') AS notices FROM records "
                "WHERE seq >= ? AND seq <= ? AND txn IS NOT NULL AND kind IN ('FORWARDED', 'RECEIVED') "
                "GROUP BY txn) WHERE fseq IS NOT NULL AND rseq > fseq AND notices = 0 ORDER BY fseq", (lo, last)).fetchall()
            chosen = [seq for seq, ts, mke in rows if mke in windows and ts + int(windows[mke] * 1e6) > stopped]
            out.extend(_open_records(c, keyring, period, chosen))
        return out
    finally:
        reader.close()


def unanswered_requests(directory: Path, keyring: KeyRing, window_s: float, *, up_to: int | None = None) -> list[Record]:
    """FORWARDED requests in the last ``window_s`` of the journal (up to sequence ``up_to``) that
    nothing answered.

    A request is answered by any later ``RECEIVED`` record with its transaction id (a response,
    or a notice msc generated). Administrative messages expect no answer and are left out. The
    matching runs in SQL over plaintext metadata; only the unanswered requests are decrypted.
    Used after a restart: the fate of such requests died with the process that sent them.
    """
    reader = Reader(directory)
    try:
        periods = reader.periods()
        end = _journal_end(reader, periods, up_to)
        if end is None:
            return []
        last, stopped = end
        since = stopped - int(window_s * 1e6)
        out = []
        for period in periods[-2:]:  # the window may straddle a month boundary
            c = reader.conn(period)
            lo = seq_bound(c, since)
            if lo is None:
                continue
            # One grouped pass (the hot month has no txn index; a correlated subquery would be
            # quadratic): per transaction, its last FORWARDED and its last RECEIVED — and how many
            # outputs it created against how many of those were refused E501 because their record
            # landed in the file while the commit reported an error (they answered nothing).
            unanswered = [row[0] for row in c.execute(
                "SELECT fseq FROM (SELECT MAX(CASE WHEN kind = 'FORWARDED' AND mke IS NOT 'AM' THEN seq END) AS fseq, "
                "MAX(CASE WHEN kind = 'RECEIVED' THEN seq END) AS rseq, "
                "SUM(kind = 'RECEIVED' AND osn IS NOT NULL) AS outs, "
                "SUM(kind = 'UNDELIVERED' AND code = 'E501') AS landed FROM records "
                "WHERE seq >= ? AND seq <= ? AND txn IS NOT NULL AND kind IN ('FORWARDED', 'RECEIVED', 'UNDELIVERED') "
                "GROUP BY txn) "
                "WHERE fseq IS NOT NULL AND (rseq IS NULL OR rseq < fseq OR outs <= landed) ORDER BY fseq", (lo, last))]
            out.extend(_open_records(c, keyring, period, unanswered))
        return out
    finally:
        reader.close()
