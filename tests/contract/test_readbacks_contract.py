"""The switch's restart read-backs on every backend (msc.journal.search through the reader
interface; ``Journal.unanswered_requests`` …): which requests died unanswered with the process,
which answers in several parts were still open, which answers could not be recorded (E501),
which records carry an OSN — the same answers on SQLite (its writer in a thread or a process)
and on PostgreSQL, across a month boundary, with ``up_to`` and with windows that leave the older
records out. Only the plaintext metadata is grouped; the chosen requests are decrypted."""

from __future__ import annotations

import datetime as dt

import pytest

from msc.journal.journal import Journal
from msc.journal.records import Entry
from msc.keyring import KeyRing
from tests.contract.test_journal_group_commit import journal_on

#: 20 s before and after midnight of a month's end: the window straddles two months.
NOV_END = dt.datetime(2026, 11, 30, 23, 59, 40, tzinfo=dt.UTC).timestamp()
DEC_START = dt.datetime(2026, 12, 1, 0, 0, 0, tzinfo=dt.UTC).timestamp()


def fwd(txn: str, mke: str | None = "QW", text: str = "") -> Entry:
    return Entry(kind="FORWARDED", direction="out", peer="NCIC", mnemonic="ICS1", user="TS0001", ori="CA0130000",
                 mke=mke, txn=txn, text=text or f"{mke}.CA0130000.NAM/DOE,JOHN.DOB/19800101 {txn}")


def answer(txn: str, osn: int | None, mke: str = "QW", code: str | None = None) -> Entry:
    return Entry(kind="RECEIVED", direction="in", peer="NCIC", mnemonic="ICS1", mke=mke, txn=txn, osn=osn, code=code,
                 text=f"ANSWER {txn}")


# (name, entries, month): appended in this order, one append each; "nov" ones before midnight.
SCRIPT: list[tuple[str, list[Entry], str]] = [
    ("old-unanswered", [fwd("T0")], "nov"),                       # unanswered, but only inside a wide window
    ("answered", [fwd("T1"), answer("T1", 1)], "nov"),
    ("unanswered", [fwd("T2")], "nov"),
    ("admin-no-answer", [fwd("T3", "AM")], "nov"),                # AM expects no answer
    ("output-landed-e501", [fwd("T4"), answer("T4", 2),
                            Entry(kind="UNDELIVERED", mnemonic="ICS1", txn="T4", osn=2, code="E501")], "dec"),
    ("open-multipart", [fwd("T5", "QH"), answer("T5", 3, "QH")], "dec"),
    ("multipart-noticed", [fwd("T6", "QH"), answer("T6", 4, "QH"), answer("T6", 5, "MSC", "E302")], "dec"),
    ("re-forwarded-after-answer", [answer("T7", 6), fwd("T7")], "dec"),
    ("no-message-key", [fwd("T8", None)], "dec"),
    ("refused-answer", [Entry(kind="REJECTED", peer="NCIC", txn="T9", code="E501", text="ANSWER NOT RECORDED")], "dec"),
    ("refused-no-txn", [Entry(kind="REJECTED", peer="NCIC", code="E501", text="X")], "dec"),
    ("other-refusal", [Entry(kind="REJECTED", peer="NCIC", txn="T10", code="E201", text="X")], "dec"),
    ("answered-late", [answer("T2", 7)], "dec"),                  # T2's answer: after up_to below
]


@pytest.fixture
def keyring(tmp_path):
    ring = KeyRing(tmp_path / "keys", tmp_path / "master.key")
    ring.init()
    return ring


@pytest.fixture
async def journal(journal_backend, keyring, tmp_path):
    now = [NOV_END]
    j = journal_on(journal_backend, keyring, tmp_path)
    j._clock = lambda: now[0]  # the records' times: before and after midnight of November 30
    await j.open()
    seqs: dict[str, list[int]] = {}
    for name, entries, month in SCRIPT:
        now[0] = (NOV_END if month == "nov" else DEC_START) + len(seqs)
        seqs[name] = await j.append(*entries)
    yield j, seqs
    await j.close()


def texts(records) -> list[str]:
    return [getattr(r, "request", r).text.rsplit(" ", 1)[-1] for r in records]


async def test_unanswered_requests(journal):
    j, seqs = journal
    everything = 3 * 86400.0
    before_late_answer = seqs["answered-late"][0] - 1
    # T2 was answered at the very end; T4's only output was refused E501; T7 was forwarded again
    # after its answer; T8 has no message key (expects an answer); T3 (AM) never expects one.
    assert texts(await j.unanswered_requests(everything)) == ["T0", "T4", "T7", "T8"]
    assert texts(await j.unanswered_requests(everything, up_to=before_late_answer)) == ["T0", "T2", "T4", "T7", "T8"]
    # A window of 30 s from the end leaves the first November records out (their times: +0 s, +1 s …).
    assert texts(await j.unanswered_requests(30.0, up_to=before_late_answer)) == ["T2", "T4", "T7", "T8"]
    # Up to the first record: the one request, unanswered by then.
    assert texts(await j.unanswered_requests(everything, up_to=seqs["old-unanswered"][0])) == ["T0"]


async def test_open_answers(journal):
    j, _seqs = journal
    # T5 had a part and no notice; T6 was told E302 (an MSC notice); QW is not a multi-part key here.
    assert texts(await j.open_answers({"QH": 3600.0})) == ["T5"]
    assert await j.open_answers({"QH": 0.001}) == []  # the window ended before the last record
    assert await j.open_answers({}) == []
    # With QW as a multi-part key, every QW request with a part and no notice is open; T7's part
    # came before its (second) forwarding, T0 and T8 had none.
    assert texts(await j.open_answers({"QH": 3600.0, "QW": 3600.0})) == ["T1", "T2", "T4", "T5"]


def request(txn: str, peer: str | None = "ICS1") -> Entry:
    """The request's own RECEIVED record, from the station (journaled with its FORWARDED record)."""
    return Entry(kind="RECEIVED", direction="in", peer=peer, mnemonic="ICS1", user="TS0001", ori="CA0130000",
                 mke="QW", txn=txn, text=f"QW.CA0130000.NAM/DOE,JOHN.DOB/19800101 {txn}")


def frame(txn: str, osn: int) -> Entry:
    """One frame of an answer too long for the station, or a redirected copy: msc made it."""
    return Entry(kind="RECEIVED", direction="in", peer="MSC", mnemonic="ICS1", mke="QW", txn=txn, osn=osn,
                 text=f"FRAME {txn}")


# (txn, [(month, entries appended together) …], parts of its answer as the restart pass counts them)
PARTS_SCRIPT = [
    ("P1", [("nov", [request("P1"), fwd("P1")]), ("nov", [answer("P1", 1)]), ("nov", [answer("P1", 2)])], 2),
    ("P2", [("nov", [request("P2"), fwd("P2")]), ("nov", [answer("P2", 3)])], 1),
    # one part, too long for the station: recorded whole (no OSN) and sent as two frames (peer MSC)
    ("P3", [("nov", [request("P3"), fwd("P3")]), ("nov", [answer("P3", None), frame("P3", 4), frame("P3", 5)])], 1),
    # a part whose record landed while its commit failed (UNDELIVERED E501), sent again and recorded
    ("P4", [("nov", [request("P4"), fwd("P4")]),
            ("nov", [answer("P4", 6), Entry(kind="UNDELIVERED", mnemonic="ICS1", txn="P4", osn=6, code="E501")]),
            ("nov", [answer("P4", 7)])], 1),
    # a request from a sender with no peer name (a NULL peer is not msc's)
    ("P5", [("nov", [request("P5", None), fwd("P5")]), ("nov", [answer("P5", 8)])], 1),
    # parts on both sides of midnight
    ("P6", [("nov", [request("P6"), fwd("P6")]), ("nov", [answer("P6", 9)]), ("dec", [answer("P6", 10)])], 2),
    # a part redirected to a pool's printer: the copy is msc's, the part counts once
    ("P7", [("nov", [request("P7"), fwd("P7")]), ("dec", [answer("P7", 11)]),
            ("dec", [Entry(kind="UNDELIVERED", mnemonic="ICS1", txn="P7", osn=11, text="REDIRECTED"), frame("P7", 12)])],
     1),
    # after the last part, a notice: no longer open whatever its count
    ("P8", [("nov", [request("P8"), fwd("P8")]), ("dec", [answer("P8", 13)]), ("dec", [answer("P8", 14, "MSC", "E302")])],
     None),
]


async def test_open_answers_count_the_parts_that_came(journal_backend, keyring, tmp_path):
    """How many parts of each open answer came (PROTOCOL.md §4 "Stopping with an answer open"):
    the upstream's RECEIVED records, not the request's own, nor msc's frames and copies, less a
    part whose record landed while its commit failed; summed over a month boundary."""
    now = [NOV_END]
    j = journal_on(journal_backend, keyring, tmp_path)
    j._clock = lambda: now[0]
    await j.open()
    try:
        n = 0
        for _txn, appends, _parts in PARTS_SCRIPT:
            for month, entries in appends:
                n += 1
                now[0] = (NOV_END if month == "nov" else DEC_START) + n / 10
                await j.append(*entries)
        got = {o.request.txn: o.parts for o in await j.open_answers({"QW": 3600.0})}
        assert got == {txn: parts for txn, _a, parts in PARTS_SCRIPT if parts is not None}
        assert all(o.request.kind == "FORWARDED" for o in await j.open_answers({"QW": 3600.0}))
    finally:
        await j.close()


async def test_refused_answers(journal):
    j, seqs = journal
    assert await j.refused_answers(0) == {"T9"}
    assert await j.refused_answers(seqs["refused-answer"][0]) == {"T9"}
    assert await j.refused_answers(seqs["refused-answer"][0] + 1) == set()


async def test_output_records_since(journal):
    j, seqs = journal
    rows = await j.output_records_since(0)
    assert [(r[2], r[5], r[6]) for r in rows] == [
        ("RECEIVED", 1, "T1"), ("RECEIVED", 2, "T4"), ("UNDELIVERED", 2, "T4"), ("RECEIVED", 3, "T5"),
        ("RECEIVED", 4, "T6"), ("RECEIVED", 5, "T6"), ("RECEIVED", 6, "T7"), ("RECEIVED", 7, "T2")]
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)
    since = seqs["open-multipart"][1]
    assert [r[5] for r in await j.output_records_since(since)] == [4, 5, 6, 7]
    assert await j.output_records_since(seqs["answered-late"][0]) == []


async def test_on_an_empty_journal_nothing_is_pending(journal_backend, keyring, tmp_path):
    j: Journal = journal_on(journal_backend, keyring, tmp_path)
    await j.open()
    try:
        assert await j.unanswered_requests(60.0) == []
        assert await j.open_answers({"QH": 60.0}) == []
        assert await j.refused_answers(0) == set()
        assert await j.output_records_since(0) == []
    finally:
        await j.close()
