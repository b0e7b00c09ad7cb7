"""Restart recovery: requests forwarded before a crash (or a drain that timed out) whose answer
never came (PROTOCOL.md §4 "Every accepted request ends in exactly one of …").

The process that would have told their operators is gone, so the next start tells them: ``E302``
(the switch restarted before the answer came), or ``E501`` when the answer came but could not be
recorded (the upstream was told ``N E501``); a request answered in parts whose answer window was
still open, and whose answer may lack parts (:func:`msc.routing.requests.rest_may_be_missing`),
is told ``E302`` that the rest may be lost. Only records written before this start count.

What the pass did is logged in at most three lines, whatever the traffic (issue 16: a line per
record was thousands of lines after a crash at 1,000 msg/s): each notice is journaled (``mke``
MSC, its ``code``, the request's ``txn``), so the journal, not the log, names them all.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import structlog

from msc.outage import Outage
from msc.protocol.codes import Reject
from msc.protocol.message import msc_notice
from msc.routing.requests import ends_answer, rest_may_be_missing
from msc.routing.router import ENDED, Router

log = structlog.get_logger("msc.recovery")

#: The notice, after a restart, for a request answered in parts whose answer window was still
#: open when the switch stopped (PROTOCOL.md §4, §6 E302): the rest of its answer may be lost.
REST_OF_ANSWER_LOST = "SWITCH RESTARTED BEFORE THE REST OF THE ANSWER"


def rest_of_answer_lost(parts: int, complete: int | None) -> str:
    """The notice's text: :data:`REST_OF_ANSWER_LOST` and how many parts came — of how many, when
    the route declares it — so that the operator can tell which answers to look for (PROTOCOL.md
    §4). ``parts``: the parts recorded before the stop; ``complete``: the route's answer_parts."""
    came = f"{parts} OF {complete} PARTS CAME" if complete is not None else \
        f"{parts} PART{'' if parts == 1 else 'S'} CAME"
    return f"{REST_OF_ANSWER_LOST}; {came}"


def answer_window(cfg) -> float:
    """The longest a request may wait for its first part: its upstream's timeout, or its
    route's own (a hit confirmation waits 10 minutes), plus the time to send it again; and a
    minute's margin."""
    resend = max((u.resend_wait_s for u in cfg.upstream), default=30)
    return max([u.timeout_s + u.resend_wait_s for u in cfg.upstream]
               + [r.timeout_s + resend for r in cfg.route if r.timeout_s], default=60) + 60


#: How many txns each summary line of the pass names (the first ones; the journal has them all).
TXNS_LOGGED = 10


class _Tally:
    """What one summary line of the pass says: how many, and the txns of the first
    :data:`TXNS_LOGGED`."""

    def __init__(self) -> None:
        self.count = 0
        self.txns: list[str] = []

    def add(self, txn: str) -> None:
        self.count += 1
        if len(self.txns) < TXNS_LOGGED:
            self.txns.append(txn)

#: Between attempts to read what the recovery pass needs while the journal's storage is away (s).
RETRY_S = (1.0, 2.0, 5.0)


async def _read(journal, cfg, windows: dict, up_to: int, last_part_of: frozenset[str]) -> tuple[list, set, list]:
    """What the pass needs, read before anything is told (so that a read that fails — the
    journal's database away for a while just after the start — is simply tried again, with
    nothing told twice): the unanswered requests, the answers refused, the answers still open."""
    attempt = 0
    # Tried again every few seconds while the database is away: said once, and once when a read
    # succeeds (with ``failed``: how many reads failed), not at every attempt (msc.outage).
    outage = Outage("recovery.read_failed", "recovery.read_recovered", logger=log, counted="failed")
    while True:
        try:
            unanswered = await journal.unanswered_requests(answer_window(cfg), up_to)
            refused = await journal.refused_answers(unanswered[0].seq) if unanswered else set()
            found = unanswered, refused, await journal.open_answers(windows, up_to, last_part_of)
        except Exception as exc:  # its database away (JournalError, OSError, the driver's errors)
            outage.failed(str(exc) or type(exc).__name__)
            await asyncio.sleep(RETRY_S[min(attempt, len(RETRY_S) - 1)])
            attempt += 1
        else:
            outage.ok()
            return found


def redirect_orphaned(router: Router) -> int:
    """Outputs restored into a pooled mnemonic's queue at start were for a session of the last
    run: each goes to its pool's defined destination (or is recorded undelivered), unless this run
    has lent the mnemonic already — then its logon redirected them. Returns how many."""
    acp = router.acp
    return sum(router.redirect_waiting(mnemonic) for mnemonic in router.directory.pool_of
               if acp is None or acp.holder(mnemonic) is None)


async def recover_unanswered(journal, router: Router, cfg, up_to: int) -> int:
    """Tell the operators of requests unanswered at the last stop; returns how many were told.
    ``up_to``: the journal's last sequence number when this start opened it."""
    redirect_orphaned(router)
    directory = router.directory
    windows = {k: r.answer_window_s for k, r in directory.routes.items()
               if r.answer_window_s is not None and not r.one_way}
    ends_on = frozenset(k for k in windows if directory.routes[k].answer_ends_on)
    unanswered, refused, still_open = await _read(journal, cfg, windows, up_to, ends_on)
    told = 0
    # One warning for the pass, not one per notice (each notice is journaled with its txn).
    notices, codes = _Tally(), Counter[str]()
    for rec in unanswered:
        route = directory.routes.get(rec.mke or "")
        if route is not None and route.one_way:
            continue  # a YR, a DR …: nothing was to come back (PROTOCOL.md §4)
        header = rec.text.split(".", 1)[0]
        endpoint = directory.endpoint_of(rec.mnemonic) if rec.mnemonic else None
        if endpoint is None:
            continue
        if rec.txn in refused:
            reject, detail = Reject.E501, (f"ANSWER FROM {(rec.peer or 'UPSTREAM').upper()} COULD NOT BE RECORDED; "
                                           "SWITCH RESTARTED; REPEAT THE REQUEST")
        else:
            reject, detail = Reject.E302, "SWITCH RESTARTED BEFORE THE ANSWER CAME"
        # Journaled and queued as soon as the mnemonic's queue has room (PROTOCOL.md §5 "Bounds").
        router.notify(endpoint, rec.mnemonic, msc_notice(header, reject, detail),
                      dict(user=rec.user, taf=rec.taf, ori=rec.ori, mke="MSC", code=reject.code, txn=rec.txn),
                      alloc=ENDED if rec.mnemonic in directory.pool_of else None)
        notices.add(rec.txn)
        codes[reject.code] += 1
        told += 1
    if notices.count:
        log.warning("switch.unanswered_after_restart", count=notices.count, codes=dict(sorted(codes.items())),
                    txns=notices.txns)
    # Answered in parts, and the window for the rest was still open when the switch stopped (a
    # drain that timed out, a crash): parts that come now are linked to nothing, so the operator
    # is told the answer may be incomplete — unless all the parts its route declares came
    # (PROTOCOL.md §4 "Stopping with an answer open"). One line for the complete ones (they owe
    # nothing), one warning for those told: not one each (issue 16: a line per answer in its
    # window was ~10^5 lines per takeover at 1,000 answers/s).
    done, open_told = _Tally(), _Tally()
    for rec, parts, last_part in still_open:
        route = directory.routes.get(rec.mke or "")
        complete = route.answer_parts if route is not None else None
        ended = (route is not None and last_part is not None
                 and ends_answer(last_part.split(".", 1)[-1], route.answer_ends_on))
        if not rest_may_be_missing(parts, complete, ended=ended):
            done.add(rec.txn)
            continue
        header = rec.text.split(".", 1)[0]
        endpoint = directory.endpoint_of(rec.mnemonic) if rec.mnemonic else None
        if endpoint is None:
            continue
        await router.tell(endpoint, rec.mnemonic,
                          msc_notice(header, Reject.E302, rest_of_answer_lost(parts, complete)),
                          dict(user=rec.user, taf=rec.taf, ori=rec.ori, mke="MSC", code=Reject.E302.code,
                               txn=rec.txn), alloc=ENDED if rec.mnemonic in directory.pool_of else None)
        open_told.add(rec.txn)
        told += 1
    if open_told.count:
        log.warning("switch.answer_open_at_restart", count=open_told.count, txns=open_told.txns)
    if done.count:
        log.info("switch.answers_complete_at_restart", count=done.count, txns=done.txns)
    return told
