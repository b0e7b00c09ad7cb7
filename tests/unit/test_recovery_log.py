"""What the restart's recovery pass logs about answers still in their window (PROTOCOL.md §4
"Stopping with an answer open"): each answer told that the rest may be lost is one warning
(rare, actionable); the complete ones owe nothing and are summed up in ONE info line per pass —
``switch.answers_complete_at_restart`` with ``count`` and the first ten txns — not a line each
(issue 16: 53–204 lines per takeover at 1.5 QW/s, ~10^5 at 1,000/s)."""

from __future__ import annotations

from types import SimpleNamespace

from structlog.testing import capture_logs

from msc.routing.recovery import recover_unanswered

QW = SimpleNamespace(answer_window_s=120, one_way=False, answer_ends_on=(), answer_parts=2)


class Journal:
    """The three reads of the pass: nothing unanswered, nothing refused, these answers open."""

    def __init__(self, still_open: list) -> None:
        self.still_open = still_open

    async def unanswered_requests(self, _window, _up_to):
        return []

    async def refused_answers(self, _seq):
        return set()

    async def open_answers(self, _windows, _up_to, _last_part_of):
        return self.still_open


class Router:
    """What the pass asks of the router: the directory, and the notices it hands over."""

    def __init__(self) -> None:
        self.acp = None
        self.directory = SimpleNamespace(routes={"QW": QW}, pool_of={}, endpoint_of=lambda mnemonic: mnemonic)
        self.told: list[str] = []

    def redirect_waiting(self, _mnemonic: str) -> int:
        return 0

    async def tell(self, _endpoint, _mnemonic, payload: bytes, entry_kw: dict, *, alloc=None) -> None:
        self.told.append(entry_kw["txn"])


CFG = SimpleNamespace(upstream=[SimpleNamespace(timeout_s=30, resend_wait_s=30)], route=[])


def answer(txn: str, parts: int) -> tuple:
    rec = SimpleNamespace(txn=txn, mke="QW", text=f"{txn}.QW.CA0130000.NAM/X", mnemonic="ICS1", user="TS0001",
                          taf=None, ori="CA0130000", seq=1, peer="clets")
    return rec, parts, f"{txn}.QW.CA0130000.PART {parts}"


async def recover(still_open: list) -> tuple[int, Router, list[dict]]:
    router = Router()
    with capture_logs() as logs:
        told = await recover_unanswered(Journal(still_open), router, CFG, up_to=1000)
    return told, router, logs


async def test_complete_answers_are_one_summary_line_and_each_incomplete_one_a_warning():
    complete = [answer(f"T{i:03}", 2) for i in range(25)]
    incomplete = [answer("HALF1", 1), answer("HALF2", 1)]
    told, router, logs = await recover(complete[:12] + incomplete + complete[12:])
    assert told == 2 and router.told == ["HALF1", "HALF2"]
    [summary] = [e for e in logs if e["event"] == "switch.answers_complete_at_restart"]
    assert summary["log_level"] == "info" and summary["count"] == 25
    assert summary["txns"] == [f"T{i:03}" for i in range(10)]  # the first ten, in the pass's order
    warned = [e for e in logs if e["event"] == "switch.answer_open_at_restart"]
    assert [(e["txn"], e["parts"], e["complete"], e["log_level"]) for e in warned] == \
        [("HALF1", 1, 2, "warning"), ("HALF2", 1, 2, "warning")]
    # Nothing per complete answer: one line per pass, whatever the traffic.
    assert not [e for e in logs if e["event"] == "switch.answer_complete_at_restart"]
    assert len(logs) == 3, logs


async def test_a_few_complete_answers_are_all_named():
    _, _, logs = await recover([answer("ONE", 2), answer("TWO", 3)])
    assert [(e["event"], e["count"], e["txns"]) for e in logs] == \
        [("switch.answers_complete_at_restart", 2, ["ONE", "TWO"])]


async def test_no_complete_answer_no_summary():
    told, _, logs = await recover([answer("HALF1", 1)])
    assert told == 1 and [e["event"] for e in logs] == ["switch.answer_open_at_restart"]
    _, _, logs = await recover([])
    assert logs == []
