"""What the restart's recovery pass logs (PROTOCOL.md §4 "Stopping with an answer open"): at most
three lines per pass, whatever the traffic — not a line per record (issue 16: 53–204 lines per
takeover at 1.5 QW/s for the complete answers alone, thousands of warnings after a crash at
1,000 msg/s with a 30 s timeout). Each notice is journaled; the log says how many:

- ``switch.unanswered_after_restart`` (warning): ``count``, ``codes`` (how many ``E302``, ``E501``)
  and the first ten ``txns`` of the requests told that no answer (or no recorded one) came;
- ``switch.answer_open_at_restart`` (warning): ``count`` and the first ten ``txns`` of the answers
  told that the rest may be lost;
- ``switch.answers_complete_at_restart`` (info): ``count`` and the first ten ``txns`` of the
  answers complete, which owe nothing.

Each only when its count is not 0."""

from __future__ import annotations

from types import SimpleNamespace

from structlog.testing import capture_logs

from msc.routing.recovery import recover_unanswered

QW = SimpleNamespace(answer_window_s=120, one_way=False, answer_ends_on=(), answer_parts=2)
YR = SimpleNamespace(answer_window_s=None, one_way=True, answer_ends_on=(), answer_parts=None)  # nothing comes back


class Journal:
    """The three reads of the pass: these requests unanswered, these answers refused (their
    txns), these answers open."""

    def __init__(self, still_open: list, unanswered: list | None = None, refused: set | None = None) -> None:
        self.still_open, self.unanswered, self.refused = still_open, unanswered or [], refused or set()

    async def unanswered_requests(self, _window, _up_to):
        return self.unanswered

    async def refused_answers(self, _seq):
        return self.refused

    async def open_answers(self, _windows, _up_to, _last_part_of):
        return self.still_open


class Router:
    """What the pass asks of the router: the directory, and the notices it hands over."""

    def __init__(self) -> None:
        self.acp = None
        self.directory = SimpleNamespace(routes={"QW": QW, "YR": YR}, pool_of={},
                                         endpoint_of={"ICS1": "TERM"}.get)
        self.told: list[str] = []

    def redirect_waiting(self, _mnemonic: str) -> int:
        return 0

    async def tell(self, _endpoint, _mnemonic, payload: bytes, entry_kw: dict, *, alloc=None) -> None:
        self.told.append(entry_kw["txn"])

    def notify(self, _endpoint, _mnemonic, payload: bytes, entry_kw: dict, *, alloc=None) -> None:
        self.told.append(f"{entry_kw['txn']} {entry_kw['code']}")


CFG = SimpleNamespace(upstream=[SimpleNamespace(timeout_s=30, resend_wait_s=30)], route=[])


def request(txn: str, mnemonic: str | None = "ICS1", mke: str = "QW") -> SimpleNamespace:
    return SimpleNamespace(txn=txn, mke=mke, text=f"{txn}.{mke}.CA0130000.NAM/X", mnemonic=mnemonic, user="TS0001",
                           taf=None, ori="CA0130000", seq=1, peer="clets")


def answer(txn: str, parts: int) -> tuple:
    return request(txn), parts, f"{txn}.QW.CA0130000.PART {parts}"


async def recover(still_open: list, unanswered: list | None = None,
                  refused: set | None = None) -> tuple[int, Router, list[dict]]:
    router = Router()
    with capture_logs() as logs:
        told = await recover_unanswered(Journal(still_open, unanswered, refused), router, CFG, up_to=1000)
    return told, router, logs


async def test_complete_answers_are_one_summary_line_and_each_incomplete_one_a_warning():
    complete = [answer(f"T{i:03}", 2) for i in range(25)]
    incomplete = [answer("HALF1", 1), answer("HALF2", 1)]
    told, router, logs = await recover(complete[:12] + incomplete + complete[12:])
    assert told == 2 and router.told == ["HALF1", "HALF2"]
    [summary] = [e for e in logs if e["event"] == "switch.answers_complete_at_restart"]
    assert summary["log_level"] == "info" and summary["count"] == 25
    assert summary["txns"] == [f"T{i:03}" for i in range(10)]  # the first ten, in the pass's order
    [warned] = [e for e in logs if e["event"] == "switch.answer_open_at_restart"]
    assert warned == {"event": "switch.answer_open_at_restart", "log_level": "warning", "count": 2,
                      "txns": ["HALF1", "HALF2"]}
    # Nothing per complete answer: one line per pass, whatever the traffic.
    assert not [e for e in logs if e["event"] == "switch.answer_complete_at_restart"]
    assert len(logs) == 2, logs


async def test_a_few_complete_answers_are_all_named():
    _, _, logs = await recover([answer("ONE", 2), answer("TWO", 3)])
    assert [(e["event"], e["count"], e["txns"]) for e in logs] == \
        [("switch.answers_complete_at_restart", 2, ["ONE", "TWO"])]


async def test_no_complete_answer_no_summary():
    told, _, logs = await recover([answer("HALF1", 1)])
    assert told == 1 and [e["event"] for e in logs] == ["switch.answer_open_at_restart"]
    _, _, logs = await recover([])
    assert logs == []


async def test_answers_open_after_a_crash_are_one_warning_not_one_each():
    """A crash at 1,000 msg/s: thousands of answers told that the rest may be lost, one line."""
    told, router, logs = await recover([answer(f"H{i:04}", 1) for i in range(3000)])
    assert told == 3000 and len(router.told) == 3000  # every operator is told (and it is journaled)
    assert logs == [{"event": "switch.answer_open_at_restart", "log_level": "warning", "count": 3000,
                     "txns": [f"H{i:04}" for i in range(10)]}]


async def test_unanswered_requests_are_one_warning_with_a_count_per_code():
    """Requests upstream at the crash: E302 (no answer came) or E501 (the answer came but was not
    recorded) — one warning for the pass, counted per code, the first ten txns named."""
    unanswered = [request(f"U{i:04}") for i in range(2000)]
    refused = {f"U{i:04}" for i in range(5, 2000, 100)}  # 20 refused answers among them
    told, router, logs = await recover([], unanswered, refused)
    assert told == 2000 and router.told[5] == "U0005 E501" and router.told[6] == "U0006 E302"
    assert logs == [{"event": "switch.unanswered_after_restart", "log_level": "warning", "count": 2000,
                     "codes": {"E302": 1980, "E501": 20}, "txns": [f"U{i:04}" for i in range(10)]}]


async def test_a_request_not_told_is_not_counted():
    """No endpoint for its mnemonic (the station removed since), or a one-way key: no notice,
    not counted; and only the codes sent are named."""
    told, router, logs = await recover([], [request("GONE", mnemonic="ICS9"), request("NONE", mnemonic=None),
                                            request("ONEWAY", mke="YR"), request("SENT")])
    assert told == 1 and router.told == ["SENT E302"]
    assert logs == [{"event": "switch.unanswered_after_restart", "log_level": "warning", "count": 1,
                     "codes": {"E302": 1}, "txns": ["SENT"]}]


async def test_a_pass_with_all_three_kinds_logs_three_lines():
    _, _, logs = await recover([answer("HALF", 1), answer("FULL", 2)], [request("HELD")])
    assert [(e["event"], e["count"], e["txns"]) for e in logs] == [
        ("switch.unanswered_after_restart", 1, ["HELD"]),
        ("switch.answer_open_at_restart", 1, ["HALF"]),
        ("switch.answers_complete_at_restart", 1, ["FULL"])]


class AwayJournal(Journal):
    """The journal's database away for the first ``away`` reads (each read of the pass fails)."""

    def __init__(self, away: list[BaseException], still_open: list) -> None:
        super().__init__(still_open)
        self.away = list(away)

    async def unanswered_requests(self, _window, _up_to):
        if self.away:
            raise self.away.pop(0)
        return self.unanswered


async def test_reads_failing_while_the_database_is_away_are_said_once_and_their_end_once(monkeypatch):
    """The pass reads again every few seconds while the journal's database is away (just after a
    start or a takeover): one warning for the outage, whatever its number of attempts and their
    reasons, and one line when a read succeeds (OPERATIONS.md "One outage, one warning")."""
    from msc.routing import recovery

    monkeypatch.setattr(recovery, "RETRY_S", (0.0,))
    refused = OSError("journal database: ConnectionRefusedError: refused")
    starting = OSError("journal database: CannotConnectNowError: the database system is starting up")
    router = Router()
    with capture_logs() as logs:
        told = await recover_unanswered(AwayJournal([refused, starting, refused, refused], [answer("HALF1", 1)]),
                                        router, CFG, up_to=1000)
    assert told == 1 and router.told == ["HALF1"]  # the pass went on once it could read
    said = [(e["event"], e["log_level"]) for e in logs if e["event"].startswith("recovery.")]
    assert said == [("recovery.read_failed", "warning"), ("recovery.read_recovered", "info")]
    began, ended = (e for e in logs if e["event"].startswith("recovery."))
    assert began["error"] == str(refused) and "exc_info" not in began
    assert ended["was"] == str(refused) and ended["failed"] == 4
