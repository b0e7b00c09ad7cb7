"""Contract of the key ring's store (msc.keyring.KeyStore; JOURNAL.md "Encryption"): the file
``data_dir/keys/keyring.json`` with SQLite, tables in ``[storage]``'s database with PostgreSQL.

A "node" here is a :class:`msc.keyring.KeyRing` handle with its own directory and a copy of the
one master key file (with SQLite both handles share the machine's file: another process). What
one node creates — a month's key, the users key, the signing key, a destruction — every other
node reads; two creating the same month at once end with one secret (issue 16: a standby that took
over found months the active had made only in its own file, and refused to start).
"""

from __future__ import annotations

import base64
import json
import shutil
import threading
from pathlib import Path

import pytest

from msc.keyring import KeyError_, KeyRing, PeriodKeys, load_master_key
from tests.keyspy import KeyMaking
from tests.timeline import Clock


def _same(a: PeriodKeys | None, b: PeriodKeys | None) -> bool:
    """Two handles' keys of a month are the same keys: what one seals the other opens."""
    assert a is not None and b is not None
    nonce = b"\0" * 12
    return a.index_key == b.index_key and b.aead.decrypt(nonce, a.aead.encrypt(nonce, b"QW", b"ad"), b"ad") == b"QW"


@pytest.fixture
def nodes(backend, tmp_path):
    """``make()`` → a new node's key ring (its own directory; the master key file copied to it)."""
    master = tmp_path / "node0" / "master.key"
    made: list[KeyRing] = []
    count = iter(range(1000))

    def make() -> KeyRing:
        n = next(count)
        home = tmp_path / f"node{n}"
        home.mkdir(exist_ok=True, mode=0o700)
        mine = home / "master.key"
        if n and master.exists() and not mine.exists():
            shutil.copy2(master, mine)
        ring = backend.keyring(home / "keys", mine)
        made.append(ring)
        return ring

    yield make
    for ring in made:
        ring.close()


@pytest.fixture
def first(nodes):
    ring = nodes()
    ring.init()
    return ring


def test_a_new_key_ring_is_made_once(nodes, first):
    assert first.exists
    other = nodes()
    assert other.exists
    with pytest.raises(KeyError_, match="already"):
        other.init()
    assert first.periods() == {}


def test_every_node_reads_the_keys_another_made(nodes, first):
    made = first.period("2026-11")
    other = nodes()
    assert _same(made, other.period("2026-11", create=False))
    assert _same(made, other.period("2026-11"))  # not made again
    assert other.public_key_bytes() == first.public_key_bytes()
    assert other.signing_key().public_key().public_bytes_raw() == first.public_key_bytes()
    nonce = b"\1" * 12
    assert other.users_aead().decrypt(nonce, first.users_aead().encrypt(nonce, b"totp", None), None) == b"totp"
    assert set(other.periods()) == {"2026-11"} and "created" in other.periods()["2026-11"]
    ident = other.signing_identity()  # `msc keys show` on the node that did not run `msc keys init`
    assert ident.public == first.public_key_bytes() and ident.pub_file_matches


# Months a node makes in advance or late, and ones near the ends of the calendar.
@pytest.mark.parametrize("period", ["2026-12", "2027-01", "1999-12", "2100-02"])
def test_a_month_made_by_a_later_handle_is_seen_by_an_earlier_one(nodes, first, period):
    other = nodes()
    assert other.period(period, create=False) is None  # nobody made it yet (and nothing is cached)
    made = first.period(period)
    assert _same(made, other.period(period, create=False))


def test_two_nodes_making_the_same_month_at_once_get_one_secret(nodes, first):
    """The race of a month's first write on two nodes (or a node and `msc journal verify`)."""
    rings = [nodes() for _ in range(4)]
    for month in ("2031-01", "2031-02", "2031-03"):
        barrier = threading.Barrier(len(rings))
        got: list[PeriodKeys | None] = [None] * len(rings)

        def make(i: int, month: str = month, barrier: threading.Barrier = barrier,
                 got: list[PeriodKeys | None] = got) -> None:
            barrier.wait(timeout=60)
            got[i] = rings[i].period(month)

        threads = [threading.Thread(target=make, args=(i,)) for i in range(len(rings))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert all(not t.is_alive() for t in threads)
        assert all(_same(got[0], g) for g in got[1:]), month
        assert _same(got[0], nodes().period(month, create=False))  # the one stored


def test_a_destroyed_month_stays_destroyed_for_every_node(nodes, first):
    first.period("2023-01")
    other = nodes()
    assert other.period("2023-01") is not None
    first.destroy_period("2023-01")
    late = nodes()
    assert late.period("2023-01", create=False) is None
    assert late.period("2023-01") is None  # never made again (a clock set back three years)
    assert "destroyed" in late.periods()["2023-01"] and "wrapped" not in late.periods()["2023-01"]
    assert "destroyed" in late.missing_key("2023-01")
    assert "retention" in late.missing_key("2023-01")


def test_a_month_never_made_is_reported_as_missing_not_destroyed(nodes, first):
    text = nodes().missing_key("2026-11")
    assert "has no key for 2026-11" in text and "destroyed" not in text
    assert first.describe() in text


def test_the_journals_a_key_ring_served_are_shared(nodes, first):
    first.register_journal("e642c3efff29c000")
    other = nodes()
    other.register_journal("e642c3efff29c000")  # again: kept as first seen
    other.register_journal("be576f284813af3e")
    assert set(first.journals()) == {"e642c3efff29c000", "be576f284813af3e"}


def test_a_rotation_rewraps_every_entry_and_keeps_every_key(nodes, first, tmp_path):
    before = first.period("2026-11")
    first.period("2026-10")
    first.destroy_period("2026-10")
    old_public = first.public_key_bytes()
    old, new = first.rotate()
    assert old != new and load_master_key(first.master_path).id == new
    assert _same(before, nodes().period("2026-11", create=False))  # a new node copies the new master key file
    assert all(e.get("master") == new for e in first.periods().values() if "wrapped" in e)
    assert first.public_key_bytes() == old_public
    assert first.periods()["2026-10"].keys() == {"destroyed"}


def test_a_node_whose_master_key_is_not_the_key_rings_is_told_to_copy_it(backend, nodes, first, tmp_path):
    other = nodes()  # copied the master key before the rotation
    first.rotate()
    if other.master_path == first.master_path:
        pytest.skip("one machine: both handles read the same (rotated) master key file")
    first.period("2026-12")
    for attempt in (lambda: other.period("2026-12"), other.users_aead, lambda: other.period("2027-01")):
        with pytest.raises(KeyError_, match="copy the master key file"):
            attempt()


def test_a_key_ring_names_where_it_is(backend, first):
    where = first.describe()
    assert ("keyring.json" in where) if not hasattr(backend, "sql") else where.startswith("PostgreSQL (")
    assert "password" not in where.lower()


# -- PostgreSQL only: what the database holds, and the import of a node's old file -----------

@pytest.fixture
def pg(backend):
    if not hasattr(backend, "sql"):
        pytest.skip("the key ring in the database is PostgreSQL's")
    return backend


def test_the_database_holds_wrapped_entries_never_the_master_key_and_no_file_is_written(pg, nodes, first):
    first.period("2026-11")
    mk = load_master_key(first.master_path)
    rows = pg.sql("SELECT m::text FROM keyring_meta m UNION ALL SELECT p::text FROM keyring_periods p")
    dump = "\n".join(r[0] for r in rows)
    assert base64.b64encode(mk.key).decode() not in dump and mk.key.hex() not in dump
    assert mk.id in dump  # the id of the key that wraps them, so a node can say which it lacks
    assert not first.path.exists()
    assert (first.dir / "signing.pub").exists()  # the public half, for publication, on the node that made it


def _pg_ring(pg, home: Path, master: Path) -> KeyRing:
    return pg.keyring(home / "keys", master)


def _write_file(home: Path, doc: dict) -> Path:
    keys = home / "keys"
    keys.mkdir(parents=True, mode=0o700, exist_ok=True)
    (keys / "keyring.json").write_text(json.dumps(doc))
    return keys / "keyring.json"


def test_each_nodes_old_key_ring_file_is_imported_once_and_a_destruction_wins(pg, tmp_path):
    """Moving a pair that kept a file per node: node b's copy was taken when only 2026-10
    existed; node a went on to make 2026-11 and to purge 2026-10. Whichever starts first, the
    database ends with 2026-11 and 2026-10 destroyed."""
    master = tmp_path / "master.key"
    a = KeyRing(tmp_path / "a" / "keys", master)
    a.init()
    a.period("2026-10")
    b_copy = json.loads(a.path.read_text())
    wanted = a.period("2026-11")
    a.destroy_period("2026-10")
    a.register_journal("e642c3efff29c000")
    a_doc = json.loads(a.path.read_text())

    b_path = _write_file(tmp_path / "b", b_copy)
    ring_b = _pg_ring(pg, tmp_path / "b", master)
    try:
        assert "the whole key ring (1 month(s): 2026-10" in (ring_b.import_file() or "")
        assert not b_path.exists() and b_path.with_name("keyring.json.imported").exists()
        assert ring_b.import_file() is None  # once
        assert ring_b.period("2026-10", create=False) is not None
    finally:
        ring_b.close()
    ring_a = _pg_ring(pg, tmp_path / "a", master)
    try:
        taken = ring_a.import_file() or ""
        assert "month(s) 2026-11" in taken and "the destruction (retention) of 2026-10" in taken, taken
        assert _same(wanted, ring_a.period("2026-11", create=False))
        assert ring_a.period("2026-10", create=False) is None and "destroyed" in ring_a.periods()["2026-10"]
        assert "e642c3efff29c000" in ring_a.journals()
    finally:
        ring_a.close()
    # A third, stale copy that still holds 2026-10's secret does not bring it back.
    _write_file(tmp_path / "c", b_copy)
    ring_c = _pg_ring(pg, tmp_path / "c", master)
    try:
        assert ring_c.import_file() == f"{tmp_path / 'c' / 'keys' / 'keyring.json'} imported into {ring_c.describe()}: nothing new"
        assert ring_c.period("2026-10", create=False) is None
        assert ring_c.periods()["2026-10"] == a_doc["periods"]["2026-10"]
        assert set(ring_c.periods()) == {"2026-10", "2026-11"}
    finally:
        ring_c.close()


def test_openers_on_one_machine_importing_its_file_at_once_all_start_and_one_reports_it(pg, tmp_path):
    """A node taking over while its standby's look at the key ring imports the same leftover file
    (or an `msc` command at that moment): every opener goes on — none fails on the file the other
    set aside first (the e2e saw `msc serve did not start: [Errno 2] … keyring.json ->
    keyring.json.imported`) —, the file is imported once and set aside, and one opener says so."""
    master = tmp_path / "master.key"
    a = KeyRing(tmp_path / "a" / "keys", master)
    a.init()
    made = a.period("2026-11")
    doc = json.loads(a.path.read_text())
    for attempt in range(8):  # the race is the threads' to lose; several rounds of several openers
        home = tmp_path / f"node{attempt}"
        path = _write_file(home, doc)
        rings = [_pg_ring(pg, home, master) for _ in range(4)]
        barrier = threading.Barrier(len(rings))
        said: list[str | None] = []
        failed: list[BaseException] = []

        def open_it(ring: KeyRing, barrier: threading.Barrier = barrier, said: list = said, failed: list = failed) -> None:
            barrier.wait(timeout=60)
            try:
                said.append(ring.import_file())
            except BaseException as exc:  # noqa: BLE001 - asserted below
                failed.append(exc)

        threads = [threading.Thread(target=open_it, args=(r,)) for r in rings]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        try:
            assert not failed, failed
            assert len([s for s in said if s]) == 1, said
            assert not path.exists() and path.with_name("keyring.json.imported").exists()
            assert _same(made, rings[0].period("2026-11", create=False))
        finally:
            for ring in rings:
                ring.close()


# The ways a node's file may disagree with the database: each refused, nothing changed.
DISAGREEMENTS = {
    "a month with another secret": ("period", "2026-11 has a different secret"),
    "another signing key": ("signing", "different checkpoint signing keys"),
    "another users key": ("users", "different users keys"),
    "another master key": ("master", "wrapped by master key"),
}


@pytest.mark.parametrize("how", list(DISAGREEMENTS))
def test_a_file_that_disagrees_with_the_database_is_refused_and_nothing_changes(pg, tmp_path, how):
    from msc.keyring import MasterKey, _unwrap, _wrap

    master = tmp_path / "master.key"
    (tmp_path / "db").mkdir(mode=0o700)
    ring = _pg_ring(pg, tmp_path / "db", master)
    try:
        ring.init()
        theirs_key = ring.period("2026-11")
        db_doc = ring.store.read()
        mk = load_master_key(master)
        field, message = DISAGREEMENTS[how]
        doc = json.loads(json.dumps(db_doc))
        if field == "period":
            doc["periods"]["2026-11"] = _wrap(mk, "period:2026-11", b"\7" * 32)
        elif field == "signing":
            doc["signing"] = {**_wrap(mk, "signing", b"\5" * 32), "public": base64.b64encode(b"\5" * 32).decode()}
        elif field == "users":
            doc["users"] = _wrap(mk, "users", b"\6" * 32)
        else:
            other = MasterKey("0badc0de", b"\3" * 32)
            doc["periods"]["2026-12"] = _wrap(other, "period:2026-12", b"\4" * 32)
            assert _unwrap(other, "period:2026-12", doc["periods"]["2026-12"]) == b"\4" * 32
        _write_file(tmp_path / "db", doc)
        with pytest.raises(KeyError_, match=message) as err:
            ring.import_file()
        assert "nothing was imported" in str(err.value)
        assert ring.path.exists()  # kept for the operator
        assert ring.store.read() == db_doc
        assert _same(theirs_key, _pg_ring(pg, tmp_path / "db", master).period("2026-11", create=False))
    finally:
        ring.close()


# -- the journal's month keys, made ahead off the event loop (issue 16: month rollover) ----------


def _utc(text: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


# (the clock at open, the clock after the rollover, the month the work must make then): the end
# of a month, of a year, of a leap February, and a clock that jumped two months (switched off).
ROLLOVERS = [
    ("2026-01-31T23:59:00", "2026-02-01T00:00:30", "2026-03"),
    ("2026-12-31T23:59:59", "2027-01-01T00:00:01", "2027-02"),
    ("2028-02-29T12:00:00", "2028-03-01T00:00:00", "2028-04"),
    ("2026-05-20T08:00:00", "2026-07-02T08:00:00", "2026-08"),
]


@pytest.mark.parametrize("before, after, ahead", ROLLOVERS, ids=["month", "year", "leap-february", "jumped"])
async def test_the_journal_makes_the_next_months_key_ahead_and_never_on_the_event_loop(
        nodes, first, tmp_path, monkeypatch, before, after, ahead):
    """A journal running into a new month makes the month after it at the first tick of the month,
    in a worker thread; the first commit of the month finds its key made (no key is ever made on
    the event loop's thread). Another node reads the key the work made."""
    import msc.journal.journal as journal_mod
    import msc.journal.monthkeys as monthkeys_mod
    from msc.journal import Entry, Journal
    from msc.journal.schema import list_partitions
    from msc.keyring import next_period, period_of
    from tests.conftest import eventually

    monkeypatch.setattr(journal_mod, "TICK_S", 0.02)
    monkeypatch.setattr(monthkeys_mod, "KEYS_CHECK_S", 3600.0)  # only the rollover makes the work due
    spy = KeyMaking(first)
    clock = Clock(_utc(before))
    seen: list[BaseException | None] = []
    j = Journal(tmp_path / "journal", first, clock=clock, writer="thread", on_keys=seen.append)
    loop_thread = threading.get_ident()
    await j.open()
    try:
        opened = period_of(int(clock.t * 1e6))
        assert {p for p, _ in spy.made} == {opened, next_period(opened)} and seen == [None]
        await j.append(Entry(kind="RECEIVED", text="the last record of the month"))
        clock.t = _utc(after)
        now = period_of(int(clock.t * 1e6))
        assert next_period(now) == ahead
        await eventually(lambda: j.keys_ready() and len(seen) == 2)
        assert seen == [None, None]
        assert _same(first.period(ahead, create=False), nodes().period(ahead, create=False))
        await j.append(Entry(kind="RECEIVED", text="the first record of the month"))
        assert now in list_partitions(tmp_path / "journal")
        assert {p for p, _ in spy.made} >= {now, ahead}
        assert all(t != loop_thread for _, t in spy.made), spy.made
        assert j.keys_ahead() is None  # not due again within the month (KEYS_CHECK_S)
    finally:
        await j.close()


async def test_a_key_ring_that_cannot_be_reached_is_tried_again_and_a_month_not_made_still_commits(
        nodes, first, tmp_path, monkeypatch):
    """The work fails (the key ring's database away): said to ``on_keys``, tried again after
    KEYS_CHECK_S. The clock went on to a month nobody made (the switch ran through the outage):
    its first record makes the key on demand — the fallback — and commits once the key ring
    answers; the work then makes the month after."""
    import msc.journal.journal as journal_mod
    import msc.journal.monthkeys as monthkeys_mod
    from msc.journal import Entry, Journal
    from msc.journal.schema import list_partitions
    from tests.conftest import eventually

    monkeypatch.setattr(journal_mod, "TICK_S", 0.02)
    monkeypatch.setattr(monthkeys_mod, "KEYS_CHECK_S", 0.2)
    spy = KeyMaking(first)
    clock = Clock(_utc("2026-03-31T23:00:00"))
    seen: list[BaseException | None] = []
    j = Journal(tmp_path / "journal", first, clock=clock, writer="thread", on_keys=seen.append)
    await j.open()
    try:
        spy.fail = "the key ring in PostgreSQL (…): ConnectionRefusedError"
        clock.t = _utc("2026-06-01T00:00:05")
        await eventually(lambda: any(e is not None for e in seen))
        assert "ConnectionRefusedError" in str(next(e for e in seen if e is not None)) and not j.keys_ready()
        assert {nodes().period(m, create=False) for m in ("2026-06", "2026-07")} == {None}
        spy.fail = None
        await j.append(Entry(kind="RECEIVED", text="the first record of June"))
        assert "2026-06" in list_partitions(tmp_path / "journal")
        await eventually(lambda: j.keys_ready() and seen[-1] is None)
        assert nodes().period("2026-07", create=False) is not None
    finally:
        await j.close()


async def test_a_master_key_rotated_on_another_node_is_found_by_the_next_look_and_cleared_by_the_copy(
        nodes, first, tmp_path, monkeypatch):
    """The look every KEYS_CHECK_S unwraps the key ring with this machine's master key file: after
    another node ran `msc keys rotate` it reports the fix (copy the master key file) long before a
    month needs a new key, and nothing once the new file is copied here."""
    import msc.journal.journal as journal_mod
    import msc.journal.monthkeys as monthkeys_mod
    from msc.journal import Journal
    from tests.conftest import eventually

    monkeypatch.setattr(journal_mod, "TICK_S", 0.02)
    monkeypatch.setattr(monthkeys_mod, "KEYS_CHECK_S", 0.1)
    other = nodes()
    seen: list[BaseException | None] = []
    j = Journal(tmp_path / "journal", first, clock=Clock(_utc("2026-06-10T12:00:00")), writer="thread",
                on_keys=seen.append)
    await j.open()
    try:
        other.rotate()
        await eventually(lambda: seen and seen[-1] is not None)
        assert isinstance(seen[-1], KeyError_) and "copy the master key file" in str(seen[-1])
        assert j.keys_ready()  # this month's and next month's keys are in hand: the node serves on
        shutil.copy2(other.master_path, first.master_path.with_name("master.key.copy"))
        first.master_path.with_name("master.key.copy").replace(first.master_path)  # whole, as an operator's mv
        await eventually(lambda: seen[-1] is None)
    finally:
        await j.close()


def _other_key(path: Path) -> None:
    from msc.keyring import create_master_key

    path.unlink()
    create_master_key(path)


def _same_id_other_key(path: Path) -> None:
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "key": base64.b64encode(bytes(32)).decode()}))


#: What the master key file on a machine may have become while the node ran, and the words of
#: the reason check_usable gives (the look of a node of a pair every few seconds: newcomer7 #1).
BAD_MASTER_FILES = [
    (_other_key, "copy the master key file"),                               # another machine's, or pre-rotation
    (_same_id_other_key, "does not authenticate under the master key"),     # a damaged copy
    (lambda p: p.chmod(0o644), "must not be readable by group or others"),  # copied without its mode
    (lambda p: p.unlink(), "no master key at"),                             # not copied at all
    (lambda p: p.write_text("{not json"), "is not a master key file"),       # truncated by an editor
    (lambda p: p.write_text('{"id": "x", "key": "AAAA"}'), "is not a master key file"),  # 3 bytes of key
]


@pytest.mark.parametrize("spoil, says", BAD_MASTER_FILES)
def test_the_look_at_the_key_ring_reads_the_master_key_file_as_it_is_now(nodes, first, spoil, says):
    """check_usable reads this machine's master key file afresh at each look, not the copy the
    handle loaded: a file spoiled under a running node is found before a takeover would read it,
    and putting the right file back is found by the next look — no restart."""
    ring = nodes()
    ring.users_aead()  # the handle has loaded (and keeps) the right master key
    ring.check_usable()
    good = ring.master_path.read_bytes()
    spoil(ring.master_path)
    with pytest.raises(KeyError_, match=says):
        ring.check_usable()
    ring.users_aead()  # what the handle holds still works: a serving node serves on
    ring.master_path.unlink(missing_ok=True)
    ring.master_path.write_bytes(good)
    ring.master_path.chmod(0o600)
    ring.check_usable()


def test_a_rotation_on_another_node_fails_the_look_until_the_file_is_copied(nodes, first):
    other = nodes()
    other.check_usable()
    old, new = first.rotate()
    if other.master_path == first.master_path:
        pytest.skip("one machine: both handles read the same (rotated) master key file")
    with pytest.raises(KeyError_, match=f"wrapped by master key {new}, but this machine's master key file .* holds {old}"):
        other.check_usable()
    shutil.copy2(first.master_path, other.master_path)
    other.check_usable()
