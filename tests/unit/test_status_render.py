"""``msc status``'s lines (msc.cli.status.render) for what a node's /readyz and the lease say: which
node is active, and — newcomer7 #1 — whether this machine's node would take over (a node whose
master key file cannot open the key ring does not take the lease: /readyz ``node.held_back``)."""

from __future__ import annotations

import pytest

from msc.cli.status import render

KEY = "the key ring (PostgreSQL (db)) is wrapped by master key 7cbbf527, but … holds 7400d98d: copy the master key file …"


def doc(*, role="standby", held_back: bool = False, lease=None, error=None, **extra) -> dict:
    here = {"status": 503, "role": role}
    if held_back:
        here |= {"key_ring": KEY, "held_back": "this machine's master key file cannot open the key ring: " + KEY}
    d = {"node": "msc-b", "this_node": here, "lease": lease, "active": None}
    if error:
        d["lease_error"] = error
    return d | extra


LIVE = {"holder": "msc-a", "epoch": 7, "live": True, "remaining_s": 4.1}
EXPIRED = {"holder": "msc-a", "epoch": 7, "live": False, "remaining_s": -12.0}


@pytest.mark.parametrize("d, says, never", [
    (doc(lease=LIVE), ["active node: msc-a (lease epoch 7, valid 4.1 s more"], ["would not take over", "key ring"]),
    (doc(lease=EXPIRED), ["active node: none — the lease of msc-a (epoch 7) ran out 12.0 s ago; node msc-b (this "
                          "machine), a standby, takes it at its next poll"], ["will not take it", "no node is running"]),
    (doc(lease=LIVE, held_back=True), ["active node: msc-a", "key ring: unusable on this machine — " + KEY,
                                       "node msc-b (this machine) would not take over: its master key file cannot"],
     ["the standby takes it"]),
    (doc(lease=EXPIRED, held_back=True),
     ["active node: none — the lease of msc-a (epoch 7) ran out 12.0 s ago; node msc-b (this machine) will not take it "
      "until its master key file opens the key ring", "key ring: unusable on this machine — " + KEY],
     ["the standby takes it", "would not take over"]),
    (doc(lease=None, held_back=True), ["active node: none — no node has held the lease yet; node msc-b (this machine) "
                                       "will not take it until its master key file opens the key ring"], []),
    (doc(lease=None), ["active node: none — no node has held the lease yet"], ["will not take it", "key ring"]),
    (doc(error="lease database: TimeoutError", held_back=True),
     ["active node: unknown", "node msc-b (this machine) would not take over"], ["the standby takes it"]),
    (doc(error="lease database: TimeoutError"), ["active node: unknown"], ["would not take over"]),
])
def test_status_says_who_serves_and_whether_this_node_would_take_over(d, says, never):
    out = "\n".join(render(d))
    for s in says:
        assert s in out, out
    for s in never:
        assert s not in out, out


# -- who takes an expired lease when this machine's node is not a standby (newcomer trial F7: "a --
# -- standby takes it at its next poll" with both nodes down) -----------------------------------

DOWN = {"status": 0, "role": None, "process": "not running", "pid": None}


@pytest.mark.parametrize("alive, says, never", [
    ([], ["ran out 12.0 s ago; no node is running — none has said it is alive to the database within the lease time "
          "— and the lease stays as it is until one starts"], ["takes it at its next poll"]),
    ([{"node": "msc-a", "host": "hosta", "pid": 41, "seen_s_ago": 1.2}],
     ["ran out 12.0 s ago; running: msc-a (host hosta, seen 1.2 s ago) — a standby takes it at its next poll"],
     ["no node is running"]),
    (None, ["ran out 12.0 s ago; a standby, if one runs, takes it at its next poll (the nodes alive could not be asked)"],
     ["no node is running"]),
])
def test_an_expired_lease_says_whether_any_node_is_running_to_take_it(alive, says, never):
    d = doc(lease=EXPIRED, alive=alive)
    d["this_node"] = dict(DOWN)
    out = "\n".join(render(d))
    for s in says:
        assert s in out, out
    for s in never:
        assert s not in out, out


# -- the exit status a monitoring check reads (newcomer8: exit 0 while the standby was held back) --

from msc.cli import status as status_mod  # noqa: E402


def here(status: int, role: str | None, **extra) -> dict:
    return {"status": status, "role": role, **extra}


#: (this machine's node per its /readyz and /proc, the lease, exit status, a line it prints or None)
CASES = [
    (here(200, "active"), {**LIVE, "holder": "msc-b"}, 0, None),
    (here(503, "standby"), LIVE, 0, None),
    (here(0, None, process="not running", pid=None), LIVE, 3,
     "node msc-b (this machine) could not take over if msc-a failed: it is not running — the pair cannot fail over (exit 3)"),
    (here(0, None, process="not answering", pid=4242), LIVE, 3, "it is not answering (paused or hung?)"),
    (here(503, "standby", key_ring=KEY, held_back="this machine's master key file cannot open the key ring: " + KEY),
     LIVE, 3, "would not take over: its master key file cannot open the key ring (see the key ring line) — the pair "
              "cannot fail over (exit 3)"),
    (here(503, "standby", key_ring=KEY), LIVE, 3, "key ring: unusable on this machine"),
    (here(503, "standby", lease_error="lease database: no answer within 5 s (TimeoutError)"), LIVE, 3,
     "it cannot reach the lease's database (lease database: no answer within 5 s (TimeoutError))"),
    (here(503, "not_ready"), LIVE, 3, "it is not a standby (/readyz 503: not_ready)"),
    # No node active: 1 whatever this machine's node is (unchanged).
    (here(0, None, process="not running", pid=None), EXPIRED, 1, "active node: none"),
    (here(0, None, process="not running", pid=None), EXPIRED, 1, "no node is running"),  # both down: nobody seen
    (here(503, "standby", key_ring=KEY, held_back="…"), EXPIRED, 1, "will not take it"),
    (here(503, "standby"), None, 1, "no node has held the lease yet"),
    # newcomer trial #3: this machine's node holds the lease and does not serve — nobody serves (1, not 0)
    (here(0, None, process="not answering", pid=24006), {**LIVE, "holder": "msc-b"}, 1,
     "active node: none serving — msc-b (this machine) holds the lease (epoch 7, valid 4.1 s more by the database's "
     "clock) but it does not answer (paused or hung?); a standby takes it over when it runs out (exit 1)"),
    (here(0, None, process="not running", pid=None), {**LIVE, "holder": "msc-b"}, 1, "but it is not running"),
    (here(503, "standby"), {**LIVE, "holder": "msc-b"}, 1, "but it does not serve (/readyz 503: standby)"),
    # a take whose node never heard of it (a lost answer): not called the active node
    (here(503, "standby"), {**LIVE, "heard": False}, 1, "msc-a holds the lease (epoch 7, valid 4.1 s more by the "
     "database's clock) but its node has not said it knows it holds it"),
]


@pytest.mark.parametrize("this, lease, rc, line", CASES)
def test_status_exit_tells_a_pair_that_cannot_fail_over(monkeypatch, this, lease, rc, line):
    from types import SimpleNamespace

    body = {"node": {"role": this["role"], **({"held_back": this["held_back"]} if "held_back" in this else {}),
                     **({"lease_error": this["lease_error"]} if "lease_error" in this else {})}}
    if "key_ring" in this:
        body["key_ring"] = this["key_ring"]
    if this["role"] == "not_ready":
        body = {"status": "not_ready"}
    monkeypatch.setattr(status_mod, "readyz", lambda bind: (this["status"], body if this["status"] else {}))
    monkeypatch.setattr(status_mod, "silent_listener",
                        lambda bind: (this.get("process") == "not answering", this.get("pid")))
    row = None if lease is None else SimpleNamespace(**lease)
    monkeypatch.setattr(status_mod, "lease_row", lambda settings: (row, None))
    asked: list[object] = []  # the nodes alive: asked only when no node is active and a lease ran out
    monkeypatch.setattr(status_mod, "nodes_alive", lambda settings: asked.append(settings) or [])
    config = SimpleNamespace(node=SimpleNamespace(name="msc-b"), metrics=SimpleNamespace(bind="127.0.0.1:9400"))
    code, d = status_mod.status(SimpleNamespace(config=config))
    out = "\n".join(render(d))
    assert code == rc, out
    assert (code == status_mod.EXIT_CANNOT_FAIL_OVER) == ("cannot_take_over" in d)
    if line is not None:
        assert line in out, out
    if code != 3:
        assert "cannot fail over" not in out
    assert bool(asked) == (lease is not None and not lease["live"])


# -- newcomer trial F1: both nodes stopped cleanly — a released lease is said as released, and this --
# -- machine's node, not running by its [metrics] bind, is never listed as running by its alive mark --

RELEASED = {"holder": "msc-a", "epoch": 4, "live": False, "remaining_s": -0.5, "released": True}


def test_a_released_lease_is_said_as_released_not_run_out():
    d = doc(lease=RELEASED, alive=[])
    d["this_node"] = dict(DOWN)
    out = "\n".join(render(d))
    assert "active node: none — the lease (epoch 4) was released by msc-a at its stop 0.5 s ago; no node is " \
           "running" in out, out
    assert "ran out" not in out, out


def test_this_machines_node_not_running_is_not_listed_as_running_by_its_alive_mark(monkeypatch):
    from types import SimpleNamespace

    monkeypatch.setattr(status_mod, "readyz", lambda bind: (0, {}))
    monkeypatch.setattr(status_mod, "silent_listener", lambda bind: (False, None))
    monkeypatch.setattr(status_mod, "lease_row", lambda settings: (SimpleNamespace(**RELEASED), None))
    seen = [{"node": "msc-a", "host": "vm", "pid": 41, "seen_s_ago": 0.6},
            {"node": "msc-b", "host": "vm", "pid": 42, "seen_s_ago": 0.7}]
    monkeypatch.setattr(status_mod, "nodes_alive", lambda settings: list(seen))
    config = SimpleNamespace(node=SimpleNamespace(name="msc-a"), metrics=SimpleNamespace(bind="127.0.0.1:9400"))
    code, d = status_mod.status(SimpleNamespace(config=config))
    out = "\n".join(render(d))
    assert code == 1
    assert "node msc-a (this machine): not running" in out, out
    assert "running: msc-b (host vm, seen 0.7 s ago) — a standby takes it at its next poll" in out, out
    assert "running: msc-a" not in out and ", msc-a (" not in out, out
    assert "node msc-a (this machine): its alive mark in the database (host vm, process 41, seen 0.6 s ago) is " \
           "stale — it is not running" in out, out
    assert [n["node"] for n in d["alive"]] == ["msc-b"] and [n["node"] for n in d["alive_stale"]] == ["msc-a"]
