"""The journal's check of itself before anything is appended (JOURNAL.md "Start-up self-check").

Every writer — the daemon at start, before it opens a listener, and the CLI when it journals
with no daemon running — runs :func:`check` after taking the writer lock and before the first
append. It costs what the tail since the last checkpoint costs, not what the journal costs:

* the journal is one contiguous run of sequence numbers: kept leaf hashes of purged months, then
  each month's partition (first and last sequence of each: two b-tree lookups per month);
* it is not shorter than its high-water mark (:mod:`msc.journal.highwater`), and is the journal
  that mark belongs to;
* no journal at all where one existed (the mark, signed checkpoints, the key ring's data keys of
  past months, or the caller's own evidence — the daemon passes its availability ledger's runs);
* the newest signed checkpoint: its Ed25519 signature, its stored Merkle frontier matches its
  signed root, and the journal reaches it (no cut below it);
* every record from a signed checkpoint at least :data:`RECORDS_BELOW` records before the newest
  one to the end — in full, as ``msc journal verify`` checks each record — and the tree they build
  against every signed checkpoint on the way: the unsigned tail and the newest signed records;
* every purged month is backed by its purge record (:mod:`msc.journal.retention`).

Older records are left to the background verification and ``msc journal verify``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature

from msc.journal.bundle_verifier import checkpoint_message
from msc.journal.highwater import Mark
from msc.journal.interfaces import JournalReader
from msc.journal.merkle import Frontier
from msc.journal.reader import Reader
from msc.journal.records import JournalError
from msc.journal.schema import Checkpoint
from msc.keyring import KeyError_, KeyRing

#: Problems an administrator may accept with ``msc journal accept`` by continuing the journal
#: (records lost above the last checkpoint); every other problem needs a new journal.
CONTINUABLE = frozenset({"shrunk", "mark"})
#: The check reads every record from the newest signed checkpoint at least this many records
#: before the last one (so the newest signed records are checked too, not only the unsigned tail).
RECORDS_BELOW = 5_000


@dataclass(frozen=True)
class Problem:
    """``kind``: missing | shrunk | mark | foreign | truncated | tampered | key (the key ring has no
    key for a month whose records are present); ``seq``: the first
    sequence number concerned (None when it is not about one record)."""

    kind: str
    seq: int | None
    text: str

    def __str__(self) -> str:
        return self.text if self.seq is None else f"seq {self.seq}: {self.text}"


@dataclass
class SelfCheck:
    problems: list[Problem] = field(default_factory=list)
    last_seq: int = 0
    checkpoint_size: int = 0
    records_checked: int = 0
    months: int = 0
    purged_months: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def continuable(self) -> bool:
        """Only records lost above the last checkpoint (or an unreadable mark): the journal that
        is there is sound and may be continued once an administrator accepts the loss."""
        return bool(self.problems) and all(p.kind in CONTINUABLE for p in self.problems)

    def summary(self) -> str:
        return "; ".join(str(p) for p in self.problems)


class JournalRefused(JournalError):
    """The journal failed its start-up self-check: nothing may be appended to it."""

    def __init__(self, result: SelfCheck, where: Path | str) -> None:
        """``where``: the SQLite journal directory, or where the journal is ("PostgreSQL (host/db)")."""
        self.result = result
        if any(p.kind == "key" for p in result.problems):
            hint = ("— see JOURNAL.md \"Encryption\": no acceptance makes a month readable without its key; give this "
                    "node the key ring the journal was written with (on PostgreSQL: start the node, or copy here "
                    "the keyring.json, that still holds it — it is imported into the database)")
        else:
            hint = "— see JOURNAL.md \"Start-up self-check\" (`msc journal accept` once the cause is known)"
        super().__init__(f"the journal in {where} failed its self-check: {result.summary()} {hint}")


def check(source: Path | JournalReader, keyring: KeyRing, *, name: str, mark: Mark | None,
          mark_path: Path | None = None, journal_id: str | None = None, prior_evidence: tuple[str, ...] = (),
          now: float | None = None) -> SelfCheck:
    """Check the journal (see the module docstring): a SQLite journal directory, or any backend's
    :class:`~msc.journal.interfaces.JournalReader` (the caller's to close) — it reads through the
    reader interface only. Never raises for what it finds: every finding is a :class:`Problem`."""
    t0 = time.perf_counter()
    res = SelfCheck()
    reader: JournalReader = Reader(source) if isinstance(source, Path) else source
    try:
        purged = reader.purged()
        cp = reader.last_checkpoint()
        res.checkpoint_size = cp.tree_size if cp else 0
        last = _chain(reader, purged, res)
        res.last_seq = last
        if last == 0:
            if cp is not None or purged:
                # The records are gone but meta.db still vouches for them: not a journal that can
                # start again in place (a new one would contradict those signed checkpoints).
                res.problems.append(Problem("truncated", 1, "every record is gone, but meta.db holds a signed "
                                            f"checkpoint of {res.checkpoint_size} records"))
                return res
            evidence = _evidence_of_a_journal(keyring, mark, mark_path, journal_id, prior_evidence, now)
            if evidence:
                res.problems.append(Problem("missing", None, "there is no journal, but one existed: " + "; ".join(evidence)))
            return res
        _check_mark(res, mark, mark_path, journal_id, last)
        if cp is not None:
            _check_checkpoint(res, keyring, name, cp, last)
        if not any(p.kind in ("tampered", "truncated") for p in res.problems):
            _check_tail(res, reader, keyring, name, purged, cp, last)
        from msc.journal.retention import check_purge_evidence

        for problem in check_purge_evidence(reader, keyring, purged, signed_size=res.checkpoint_size):
            res.problems.append(Problem("tampered", problem[0], problem[1]))
    except (sqlite3.DatabaseError, JournalError) as exc:
        res.problems.append(Problem("tampered", None, f"a journal file is unreadable: {exc}"))
    finally:
        if isinstance(source, Path):
            reader.close()
        res.seconds = time.perf_counter() - t0
    return res


def _chain(reader: JournalReader, purged: Sequence[tuple[str, int, int]], res: SelfCheck) -> int:
    """Sequence numbers run 1.. without a gap across purged months and partitions; the last one."""
    expected = 1
    for period, first, last in purged:
        res.purged_months += 1
        if first != expected:
            res.problems.append(Problem("tampered", expected, f"purged month {period} starts at {first}, expected {expected}"))
        if reader.purged_leaf_count(period) != last - first + 1:
            res.problems.append(Problem("tampered", first, f"the kept leaf hashes of purged month {period} are missing or incomplete"))
        expected = last + 1
    for period in reader.periods():
        r = reader.period_range(period)
        if r is None:
            continue
        res.months += 1
        lo, hi = r
        if lo != expected:
            what = "missing" if lo > expected else "duplicated or reordered"
            res.problems.append(Problem("tampered", expected, f"records {expected}..{lo - 1} are {what}: month {period} starts at {lo}"
                                        if lo > expected else f"month {period} starts at {lo}, expected {expected} ({what})"))
        expected = hi + 1
    return expected - 1


def _evidence_of_a_journal(keyring: KeyRing, mark: Mark | None, mark_path: Path | None, journal_id: str | None,
                           prior_evidence: tuple[str, ...], now: float | None) -> list[str]:
    evidence = []
    if mark is not None and mark.size > 0:
        evidence.append(f"its high-water mark ({mark_path}) says it had {mark.size} records")
    try:
        periods = keyring.periods()
        journals = keyring.journals()
    except KeyError_:
        periods, journals = {}, {}
    others = sorted((created, jid) for jid, created in journals.items() if jid != journal_id)
    if others:
        evidence.append(f"the key ring served journal {others[-1][1]} (created {others[-1][0]})")
    now = time.time() if now is None else now
    d = dt.datetime.fromtimestamp(now, dt.UTC)
    this_month = f"{d.year:04d}-{d.month:02d}"
    destroyed = sorted(p for p, e in periods.items() if "destroyed" in e)
    past = sorted(p for p, e in periods.items() if "wrapped" in e and p < this_month)
    if destroyed:
        evidence.append(f"the key ring records purged months ({destroyed[0]} … {destroyed[-1]})")
    if past:
        evidence.append(f"the key ring holds data keys of past months ({past[0]} … {past[-1]})")
    evidence.extend(prior_evidence)
    return evidence


def _check_mark(res: SelfCheck, mark: Mark | None, mark_path: Path | None, journal_id: str | None, last: int) -> None:
    if mark is None:
        return
    if mark.size < 0:
        res.problems.append(Problem("mark", None, f"the high-water mark {mark_path} is unreadable"))
        return
    if mark.journal_id and journal_id and mark.journal_id != journal_id:
        res.problems.append(Problem("foreign", None, f"this is journal {journal_id}, but the high-water mark {mark_path} "
                                    f"belongs to journal {mark.journal_id} (the journal was replaced)"))
        return
    if last < mark.size:
        res.problems.append(Problem("shrunk", last + 1, f"records {last + 1}..{mark.size} are missing: the journal ends at "
                                    f"{last} but had {mark.size} records (high-water mark {mark_path})"))


def _signed(keyring: KeyRing, name: str, cp: Checkpoint) -> bool:
    try:
        keyring.public_key().verify(cp.signature, checkpoint_message(name, cp.tree_size, cp.root, cp.ts))
    except InvalidSignature:
        return False
    return True


def _check_checkpoint(res: SelfCheck, keyring: KeyRing, name: str, cp: Checkpoint, last: int) -> None:
    if not _signed(keyring, name, cp):
        res.problems.append(Problem("tampered", cp.tree_size, f"the last checkpoint (tree size {cp.tree_size}) "
                                    "has no valid signature"))
        return
    try:
        frontier_ok = Frontier.from_bytes(cp.tree_size, cp.frontier).root() == cp.root
    except ValueError:
        frontier_ok = False
    if not frontier_ok:
        res.problems.append(Problem("tampered", cp.tree_size, f"the stored tree of the last checkpoint (tree size "
                                    f"{cp.tree_size}) does not match its signed root"))
    if cp.tree_size > last:
        res.problems.append(Problem("truncated", last + 1, f"the journal ends at {last} but a signed checkpoint covers "
                                    f"{cp.tree_size}: records were removed from the tail"))


def _check_tail(res: SelfCheck, reader: JournalReader, keyring: KeyRing, name: str,
                purged: Sequence[tuple[str, int, int]], cp: Checkpoint | None, last: int) -> None:
    """Every record from a signed checkpoint at least :data:`RECORDS_BELOW` records before the
    last one, to the end: each record in full, and the tree they build against every signed
    checkpoint on the way (so the newest signed records are proven too, not only the unsigned tail)."""
    from msc.journal.verify import check_record

    base = reader.last_checkpoint(max(0, cp.tree_size - RECORDS_BELOW)) if cp is not None else None
    if base is not None and cp is not None and base.tree_size < cp.tree_size:
        if not _signed(keyring, name, base) or _root_of(base) != base.root:
            res.problems.append(Problem("tampered", base.tree_size, f"the checkpoint at tree size {base.tree_size} "
                                        "has no valid signature or a stored tree that does not match it"))
            return
    elif base is None and cp is not None and cp.tree_size <= RECORDS_BELOW:
        base = None  # a young journal: from its first record
    elif base is None:
        base = cp
    start = base.tree_size if base is not None else 0
    frontier = Frontier.from_bytes(base.tree_size, base.frontier) if base is not None else Frontier()
    def checkpoints_after(size: int) -> Iterator[tuple[int, bytes, int, bytes]]:
        while (nxt := reader.next_checkpoint(size)) is not None:
            yield nxt.tree_size, nxt.root, nxt.ts, nxt.signature
            size = nxt.tree_size

    signed = checkpoints_after(start)
    pending = next(signed, None)
    public = keyring.public_key()

    def reached() -> bool:
        nonlocal pending
        while pending is not None and pending[0] <= frontier.size:
            size, root, ts, signature = pending
            pending = next(signed, None)
            if size != frontier.size:
                continue
            try:
                public.verify(signature, checkpoint_message(name, size, root, ts))
            except InvalidSignature:
                res.problems.append(Problem("tampered", size, f"the checkpoint at tree size {size} has no valid signature"))
                return False
            if frontier.root() != root:
                res.problems.append(Problem("tampered", size, f"the records up to {size} do not build the tree its "
                                            "signed checkpoint states (a record was altered)"))
                return False
        return True

    for period, first, plast in purged:  # a purged month inside the span (rare): its kept leaves
        if plast <= start:
            continue
        i = max(first, start + 1)
        while i <= plast:
            data = reader.purged_leaves(period, i - first, min(65536, plast - i + 1))
            if not data:
                res.problems.append(Problem("tampered", i, f"the kept leaf hashes of purged month {period} end before {i}"))
                return
            for k in range(len(data) // 32):
                frontier.append(data[k * 32 : (k + 1) * 32])
                i += 1
                if not reached():
                    return
        start = plast
    expected = start + 1
    for period in reader.periods():
        r = reader.period_range(period)
        if r is None or r[1] < expected:
            continue
        keys = keyring.period(period, create=False)
        if keys is None:
            res.problems.append(Problem("key", expected, keyring.missing_key(period)))
            return
        for rec in reader.records(period, expected):
            row = rec.values
            if row[0] != expected:
                res.problems.append(Problem("tampered", expected, f"record {expected} is missing (found {row[0]})"))
                return
            blob, stored = rec.blob, rec.leaf
            if not isinstance(blob, bytes) or not isinstance(stored, bytes):
                res.problems.append(Problem("tampered", expected, "record bytes or leaf hash are not a byte string "
                                            "(modified)"))
                return
            leaf = hashlib.sha256(b"\x00" + blob).digest()
            bad = check_record(row, blob, leaf, stored, period, keys)
            if bad:
                res.problems.append(Problem("tampered", expected, bad))
                return
            frontier.append(leaf)
            res.records_checked += 1
            expected += 1
            if not reached():
                return
    if expected - 1 != last:
        res.problems.append(Problem("tampered", expected, f"the records end at {expected - 1}, the partitions at {last}"))


def _root_of(cp: Checkpoint) -> bytes | None:
    try:
        return Frontier.from_bytes(cp.tree_size, cp.frontier).root()
    except ValueError:
        return None
