"""msc terminal's decisions without I/O (newcomer7 findings 2 and 4): which logon refusals a
script tries again (and when it gives up with 75, never 3), and which accepted requests the
operator is told had no answer when their session ended — and where that answer goes.

The Terminal is driven through its frame handler (``_frame``) as the connection would."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msc.cli import termrules as r
from msc.cli.termclient import Terminal, TerminalOptions
from msc.protocol import framing
from msc.protocol.codes import Reject

# -- which logon refusals decided nothing -------------------------------------------------------

REFUSALS = [
    # payload of msc's N to a LOGON, transient (try again), the one-time password certainly unused
    (f"E503 {Reject.E503.reason}", True, False),  # the finding: the database away
    ("E307 LOGON BUSY, TRY AGAIN", True, True),  # no check slot: not checked
    ("E307 TOO MANY LOGON ATTEMPTS FROM THIS ADDRESS, TRY LATER", True, True),  # the address throttled
    (f"E501 {Reject.E501.reason}", True, False),  # right password, the record not committed
    (f"E305 {Reject.E305.reason}", True, False),  # right password, every pooled mnemonic lent
    ("e503 storage unavailable, try again", True, False),  # any letter case
    ("E202 LOGON REFUSED", False, False),  # every wrong credential: final (exit 3)
    ("E204 STATION DISABLED", False, False),
    ("E210 THIS ADDRESS MAY NOT USE THIS POOL", False, False),
    ("E502 INTERNAL ERROR 0123", False, False),  # a bug: not worth a retry loop
    ("", False, False),  # no payload
    ("REFUSED", False, False),  # not a code
    ("E5030 STORAGE", False, False),  # a longer code is not E503
]


@pytest.mark.parametrize("payload,transient,unused", REFUSALS, ids=[p or "empty" for p, _, _ in REFUSALS])
def test_a_logon_refusal_is_transient_only_when_nothing_was_decided(payload, transient, unused):
    refusal = r.LogonRefusal.parse(payload)
    assert refusal.transient is transient
    assert refusal.otp_unused is unused
    if transient:
        line = r.explain(refusal)
        assert "not a wrong password" in line and refusal.code in line
        assert "refused" not in line.lower()  # "Logon refused." read as a wrong password


RETRIES = [
    # id, payload, first refused, now, next wait, budget, --otp given -> wait (None: give up now)
    ("first-try-again", "E503 X", 0.0, 0.0, 1.0, 120.0, False, 1.0),
    ("later-in-budget", "E503 X", 0.0, 100.0, 15.0, 120.0, False, 15.0),
    ("cut-to-what-is-left", "E503 X", 0.0, 115.0, 15.0, 120.0, False, 5.0),
    ("budget-spent", "E503 X", 0.0, 120.0, 15.0, 120.0, False, None),
    ("past-budget", "E307 LOGON BUSY, TRY AGAIN", 10.0, 200.0, 2.0, 120.0, False, None),
    ("zero-budget", "E503 X", 5.0, 5.0, 1.0, 0.0, False, None),
    ("no-budget-interactive", "E503 X", 0.0, 1e6, 15.0, None, False, 15.0),
    ("final-refusal", "E202 LOGON REFUSED", 0.0, 0.0, 1.0, 120.0, False, None),
    ("otp-may-be-used", "E503 X", 0.0, 0.0, 1.0, 120.0, True, None),
    ("otp-used-pool", "E305 MNEMONIC POOL EXHAUSTED", 0.0, 0.0, 1.0, 120.0, True, None),
    ("otp-unchecked-busy", "E307 LOGON BUSY, TRY AGAIN", 0.0, 0.0, 1.0, 120.0, True, 1.0),
]


@pytest.mark.parametrize("name,payload,first,now,wait,budget,otp,expected", RETRIES, ids=[x[0] for x in RETRIES])
def test_a_script_tries_its_logon_again_within_its_budget(name, payload, first, now, wait, budget, otp, expected):
    got = r.retry_wait(r.LogonRefusal.parse(payload), first_refused=first, now=now, wait=wait, budget=budget,
                       otp_given=otp)
    assert got == expected


@settings(max_examples=200)
@given(st.lists(st.floats(min_value=0, max_value=1, exclude_max=True), min_size=1, max_size=30))
def test_the_back_off_doubles_to_its_cap_with_each_wait_in_the_upper_half_of_its_step(draws):
    waits = list(itertools.islice(r.backoff(iter(draws).__next__), len(draws)))
    step = r.BACKOFF_FIRST_S
    for w in waits:
        assert step / 2 <= w <= step
        step = min(step * 2, r.BACKOFF_MAX_S)
    # A 120-s budget is not spent in a burst: at most a dozen or so tries in it.
    assert sum(waits) >= sum(min(r.BACKOFF_FIRST_S * 2 ** i, r.BACKOFF_MAX_S) / 2 for i in range(len(waits)))


KEYS = [
    ("QW", True), ("QV", True), ("QH", True), ("YQ", True), ("EW", True), ("DQ", True),
    ("LOGON", False), ("LOGOFF", False), ("PWD", False), ("BIND", False),  # answered by the A
    ("YR", False), ("AM", False), ("CR", False), ("DR", False),  # PROTOCOL.md §4: await no answer
    ("", False),
]


@pytest.mark.parametrize("key,awaits", KEYS)
def test_which_keys_await_an_answer(key, awaits):
    assert r.awaits_answer(key) is awaits


# -- accepted requests whose answer had not come when the session ended -------------------------

def _terminal(header: str = "ICS1") -> Terminal:
    t = Terminal(TerminalOptions(host="127.0.0.1", port=1, header=header))
    t.print = lambda line: None
    return t


def _ack(t: Terminal, xid: int, payload: bytes = b"") -> None:
    t._frame(framing.Frame(framing.ACK, xid, payload))


def _out(t: Terminal, osn: int, text: str) -> None:
    t._frame(framing.Frame(framing.MSG, osn, text.encode()))


async def _sent(t: Terminal, text: str) -> asyncio.Future:
    task = asyncio.ensure_future(t.request(text, own=True))
    await asyncio.sleep(0)  # registered: sent, waiting for its A/N
    return task


async def _logged_on(t: Terminal, mne: str) -> None:
    task = asyncio.ensure_future(t.logon("EC0001", None, "secret"))
    await asyncio.sleep(0)
    _ack(t, t.xid, f"MNE/{mne}.USR/EC0001".encode())
    assert await task is True


QW = "QW.CA0130100.NAM/POOLED, HELD.DOB/19750505"

FATES = [
    # id, steps, [(header, mnemonic, pooled, how the session ended)] told after the end
    # steps: ("send", text) own request; ("A"|"N", n) the answer to the n-th request sent;
    # ("out", n) an output with the n-th request's header; ("end", why) the session ends
    ("accepted-no-answer", [("send", QW), ("A", 1), ("end", "the connection was lost")],
     [(1, "the connection was lost")]),
    ("answered", [("send", QW), ("A", 1), ("out", 1), ("end", "the connection was lost")], []),
    ("refused", [("send", QW), ("N", 1), ("end", "the connection was lost")], []),
    ("no-A/N-yet", [("send", QW), ("end", "the connection was lost")], []),  # said as "no A/N" instead
    ("one-way-key", [("send", "YR.CA0130100.NAM/X"), ("A", 1), ("end", "the connection was lost")], []),
    ("two-one-answered", [("send", QW), ("send", "QV.CA0130100.LIC/ABC"), ("A", 1), ("A", 2), ("out", 2),
                          ("end", "the connection was lost")], [(1, "the connection was lost")]),
    ("answer-after-the-end", [("send", QW), ("A", 1), ("end", "the connection was lost"), ("out", 1)], []),
    ("ended-by-msc", [("send", QW), ("A", 1), ("end", "msc ended the session (SHUTDOWN)")],
     [(1, "msc ended the session (SHUTDOWN)")]),
]


@pytest.mark.parametrize("pooled", [False, True], ids=["static", "pooled"])
@pytest.mark.parametrize("name,steps,told", FATES, ids=[f[0] for f in FATES])
async def test_the_operator_is_told_of_each_accepted_request_left_without_an_answer(name, steps, told, pooled):
    t = _terminal("ECMDT" if pooled else "ICS1")
    if pooled:
        await _logged_on(t, "ECM2")
    mne = "ECM2" if pooled else "ICS1"
    sent, tasks = [], []
    for what, arg in steps:
        if what == "send":
            text = t.full(arg)
            tasks.append(await _sent(t, text))
            sent.append((t.xid, tasks[-1], text))
        elif what in ("A", "N"):
            xid = sent[arg - 1][0]
            t._frame(framing.Frame(framing.ACK if what == "A" else framing.NAK, xid, b"" if what == "A" else b"E108 X"))
        elif what == "out":
            _out(t, 7, f"{_header_of(sent, arg)}.ANSWER PART")
        else:
            t.session_over(arg)
    taken = t.take_orphans()
    want = [(_header_of(sent, n), why) for n, why in told]
    assert [(u.header, why) for u, why in taken] == want
    for u, why in taken:
        assert u.mnemonic == mne and u.pooled is pooled
        line = r.unanswered_notice(u, why)
        assert u.header in line and f"A {u.xid}" in line and why in line
        if pooled:
            assert "pool's printer" in line and "not to this session" in line and f"loan of {mne}" in line
        else:
            assert f"delivered to station {mne}" in line and "printer" not in line
    assert t.take_orphans() == []  # told once
    for task in tasks:
        task.cancel()


def _header_of(sent, n: int) -> str:
    return sent[n - 1][2].split(".", 1)[0]


async def test_a_logon_ends_the_session_before_it_and_a_pool_lends_a_new_mnemonic():
    """A relogon ends the previous loan (PROTOCOL.md §4); the LOGON names the pool again, not the
    mnemonic the last loan lent (which is no station: E210)."""
    t = _terminal("ECMDT")
    await _logged_on(t, "ECM2")
    assert t.pooled and t.header == "ECM2"
    task = await _sent(t, t.full(QW))
    _ack(t, t.xid)
    lo = await _sent(t, t.full("LOGOFF"))
    _ack(t, t.xid)  # the operator's LOGOFF accepted: that session is over
    assert t.header == "ECMDT" and not t.pooled
    [(u, why)] = t.take_orphans()
    assert (u.mnemonic, u.pooled, why) == ("ECM2", True, "the session ended (LOGOFF)")
    written: list[bytes] = []
    t._send = written.append
    logon = asyncio.ensure_future(t.logon("EC0001", None, "secret"))
    await asyncio.sleep(0)
    [frame] = framing.Framer().feed(written[0])
    assert frame.payload.startswith(b"ECMDT.LOGON.EC0001.")
    _ack(t, t.xid, b"MNE/ECM1.USR/EC0001")
    assert await logon is True and t.header == "ECM1" and t.pooled
    for x in (task, lo):
        x.cancel()


async def test_a_static_station_is_not_pooled():
    t = _terminal("ICS1")
    await _logged_on(t, "ICS1")
    assert not t.pooled


async def test_a_refused_logon_keeps_its_refusal():
    t = _terminal("ICS1")
    task = asyncio.ensure_future(t.logon("TS0001", None, "secret"))
    await asyncio.sleep(0)
    t._frame(framing.Frame(framing.NAK, t.xid, f"E503 {Reject.E503.reason}".encode()))
    assert await task is False
    assert t.refused == r.LogonRefusal("E503", Reject.E503.reason) and t.refused.transient
    t.new_session()
    assert t.refused is None


@pytest.mark.parametrize("pooled", [False, True], ids=["static", "pooled"])
async def test_a_message_left_without_its_a_n_says_where_its_fate_goes(pooled, capsys):
    """The "no A/N for …" line names the pool's printer for a pooled session's message (its loan
    ended with the connection), and nothing more for a static station's (as before)."""
    from msc.cli.terminal import _unanswered

    t = _terminal("ECMDT" if pooled else "ICS1")
    if pooled:
        await _logged_on(t, "ECM2")
    answered = await _sent(t, t.full(QW))
    _ack(t, t.xid)
    waiting = await _sent(t, t.full("QV.CA0130100.LIC/NOAN"))
    header = t.pending[t.xid].split(".", 1)[0]
    t.session_over("the connection was lost")
    _unanswered(t)
    err = capsys.readouterr().err
    assert err.count("no A/N for") == 1 and f"no A/N for {header}.QV.CA0130100.LIC/NOAN" in err
    assert (f"with header {header} at the pool's printer, or ask your agency" in err) is pooled
    assert (f"with header {header}, or ask your agency" in err) is not pooled
    # the notices that can end it, all named: it said "an MSC.E30x notice" (no E501, no E307)
    assert ("look for an answer or an MSC.Exxx notice (E302, E303, E307, E501, or the upstream's own code) "
            f"with header {header}") in err and "E30x" not in err
    assert t.pooled_headers == set()  # nothing kept once said
    for task in (answered, waiting):
        task.cancel()


# -- what is typed at the one-time password prompt (newcomer8) -----------------------------------

OTP_ANSWERS = [
    # typed, the LOGON field it becomes (None: no code; "refused": not a code, never sent)
    ("", None), ("   ", None), ("-", None),  # Enter: the account has no TOTP
    ("343002", "343002"), (" 343002 ", "343002"), ("343 002", "343002"), ("343\t002", "343002"),
    ("000000", "000000"),
    ("Tsecret-Pass-8x", "refused"),  # the password at the wrong prompt
    ("12345", "refused"), ("1234567", "refused"), ("12345678", "refused"), ("34300a", "refused"),
    ("343-002", "refused"), ("--", "refused"), ("\u0663\u0664\u0663\u0660\u0660\u0662", "refused"),
    ("343002.", "refused"),  # a dot would split LOGON's fields
]


@pytest.mark.parametrize("typed,field", OTP_ANSWERS)
def test_an_answer_at_the_otp_prompt_is_a_code_none_or_not_sent(typed, field):
    if field == "refused":
        with pytest.raises(ValueError, match="not a one-time password"):
            r.one_time_password(typed)
    else:
        assert r.one_time_password(typed) == field


@given(st.text(max_size=20))
def test_what_is_sent_as_a_code_is_always_a_logon_otp_field(typed):
    from msc.protocol.grammar import OTP_RE

    try:
        code = r.one_time_password(typed)
    except ValueError:
        return
    assert code is None or OTP_RE.fullmatch(code)
