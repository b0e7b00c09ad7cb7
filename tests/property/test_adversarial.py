"""Valid-but-adversarial messages (hypothesis) through a live switch on 127.0.0.1.

Grammatical messages built to sit on every edge — maximal headers and refs, OIF/TAF at their
length limits, dozens of fields, values full of punctuation, passwords of every printable
character and dot count, administrative text with CR/LF and trailing dots, frames near
max_frame — must each be answered A or N with a PROTOCOL.md §6 code, and the switch must keep
answering a well-behaved message afterwards.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msc.protocol.codes import ALL_CODES
from tests.conftest import PASSWORD, Harness
from tests.waiting import HANG_S

# CPU-bound (hundreds of examples): a loaded machine took 45-53 s of pytest-timeout's default 120 s.
pytestmark = pytest.mark.timeout(300)

ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
PRINTABLE_NO_DOT = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != ".")

# Weighted toward what the logged-on session (ICS1, TS0001, TAF 7F000001) may send, so that most
# examples get past E210/E104/E105 into authorization, routing and delivery.
header = st.builds(lambda m, r: m + r, st.sampled_from(["ICS1"] * 7 + ["ICS2", "ECC2", "ZZZZ"]),
                   st.text(ALNUM, min_size=0, max_size=6))
oif = st.one_of(st.none(), st.none(), st.none(), st.just("TS0001"), st.text(ALNUM, min_size=6, max_size=6))
taf = st.one_of(st.none(), st.none(), st.none(), st.just("7F000001"), st.text(ALNUM + ":-", min_size=6, max_size=18))
value = st.text(PRINTABLE_NO_DOT, min_size=1, max_size=200)
field = st.builds(lambda t, v: f"{t}/{v}", st.sampled_from(["NAM", "DOB", "LIC", "PUR", "ATN", "REL", "XYZ", "SOC"]), value)
transaction = st.builds(
    lambda k, o, fs: ".".join([k, o, *fs]),
    st.sampled_from(["QW", "QV", "QH", "QR", "DQ", "RQ", "KQ", "EW", "YQ", "ZZ", "QWERTY"]),
    st.sampled_from(["CA0130000", "CA0130100", "CA0190000"]), st.lists(field, max_size=40))
logon = st.builds(lambda u, o, p: f"LOGON.{u}.{o}.{p}", st.sampled_from(["TS0001", "TS0002", "NOSUCH"]),
                  st.one_of(st.just("-"), st.text("0123456789", min_size=6, max_size=6)),
                  st.text("".join(chr(c) for c in range(0x20, 0x7F)), min_size=1, max_size=300))
admin = st.builds(lambda d, t: f"AM.CA0130000.{d}.TXT {t}", st.sampled_from(["ICS2", "APB", "CA0130000", "CA0190000,ICS1"]),
                  st.text("".join(chr(c) for c in range(0x20, 0x7F)) + "\r\n", min_size=1, max_size=2000))
pwd = st.builds(lambda a, b: f"PWD.{a}.{b}", st.text(PRINTABLE_NO_DOT + ".", min_size=1, max_size=40),
                st.text(PRINTABLE_NO_DOT + ".", min_size=1, max_size=40))
body = st.one_of(transaction, transaction, transaction, transaction, admin, admin, logon, pwd,
                 st.just("LOGOFF"), st.just("BIND"))
message = st.builds(lambda h, o, t, b: ".".join(x for x in (h, f"*{o}" if o else None, f"#{t}" if t else None, b) if x),
                    header, oif, taf, body)


class LiveSwitch:
    """A switch and a stub on their own event loop in a thread, for synchronous hypothesis tests."""

    def __init__(self, tmp) -> None:
        self.loop = asyncio.new_event_loop()
        self.h = Harness(tmp)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.run(self.h.start_stub())
        # Every example comes from 127.0.0.1 and some guess passwords: issue 14's per-address
        # attempt rate (E307 unchecked after 10 failures a minute) is lifted, as the accounts'
        # lockouts are undone below, so that each example meets the grammar, not the bounds.
        self.run(self.h.start_switch(switch_extra="logon_failures_per_address = 100000"))
        self.run(self.h.wait_upstream())
        self.port = self.h.port

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self) -> None:
        self.run(self.h.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)


class Client:
    def __init__(self, port: int) -> None:
        self.s = socket.create_connection(("127.0.0.1", port), timeout=HANG_S)
        self.buf = b""
        self.xid = 0
        f = self.frame()
        assert f[0] == "M" and f[2].startswith(b"SYS.BANNER.")
        self.send("A", 0)

    def send(self, t: str, xid: int, payload: bytes = b"") -> None:
        self.s.sendall(struct.pack(">IBI", len(payload) + 5, ord(t), xid) + payload)

    def frame(self):
        while True:
            if len(self.buf) >= 9:
                n, t, xid = struct.unpack_from(">IBI", self.buf)
                if len(self.buf) >= 4 + n:
                    p = self.buf[9 : 4 + n]
                    self.buf = self.buf[4 + n :]
                    return chr(t), xid, p
            data = self.s.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.buf += data

    def request(self, payload: bytes):
        self.xid += 1
        self.send("M", self.xid, payload)
        while True:
            t, xid, p = self.frame()
            if t == "M":
                self.send("A", xid)
            elif t == "H":
                self.send("H", xid)
            elif xid == self.xid and t in "AN":
                return t, p


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    sw = LiveSwitch(tmp_path_factory.mktemp("adversarial"))
    yield sw
    sw.close()


async def _unlock_all(h) -> None:
    for uid in ("TS0001", "TS0002"):
        h.switch.auth.unlock(uid)


# derandomize: the same 250 examples every run, so the deep-path guard below is stable in CI.
@settings(max_examples=250, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(msgs=st.lists(message, min_size=1, max_size=6), logged_on=st.sampled_from([True, True, True, False]))
def adversarial_examples(live, seen: dict[str, int], msgs, logged_on):
    live.run(_unlock_all(live.h))  # wrong passwords in earlier examples must not lock later ones out
    c = Client(live.port)
    try:
        if logged_on:  # most examples reach authorization, routing and delivery, not just E201
            assert c.request(f"ICS1.LOGON.TS0001.-.{PASSWORD}".encode())[0] == "A"
        for m in msgs:
            t, p = c.request(m.encode("ascii"))
            code = "A" if t == "A" else p.split(b" ", 1)[0].decode()
            seen[code] = seen.get(code, 0) + 1
            if t == "N":
                assert code in ALL_CODES, (m, p)
        # The switch still serves a well-behaved operator afterwards.
        ok = Client(live.port)
        assert ok.request(f"ICS2.LOGON.LT0001.-.{PASSWORD}".encode())[0] == "A"
        assert ok.request(b"ICS2.LOGOFF")[0] == "A"
        ok.s.close()
    finally:
        c.s.close()


def test_adversarial_but_grammatical_messages_get_a_or_a_code_reaching_deep_paths(live):
    """Every answer is A or a documented code, and the run was not vacuous: answers came from
    authorization and routing, not only E201. One test, so the guard cannot run before (or
    without) the examples it judges, whatever the order or selection of tests."""
    seen: dict[str, int] = {}
    adversarial_examples(live=live, seen=seen)
    deep = {"A", "E204", "E206", "E301", "E108", "E209"}
    assert len(deep & set(seen)) >= 3 and seen.get("A", 0) > 50, seen
