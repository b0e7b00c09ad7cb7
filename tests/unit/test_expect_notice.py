"""A script's ``--expect`` met by msc's notice is not a complete answer (issue 16, newcomer finding N3).

``msc terminal --send QW… --expect 2``, its QW cut by a failover after answer part 1, exited 0: the
switch's ``MSC.E302 … 1 OF 2 PARTS CAME`` counts as an output (as documented), so a wrapper that
checks only the exit status took the answer as complete. Now the outputs that counted decide the
status (:func:`termrules.expect_status`): a notice among them is exit 5, said on stderr by its
code and text (:func:`termrules.expect_said`); a timeout stays 1 and names the notices that came.
"""

from __future__ import annotations

import inspect
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msc.cli import terminal
from msc.cli import termrules as r
from msc.cli.termclient import Terminal, TerminalOptions
from msc.protocol import framing
from msc.protocol.codes import Reject
from msc.protocol.message import msc_notice, parse_notice
from msc.routing import recovery, router

E302_PART = "ICS1K3QZ1.MSC.E302 SWITCH RESTARTED BEFORE THE REST OF THE ANSWER; 1 OF 2 PARTS CAME"
E302_NONE = "ICS1K3QZ2.MSC.E302 SWITCH RESTARTED BEFORE THE ANSWER CAME"
E303 = "ICS1K3QZ3.MSC.E303 NO RESPONSE FROM CLETS WITHIN 30 S"
E301_UP = "ICS1K3QZ4.MSC.E301 NCIC DOES NOT ANSWER DQ"  # an upstream's N, its own code passed on
E108_UP = "ICS1K3QZ5.MSC.E108 FIELD MALFORMED OR REQUIRED FIELD MISSING"  # an upstream's E1xx
E204_UP = "ICS1K3QZ6.MSC.E204 MNEMONIC NOT AUTHORIZED FOR THIS CATEGORY"  # an upstream's E2xx
E501 = "ICS1K3QZ7.MSC.E501 ANSWER FROM CLETS COULD NOT BE RECORDED AND WAS NOT SENT AGAIN; REPEAT THE REQUEST"
PART1 = "ICS1K3QZ1.QW.CA0130000.NO RECORD NAM/SMITH, JOHN.DOB/19800101"
PART2 = "ICS1K3QZ1.QW.CA0130000.NCIC NO RECORD NAM/SMITH, JOHN"
ANSWER = "ICS1K3QZ8.QV.CA0130000.NO RECORD LIC/7ABC123"
MSC_PART = "ICS1K3QZ9.MSC.PART 1/2.MSC.E302 IS TEXT OF AN ANSWER, NOT A NOTICE"  # msc's split of a long answer


# -- what is a notice ----------------------------------------------------------------------------

NOTICES = [
    (E302_PART, ("E302", "SWITCH RESTARTED BEFORE THE REST OF THE ANSWER; 1 OF 2 PARTS CAME")),
    (E303, ("E303", "NO RESPONSE FROM CLETS WITHIN 30 S")),
    (E301_UP, ("E301", "NCIC DOES NOT ANSWER DQ")),
    (E108_UP, ("E108", Reject.E108.reason)),
    (E204_UP, ("E204", Reject.E204.reason)),
    ("ICS1K.MSC.E999 A CODE NOT IN THE TABLE YET", ("E999", "A CODE NOT IN THE TABLE YET")),
    ("ICS1K.MSC.E302", ("E302", "")),  # no reason: still the code
    ("ICS1K.MSC.E302 LINE ONE\r\nLINE TWO", ("E302", "LINE ONE\r\nLINE TWO")),
    # not notices
    (PART1, None),
    (ANSWER, None),
    (MSC_PART, None),
    ("ICS1K.QW.CA0130000.MSC.E302 IN THE ANSWER'S TEXT", None),  # MSC.E302 not right after the header
    ("ICS1K.MSC.E3021 FOUR DIGITS", None),
    ("ICS1K.MSC.E30 TWO DIGITS", None),
    ("ICS1K.MSC.E3\u0660\u0662 ARABIC-INDIC DIGITS", None),  # three digits: ASCII ones (str's \d takes any)
    ("ICS1K.MSC.E30x NOTICE", None),
    ("ICS1K.MSC.W302 NOT AN E", None),
    ("ICS1K.msc.e302 lower case", None),
    ("ICS1K.MSC.E302-DASH", None),
    ("MSC.E302 NO HEADER", None),  # the header is "MSC": the rest is "E302 …"
    ("", None),
]


@pytest.mark.parametrize("text,want", NOTICES)
def test_which_outputs_are_msc_notices(text, want):
    assert parse_notice(text) == want


@given(st.sampled_from(list(Reject)), st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1))
def test_every_notice_msc_formats_is_read_back(reject, detail):
    assert parse_notice(msc_notice("ICS1AB12", reject, detail).decode()) == (reject.code, detail)


# -- the exit status from the outputs that counted ------------------------------------------------

STATUSES = [
    # name, the outputs that counted (in order), --expect N, exit status
    ("the-finding-part-then-e302", [PART1, E302_PART], 2, r.EXIT_NOTICE),
    ("e302-then-part", [E302_PART, PART1], 2, r.EXIT_NOTICE),
    ("both-parts", [PART1, PART2], 2, r.EXIT_OK),
    ("one-answer", [ANSWER], 1, r.EXIT_OK),
    ("msc-part-of-an-answer", [MSC_PART], 1, r.EXIT_OK),
    ("e302-before-any-answer", [E302_NONE], 1, r.EXIT_NOTICE),
    ("e303-no-response", [E303], 1, r.EXIT_NOTICE),
    ("upstream-e301", [E301_UP], 1, r.EXIT_NOTICE),
    ("upstream-e1xx", [E108_UP], 1, r.EXIT_NOTICE),
    ("upstream-e2xx", [E204_UP], 1, r.EXIT_NOTICE),
    ("e501", [E501], 1, r.EXIT_NOTICE),
    ("mixed-answers-and-a-notice", [ANSWER, PART1, E303], 3, r.EXIT_NOTICE),
    ("mixed-notices-only", [E303, E301_UP, E108_UP], 3, r.EXIT_NOTICE),
    ("timed-out-with-a-notice", [PART1, E302_PART], 3, r.EXIT_PROBLEM),  # the documented 1: still 1
    ("timed-out-notice-only", [E302_NONE], 2, r.EXIT_PROBLEM),
    ("timed-out-nothing", [], 1, r.EXIT_PROBLEM),
    ("timed-out-answers-only", [PART1], 2, r.EXIT_PROBLEM),
    ("nothing-expected", [], 0, r.EXIT_OK),
]


@pytest.mark.parametrize("name,counted,expected,status", STATUSES, ids=[s[0] for s in STATUSES])
def test_the_exit_status_of_an_expect_wait(name, counted, expected, status):
    assert r.expect_status(counted, expected) == status
    said = r.expect_said(counted, expected)
    found = [t for t in counted if parse_notice(t)]
    if status == r.EXIT_OK:
        assert said is None
        return
    assert said is not None and "\n" not in said.replace("\r\n", "")  # one line
    if status == r.EXIT_PROBLEM:
        assert said.startswith(f"timed out: {len(counted)} of {expected} outputs")
    else:
        assert said.startswith(f"{len(counted)} of {expected} outputs came, but not all are answers: ")
        assert said.endswith("Exit 5: an answer is missing or incomplete.")
    for text in found:  # each notice named: header, code and text
        assert text in said
    for text in counted:
        if text not in found:
            assert text not in said


def test_exit_5_is_new_to_msc_terminal():
    """5 was no status of ``msc terminal`` (0, 1, 2 usage, 3, 4, 75, 128 + N)."""
    assert r.EXIT_NOTICE == 5
    assert r.EXIT_NOTICE not in {r.EXIT_OK, r.EXIT_PROBLEM, 2, r.EXIT_AUTH, r.EXIT_ENDED, r.EXIT_UNAVAILABLE}
    assert terminal.EXIT_OK == r.EXIT_OK and terminal.EXIT_ENDED == r.EXIT_ENDED  # one table


def test_the_lines_said():
    assert r.expect_said([PART1, E302_PART], 2) == (
        f"2 of 2 outputs came, but not all are answers: msc's notice {E302_PART}. "
        "Exit 5: an answer is missing or incomplete.")
    assert r.expect_said([E303, E301_UP], 2) == (
        f"2 of 2 outputs came, but not all are answers: msc's notices {E303} | {E301_UP}. "
        "Exit 5: an answer is missing or incomplete.")
    assert r.expect_said([PART1, E302_PART], 3) == f"timed out: 2 of 3 outputs; among them msc's notice {E302_PART}"
    assert r.expect_said([PART1], 2) == "timed out: 1 of 2 outputs"  # as before


# -- what counts: the client's own outputs, notices included ------------------------------------

def _terminal(send: bool) -> Terminal:
    t = Terminal(TerminalOptions(host="127.0.0.1", port=1, header="ICS1"))
    t.print = lambda line: None
    t._send = lambda data: None
    t.expect_left, t.count_any = 2, not send
    return t


async def test_the_outputs_that_count_are_kept_across_sessions_notices_included():
    t = _terminal(send=True)
    t.own_headers.add("ICS1K3QZ1")
    t._frame(framing.Frame(framing.MSG, 1, b"ICS1OLD1.QW.CA0130000.AN OLDER RUN'S ANSWER"))  # not ours: not counted
    t._frame(framing.Frame(framing.MSG, 2, PART1.encode()))
    t._frame(framing.Frame(framing.MSG, 2, PART1.encode()))  # delivered again (at least once): counted once
    t.new_session()  # a failover: logged on again at the other node
    t._frame(framing.Frame(framing.MSG, 3, E302_PART.encode()))
    assert t.counted == [PART1, E302_PART]
    assert t.answered.done()
    assert r.expect_status(t.counted, 2) == r.EXIT_NOTICE



# -- the pooled script whose outputs cannot come here (exit 1 at once) -------------------------
# Its line said "1 of 3 outputs: the rest cannot come …" and no more, while the timed-out and the
# exit-5 lines name every notice that counted: one that came (an E302 that ended a request's
# answer) is why the rest may never come, wherever it goes.

CUT_SHORT = [
    # the outputs that counted, --expect N, the notices named
    ([], 3, []),
    ([PART1], 3, []),
    ([PART1, E302_PART], 3, [E302_PART]),
    ([E303, MSC_PART, E501], 4, [E303, E501]),
]


@pytest.mark.parametrize("counted,expected,named", CUT_SHORT)
def test_the_pooled_cut_short_line_names_the_notices_that_came(counted, expected, named):
    said = r.expect_cut_short(counted, expected)
    assert said.startswith(f"{len(counted)} of {expected} outputs: the rest cannot come to this session (their "
                           "requests were sent in an earlier pooled session: see above)")
    assert "\n" not in said
    for text in counted:
        assert (text in said) is (text in named)
    if named:  # as the timed-out line says them
        assert said.endswith(r.expect_said(counted, len(counted) + 1).split("; ", 1)[1])


async def test_a_pooled_script_cut_short_names_the_notice_that_came(capsys):
    """``_scripted`` itself: every request sent in an earlier pooled session (its loan ended with
    the connection), an E302 among the outputs that came before: exit 1 at once, the E302 named."""
    t = Terminal(TerminalOptions(host="127.0.0.1", port=1, header="ECMDT", send=["QW.X", "QV.Y"], expect=3))
    t.print = lambda line: None
    t.next_send, t.accepted = 2, 2  # both sent and accepted, in the earlier session
    t.pooled, t.sent_in_session = True, 0  # logged on again: a new loan, nothing sent in it
    t.expect_left, t.counted = 1, [PART1, E302_PART]
    assert await terminal._scripted(t, t.opts, None) == r.EXIT_PROBLEM
    err = capsys.readouterr().err
    assert err.startswith("2 of 3 outputs: the rest cannot come to this session")
    assert E302_PART in err and PART1 not in err  # the notice named, by its text; the answer's part not
    assert err == r.expect_cut_short([PART1, E302_PART], 3) + "\n"


# -- the "no A/N" line names the notices that can end a request ------------------------------------

def test_the_fate_notices_named_are_those_msc_sends():
    """:data:`termrules.FATE_CODES` (the "no A/N" line's ``MSC.Exxx`` codes) are the codes msc
    itself ends an accepted request with — the router's and the restart's recovery pass's — the
    upstream's own codes aside. It said "an MSC.E30x notice": no E501 (an answer the journal could
    not record), no E307 (max_in_flight, an output queue full)."""
    sent = set(re.findall(r"_resolve_failed\(\w+, Reject\.(E\d{3})", inspect.getsource(router)))
    sent |= set(re.findall(r"(?:reject, detail = |msc_notice\(header, )Reject\.(E\d{3})", inspect.getsource(recovery)))
    assert sent == set(r.FATE_CODES) == {"E302", "E303", "E307", "E501"}
    for code in r.FATE_CODES:
        assert code in r.FATE_NOTICE
    assert "the upstream's own code" in r.FATE_NOTICE
