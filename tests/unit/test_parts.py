"""msc.protocol.parts: an output longer than a station's frames, as parts it can take
(PROTOCOL.md §5 "Outputs in parts"). Examples here, properties in tests/property."""

from __future__ import annotations

import pytest

from msc.protocol.parts import FRAME_OVERHEAD, join_parts, max_payload, split_output


def test_a_payload_that_fits_is_one_part_unchanged():
    p = b"ICS1A.QW.CA0130000.NO NCIC WANT.NAM/DOE, JOHN"
    assert split_output(p, len(p)) == [p]
    assert join_parts([p]) == p


def test_parts_are_marked_numbered_and_rejoin_to_the_payload():
    p = b"ICS1A." + b"QR.CA0130000.CRIMINAL HISTORY" + b"".join(b"\r\nARR/2019%04d CHG/PC 459" % i for i in range(40))
    parts = split_output(p, 200)
    n = len(parts)
    assert n > 1
    for i, part in enumerate(parts, 1):
        assert part.startswith(b"ICS1A.MSC.PART %d/%d." % (i, n))
        assert len(part) <= 200
    assert join_parts(parts) == p


def test_parts_break_at_line_ends_when_they_can():
    p = b"H." + b"\r\n".join(b"LINE %03d " % i + b"X" * 40 for i in range(30))
    parts = split_output(p, 300)
    chunks = [q.split(b".MSC.PART ", 1)[1].split(b".", 1)[1] for q in parts]
    assert all(c.endswith(b"\n") for c in chunks[:-1])
    assert b"".join(chunks) == p[2:]


def test_a_cr_lf_pair_is_never_split():
    p = b"H." + b"Y" * 97 + b"\r\n" + b"Z" * 300  # no '.' or LF to prefer: a hard cut near the CR
    for limit in range(40, 140):
        parts = split_output(p, limit)
        chunks = [q.split(b".MSC.PART ", 1)[1].split(b".", 1)[1] for q in parts]
        assert not any(c.endswith(b"\r") for c in chunks), limit
        assert join_parts(parts) == p


@pytest.mark.parametrize("size", [1, 9, 10, 11, 99, 100, 101, 1000])
def test_part_counts_across_digit_boundaries_stay_within_the_limit(size):
    limit = 40
    header = b"ICS1ABCDEF"
    text_room = limit - len(header) - len(b".MSC.PART 1/1.")
    p = header + b"." + b"Q" * (text_room * size)
    parts = split_output(p, limit)
    assert all(len(q) <= limit for q in parts)
    assert join_parts(parts) == p
    n = len(parts)
    if size == 1:
        assert parts == [p]  # fits whole: no marker
    else:
        assert n >= size and parts[-1].startswith(header + b".MSC.PART %d/%d." % (n, n))


def test_a_limit_with_no_room_for_text_is_refused():
    with pytest.raises(ValueError):
        split_output(b"ICS1ABCDEF." + b"Q" * 100, 20)


def test_max_payload_is_the_frame_less_type_and_xid():
    assert FRAME_OVERHEAD == 5
    assert max_payload(32768) == 32763
