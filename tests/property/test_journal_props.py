"""The journal's tamper evidence and search, checked by hypothesis.

Flipping any byte of any stored record, deleting a record, swapping two, or truncating the tail
makes verify fail (naming the first bad sequence); a clean journal verifies; search results equal
a brute-force filter over every decrypted record.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msc.journal import Entry, Journal, KeyRing
from msc.journal.schema import COLUMNS, list_partitions, partition_path
from msc.journal.search import Query, search
from msc.journal.tokens import fields_of, normalize
from msc.journal.verify import verify

N = 60
USERS = ["TS0001", "TS0002", "EC0001"]
MNES = ["ICS1", "ICS2", "ECC2"]
NAMES = ["SMITH, JOHN", "DOE, JANE", "ROE, RICHARD"]
KINDS = ["RECEIVED", "FORWARDED", "REJECTED", "SESSION"]


def _entries():
    out = []
    for i in range(N):
        name = NAMES[i % 3]
        out.append(Entry(kind=KINDS[i % 4], direction="in", peer="ICS1", mnemonic=MNES[i % 3], user=USERS[(i // 2) % 3],
                         taf="7F000001", ori="CA0130000", mke=["QW", "QV", "QH"][i % 3], txn=f"T{i // 4}",
                         text=f"{MNES[i % 3]}.QW.CA0130000.NAM/{name}.LIC/ABC{i % 5}.DOB/1980010{i % 9}",
                         requester="DET. HOLMES" if i % 3 == 2 else None))
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("journal")
    ring = KeyRing(d / "keys", d / "keys" / "master.key")
    ring.init()

    async def build():
        j = Journal(d / "journal", ring, checkpoint_every=17)
        await j.open()
        for e in _entries():
            await j.append(e)
        await j.close()

    asyncio.run(build())
    return d


def _copy(base, tmp_path):
    dst = tmp_path / "copy"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(base, dst)
    return dst, KeyRing(dst / "keys", dst / "keys" / "master.key")


def _conn(d):
    period = list_partitions(d / "journal")[0]
    conn = sqlite3.connect(partition_path(d / "journal", period), isolation_level=None)
    # An attacker with file access simply removes the append-only triggers.
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    return conn


def _verify(d, ring):
    return verify(d / "journal", ring, name="MSC")


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def test_clean_journal_verifies(base, tmp_path):
    d, ring = _copy(base, tmp_path)
    res = _verify(d, ring)
    assert res.ok, res.problems
    assert res.records >= N and res.tree_size == res.records  # N entries + checkpoint ADMIN records


@SETTINGS
@given(seq=st.integers(1, N), column=st.sampled_from(["blob", "leaf", *COLUMNS[1:]]), pos=st.integers(0, 10_000),
       bit=st.integers(0, 7))
def test_flipping_any_byte_of_any_record_fails_verify(base, tmp_path, seq, column, pos, bit):
    d, ring = _copy(base, tmp_path)
    conn = _conn(d)
    (value,) = conn.execute(f"SELECT {column} FROM records WHERE seq = ?", (seq,)).fetchone()
    if isinstance(value, bytes):
        b = bytearray(value)
        b[pos % len(b)] ^= 1 << bit
        new = bytes(b)
    elif isinstance(value, int):
        new = value ^ (1 << bit)
    elif isinstance(value, str) and value:
        chars = list(value)
        i = pos % len(chars)
        chars[i] = chr(ord(chars[i]) ^ (1 << (bit % 5))) if ord(chars[i]) ^ (1 << (bit % 5)) else "X"
        new = "".join(chars)
        if new == value:
            new = value + "X"
    else:
        new = "FORGED"
    conn.execute(f"UPDATE records SET {column} = ? WHERE seq = ?", (new, seq))
    conn.close()
    res = _verify(d, ring)
    assert not res.ok
    assert res.first_bad == seq, res.problems


@SETTINGS
@given(seq=st.integers(1, N - 1))
def test_deleting_a_record_fails_verify(base, tmp_path, seq):
    d, ring = _copy(base, tmp_path)
    conn = _conn(d)
    conn.execute("DELETE FROM records WHERE seq = ?", (seq,))
    conn.close()
    res = _verify(d, ring)
    assert not res.ok and res.first_bad == seq, res.problems


@SETTINGS
@given(a=st.integers(1, N), b=st.integers(1, N))
def test_swapping_two_records_fails_verify(base, tmp_path, a, b):
    if a == b:
        return
    d, ring = _copy(base, tmp_path)
    conn = _conn(d)
    cols = ", ".join(c for c in COLUMNS[1:]) + ", blob, leaf"
    ra = conn.execute(f"SELECT {cols} FROM records WHERE seq = ?", (a,)).fetchone()
    rb = conn.execute(f"SELECT {cols} FROM records WHERE seq = ?", (b,)).fetchone()
    sets = ", ".join(f"{c} = ?" for c in cols.split(", "))
    conn.execute(f"UPDATE records SET {sets} WHERE seq = ?", (*rb, a))
    conn.execute(f"UPDATE records SET {sets} WHERE seq = ?", (*ra, b))
    conn.close()
    res = _verify(d, ring)
    assert not res.ok and res.first_bad == min(a, b), res.problems


@SETTINGS
@given(k=st.integers(1, 20))
def test_truncating_the_tail_fails_verify(base, tmp_path, k):
    d, ring = _copy(base, tmp_path)
    conn = _conn(d)
    (last,) = conn.execute("SELECT MAX(seq) FROM records").fetchone()
    conn.execute("DELETE FROM records WHERE seq > ?", (last - k,))
    conn.close()
    res = _verify(d, ring)
    assert not res.ok and res.first_bad == last - k + 1, res.problems


def test_inserting_a_record_fails_verify(base, tmp_path):
    d, ring = _copy(base, tmp_path)
    conn = _conn(d)
    cols = ", ".join(COLUMNS) + ", blob, leaf"
    row = list(conn.execute(f"SELECT {cols} FROM records WHERE seq = 5").fetchone())
    conn.execute("UPDATE records SET seq = seq + 1000 WHERE seq > 5")
    conn.execute("UPDATE records SET seq = seq - 999 WHERE seq > 1000")
    row[0] = 6
    conn.execute(f"INSERT INTO records({cols}) VALUES ({', '.join('?' * len(row))})", row)
    conn.close()
    res = _verify(d, ring)
    assert not res.ok and res.first_bad == 6, res.problems


def _all_records(d, ring):
    return list(search(d / "journal", ring, Query()))


@pytest.fixture(scope="module")
def index_states(base, tmp_path_factory):
    """The same journal with its search index complete, absent, and built only half way."""
    from msc.journal.indexer import catch_up, index_path

    out = {"full": base}
    for state in ("none", "half"):
        d = tmp_path_factory.mktemp(state)
        shutil.copytree(base, d, dirs_exist_ok=True)
        for p in (d / "journal").glob("*.idx.db*"):
            p.unlink()
        if state == "half":
            for period in list_partitions(d / "journal"):
                catch_up(d / "journal", period, max_records=N // 2)
                assert index_path(d / "journal", period).exists()
        out[state] = d
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(state=st.sampled_from(["full", "none", "half"]), user=st.sampled_from([None, *USERS]), mnemonic=st.sampled_from([None, *MNES]),
       kind=st.sampled_from([None, *KINDS]), mke=st.sampled_from([None, "QW", "QV", "QH"]),
       token=st.sampled_from([None, ("NAM", "SMITH,JOHN"), ("NAM", "doe ,  jane"), ("LIC", "ABC3"),
                              ("DOB", "19800105"), ("ATN", "det. holmes"), ("VIN", "NOPE")]),
       limit=st.sampled_from([None, 1, 7]))
def test_search_equals_brute_force(index_states, state, user, mnemonic, kind, mke, token, limit):
    d = index_states[state]
    ring = KeyRing(d / "keys", d / "keys" / "master.key")
    everything = _all_records(d, ring)
    q = Query(user=user, mnemonic=mnemonic, kind=kind, mke=mke, tokens=[(token[0], normalize(token[1]))] if token else [],
              limit=limit)
    got = [r.seq for r in search(d / "journal", ring, q)]

    def keep(r):
        if user and r.user != user or mnemonic and r.mnemonic != mnemonic or kind and r.kind != kind:
            return False
        if mke and r.mke != mke:
            return False
        if token:
            tag, value = token[0], normalize(token[1])
            if tag == "ATN":
                return r.requester is not None and normalize(r.requester) == value
            return (tag, value) in fields_of(r.text)
        return True

    expected = [r.seq for r in everything if keep(r)]
    assert got == (expected[:limit] if limit else expected)
    assert got == sorted(got)
