"""The web console's logon rate limit and its bound on unauthenticated sessions (probe14 case 6,
newweb 11): only failed logons count against a browser address, and a flood of new sessions from
one address drops that address's own oldest sessions — never another browser's."""

from __future__ import annotations

import pytest

from msc.config.load import load
from msc.web.app import LogonLimiter, WebConsole
from tests.conftest import make_config

WEB = """
[[listener]]
name = "web"
bind = "127.0.0.1:7410"
proxy_protocol = true
trusted_proxies = ["127.0.0.1"]

[web]
bind = "127.0.0.1:8443"
tls = { cert = "tls/web.crt", key = "tls/web.key" }
listener = "web"
header = "ICS1"
"""


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# Sequences of logon outcomes from one address ("ok" succeeded, "bad" failed) and whether the
# next attempt is let through with a limit of 3 a minute.
SEQUENCES = [
    (["ok"] * 50, True),  # a shift change behind one NAT: successes never lock anyone out
    (["bad"] * 3, False),
    (["bad", "ok", "bad", "ok", "bad"], False),
    (["bad", "bad"] + ["ok"] * 20, True),
    (["bad", "bad", "ok"] * 2, False),
    (["ok", "bad", "bad"], True),
]


@pytest.mark.parametrize("outcomes,next_allowed", SEQUENCES)
def test_only_failed_logons_count(outcomes, next_allowed):
    lim = LogonLimiter(3, clock=Clock())
    for outcome in outcomes:
        stamp = lim.allow("10.0.0.1")
        if stamp is None:
            break
        if outcome == "ok":
            lim.forgive("10.0.0.1", stamp)
    assert (lim.allow("10.0.0.1") is not None) is next_allowed
    assert lim.allow("10.0.0.2") is not None  # another address is never affected


def test_attempts_in_flight_count_until_they_succeed_and_failures_age_out():
    clock = Clock()
    lim = LogonLimiter(3, clock=clock)
    stamps = [lim.allow("10.0.0.1") for _ in range(3)]  # three parallel guesses, none answered yet
    assert all(s is not None for s in stamps) and lim.allow("10.0.0.1") is None
    lim.forgive("10.0.0.1", stamps[1])
    assert lim.allow("10.0.0.1") is not None
    clock.t += 60
    assert [lim.allow("10.0.0.1") is not None for _ in range(4)] == [True, True, True, False]
    lim.forgive("10.0.0.9", 1.0)  # an address never seen: nothing happens


@pytest.fixture
def console(tmp_path):
    (tmp_path / "tls").mkdir()
    for f in ("web.crt", "web.key"):
        (tmp_path / "tls" / f).write_text("x")
    c = WebConsole(load(make_config(tmp_path, extra=WEB)))
    c.max_sessions, c.max_prelogon_per_address = 60, 20
    return c


# Floods: (addresses the flood comes from, sessions each makes).
FLOODS = [(["10.6.6.6"], 500), (["10.6.6.6", "10.6.6.7", "10.6.6.8"], 200),
          ([f"10.7.0.{n}" for n in range(1, 11)], 30), (["127.0.0.1"], 100)]


@pytest.mark.parametrize("flooders,each", FLOODS)
def test_a_flood_of_new_sessions_drops_the_flooders_own_never_another_browsers(console, flooders, each):
    legit = [console.new_session(a) for a in ("10.0.0.1", "10.0.0.2", "192.168.1.5")]
    for s in legit:
        s.banner = "ACKNOWLEDGED"
    for _ in range(each):
        for a in flooders:
            console.new_session(a)
            assert len(console.sessions) <= console.max_sessions
            assert len(console.prelogon.get(a, ())) <= console.max_prelogon_per_address
    assert all(console.sessions.get(s.sid) is s for s in legit)
    # Still counted right: every unauthenticated session is in its address's list, and only those.
    listed = {sid for own in console.prelogon.values() for sid in own}
    assert listed == {sid for sid, s in console.sessions.items() if s.console is None}


def test_a_logged_on_session_is_never_dropped_and_no_longer_counts_against_its_address(console):
    s = console.new_session("10.0.0.1")
    console.rotate(s)
    s.console = "investigator"
    assert "10.0.0.1" not in console.prelogon
    for _ in range(300):
        console.new_session("10.0.0.1")
    assert console.sessions.get(s.sid) is s
    assert len(console.prelogon["10.0.0.1"]) == console.max_prelogon_per_address
