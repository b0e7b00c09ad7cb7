"""Search through the reader interface (msc.journal.search over JournalReader.candidates): the
same query gives the same records on every backend, and the records a user expects — by the
metadata an investigator filters on, by the blind-indexed values in the (encrypted) text, by
time across a month boundary, with a limit."""

from __future__ import annotations

import itertools

import pytest

from msc.journal.records import Entry, entry_columns, seal
from msc.journal.schema import Row
from msc.journal.search import Query, search
from msc.journal.tokens import tokens_for
from msc.keyring import KeyRing
from tests.contract.test_journal_contract import DEC, NOV, period

PEOPLE = [("DOE,JOHN", "19800101"), ("ROE,JANE", "19900202"), ("POE,EDGAR", "18090119")]
STATIONS = [("ICS1", "TS0001"), ("ICS2", "TS0002"), ("ECC1", "EC0001")]


def entries() -> list[tuple[int, Entry]]:
    """24 records, 12 in each month: every combination of person, station and key, twice."""
    out = []
    combos = list(itertools.product(range(3), range(3), ("QW", "QV")))
    for i in range(24):
        p, s, mke = combos[i % len(combos)]
        name, dob = PEOPLE[p]
        mnemonic, user = STATIONS[s]
        kind = "RECEIVED" if i % 3 else "REJECTED"
        out.append((i + 1, Entry(kind=kind, direction="in", peer=mnemonic, mnemonic=mnemonic, user=user,
                                 ori="CA0130000", mke=mke, txn=f"T{i % 5}", code="E108" if kind == "REJECTED" else None,
                                 requester="DET SMITH" if i % 4 == 0 else None,
                                 text=f"{mke}.CA0130000.NAM/{name}.DOB/{dob}")))
    return out


def ts_of(seq: int) -> int:
    return (NOV if seq <= 12 else DEC) + seq * 1_000


@pytest.fixture
async def journal(journal_backend, tmp_path):
    ring = KeyRing(tmp_path / "keys", tmp_path / "master.key")
    ring.init()
    rows = []
    for seq, e in entries():
        ts = ts_of(seq)
        keys = ring.period(period(ts))
        _m, blob = seal(keys.aead, e, seq, ts, period(ts))
        rows.append(Row(period(ts), (seq, ts, *entry_columns(e)), blob,
                        tokens_for(keys.index_key, e.text, e.requester, e.recipient)))
    w = journal_backend.journal_writer(ring.signing_key())
    await w.start()
    await w.commit(rows[:7])
    await w.commit(rows[7:9])
    journal_backend.index()  # SQLite: records 1-9 from the index files, the rest from the tail
    await w.commit(rows[9:])
    await w.close()
    r = journal_backend.journal_reader()
    yield r, ring
    r.close()


def expected(pred) -> list[int]:
    return [seq for seq, e in entries() if pred(seq, e)]


# (query, which records a user expects) — metadata, blind-indexed values, time, limits.
CASES = {
    "by-mnemonic": (Query(mnemonic="ICS2"), lambda s, e: e.mnemonic == "ICS2"),
    "by-user": (Query(user="EC0001"), lambda s, e: e.user == "EC0001"),
    "by-txn": (Query(txn="T3"), lambda s, e: e.txn == "T3"),
    "by-kind-and-code": (Query(kind="REJECTED", code="E108"), lambda s, e: e.kind == "REJECTED"),
    "by-key-and-station": (Query(mke="QV", mnemonic="ICS1"), lambda s, e: e.mke == "QV" and e.mnemonic == "ICS1"),
    "by-name": (Query(tokens=[("NAM", "ROE,JANE")]), lambda s, e: "ROE,JANE" in e.text),
    "by-name-and-dob": (Query(tokens=[("NAM", "DOE,JOHN"), ("DOB", "19800101")]), lambda s, e: "DOE,JOHN" in e.text),
    "name-and-wrong-dob": (Query(tokens=[("NAM", "DOE,JOHN"), ("DOB", "19900202")]), lambda s, e: False),
    "by-requester": (Query(tokens=[("ATN", "DET SMITH")]), lambda s, e: e.requester == "DET SMITH"),
    "name-and-user": (Query(user="TS0001", tokens=[("NAM", "POE,EDGAR")]),
                      lambda s, e: e.user == "TS0001" and "POE" in e.text),
    "time-december": (Query(start=DEC), lambda s, e: s > 12),
    "time-across-months": (Query(start=ts_of(10), end=ts_of(15)), lambda s, e: 10 <= s < 15),
    "time-and-name": (Query(start=ts_of(5), end=ts_of(20), tokens=[("NAM", "DOE,JOHN")]),
                      lambda s, e: 5 <= s < 20 and "DOE" in e.text),
    "nothing-matches": (Query(mnemonic="NOPE"), lambda s, e: False),
    "limit": (Query(kind="RECEIVED", limit=5), None),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_a_search_finds_the_same_records_on_every_backend(journal, case):
    reader, ring = journal
    q, pred = CASES[case]
    got = [r.seq for r in search(reader, ring, q)]
    if pred is None:  # the first five of the kind, in order
        assert got == expected(lambda s, e: e.kind == "RECEIVED")[:5]
    else:
        assert got == expected(pred)
    for r in search(reader, ring, Query(txn="T1")):
        assert r.text.startswith(r.mke)  # decrypted, not just found
