"""Which answered requests are still open for a drain (RequestTable.open_answers, PROTOCOL.md §4
"Stopping with an answer open"): answered in part, the route declares an answer window, the
window has not ended, and the answer may still lack parts (rest_may_be_missing: the route's
answer_parts not all come)."""

from __future__ import annotations

import pytest

from msc.routing.recovery import rest_of_answer_lost
from msc.routing.requests import Pending, RequestTable, rest_may_be_missing


class Clock:
    t = 1000.0

    def __call__(self) -> float:
        return self.t


def pending(header: str, window_s, timeout_s=None, expects_answer=True, complete=None) -> Pending:
    return Pending(txn=header, header=header, mnemonic="ICS1", endpoint="ICS1", user="TS0001", taf=None, ori=None,
                   mke="QR", category="cori", upstream="clets", window_s=window_s, timeout_s=timeout_s,
                   expects_answer=expects_answer, parts_complete=complete)


# (route's window, route's timeout, parts that came, seconds after forwarding, open?)
ROWS = [
    (900, None, 1, 1.1, True),      # the issue: QR, part 1 of 2 came, Ctrl-C 1.1 s later
    (900, None, 3, 899, True),      # every part the stub sends came, the window is still open
    (900, None, 1, 900.5, False),   # the window ended
    (900, None, 0, 1.0, False),     # no part yet: waiting (counted as outstanding, not here)
    (None, None, 1, 1.0, False),    # no window: one answer expected, and it came
    (60, 60, 1, 10, True),          # a window equal to the timeout is still a declared window
    (3600, 600, 2, 700, True),      # YQ: two YR within the hour
    # the route declares the parts of a complete answer (answer_parts)
    (120, None, 2, 3, False, 2),    # QW: the state file and NCIC both came — nothing left to wait for
    (120, None, 1, 3, True, 2),     # QW: NCIC's part has not come
    (120, None, 1, 3, False, 1),    # QV, one part declared, one came
    (120, None, 3, 3, False, 2),    # more than declared (a QWI's III part): complete
    (900, None, 2, 10, True, 3),    # 2 of 3
    (120, None, 1, 121, False, 2),  # 1 of 2, but the window ended: closed, nothing more is linked
]


@pytest.mark.parametrize(("window", "timeout", "parts", "after", "is_open", "complete"),
                         [(*r, None) if len(r) == 5 else r for r in ROWS])
def test_open_answers(window, timeout, parts, after, is_open, complete):
    clock = Clock()
    table = RequestTable(clock=clock)
    p = pending("ICS1A1", window, timeout, complete=complete)
    table.opened(p, 30)
    for _ in range(parts):
        assert table.match("ICS1A1").pending is p
        table.part(p)
    clock.t += after
    table.expire()
    assert table.open_answers() == ([p] if is_open else [])


def test_a_one_way_request_is_never_open():
    clock = Clock()
    table = RequestTable(clock=clock)
    p = pending("ICS1Y1", 3600, 600, expects_answer=False)
    table.opened(p, 30)
    p.acked(None, None)
    assert table.open_answers() == [] and table.outstanding() == []


# (parts that came, the route's answer_parts, may the rest be missing?, the notice's count)
RULE = [
    (1, None, True, "1 PART CAME"),      # not declared: any part may be followed by another
    (3, None, True, "3 PARTS CAME"),     # a QR: the FBI and two states — a fourth may come
    (0, None, True, "0 PARTS CAME"),     # every part's record landed E501: none counted
    (1, 2, True, "1 OF 2 PARTS CAME"),   # a QW with the state file only: NCIC's part is missing
    (0, 2, True, "0 OF 2 PARTS CAME"),
    (2, 3, True, "2 OF 3 PARTS CAME"),   # a QWI without III's part
    (2, 2, False, None),                 # the QW answered in full
    (1, 1, False, None),                 # a QV, a QH, an entry: one part, and it came
    (4, 2, False, None),                 # more than declared: complete (the count is the most expected)
]


@pytest.mark.parametrize(("parts", "complete", "missing", "count"), RULE)
def test_the_rest_may_be_missing_unless_every_declared_part_came(parts, complete, missing, count):
    assert rest_may_be_missing(parts, complete) is missing
    if missing:
        assert rest_of_answer_lost(parts, complete) == f"SWITCH RESTARTED BEFORE THE REST OF THE ANSWER; {count}"


def test_a_complete_answer_no_longer_holds_a_drain_but_later_parts_still_link():
    """Complete by count, the request is still answered and open for its window: a part beyond
    the declared count (the upstream sent more than the agency said) is linked to it, not lost."""
    clock = Clock()
    table = RequestTable(clock=clock)
    p = pending("ICS1W1", 120, complete=2)
    table.opened(p, 30)
    for _ in range(2):
        table.part(table.match("ICS1W1").pending)
    assert table.open_answers() == []
    assert table.match("ICS1W1").pending is p and table.part(p) == "further"
