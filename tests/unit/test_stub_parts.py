"""The upstream simulator's multi-part answers and notifications: deterministic by seed, shaped like
what NCIC, III and Nlets send (msc.stubs.responses), and the ``--parts`` option's syntax."""

from __future__ import annotations

import pytest

from msc.protocol.message import parse_input, parse_upstream
from msc.stubs.responses import NOTIFICATION_KINDS, answer, answer_parts, notification, parts_count
from msc.stubs.server import parse_parts

QR = parse_input(b"ICS1A1.*TS0001.#7F000001.QR.CA0130000.CII/A12345678.NAM/DOE, JOHN.PUR/C.ATN/DET SMITH")
QW = parse_input(b"ICS1A1.*TS0001.#7F000001.QW.CA0130000.NAM/DOE, JOHN.DOB/19800101")
QV = parse_input(b"ICS1A1.*TS0001.#7F000001.QV.CA0130000.LIC/7ABC123.LIS/CA")
YQ = parse_input(b"ICS1A1.*TS0001.#7F000001.YQ.CA0130000.NAM/DOE, JOHN.NIC/W123456789")
DQ = parse_input(b"ICS1A1.*TS0001.#7F000001.DQ.CA0130000.NAM/DOE, JOHN.DOB/19800101")


@pytest.mark.parametrize("inp", [QR, QW, QV, YQ, DQ])
def test_one_part_is_the_single_answer(inp):
    assert answer_parts(7, inp, 1) == [answer(7, inp)]


@pytest.mark.parametrize(("inp", "n", "keys"), [
    (QR, 2, ["QR", "CR"]),            # FBI, then a state (III, over Nlets)
    (QR, 3, ["QR", "CR", "CR"]),
    (QW, 2, ["QW", "QW"]),            # state file, then NCIC
    (QW, 3, ["QW", "QW", "QH"]),      # … then III (combined QWI)
    (QV, 2, ["QV", "QV"]),
    (YQ, 3, ["YR", "YR", "YR"]),      # one YR from each of up to three ORIs
    (DQ, 2, ["DQ", "DQ"]),
])
def test_parts_are_shaped_like_the_upstreams_answers(inp, n, keys):
    parts = answer_parts(7, inp, n)
    assert [parse_upstream(f"{inp.header}.{p}".encode()).mke for p in parts] == keys
    assert len(set(parts)) == n  # every part says something different
    assert parts == answer_parts(7, inp, n)  # deterministic
    if inp is QW:
        assert "NO CALIFORNIA WANT" in parts[0] and parts[1] == answer(7, inp)  # the NCIC answer second


def test_a_qr_with_no_record_has_one_part():
    inquiries = (parse_input(f"ICS1A1.*TS0001.#7F000001.QR.CA0130000.NAM/PERSON, NUMBER{i}.PUR/C.ATN/X".encode())
                 for i in range(50))
    inp = next(i for i in inquiries if "NO RECORD" in answer(7, i))  # 90 % have none
    assert answer_parts(7, inp, 3) == [answer(7, inp)]


def test_parts_count_is_a_seeded_rule_within_bounds():
    counts = {parts_count(seed, QW, 1, 3) for seed in range(200)}
    assert counts == {1, 2, 3}
    assert all(parts_count(s, QW, 1, 3) == parts_count(s, QW, 1, 3) for s in range(20))
    assert parts_count(5, QW, 2, 2) == 2


@pytest.mark.parametrize(("spec", "expected"), [
    ("QR=2", ("QR", (2, 2, 0.0))),
    ("QR=2@1500", ("QR", (2, 2, 1500.0))),
    ("QW=1-3@200", ("QW", (1, 3, 200.0))),
    ("YQ=3@0.5", ("YQ", (3, 3, 0.5))),
])
def test_parse_parts(spec, expected):
    assert parse_parts(spec) == expected


@pytest.mark.parametrize("spec", ["QR", "QR=0", "QR=3-1", "qr=2", "QR=2@", "QR=10", "QR=2@-1", "=2"])
def test_parse_parts_refuses(spec):
    with pytest.raises(ValueError):
        parse_parts(spec)


@pytest.mark.parametrize("kind", [*NOTIFICATION_KINDS, "LG", "$.Z.", "ZQ"])
def test_notifications_parse_as_their_kind(kind):
    text = notification(3, kind, "ICS2", "CA0130000", 1)
    msg = parse_upstream(text.encode())
    assert msg.dest == "ICS2"
    assert msg.kind == kind
    assert msg.ori == "CA0130000"
    assert text == notification(3, kind, "ICS2", "CA0130000", 1)
    assert text != notification(3, kind, "ICS2", "CA0130000", 2)
