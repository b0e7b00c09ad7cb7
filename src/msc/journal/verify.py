"""``msc journal verify`` (JOURNAL.md "Integrity", CJIS AU-9).

Recomputes everything from the files and trusts nothing stored beside a record:

* sequence numbers are contiguous from 1 (a deleted, inserted or reordered record breaks this);
* each record's stored leaf equals SHA-256(0x00 ‖ its canonical bytes);
* the canonical bytes decode, name the same sequence number and month, and agree with every
  searchable column (a relabelled column is caught);
* the AES-256-GCM tag verifies under the month's data key (the associated data is the metadata,
  so ciphertext moved between records is caught), and the salted commitment matches;
* the RFC 6962 root recomputed at each checkpoint's size equals the signed root, and every
  checkpoint's Ed25519 signature verifies;
* no checkpoint is larger than the journal (truncation below the last checkpoint), and the
  journal is not shorter than ``min_tree_size`` (the committed size seen off the box);
* every purged month is backed by its purge record, covered by a verified signed checkpoint and
  written when the month was older than the retention by the journal's own timeline
  (:mod:`msc.journal.retention`).

The first failure is reported with the sequence number it concerns. Records of purged months are
covered by their kept leaf hashes (their keys are destroyed, so their tags cannot be checked).
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from cryptography.exceptions import InvalidSignature, InvalidTag

from msc.journal.bundle_verifier import checkpoint_message, commitment
from msc.journal.interfaces import JournalReader
from msc.journal.merkle import Frontier
from msc.journal.reader import Reader
from msc.journal.records import JournalError, JournalUnavailable, open_sealed, unseal_meta
from msc.journal.retention import PURGE_CODE, TIMELINE_GAP_S, PurgeClaim, claim_of, judge
from msc.journal.schema import COLUMNS
from msc.keyring import KeyRing, PeriodKeys

_META_COLUMNS = COLUMNS[1:]  # seq is checked separately
_KIND, _CODE = COLUMNS.index("kind"), COLUMNS.index("code")


@dataclass
class VerifyResult:
    ok: bool = True
    records: int = 0
    purged_records: int = 0
    checkpoints: int = 0
    tree_size: int = 0
    first_bad: int | None = None
    reason: str | None = None
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def fail(self, seq: int | None, reason: str) -> None:
        if self.ok:
            self.ok = False
            self.first_bad = seq
            self.reason = reason
        self.problems.append(f"seq {seq}: {reason}" if seq is not None else reason)


def verify(source: Path | JournalReader, keyring: KeyRing, *, name: str, min_tree_size: int = 0) -> VerifyResult:
    """The whole journal, now (``msc journal verify``): a SQLite journal directory, or any
    backend's :class:`~msc.journal.interfaces.JournalReader` (PostgreSQL). Stops at the first
    problem."""
    v = Verifier(source, keyring, name=name)
    try:
        while v.res.ok and not v.at_end:
            v.step(10_000)
        return v.finish(min_tree_size=min_tree_size)
    finally:
        v.close()


class Verifier:
    """One verification pass over the journal, in steps of bounded size.

    ``msc journal verify`` runs it to the end at once; the background verification
    (:mod:`msc.journal.watch`) runs it a slice at a time and, once at the end, keeps following the
    records the switch appends. Every statement reads to completion: no read transaction is left
    open between steps (it would stop the writer's WAL from being checkpointed).

    It reads through the :class:`~msc.journal.interfaces.JournalReader` interface only, so it
    verifies a journal on any backend: ``source`` is a SQLite journal directory (a reader is
    opened and closed here) or a reader (the caller's to close).
    """

    def __init__(self, source: Path | JournalReader, keyring: KeyRing, *, name: str) -> None:
        self.t0 = time.perf_counter()
        self.keyring = keyring
        self.name = name
        self.res = VerifyResult()
        self.frontier = Frontier()
        self.expected = 1
        self.last_good_cp = 0
        self.at_end = False
        self.claims: list[PurgeClaim] = []  # purge records seen (live, or kept after their month went)
        self.gaps: list[tuple[float, float]] = []  # silences between live records (retention.TIMELINE_GAP_S)
        self._prev_ts: int | None = None
        self._public = keyring.public_key()
        self._owned = isinstance(source, Path)
        self._reader: JournalReader = Reader(source) if isinstance(source, Path) else source
        self.purged = self._reader.purged()
        self._kept = self._reader.kept()
        self._purged_todo = list(self.purged)
        self._in_purged_month = False
        self._cp_cursor = 0
        self._pending = self._next_checkpoint(0)

    # -- checkpoints --------------------------------------------------------------------------

    def _next_checkpoint(self, after: int) -> tuple[int, bytes, int, bytes] | None:
        cp = self._reader.next_checkpoint(after)
        return None if cp is None else (cp.tree_size, cp.root, cp.ts, cp.signature)

    def _reached(self) -> bool:
        res, frontier = self.res, self.frontier
        while self._pending is not None and self._pending[0] <= frontier.size:
            size, root, ts, signature = self._pending
            self._cp_cursor = size
            self._pending = self._next_checkpoint(size)
            res.checkpoints += 1
            try:
                self._public.verify(signature, checkpoint_message(self.name, size, root, ts))
            except InvalidSignature:
                res.fail(size, f"checkpoint at tree size {size}: signature does not verify")
                return False
            if size == frontier.size:
                if frontier.root() != root:
                    res.fail(self.last_good_cp + 1, f"tree root at size {size} differs from the signed checkpoint "
                             f"(a record in {self.last_good_cp + 1}..{size} was altered)")
                    return False
                self.last_good_cp = size
        return True

    # -- steps ----------------------------------------------------------------------------------

    def step(self, budget: int) -> int:
        """Check up to ``budget`` more records (or kept leaves). Returns how many were checked;
        sets :attr:`at_end` when the journal has no more records for now."""
        done = 0
        if self._pending is None:  # following the tail: checkpoints written since
            self._pending = self._next_checkpoint(self._cp_cursor)
        while budget > done and self.res.ok and self._purged_todo:
            done += self._step_purged(budget - done)
        while budget > done and self.res.ok:
            n = self._step_records(budget - done)
            if n == 0:
                break
            done += n
        return done

    def _step_purged(self, budget: int) -> int:
        res = self.res
        period, first, last = self._purged_todo[0]
        if not self._in_purged_month:
            if first != self.expected:
                res.fail(self.expected, f"purged month {period} starts at {first}, expected {self.expected}")
                return 0
            if self._reader.purged_leaf_count(period) != last - first + 1:
                res.fail(first, f"kept leaf hashes of purged month {period} are missing or incomplete")
                return 0
            self._in_purged_month = True
        n = min(budget, last - self.expected + 1)
        data = self._reader.purged_leaves(period, self.expected - first, n)
        if len(data) != n * 32:
            res.fail(self.expected, f"kept leaf hashes of purged month {period} are missing or incomplete")
            return 0
        for i in range(n):
            seq = self.expected
            leaf = data[i * 32 : (i + 1) * 32]
            blob = self._kept.get(seq)
            if blob is not None and hashlib.sha256(b"\x00" + blob).digest() == leaf:
                claim = claim_of(blob, seq)
                if isinstance(claim, PurgeClaim):
                    self.claims.append(claim)
            self.frontier.append(leaf)
            self.expected += 1
            res.purged_records += 1
            if not self._reached():
                return i + 1
        if self.expected > last:
            self._purged_todo.pop(0)
            self._in_purged_month = False
        return n

    def _step_records(self, budget: int) -> int:
        res = self.res
        for period in self._reader.periods():
            r = self._reader.period_range(period)
            if r is None or r[1] < self.expected:
                continue
            keys = self.keyring.period(period, create=False)
            if keys is None:
                res.fail(self.expected, self.keyring.missing_key(period))
                return 0
            try:
                records = list(self._reader.records(period, self.expected, budget))
            except JournalUnavailable:
                raise  # the database away: nothing is known about the records (not a failure of theirs)
            except (sqlite3.DatabaseError, JournalError) as exc:
                res.fail(self.expected, f"partition {period} is unreadable: {exc}")
                return 0
            done = 0
            for rec in records:
                row, seq = rec.values, rec.seq
                if seq != self.expected:
                    res.fail(self.expected, f"record {self.expected} is missing (found {seq}): deleted, inserted or reordered")
                    return done
                blob, stored_leaf = rec.blob, rec.leaf
                if not isinstance(blob, bytes) or not isinstance(stored_leaf, bytes):
                    # SQLite keeps whatever type it is given: a value rewritten as text is altered
                    res.fail(seq, "record bytes or leaf hash are not a byte string (modified)")
                    return done
                leaf = hashlib.sha256(b"\x00" + blob).digest()
                bad = check_record(row, blob, leaf, stored_leaf, period, keys)
                if bad:
                    res.fail(seq, bad)
                    return done
                ts = row[1]
                if self._prev_ts is not None and ts - self._prev_ts > TIMELINE_GAP_S * 1_000_000:
                    self.gaps.append((self._prev_ts / 1e6, ts / 1e6))
                self._prev_ts = ts
                if row[_KIND] == "ADMIN" and row[_CODE] == PURGE_CODE:
                    claim = claim_of(blob, seq)
                    if isinstance(claim, PurgeClaim):
                        self.claims.append(claim)
                self.frontier.append(leaf)
                res.records += 1
                self.expected += 1
                done += 1
                if not self._reached():
                    return done
            return done
        self.at_end = True
        return 0

    # -- the end of a pass ------------------------------------------------------------------------

    def check_end(self) -> None:
        """What can only be judged at the end: no signed checkpoint beyond the records (a cut
        tail), every purged month proven (JOURNAL.md "Retention")."""
        res = self.res
        if res.ok and self._pending is not None:
            # A checkpoint is written after the records it covers are committed: one beyond the
            # records the files now hold means records were removed.
            last = self._last_seq_on_disk()
            if self._pending[0] > last:
                res.fail(last + 1, f"journal ends at {last} but a signed checkpoint covers {self._pending[0]}: "
                         "records were removed from the tail")
        if res.ok:
            _check_purges(res, self.purged, self.claims, self.gaps, self.last_good_cp)

    def _last_seq_on_disk(self) -> int:
        last = self.purged[-1][2] if self.purged else 0
        for period in self._reader.periods():
            r = self._reader.period_range(period)
            if r is not None:
                last = max(last, r[1])
        return last

    def finish(self, *, min_tree_size: int = 0) -> VerifyResult:
        res = self.res
        res.tree_size = self.frontier.size
        self.check_end()
        if res.ok and min_tree_size > self.frontier.size:
            res.fail(self.frontier.size + 1, f"journal ends at {self.frontier.size}, below the expected size {min_tree_size} "
                     "(records committed before were removed)")
        res.seconds = time.perf_counter() - self.t0
        return res

    def close(self) -> None:
        if self._owned:
            self._reader.close()


def _check_purges(res: VerifyResult, purged: Sequence[tuple[str, int, int]], claims: list[PurgeClaim],
                  gaps: Sequence[tuple[float, float]], signed: int) -> None:
    """A purged month is accepted only with its purge record, covered by a verified signed
    checkpoint and written when the month was older than the retention by the journal's timeline
    (JOURNAL.md "Retention")."""
    for period, first, last in purged:
        mine = [c for c in claims if c.period == period]
        if not mine:
            res.fail(first, f"month {period} (records {first}..{last}) is marked purged, but no purge record says so")
            continue
        reasons = []
        for c in mine:
            if c.seq > signed:
                reasons.append(f"its purge record (seq {c.seq}) is not covered by a verified signed checkpoint")
                continue
            why = judge(c, period, first, last, gaps)
            if why is None:
                break
            reasons.append(why)
        else:
            res.fail(first, f"month {period} was not purged properly: {'; '.join(reasons)}")


def check_record(row: Sequence[Any], blob: bytes, leaf: bytes, stored_leaf: bytes, period: str,
                 keys: PeriodKeys | None) -> str | None:
    seq = row[0]
    if leaf != stored_leaf:
        return "stored leaf hash does not match the record bytes (modified)"
    try:
        sealed = unseal_meta(blob)
    except msgspec.DecodeError:
        return "record bytes do not decode (modified)"
    m = sealed.meta
    if m.seq != seq:
        return f"record bytes belong to sequence {m.seq} (moved or reordered)"
    if m.period != period:
        return f"record sealed for {m.period} found in {period}"
    for i, col in enumerate(_META_COLUMNS, start=1):
        if getattr(m, col) != row[i]:
            return f"column {col} differs from the sealed metadata (relabelled)"
    if keys is None:
        return f"the key of {period} is destroyed: the record cannot be read"
    try:
        private = open_sealed(keys.aead, sealed)
    except InvalidTag:
        return "AES-GCM tag does not verify (ciphertext or metadata modified)"
    except msgspec.DecodeError:
        return "decrypted payload does not decode"
    if commitment(private.salt, private.text, private.requester, private.recipient) != m.commit:
        return "content commitment does not match"
    return None
