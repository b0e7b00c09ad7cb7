"""Request admission (msc.routing.admission) without sockets or a journal: each refusal's code,
and what an admitted request or AM carries (records, Pending, forwarded text)."""

from __future__ import annotations

import datetime as dt
import itertools
from types import SimpleNamespace

import pytest

from msc.config.load import load
from msc.journal.records import Kind
from msc.mnemonics.directory import Directory
from msc.protocol.codes import ProtocolError, Reject
from msc.protocol.message import parse_input
from msc.routing.admission import Admission, LastUse, Sender
from tests.conftest import TODAY, make_config

# Noon of the day the users file's dates are relative to (tests.conftest.TODAY: EX0001's
# certification ended yesterday) — a fixed date here made E207 pass only on the day it was written.
NOW = dt.datetime.combine(TODAY, dt.time(12), tzinfo=dt.UTC).timestamp()


class FakeRouter:
    def __init__(self, up=True, in_flight=0, max_in_flight=10):
        self.link = SimpleNamespace(name="clets", up=up, in_flight=in_flight, cfg=SimpleNamespace(max_in_flight=max_in_flight))
        self.links = {"clets": self.link}
        self._txn = itertools.count(1)
        self.dispatched = []

    def new_txn(self):
        return f"t{next(self._txn)}"

    def capacity(self, route):
        if not self.link.up:
            return None, Reject.E302
        if self.link.in_flight >= self.link.cfg.max_in_flight:
            return None, Reject.E307
        return self.link, None

    def _split(self, payload):
        # As the router splits an output longer than a station takes: here every 40 bytes.
        return payload.decode(), [payload[i:i + 40] for i in range(0, len(payload), 40)]

    def prepare(self, destinations, payload, peer, entry_kw, category, started, *, split=None):
        parts = (split or self._split(payload))[1]
        outs = [SimpleNamespace(dest=d, part=p) for d in destinations for p in parts]
        return outs, [SimpleNamespace(kind=Kind.RECEIVED) for _ in outs], list(range(len(outs)))

    def landed_undelivered(self, outputs, at, exc):
        self.landed = (outputs, at, exc)

    def dispatch(self, pending, payload):
        self.dispatched.append((pending, payload))


class FakeDelivery:
    """Queue room as msc.routing.delivery.Delivery reserves it: all or nothing, per endpoint,
    ``queue_max`` slots (an endpoint in ``full`` has none)."""

    def __init__(self, full=(), queue_max=4):
        self.full = set(full)
        self.queue_max = queue_max
        self.held: dict[str, int] = {}

    def room(self, endpoint, n=1):
        return endpoint not in self.full and self.held.get(endpoint, 0) + n <= self.queue_max

    def reserve(self, counts, *, path=None):
        if not all(self.room(e, n) for e, n in counts.items()):
            return False
        for e, n in counts.items():
            self.held[e] = self.held.get(e, 0) + n
        return True

    def release(self, counts):
        for e, n in counts.items():
            self.held[e] -= n
            if not self.held[e]:
                del self.held[e]

    def attached(self, endpoint):
        return False


class FakeJournal:
    def __init__(self):
        self.submitted = []

    def submit(self, entries):
        self.submitted.append(entries)


class Counter:
    def __init__(self):
        self.n = 0

    def inc(self):
        self.n += 1


@pytest.fixture(scope="module")
def directory(tmp_path_factory) -> Directory:
    return Directory(load(make_config(tmp_path_factory.mktemp("adm"))))


def admission(directory, router=None, delivery=None, journal=None):
    return Admission(directory=lambda: directory, router=router or FakeRouter(), delivery=delivery or FakeDelivery(),
                     clock=lambda: NOW, metrics=SimpleNamespace(self_inquiry=Counter()), journal=journal or FakeJournal(),
                     admin_upstream=lambda: "clets", last_use=LastUse())


def sender(directory, uid="TS0001", station="ICS1") -> Sender:
    st = directory.stations[station]
    return Sender(directory.users[uid], uid, "7F000001", st.authorizations, st.serves, station, station)


#: (message, user, station, the refusal's code) — admitted messages are below.
REFUSED = [
    ("ICS1A1.ZZ.CA0130000.NAM/SMITH, JOHN.DOB/19800101", "TS0001", "ICS1", "E301"),  # no route
    ("ICS9A1.DQ.CA0130000.OLN/N1234567", "TS0001", "ICS9", "E204"),  # no dmv authorization
    ("ICS2A1.QH.CA0130000.NAM/SMITH, JOHN.DOB/19800101.PUR/C.ATN/DET", "TS0001", "ICS2", "E204"),  # no cori
    ("ICS1A1.QH.CA0130000.NAM/SMITH, JOHN.DOB/19800101.ATN/DET", "TS0001", "ICS1", "E108"),  # PUR/ missing
    ("ICS1A1.QW.CA0130100.NAM/SMITH, JOHN.DOB/19800101", "TS0001", "ICS1", "E206"),  # ORI not served
    ("ICS1A1.QW.CA0130000.NAM/SMITH, JOHN.DOB/19800101", "EX0001", "ICS1", "E207"),  # certification expired
]


@pytest.mark.parametrize(("text", "uid", "station", "code"), REFUSED)
def test_refusals_carry_their_codes(directory, text, uid, station, code):
    inp = parse_input(text.encode())
    with pytest.raises(ProtocolError) as exc:
        admission(directory).request(inp, inp.body, sender(directory, uid, station))
    assert exc.value.code == code


@pytest.mark.parametrize(("router", "delivery", "code"), [
    (FakeRouter(up=False), None, "E302"),
    (FakeRouter(in_flight=10), None, "E307"),
    (None, FakeDelivery(full={"ICS1"}), "E307"),
])
def test_capacity_and_queue_room(directory, router, delivery, code):
    inp = parse_input(b"ICS1A1.QW.CA0130000.NAM/SMITH, JOHN.DOB/19800101")
    with pytest.raises(ProtocolError) as exc:
        admission(directory, router, delivery).request(inp, inp.body, sender(directory))
    assert exc.value.code == code


def test_an_admitted_request_and_its_records(directory):
    router = FakeRouter()
    adm = admission(directory, router)
    inp = parse_input(b"ICS1A1.QH.CA0130000.NAM/SMITH, JOHN.DOB/19800101.PUR/C.ATN/DET JONES")
    a = adm.request(inp, inp.body, sender(directory))
    assert [e.kind for e in a.entries] == [Kind.RECEIVED, Kind.FORWARDED]
    assert a.category == "cori" and a.pending.purpose == "C" and a.pending.requester == "DET JONES"
    assert a.pending.endpoint == "ICS1" and a.pending.upstream == "clets"
    assert a.forwarded.startswith(b"ICS1A1.*TS0001.#7F000001.QH.")
    assert adm.last_use.take() == ({"TS0001": NOW}, {"ICS1": NOW})
    adm.go(a, [1, 2])
    assert router.dispatched == [(a.pending, a.forwarded)]


def test_self_inquiry_is_refused_and_recorded(directory):
    journal = FakeJournal()
    adm = admission(directory, journal=journal)
    inp = parse_input(b"ICS1A1.QH.CA0130000.NAM/TEST, TERRY.DOB/19700101.PUR/C.ATN/ME")
    with pytest.raises(ProtocolError) as exc:
        adm.request(inp, inp.body, sender(directory))
    assert exc.value.code == "E208"
    [[entry]] = journal.submitted
    assert entry.kind == Kind.SESSION and entry.code == "E208" and entry.user == "TS0001"


@pytest.mark.parametrize(("dests", "local", "remote", "code"), [
    ("ICS2", 1, False, None),
    ("APB", 2, False, None),
    ("NY0000000", 0, True, None),
    ("ICS2,NY0000000", 1, True, None),
])
def test_admin_messages_split_local_and_upstream(directory, dests, local, remote, code):
    router = FakeRouter()
    adm = admission(directory, router)
    inp = parse_input(f"ICS1A1.AM.CA0130000.{dests}.TXT MEETING AT 10".encode())
    a = adm.admin(inp, inp.body, sender(directory))
    assert len(a.outputs) == local and (a.pending is not None) is remote
    if remote:
        assert a.entries[1].kind == Kind.FORWARDED and b".AM.CA0130000.NY0000000.TXT MEETING AT 10" in a.forwarded


def test_admin_message_upstream_down_is_e302_and_full_queue_e307(directory):
    inp = parse_input(b"ICS1A1.AM.CA0130000.NY0000000.TXT X")
    with pytest.raises(ProtocolError) as exc:
        admission(directory, FakeRouter(up=False)).admin(inp, inp.body, sender(directory))
    assert exc.value.code == "E302"
    inp = parse_input(b"ICS1A1.AM.CA0130000.ICS2.TXT X")
    with pytest.raises(ProtocolError) as exc:
        admission(directory, delivery=FakeDelivery(full={"ICS2"})).admin(inp, inp.body, sender(directory))
    assert exc.value.code == "E307"


# -- queue slots (PROTOCOL.md §5 "Bounds"): reserved at admission, given back if not used ---------

#: (refusing router, delivery, the refusal's code): a refused request holds no slot afterwards.
SLOTLESS_REFUSALS = [
    (FakeRouter(up=False), None, "E302"),
    (FakeRouter(in_flight=10), None, "E307"),
    (FakeRouter(in_flight=11, max_in_flight=10), None, "E307"),
    (None, FakeDelivery(full={"ICS1"}), "E307"),
    (None, FakeDelivery(queue_max=0), "E307"),
]


@pytest.mark.parametrize(("router", "delivery", "code"), SLOTLESS_REFUSALS)
def test_a_refused_request_holds_no_slot(directory, router, delivery, code):
    delivery = delivery or FakeDelivery()
    inp = parse_input(b"ICS1A1.QW.CA0130000.NAM/SMITH, JOHN.DOB/19800101")
    with pytest.raises(ProtocolError) as exc:
        admission(directory, router, delivery).request(inp, inp.body, sender(directory))
    assert exc.value.code == code
    assert delivery.held == {}


def test_an_admitted_request_holds_its_fates_slot_until_it_fails(directory):
    delivery = FakeDelivery(queue_max=2)
    adm = admission(directory, delivery=delivery)
    inp = parse_input(b"ICS1A1.QW.CA0130000.NAM/SMITH, JOHN.DOB/19800101")
    first = adm.request(inp, inp.body, sender(directory))
    assert first.pending.slot and first.pending.expects_answer
    adm.request(inp, inp.body, sender(directory))
    assert delivery.held == {"ICS1": 2}
    with pytest.raises(ProtocolError) as exc:  # the asker's queue is spoken for
        adm.request(inp, inp.body, sender(directory))
    assert exc.value.code == "E307"
    adm.failed(first, None)  # its records were not committed: the slot goes back
    assert delivery.held == {"ICS1": 1}
    adm.request(inp, inp.body, sender(directory))
    assert delivery.held == {"ICS1": 2}


#: (destinations, text, slots reserved per endpoint): each local part takes a slot at its
#: destination, an upstream part one at the sender (for its fate).
AM_SLOTS = [
    ("ICS2", "X", {"ICS2": 1}),
    ("ICS2", "Y" * 100, {"ICS2": 4}),  # in parts: 100 bytes and the header, 40 a part
    ("APB", "X", {"ICS1": 1, "ECP1": 1}),
    ("NY0000000", "X", {"ICS1": 1}),
    ("ICS2,NY0000000", "X", {"ICS2": 1, "ICS1": 1}),
]


@pytest.mark.parametrize(("dests", "text", "slots"), AM_SLOTS)
def test_an_admin_message_reserves_every_slot_and_gives_them_back_on_failure(directory, dests, text, slots):
    delivery = FakeDelivery(queue_max=8)
    router = FakeRouter()
    adm = admission(directory, router, delivery)
    inp = parse_input(f"ICS1A1.AM.CA0130000.{dests}.TXT {text}".encode())
    a = adm.admin(inp, inp.body, sender(directory))
    assert delivery.held == slots
    assert a.pending is None or a.pending.slot
    exc = RuntimeError("commit failed")
    adm.failed(a, exc)
    assert delivery.held == {}
    assert (getattr(router, "landed", None) is not None) is bool(a.outputs)


@pytest.mark.parametrize(("dests", "full"), [("APB", {"ECP1"}), ("ICS2,NY0000000", {"ICS1"}),
                                             ("ICS2,ICS1", {"ICS1"})])
def test_an_admin_message_is_all_or_nothing(directory, dests, full):
    delivery = FakeDelivery(full=full)
    inp = parse_input(f"ICS1A1.AM.CA0130000.{dests}.TXT X".encode())
    with pytest.raises(ProtocolError) as exc:
        admission(directory, delivery=delivery).admin(inp, inp.body, sender(directory))
    assert exc.value.code == "E307" and exc.value.detail.startswith("QUEUE OF ")
    assert delivery.held == {}
