"""``msc journal verify``'s check reads a journal through the reader interface only
(msc.journal.interfaces.JournalReader), so it verifies a journal on any backend: records sealed
by the journal's own sealing code, committed through the backend's writer, then found intact —
or found altered, at the record the alteration is in, whichever backend holds them."""

from __future__ import annotations

import pytest

from msc.journal.records import Entry, entry_columns, seal
from msc.journal.schema import Row
from msc.journal.tokens import tokens_for
from msc.journal.verify import verify
from msc.keyring import KeyRing
from tests.contract.test_journal_contract import DEC, NOV, period

NAME = "TEST-MSC"


@pytest.fixture
def keyring(tmp_path):
    ring = KeyRing(tmp_path / "keys", tmp_path / "master.key")
    ring.init()
    return ring


def sealed(keyring, first: int, n: int, ts0: int) -> list[Row]:
    """Records as msc.journal.journal.Journal seals them (same functions, same row layout)."""
    out = []
    for i in range(n):
        seq, ts = first + i, ts0 + i * 1000
        p = period(ts)
        keys = keyring.period(p)
        e = Entry(kind="RECEIVED", direction="in", peer="T1", mnemonic="T1", user="TS0001", ori="CA0130000",
                  mke="QW", txn=f"X{seq}", text=f"QW.CA0130000.NAM/DOE,JOHN {seq}.DOB/19800101")
        _meta, blob = seal(keys.aead, e, seq, ts, p)
        out.append(Row(p, (seq, ts, *entry_columns(e)), blob, tokens_for(keys.index_key, e.text)))
    return out


async def _journal(backend, keyring, *, checkpoint_at: tuple[int, ...] = (6, 10)) -> None:
    w = backend.journal_writer(keyring.signing_key())
    await w.start()
    batch = sealed(keyring, 1, 6, NOV) + sealed(keyring, 7, 4, DEC)
    done = 0
    for size in checkpoint_at:
        await w.commit(batch[done:size])
        await w.checkpoint(NAME, batch[size - 1].ts + 1)
        done = size
    await w.commit(batch[done:])
    await w.close()


async def test_an_intact_journal_verifies_on_every_backend(journal_backend, keyring):
    await _journal(journal_backend, keyring, checkpoint_at=(6, 10))
    r = journal_backend.journal_reader()
    try:
        res = verify(r, keyring, name=NAME)
    finally:
        r.close()
    assert res.ok, res.problems
    assert (res.records, res.checkpoints, res.tree_size) == (10, 2, 10)


async def test_a_journal_ending_below_the_expected_size_fails(journal_backend, keyring):
    await _journal(journal_backend, keyring)
    r = journal_backend.journal_reader()
    try:
        res = verify(r, keyring, name=NAME, min_tree_size=12)
    finally:
        r.close()
    assert not res.ok and res.first_bad == 11


# Alterations, each made behind the writer's back (the append-only triggers switched off, as
# someone with the database's or the files' owner rights could), and the record verify names.
@pytest.mark.parametrize("how, seq, fragment", [
    ("relabel", 3, "relabelled"),
    ("flip-a-byte", 4, "modified"),
    ("blob-as-text", 4, "not a byte string"),
    ("delete", 5, "missing"),
    ("swap-blobs", 2, "moved or reordered"),
    ("delete-tail", 9, "removed from the tail"),
])
async def test_an_altered_record_is_found_on_every_backend(journal_backend, keyring, how, seq, fragment):
    await _journal(journal_backend, keyring, checkpoint_at=(6, 10))
    journal_backend.tamper(how, seq)
    r = journal_backend.journal_reader()
    try:
        res = verify(r, keyring, name=NAME)
    finally:
        r.close()
    assert not res.ok
    assert fragment in res.reason, res.problems
    if how != "delete-tail":
        assert res.first_bad == seq, res.problems


async def test_an_evidence_bundle_exported_from_any_backend_verifies(journal_backend, keyring, tmp_path):
    """Export reads through the reader interface too: the bundle's inclusion proofs come from
    every leaf hash of the journal — a purged month's kept hashes, then the records' — and a
    court's stand-alone verifier accepts it, pinned to the agency's key."""
    import io

    from cryptography.hazmat.primitives import serialization

    from msc.journal import bundle_verifier
    from msc.journal.export import covering_checkpoint, write_bundle

    w = journal_backend.journal_writer(keyring.signing_key())
    await w.start()
    batch = sealed(keyring, 1, 6, NOV) + sealed(keyring, 7, 4, DEC)
    await w.commit(batch)
    await w.checkpoint(NAME, batch[-1].ts + 1)
    assert await w.purge_period(period(NOV), 9) == (1, 6)  # November's records go, their hashes stay
    await w.delete_partition(period(NOV))
    await w.close()
    r = journal_backend.journal_reader()
    try:
        assert r.purged_leaf_count(period(NOV)) == 6
        assert len(r.purged_leaves(period(NOV), 4, 10)) == 2 * 32  # fewer when the month has fewer
        cp = covering_checkpoint(r, 8)
        assert cp is not None and cp.tree_size == 10
        out = tmp_path / "bundle.zip"
        assert write_bundle(r, keyring, [7, 9], out, name=NAME, checkpoint=cp, manifest={"case": "C1"}) == 2
    finally:
        r.close()
    public = keyring.signing_key().public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    said = io.StringIO()
    assert bundle_verifier.verify_bundle(str(out), said, key=public) == bundle_verifier.EXIT_OK, said.getvalue()
    assert "2 record(s) verified" in said.getvalue()


# -- the start-up self-check (msc.journal.selfcheck) reads through the interface too -----------

def _self_check(backend, keyring):
    from msc.journal.selfcheck import check

    r = backend.journal_reader()
    try:
        return check(r, keyring, name=NAME, mark=None)
    finally:
        r.close()


async def test_the_self_check_passes_an_intact_journal_on_every_backend(journal_backend, keyring):
    await _journal(journal_backend, keyring, checkpoint_at=(6, 10))
    res = _self_check(journal_backend, keyring)
    assert res.ok, res.problems
    assert (res.last_seq, res.checkpoint_size, res.records_checked, res.months) == (10, 10, 10, 2)


@pytest.mark.parametrize("how, seq", [("relabel", 3), ("flip-a-byte", 4), ("blob-as-text", 4), ("delete", 5),
                                      ("swap-blobs", 2), ("delete-tail", 9)])
async def test_the_self_check_refuses_an_altered_journal_on_every_backend(journal_backend, keyring, how, seq):
    await _journal(journal_backend, keyring, checkpoint_at=(6, 10))
    journal_backend.tamper(how, seq)
    res = _self_check(journal_backend, keyring)
    assert not res.ok
    assert {p.kind for p in res.problems} & {"tampered", "truncated"}, res.problems


async def test_the_self_check_refuses_a_month_purged_without_proof_on_every_backend(journal_backend, keyring):
    """Record 9 is an ordinary record, not a purge record: November's purge is not justified."""
    await _journal(journal_backend, keyring, checkpoint_at=(6, 10))
    w = journal_backend.journal_writer(keyring.signing_key())
    await w.start()
    assert await w.purge_period(period(NOV), 9) == (1, 6)
    await w.delete_partition(period(NOV))
    await w.close()
    res = _self_check(journal_backend, keyring)
    assert [p.seq for p in res.problems] == [9], res.problems
    assert "no proof" in res.problems[0].text
