"""The switch's restart read-backs (msc.journal.search.unanswered_requests, open_answers,
refused_answers) against a model of their rules, on any journal of requests, answers, notices
and refusals spread over a month boundary: the grouping in the storage's SQL, the merge of the
two months and the window all agree with the rule written out in Python.

(The same read-backs on PostgreSQL give the same answers: tests/contract/test_readbacks_contract.py.)
The SQLite writer runs in this process; ``MSC_PROP_EXAMPLES`` / ``MSC_PROP_RANDOM`` as for the
other property tests."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msc.journal.records import Entry, entry_columns, seal
from msc.journal.schema import Row
from msc.journal.search import open_answers, refused_answers, unanswered_requests
from msc.journal.writer import ThreadWriter
from msc.keyring import KeyRing, period_of

# CPU-bound (hundreds of examples): a loaded machine took 45-53 s of pytest-timeout's default 120 s.
pytestmark = pytest.mark.timeout(300)

EXAMPLES = int(os.environ.get("MSC_PROP_EXAMPLES", "30"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=os.environ.get("MSC_PROP_RANDOM") is None,
                    database=None)

MIDNIGHT = dt.datetime(2026, 12, 1, tzinfo=dt.UTC).timestamp()
TXNS = ["T0", "T1", "T2", "T3"]

# (kind, mke, osn?, code[, peer]) of one record with a transaction id (peer default NCIC)
EVENTS = st.sampled_from([
    ("FORWARDED", "QW", False, None), ("FORWARDED", "QH", False, None), ("FORWARDED", "AM", False, None),
    ("FORWARDED", None, False, None), ("RECEIVED", "QW", True, None), ("RECEIVED", "QH", True, None),
    ("RECEIVED", "QW", False, None), ("RECEIVED", "MSC", True, "E302", "MSC"), ("UNDELIVERED", None, True, "E501"),
    ("REJECTED", None, False, "E501"), ("QUEUED", None, True, None),
    ("RECEIVED", "QH", False, None, "ICS1"), ("RECEIVED", "QH", False, None, None),  # a request's own record
    ("RECEIVED", "QH", True, None, "MSC"),  # a frame of a long answer, a redirected copy
])
SCRIPTS = st.lists(st.tuples(EVENTS, st.sampled_from(TXNS), st.integers(0, 40)), min_size=1, max_size=14)


@pytest.fixture(scope="module")
def ring(tmp_path_factory) -> KeyRing:
    d = tmp_path_factory.mktemp("ring")
    r = KeyRing(d / "keys", d / "master.key")
    r.init()
    return r


def build(ring: KeyRing, directory: Path, script) -> list[tuple[int, int, Entry]]:
    """The script as committed records (times from 60 s before midnight, never decreasing)."""
    t = MIDNIGHT - 60
    out, rows = [], []
    osn = 0
    for seq, ((kind, mke, has_osn, code, *peer), txn, step) in enumerate(script, start=1):
        t += step
        ts = int(t * 1_000_000)
        if has_osn:
            osn += 1
        e = Entry(kind=kind, direction="out" if kind == "FORWARDED" else "in", peer=peer[0] if peer else "NCIC",
                  mnemonic="ICS1", mke=mke,
                  txn=txn, code=code, osn=osn if has_osn else None, text=f"{kind} {txn} {seq}")
        period = period_of(ts)
        keys = ring.period(period)
        _m, blob = seal(keys.aead, e, seq, ts, period)
        rows.append(Row(period, (seq, ts, *entry_columns(e)), blob, ()))
        out.append((seq, ts, e))

    async def write():
        w = ThreadWriter(directory, "normal", ring.signing_key(), directory.parent / "journal.hwm")
        await w.start()
        await w.commit(rows)
        await w.close()

    import asyncio

    asyncio.run(write())
    return out


def model_groups(records, since_ts: int, last: int) -> dict[str, dict]:
    groups: dict[str, dict] = {}
    for seq, ts, e in records:
        if ts < since_ts or seq > last or e.kind not in ("FORWARDED", "RECEIVED", "UNDELIVERED"):
            continue
        g = groups.setdefault(e.txn, {"f": [], "req": [], "r": [], "notices": 0, "outs": 0, "landed": 0, "peers": 0})
        if e.kind == "FORWARDED":
            g["f"].append((seq, ts, e.mke))
            if e.mke != "AM":
                g["req"].append(seq)
        elif e.kind == "RECEIVED":
            g["r"].append(seq)
            g["notices"] += e.mke == "MSC"
            g["outs"] += e.osn is not None
            g["peers"] += e.peer != "MSC"
        elif e.code == "E501":
            g["landed"] += 1
    return groups


def end_of(records, up_to: int | None) -> tuple[int, int]:
    last = up_to if up_to is not None else records[-1][0]
    return last, max(ts for seq, ts, _e in records if seq <= last)


@SETTINGS
@given(script=SCRIPTS, window_s=st.sampled_from([5.0, 30.0, 3600.0]), cut=st.integers(0, 13))
def test_read_backs_follow_their_rules(ring, script, window_s, cut):
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "journal"
        records = build(ring, directory, script)
        up_to = records[min(cut, len(records) - 1)][0] if cut % 2 else None
        last, stopped = end_of(records, up_to)
        since = stopped - int(window_s * 1e6)
        groups = model_groups(records, since, last)

        want = sorted(max(g["req"]) for g in groups.values()
                      if g["req"] and (not g["r"] or max(g["r"]) < max(g["req"]) or g["outs"] <= g["landed"]))
        got = [r.seq for r in unanswered_requests(directory, ring, window_s, up_to=up_to)]
        assert got == want

        windows = {"QH": window_s}
        want_open = []
        for g in groups.values():
            if not g["f"] or not g["r"]:
                continue
            fseq = max(s for s, _t, _m in g["f"])
            fts = max(t for _s, t, _m in g["f"])
            fmke = max((m for _s, _t, m in g["f"] if m is not None), default=None)
            if max(g["r"]) > fseq and g["notices"] == 0 and fmke in windows and fts + int(windows[fmke] * 1e6) > stopped:
                # the parts that came: the upstream's records, less the requests' own, less those landed E501
                want_open.append((fseq, max(0, g["peers"] - len(g["f"]) - g["landed"])))
        got_open = open_answers(directory, ring, windows, up_to=up_to)
        assert [(o.request.seq, o.parts) for o in got_open] == sorted(want_open)

        # refused answers: REJECTED E501 with a txn, from a sequence number on (the last two months)
        frm = records[len(records) // 2][0]
        assert refused_answers(directory, frm) == {e.txn for seq, _ts, e in records
                                                    if seq >= frm and e.kind == "REJECTED" and e.code == "E501"}
