"""Shedding new requests under overload (msc.routing.shedding, PROTOCOL.md §5 "Overload"): the
rule as a table of timelines, the message key found without a parse, and admission's decision
(what is never shed, the category counted, shedding off) with fakes — no sockets, no clock."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from msc.config.load import load
from msc.mnemonics.directory import Directory
from msc.protocol.codes import ProtocolError
from msc.protocol.message import parse_input, peek_key
from msc.routing.admission import Admission, LastUse
from msc.routing.shedding import Overload
from tests.conftest import make_config
from tests.unit.test_admission import FakeDelivery, FakeRouter

T, I = 0.2, 0.5  # noqa: E741 - the target and the interval of the timelines below

#: (name, timeline of (now, waited, held), expected admit decisions, target, interval)
TIMELINES = [
    ("below the target: everything admitted", [(0, 0.0, False), (1, 0.1, False), (2, 0.2, False)],
     [True, True, True], T, I),
    ("a burst shorter than the interval is not shed", [(0, 0.3, False), (0.2, 0.4, False), (0.4, 0.1, False)],
     [True, True, True], T, I),
    ("a standing delay is shed once it has lasted the interval",
     [(0, 0.3, False), (0.3, 0.5, False), (0.5, 0.7, False), (0.6, 0.8, False)], [True, True, False, False], T, I),
    ("back below the target: admitted at once", [(0, 0.3, False), (0.5, 0.7, False), (0.6, 0.1, False)],
     [True, False, True], T, I),
    ("a new rise soon after a shed is shed at once (still the standing queue)",
     [(0, 0.3, False), (0.5, 0.7, False), (0.6, 0.1, False), (0.7, 0.25, False)], [True, False, True, False], T, I),
    ("a rise long after the last shed waits the interval again",
     [(0, 0.3, False), (0.5, 0.7, False), (0.6, 0.1, False), (5, 0.3, False), (5.4, 0.3, False), (5.5, 0.3, False)],
     [True, False, True, True, True, False], T, I),
    ("interval 0: shed at the first delay above the target", [(0, 0.21, False), (0.1, 0.05, False)],
     [False, True], T, 0.0),
    ("target 0: never shed, whatever the delay or the link", [(0, 9.0, False), (10, 99.0, True)], [True, True], 0.0, I),
    ("a held link sheds at once, whatever the delay", [(0, 0.0, True), (0.1, 0.0, False), (0.2, 0.3, False)],
     [False, True, False], T, I),
    ("a clock that went backwards restarts the stretch", [(10, 0.3, False), (5, 0.3, False), (5.4, 0.3, False)],
     [True, True, True], T, I),
]


@pytest.mark.parametrize(("name", "timeline", "expected", "target", "interval"), TIMELINES, ids=[t[0] for t in TIMELINES])
def test_the_rule_over_timelines(name, timeline, expected, target, interval):
    rule = Overload()
    got = [rule.admit(now, waited, target, interval, held=held) for now, waited, held in timeline]
    assert got == expected


#: (payload, the key peek_key finds) — as parse_input would, or None without a key.
KEYS = [
    (b"ICS1A1.QW.CA0130000.NAM/SMITH, JOHN", "QW"),
    (b"ECC2A1.*TS0001.#7F000001.QV.CA0130000.LIC/ABC123", "QV"),  # a host's OIF and TAF first
    (b"ECC2A1.*TS0001.DQ.CA0130000.OLN/N1234567", "DQ"),  # OIF alone
    (b"ECC2A1.#7F000001.RQ.CA0130000.LIC/ABC123", "RQ"),  # TAF alone
    (b"ICS1A1.AM.CA0130000.ICS2.TXT HELLO", "AM"),
    (b"ICS1.LOGOFF", "LOGOFF"),
    (b"ICS1.LOGON.TS0001.-.pass.word", "LOGON"),
    (b"ICS1.PWD.old.new", "PWD"),
    (b"ICS1", None),  # no key at all
    (b"ICS1.*TS0001.#7F000001", None),  # OIF and TAF, then nothing
    (b"ICS1.Q\xc9.CA0130000", None),  # not ASCII
    (b"", None),
]


@pytest.mark.parametrize(("payload", "key"), KEYS)
def test_the_key_is_found_without_a_parse(payload, key):
    assert peek_key(payload) == key
    try:
        parsed = parse_input(payload).mke
    except ProtocolError:
        return
    assert parsed == key  # where the message parses, both agree


@pytest.fixture(scope="module")
def directory(tmp_path_factory) -> Directory:
    return Directory(load(make_config(tmp_path_factory.mktemp("shed"))))


class FakeJournal:
    def __init__(self, waited: float) -> None:
        self.waited = waited

    def oldest_wait_s(self) -> float:
        return self.waited


class Shed:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def labels(self, category, reason):
        key = (category, reason)
        return SimpleNamespace(inc=lambda: self.counts.__setitem__(key, self.counts.get(key, 0) + 1))


def admission(directory, waited: float, *, shed_wait_s=0.2, interval=0.0, held=False):
    router = FakeRouter()
    router.link.holding = held
    metrics = SimpleNamespace(shed=Shed())
    sw = SimpleNamespace(shed_wait_s=shed_wait_s, shed_interval_s=interval)
    adm = Admission(directory=lambda: directory, router=router, delivery=FakeDelivery(), clock=lambda: 0.0,
                    metrics=metrics, journal=FakeJournal(waited), admin_upstream=lambda: "clets",
                    last_use=LastUse(), switch=lambda: sw)
    return adm, metrics.shed.counts


#: (key, shed when overloaded?, its category in msc_requests_shed_total)
SHEDDABLE = [
    ("QW", True, "cjis"),
    ("QH", True, "cori"),
    ("DQ", True, "dmv"),
    ("AM", True, "admin"),
    ("ZZ", True, "unknown"),  # an unknown key is refused either way; shedding it costs least
    ("LOGON", False, None),
    ("LOGOFF", False, None),
    ("PWD", False, None),
    ("BIND", False, None),
    (None, False, None),  # no key: the parse answers it
]


@pytest.mark.parametrize(("mke", "shed", "category"), SHEDDABLE)
def test_new_work_is_shed_and_counted_by_category_control_keys_never(directory, mke, shed, category):
    adm, counts = admission(directory, waited=5.0)
    assert adm.shed(mke) is shed
    assert counts == ({(category, "journal"): 1} if shed else {})


@pytest.mark.parametrize(("waited", "shed_wait_s", "held", "reason"), [
    (0.1, 0.2, False, None),  # below the target
    (0.3, 0.2, False, "journal"),  # above it (interval 0)
    (0.0, 0.2, True, "upstream"),  # the upstream link is held: its answers wait for the journal
    (0.5, 0.2, True, "upstream"),  # both: the held link is named
    (9.0, 0.0, True, None),  # shed_wait_s = 0: shedding is off
])
def test_the_journal_delay_and_the_held_link_decide(directory, waited, shed_wait_s, held, reason):
    adm, counts = admission(directory, waited, shed_wait_s=shed_wait_s, held=held)
    assert adm.shed("QW") is (reason is not None)
    assert counts == ({("cjis", reason): 1} if reason else {})


def test_without_the_switch_settings_nothing_is_shed(directory):
    adm = Admission(directory=lambda: directory, router=FakeRouter(), delivery=FakeDelivery(), clock=lambda: 0.0,
                    metrics=SimpleNamespace(), journal=FakeJournal(99.0), admin_upstream=lambda: "clets",
                    last_use=LastUse())
    assert adm.shed("QW") is False
