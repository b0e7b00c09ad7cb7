"""Which answered requests are still open for a drain (RequestTable.open_answers, PROTOCOL.md §4
"Stopping with an answer open"): answered in part, the route declares an answer window, and the
window has not ended."""

from __future__ import annotations

import pytest

from msc.routing.requests import Pending, RequestTable


class Clock:
    t = 1000.0

    def __call__(self) -> float:
        return self.t


def pending(header: str, window_s, timeout_s=None, expects_answer=True) -> Pending:
    return Pending(txn=header, header=header, mnemonic="ICS1", endpoint="ICS1", user="TS0001", taf=None, ori=None,
                   mke="QR", category="cori", upstream="clets", window_s=window_s, timeout_s=timeout_s,
                   expects_answer=expects_answer)


# (route's window, route's timeout, parts that came, seconds after forwarding, open?)
ROWS = [
    (900, None, 1, 1.1, True),      # the issue: QR, part 1 of 2 came, Ctrl-C 1.1 s later
    (900, None, 3, 899, True),      # every part the stub sends came, the window is still open
    (900, None, 1, 900.5, False),   # the window ended
    (900, None, 0, 1.0, False),     # no part yet: waiting (counted as outstanding, not here)
    (None, None, 1, 1.0, False),    # no window: one answer expected, and it came
    (60, 60, 1, 10, True),          # a window equal to the timeout is still a declared window
    (3600, 600, 2, 700, True),      # YQ: two YR within the hour
]


@pytest.mark.parametrize(("window", "timeout", "parts", "after", "is_open"), ROWS)
def test_open_answers(window, timeout, parts, after, is_open):
    clock = Clock()
    table = RequestTable(clock=clock)
    p = pending("ICS1A1", window, timeout)
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
