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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from msc.journal.interfaces import JournalReader, TxnSummary
from msc.journal.reader import Reader
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


def _reader(source: Path | JournalReader) -> JournalReader:
    return Reader(source) if isinstance(source, Path) else source


OutputRow = tuple[int, int, str, str | None, str | None, int, str | None]


def output_records_since(source: Path | JournalReader, since: int) -> Iterator[OutputRow]:
    """(seq, ts, kind, direction, mnemonic, osn, txn) of records after ``since`` that carry an
    OSN — what store-and-forward replays after a restart. Metadata only; nothing is decrypted.
    ``source`` as for :func:`search`."""
    reader = _reader(source)
    try:
        for period in reader.periods():
            r = reader.period_range(period)
            if r is None or r[1] <= since:
                continue
            yield from reader.metadata(period, ("seq", "ts", "kind", "direction", "mnemonic", "osn", "txn"),
                                       first_seq=since + 1, not_null=("osn",))
    finally:
        if isinstance(source, Path):
            reader.close()


def texts(source: Path | JournalReader, keyring: KeyRing, seqs: list[int]) -> dict[int, str]:
    """Decrypted message texts by sequence number (redelivery of stored outputs, read back in
    batches: one query per partition). A record not found, or in a month whose key was
    destroyed, is missing from the answer. ``source`` as for :func:`search`."""
    return {seq: r.text for seq, r in _records_by_seq(source, keyring, seqs).items()}


def texts_and_users(source: Path | JournalReader, keyring: KeyRing,
                    seqs: list[int]) -> dict[int, tuple[str, str | None]]:
    """As :func:`texts`, each with its record's ``user`` (the operator whose request an output
    answers): what an output moved to another station keeps (PROTOCOL.md §4, pooled mnemonics)."""
    return {seq: (r.text, r.user) for seq, r in _records_by_seq(source, keyring, seqs).items()}


def _records_by_seq(source: Path | JournalReader, keyring: KeyRing, seqs: list[int]) -> dict[int, Record]:
    reader: JournalReader = Reader(source) if isinstance(source, Path) else source
    try:
        out: dict[int, Record] = {}
        for seq, (period, blob) in reader.blobs(seqs).items():
            keys = keyring.period(period, create=False)
            if keys is None:
                continue
            sealed = unseal_meta(blob)
            out[seq] = to_record(sealed.meta, open_sealed(keys.aead, sealed))
        return out
    finally:
        if isinstance(source, Path):
            reader.close()


def refused_answers(source: Path | JournalReader, since_seq: int) -> set[str]:
    """Transaction ids with an answer msc could not record (``REJECTED`` ``E501`` records with a
    txn, from ``since_seq`` on): after a restart their operators are told ``E501``, not ``E302``.
    Metadata only; a range scan by sequence number. ``source`` as for :func:`search`."""
    reader = _reader(source)
    try:
        out: set[str] = set()
        for period in reader.periods()[-2:]:
            out.update(t for (t,) in reader.metadata(period, ("txn",), first_seq=since_seq, kinds=("REJECTED",),
                                                     where={"code": "E501"}, not_null=("txn",)))
        return out
    finally:
        if isinstance(source, Path):
            reader.close()


def starts_after(source: Path | JournalReader, keyring: KeyRing, seq: int) -> list[int]:
    """Sequence numbers of the ``ADMIN`` ``START`` records after ``seq``: only the ``ADMIN``
    records after it are decrypted (a start looks just after where an interrupted start's
    append would be: a few records). ``source`` as for :func:`search`."""
    reader = _reader(source)
    try:
        seqs = [s for period in reader.periods()
                for (s,) in reader.metadata(period, ("seq",), first_seq=seq + 1, kinds=("ADMIN",))]
        return [r.seq for r in _open_records(reader, keyring, seqs) if r.text.startswith("START ")]
    finally:
        if isinstance(source, Path):
            reader.close()


def _journal_end(reader: JournalReader, periods: list[str], up_to: int | None) -> tuple[int, int] | None:
    """(last sequence number, its time) of the journal, or of its records up to ``up_to``, from
    the newest month that has one; None for an empty journal."""
    for period in reversed(periods):
        end = reader.end(period, up_to)
        if end is not None:
            return end
    return None


def _open_records(reader: JournalReader, keyring: KeyRing, seqs: list[int]) -> list[Record]:
    """The records ``seqs``, decrypted, in the order given (none of a month whose key is destroyed)."""
    found = reader.blobs(seqs) if seqs else {}
    out = []
    for seq in seqs:
        if seq not in found:
            continue
        period, blob = found[seq]
        keys = keyring.period(period, create=False)
        if keys is None:
            continue
        sealed = unseal_meta(blob)
        out.append(to_record(sealed.meta, open_sealed(keys.aead, sealed)))
    return out


def _summaries(reader: JournalReader, since_ts: int, last: int) -> list[TxnSummary]:
    """The transactions of the records from time ``since_ts`` to sequence number ``last``, over
    the last two months (a window may straddle a month boundary): each month grouped in the
    storage, the two merged here — a request forwarded before midnight and answered after it is
    answered."""
    merged: dict[str, TxnSummary] = {}
    for period in reader.periods()[-2:]:
        lo = reader.seq_at(period, since_ts)
        if lo is None:
            continue
        for t in reader.txn_summary(period, lo, last):
            old = merged.get(t.txn)
            merged[t.txn] = t if old is None else TxnSummary(
                t.txn, _max(old.fseq, t.fseq), _max(old.fts, t.fts), _max(old.fmke, t.fmke),
                _max(old.request_seq, t.request_seq), _max(old.rseq, t.rseq), old.notices + t.notices,
                old.outputs + t.outputs, old.landed + t.landed, old.parts + t.parts, _max(old.last_part, t.last_part))
    return list(merged.values())


def _max(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else max(a, b)


class OpenAnswer(NamedTuple):
    """A request whose answer was still open at the last stop (:func:`open_answers`)."""

    request: Record  # its FORWARDED record
    #: The parts of its answer that came from the upstream and were recorded (less any whose
    #: record landed while the commit failed: a lower bound, never more than the operator got).
    parts: int
    #: The text of the last part, for the keys asked for (``last_part_of``) — only when every
    #: part's record was committed (none landed E501); else None.
    last_part: str | None = None


def open_answers(source: Path | JournalReader, keyring: KeyRing, windows: dict[str, float], *,
                 up_to: int | None = None, last_part_of: frozenset[str] = frozenset()) -> list[OpenAnswer]:
    """FORWARDED requests (up to sequence ``up_to``) that had part of an answer and whose answer
    window — ``windows``: message key → seconds, for keys answered in several parts — had not
    ended by the last record up to ``up_to``, with no notice since (no ``RECEIVED`` record of key
    ``MSC`` for their txn), each with how many parts of its answer came and, for the message
    keys of ``last_part_of``, its last part's text. Used after a restart: further parts may
    never be linked to them. ``source`` as for :func:`search`.
    """
    if not windows:
        return []
    reader = _reader(source)
    try:
        end = _journal_end(reader, reader.periods(), up_to)
        if end is None:
            return []
        last, stopped = end
        since = stopped - int(max(windows.values()) * 1e6)
        chosen = {t.fseq: t for t in _summaries(reader, since, last)
                  if t.fseq is not None and t.rseq is not None and t.rseq > t.fseq and t.notices == 0
                  and t.fmke in windows and (t.fts or 0) + int(windows[t.fmke] * 1e6) > stopped}
        wanted = sorted(t.last_part for t in chosen.values() if t.fmke in last_part_of and t.landed == 0
                        and t.parts > 0 and t.last_part is not None and t.last_part > (t.fseq or 0))
        texts = {r.txn: r.text for r in _open_records(reader, keyring, wanted)}
        return [OpenAnswer(r, max(0, chosen[r.seq].parts - chosen[r.seq].landed), texts.get(r.txn))
                for r in _open_records(reader, keyring, sorted(chosen))]
    finally:
        if isinstance(source, Path):
            reader.close()


def unanswered_requests(source: Path | JournalReader, keyring: KeyRing, window_s: float, *,
                        up_to: int | None = None) -> list[Record]:
    """FORWARDED requests in the last ``window_s`` of the journal (up to sequence ``up_to``) that
    nothing answered.

    A request is answered by any later ``RECEIVED`` record with its transaction id (a response,
    or a notice msc generated) — unless every output it created was refused E501 because its
    record landed in the journal while the commit reported an error (it answered nothing).
    Administrative messages expect no answer and are left out. The matching runs in the storage
    over plaintext metadata (one grouped pass); only the unanswered requests are decrypted.
    Used after a restart: the fate of such requests died with the process that sent them.
    ``source`` as for :func:`search`.
    """
    reader = _reader(source)
    try:
        end = _journal_end(reader, reader.periods(), up_to)
        if end is None:
            return []
        last, stopped = end
        since = stopped - int(window_s * 1e6)
        unanswered = sorted(t.request_seq for t in _summaries(reader, since, last) if t.request_seq is not None and (
            t.rseq is None or t.rseq < t.request_seq or t.outputs <= t.landed))
        return _open_records(reader, keyring, unanswered)
    finally:
        if isinstance(source, Path):
            reader.close()
