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
* no checkpoint is larger than the journal (truncation below the last checkpoint).

The first failure is reported with the sequence number it concerns. Records of purged months are
covered by their kept leaf hashes (their keys are destroyed, so their tags cannot be checked).
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from cryptography.exceptions import InvalidSignature, InvalidTag

from msc.journal.keys import KeyRing
from msc.journal.merkle import Frontier
from msc.journal.records import commitment, open_sealed, unseal_meta
from msc.journal.store import COLUMNS, Reader, checkpoint_message, load_checkpoints, load_purged, read_leaves_file

_META_COLUMNS = COLUMNS[1:]  # seq is checked separately


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


def verify(directory: Path, keyring: KeyRing, *, name: str, min_tree_size: int = 0, stop_at_first: bool = True) -> VerifyResult:
    t0 = time.perf_counter()
    res = VerifyResult()
    reader = Reader(directory)
    meta = reader.meta()
    checkpoints = load_checkpoints(meta) if meta else []
    purged = load_purged(meta) if meta else []
    if meta:
        meta.close()
    public = keyring.public_key()
    for cp in checkpoints:
        try:
            public.verify(cp.signature, checkpoint_message(name, cp.tree_size, cp.root, cp.ts))
        except InvalidSignature:
            res.fail(cp.tree_size, f"checkpoint at tree size {cp.tree_size}: signature does not verify")
    res.checkpoints = len(checkpoints)
    pending = [cp for cp in checkpoints]
    frontier = Frontier()
    expected = 1
    last_good_cp = 0

    def reached() -> bool:
        nonlocal last_good_cp
        while pending and pending[0].tree_size <= frontier.size:
            cp = pending.pop(0)
            if cp.tree_size == frontier.size:
                if frontier.root() != cp.root:
                    res.fail(last_good_cp + 1, f"tree root at size {cp.tree_size} differs from the signed checkpoint "
                             f"(a record in {last_good_cp + 1}..{cp.tree_size} was altered)")
                    return False
                last_good_cp = cp.tree_size
        return True

    for period, first, last in purged:
        if first != expected:
            res.fail(expected, f"purged month {period} starts at {first}, expected {expected}")
            break
        data = read_leaves_file(directory, period)
        if len(data) != (last - first + 1) * 32:
            res.fail(first, f"kept leaf hashes of purged month {period} are incomplete")
            break
        for i in range(last - first + 1):
            frontier.append(data[i * 32 : (i + 1) * 32])
            if not reached() and stop_at_first:
                break
        res.purged_records += last - first + 1
        expected = last + 1

    if res.ok or not stop_at_first:
        for period in reader.periods():
            keys = keyring.period(period, create=False)
            if keys is None:
                res.fail(expected, f"the key of {period} was destroyed but its partition is still present")
                break
            try:
                rows = reader.conn(period).execute(f"SELECT {', '.join(COLUMNS)}, blob, leaf FROM records ORDER BY seq")
                for row in rows:
                    seq = row[0]
                    if seq != expected:
                        res.fail(expected, f"record {expected} is missing (found {seq}): deleted, inserted or reordered")
                        if stop_at_first:
                            break
                        expected = seq
                    blob, stored_leaf = row[-2], row[-1]
                    leaf = hashlib.sha256(b"\x00" + blob).digest()
                    bad = _check_record(row, blob, leaf, stored_leaf, period, keys)
                    if bad:
                        res.fail(seq, bad)
                        if stop_at_first:
                            break
                    frontier.append(leaf)
                    res.records += 1
                    expected += 1
                    if not reached() and stop_at_first:
                        break
            except sqlite3.DatabaseError as exc:
                res.fail(expected, f"partition {period} is unreadable: {exc}")
            if not res.ok and stop_at_first:
                break
    reader.close()
    res.tree_size = frontier.size
    if res.ok:
        for cp in pending:
            res.fail(frontier.size + 1, f"journal ends at {frontier.size} but a signed checkpoint covers {cp.tree_size}: "
                     "records were removed from the tail")
            break
    if res.ok and min_tree_size > frontier.size:
        res.fail(frontier.size + 1, f"journal ends at {frontier.size}, below the expected size {min_tree_size}")
    res.seconds = time.perf_counter() - t0
    return res


def _check_record(row, blob: bytes, leaf: bytes, stored_leaf: bytes, period: str, keys) -> str | None:
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
    try:
        private = open_sealed(keys.aead, sealed)
    except InvalidTag:
        return "AES-GCM tag does not verify (ciphertext or metadata modified)"
    except msgspec.DecodeError:
        return "decrypted payload does not decode"
    if commitment(private.salt, private.text, private.requester, private.recipient) != m.commit:
        return "content commitment does not match"
    return None
