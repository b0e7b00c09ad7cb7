"""``msc status``'s lines (msc.cli.status.render) for what a node's /readyz and the lease say: which
node is active, and — newcomer7 #1 — whether this machine's node would take over (a node whose
master key file cannot open the key ring does not take the lease: /readyz ``node.held_back``)."""

from __future__ import annotations

import pytest

from msc.cli.status import render

KEY = "the key ring (PostgreSQL (db)) is wrapped by master key 7cbbf527, but … holds 7400d98d: copy the master key file …"


def doc(*, role="standby", held_back: bool = False, lease=None, error=None) -> dict:
    here = {"status": 503, "role": role}
    if held_back:
        here |= {"key_ring": KEY, "held_back": "this machine's master key file cannot open the key ring: " + KEY}
    d = {"node": "msc-b", "this_node": here, "lease": lease, "active": None}
    if error:
        d["lease_error"] = error
    return d


LIVE = {"holder": "msc-a", "epoch": 7, "live": True, "remaining_s": 4.1}
EXPIRED = {"holder": "msc-a", "epoch": 7, "live": False, "remaining_s": -12.0}


@pytest.mark.parametrize("d, says, never", [
    (doc(lease=LIVE), ["active node: msc-a (lease epoch 7, valid 4.1 s more"], ["would not take over", "key ring"]),
    (doc(lease=EXPIRED), ["active node: none — the lease of msc-a (epoch 7) ran out 12.0 s ago; the standby takes it"],
     ["will not take it"]),
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
