"""The life of an accepted request, from forwarding to the last part of its answer (PROTOCOL.md §4).

Sans-IO and clock-injected: the router feeds it events and acts on what it returns.

A request (:class:`Pending`) goes through these states::

    waiting ──first part──▶ answered ──window ends──▶ closed ──late_answer_s / LATE_MAX──▶ forgotten
       │                                                 ▲
       ├──timeout_s, no part (E303)──────────────────────┤
       ├──link lost (E302)───────────────────────────────┘
       └──upstream N──▶ finished

* **waiting**: forwarded, no part of its answer yet. If none comes within the upstream's
  ``timeout_s`` the operator is told ``MSC.E303`` — only then.
* **answered**: at least one part arrived. One request may have several answers: a III ``QR`` is
  answered by the FBI and then by each state that holds part of the record (their answers come
  over Nlets as ``CR`` "Triple I responses", Nlets Wiki §15 CHRI); a ``QW`` by the state file and
  then by NCIC, or NCIC and III for a combined ``QWI`` (NCIC 2000 Operating Manual, Wanted Person
  File §5.7). The request stays open for further parts until ``answer_window_s`` (a route
  setting, never shorter than ``timeout_s``) after it was forwarded. Its answer is *complete*
  once it has the parts its route's ``answer_parts`` declares, or a part carrying a field of
  ``answer_ends_on`` (:func:`rest_may_be_missing`): it still takes parts, but no drain waits
  for it and no restart notice is owed for it.
* **closed**: its window ended, or its fate notice (E302/E303) was sent. Closed requests are
  remembered for ``late_answer_s`` (at most :data:`LATE_MAX` of them, oldest forgotten first):
  a part with the header of exactly one of them, and of no open request, is still linked to it
  (``late``). With two or more closed requests of that header the part is *not* linked — it is
  unsolicited traffic for the addressed mnemonic — because guessing would journal one operator's
  answer under another request's user and purpose.
* **finished**: the upstream refused the request (``N``); nothing more will come for it.

Several open requests with one header (a mnemonic that sends without a reference): a part goes
to the oldest request still **waiting**, first in, first out, as upstreams answer in order; when
every one has an answer, to the oldest **answered** one. Such a match is reported as ambiguous
(and counted): a client that puts a distinct reference in each header (``ICS1A1``, ``ICS1A2``
…, PROTOCOL.md §2) never has one.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

#: How many closed requests are remembered for late parts, at most (oldest forgotten first).
LATE_MAX = 10_000

State = Literal["waiting", "answered", "closed", "finished"]
How = Literal["first", "further", "late"]


@dataclass(eq=False, slots=True)
class Pending:
    """One accepted request on its way upstream, and then its answer parts.

    Slotted: thousands are alive at once (every open request, and the last :data:`LATE_MAX`
    closed ones), and with more than 30 attributes each would otherwise carry a dictionary of its
    own that the garbage collector walks too (it holds the router: a tracked object) — twice the
    objects in every full collection (PERFORMANCE.md "Where the tail came from")."""

    txn: str
    header: str
    mnemonic: str
    endpoint: str
    user: str | None
    taf: str | None
    ori: str | None
    mke: str
    category: str
    upstream: str
    # CORI release fields (PPP §1.6.1 C, §1.7.1 A), carried to every part of the answer.
    purpose: str | None = None
    requester: str | None = None
    recipient: str | None = None
    alloc: int | None = None  # the ACP allocation of a pooled mnemonic that sent the request
    #: False for AM and the other one-way keys (a YR, a DR …; PROTOCOL.md §4): the upstream's A is the whole answer
    expects_answer: bool = True
    window_s: float | None = None  # the route's answer window; None: the upstream's timeout_s
    timeout_s: float | None = None  # the route's wait for a first part (E303); None: the upstream's
    #: The route declares an answer window: further parts are expected until it ends (set by
    #: RequestTable.opened). Such a request, answered and inside its window, is still in flight
    #: — unless its answer is complete (:func:`rest_may_be_missing`).
    parts_expected: bool = False
    #: How many parts a complete answer has (the route's ``answer_parts``); None: not known.
    parts_complete: int | None = None
    #: A recorded part carried a field of the route's ``answer_ends_on``: nothing more comes.
    answer_ended: bool = False
    started: float = field(default_factory=time.perf_counter)  # for the latency metric
    sent_at: float = 0.0  # monotonic, when forwarded
    xid: int = 0
    upstream_acked: bool = False
    #: The operator has learned the request's fate: a first answer part, or a notice.
    done: bool = False
    state: State = "waiting"
    parts: int = 0  # answer parts matched to this request (less those the journal failed to record)
    closed_at: float = 0.0
    #: An answer (or a part of one) has been recorded: its fate is known; a lost link no longer
    #: turns it into E302.
    answered: bool = False
    #: monotonic time by which the upstream must send again an answer msc could not journal
    #: (None: no such answer waiting). See Router._answer_unrecorded.
    resend_deadline: float | None = None
    refusal_recorded: bool = False  # its REJECTED E501 record is committed
    refusal_sending: bool = False  # … is in a commit now
    #: Why the answer part waiting to be sent again was refused: E501 (the journal could not
    #: record it) or E307 (its destination queue was full).
    refusal_code: str = "E501"
    #: The request holds a reserved slot in its asker's delivery queue for its fate — its first
    #: answer part or its notice (PROTOCOL.md §5 "Bounds"); given back if it ends without one.
    slot: bool = False

    # Called by the UpstreamLink.
    def acked(self, link, sent) -> None:
        self.upstream_acked = True
        if not self.expects_answer:
            self.done = True  # an AM: the upstream's A is its whole answer; no output comes
            if self.router is not None:
                self.router.slot_free(self)

    def refused(self, link, sent, code: str, reason: str) -> None:
        self.router.upstream_refused(self, code, reason)

    router: Any = field(default=None, repr=False)


class Match(NamedTuple):
    """Which request an upstream message answers (``pending`` None: it answers none)."""

    pending: Pending | None
    how: How | None = None
    ambiguous: bool = False


class RequestTable:
    """Open and recently closed requests by header, with their deadlines.

    ``clock`` is monotonic seconds. Every method is O(1) amortised in the number of requests,
    except :meth:`match`, which is linear in the (normally one) open requests of one header.
    Deadlines need no priority queue: requests are kept in send order per distinct
    ``timeout_s`` (so their deadlines are in order), and answered requests in answer order per
    distinct window (a window that ended while others before it had not is closed by
    :meth:`match` when a part comes for it, and by :meth:`expire` when it reaches the head).
    """

    def __init__(self, *, late_answer_s: float = 3600.0, late_max: int = LATE_MAX,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.late_answer_s = late_answer_s
        self.late_max = late_max
        self.clock = clock
        # header → its open requests: the Pending itself when it is the only one (the usual case —
        # a container per request would cost hundreds of bytes for every open window), else a
        # list in send order.
        self._open: dict[str, Pending | list[Pending]] = {}
        self._timeouts: dict[float, deque[Pending]] = {}  # per timeout_s, in send order
        self._windows: dict[float, deque[Pending]] = {}  # per window_s, in first-answer order
        self._closed: deque[Pending] = deque()  # remembered for late parts, in closing order
        self._closed_by_header: dict[str, Pending | list[Pending]] = {}  # the same, remembered

    # -- events ---------------------------------------------------------------------------

    def opened(self, p: Pending, upstream_timeout_s: float) -> None:
        """``p`` was forwarded now: waiting for its first part until its route's ``timeout_s``
        (default ``upstream_timeout_s``)."""
        p.sent_at = self.clock()
        p.state = "waiting"
        p.parts_expected = p.window_s is not None and p.expects_answer
        timeout_s = p.timeout_s = p.timeout_s if p.timeout_s is not None else upstream_timeout_s
        window = p.window_s if p.window_s is not None else timeout_s
        p.window_s = window if window > timeout_s else timeout_s  # an answer allowed until timeout_s must find it
        if p.expects_answer:  # an AM is answered by the upstream's A alone: nothing to match
            _add(self._open, p)
        q = self._timeouts.get(timeout_s)
        if q is None:
            q = self._timeouts[timeout_s] = deque()
        q.append(p)

    def match(self, header: str) -> Match:
        """The request a message with this header answers, if any."""
        q = self._open.get(header)
        if q is not None and (isinstance(q, list) or q.state == "answered"):
            now = self.clock()
            for p in (list(q) if isinstance(q, list) else (q,)):  # windows that ended before reaching
                if p.state == "answered" and p.sent_at + _window(p) <= now:  # the head of their queue
                    self.close(p, at=p.sent_at + _window(p))
            q = self._open.get(header)
        if q is not None:
            if not isinstance(q, list):
                return Match(q, "first" if q.state == "waiting" else "further")
            for p in q:
                if p.state == "waiting":
                    return Match(p, "first", True)
            return Match(q[0], "further", True)
        self._forget_old()
        closed = self._closed_by_header.get(header)
        if closed is not None:
            if not isinstance(closed, list):
                return Match(closed, "late")
            return Match(None, None, True)
        return Match(None)

    def part(self, p: Pending) -> How:
        """A part of ``p``'s answer arrived (as :meth:`match` said). Returns which part it is."""
        p.parts += 1
        if p.state == "waiting":
            p.state = "answered"
            p.done = True
            end = p.sent_at + _window(p)
            if end <= self.clock():
                self.close(p, at=end)
            elif _window(p) > _timeout(p):
                # (a window that ends with the timeout is closed at the timeout's deadline)
                q = self._windows.get(_window(p))
                if q is None:
                    q = self._windows[_window(p)] = deque()
                q.append(p)
            return "first"
        return "further" if p.state == "answered" else "late"

    def unrecorded(self, p: Pending) -> None:
        """The journal could not record a part of ``p``'s answer (the upstream was told ``N E501``
        and may send it again): the part does not count, and if no part of ``p`` was recorded,
        ``p`` waits for its first part again — first in line for its header, so that the part
        sent again finds it and not a later request with the same header."""
        if p.parts > 0:
            p.parts -= 1
        if p.answered:
            return  # an earlier part was recorded: p stays answered (open, or remembered)
        if p.state == "closed":
            try:
                self._closed.remove(p)
            except ValueError:
                pass
            _remove(self._closed_by_header, p)
        else:
            _remove(self._open, p)
        p.state = "waiting"
        q = self._open.get(p.header)
        if q is None:
            self._open[p.header] = p
        elif isinstance(q, list):
            q.insert(0, p)
        else:
            self._open[p.header] = [p, q]

    def close(self, p: Pending, *, remember: bool = True, at: float | None = None) -> None:
        """``p`` takes no more parts as an open request (window over, or its fate notice sent).
        ``remember``: keep it for late parts (False when the upstream refused it); ``at``: when it
        closed (default now) — late_answer_s counts from then."""
        if p.state in ("closed", "finished"):
            return
        _remove(self._open, p)
        if not remember:
            p.state = "finished"
            return
        p.state = "closed"
        p.closed_at = self.clock() if at is None else at
        self._closed.append(p)
        _add(self._closed_by_header, p)
        if len(self._closed) > self.late_max:
            self._forget_old()  # the count bound at once; the time bound at the next sweep or match

    def expire(self) -> tuple[list[Pending], list[Pending]]:
        """Deadlines passed by now: (requests with no part within timeout_s — to be told E303,
        answered requests whose window ended — now closed)."""
        now = self.clock()
        timed_out: list[Pending] = []
        ended: list[Pending] = []
        for timeout_s, q in self._timeouts.items():
            while q and q[0].sent_at + timeout_s <= now:
                p = q.popleft()
                if p.state == "waiting":
                    if p.done:  # an AM the upstream acknowledged: finished
                        p.state = "finished"
                    else:
                        timed_out.append(p)
                elif p.state == "answered" and p.sent_at + _window(p) <= now:
                    self.close(p, at=p.sent_at + _window(p))
                    ended.append(p)
        for window_s, q in self._windows.items():
            while q and (q[0].state != "answered" or q[0].sent_at + window_s <= now):
                p = q.popleft()
                if p.state == "answered":
                    self.close(p, at=p.sent_at + window_s)
                    ended.append(p)
        self._forget_old()
        return timed_out, ended

    # -- views ----------------------------------------------------------------------------

    def outstanding(self) -> list[Pending]:
        """Requests whose fate (a first part, an upstream's A for an AM, a notice) is unknown."""
        return [p for q in self._timeouts.values() for p in q if p.state == "waiting" and not p.done]

    def open_answers(self) -> list[Pending]:
        """Answered requests whose route expects further parts and whose window has not ended:
        still in flight for a drain (PROTOCOL.md §4 "Stopping with an answer open")."""
        now = self.clock()
        out: list[Pending] = []
        for q in self._open.values():
            for p in (q if isinstance(q, list) else (q,)):
                if (p.state == "answered" and p.parts_expected and p.window_s is not None
                        and now < p.sent_at + p.window_s
                        and rest_may_be_missing(p.parts, p.parts_complete, ended=p.answer_ended)):
                    out.append(p)
        return out

    def waiting_on(self, upstream: str) -> list[Pending]:
        """Requests forwarded to ``upstream`` (AMs included) that have no part of an answer yet."""
        return [p for q in self._timeouts.values() for p in q if p.upstream == upstream and p.state == "waiting"]

    def open_requests(self) -> int:
        return sum(len(q) if isinstance(q, list) else 1 for q in self._open.values())

    def remembered(self) -> int:
        return len(self._closed)

    def _forget_old(self) -> None:
        horizon = self.clock() - self.late_answer_s
        closed = self._closed
        while closed and (len(closed) > self.late_max or closed[0].closed_at <= horizon):
            p = closed.popleft()
            _remove(self._closed_by_header, p)
            p.state = "finished"


def rest_may_be_missing(parts: int, complete: int | None, *, ended: bool = False) -> bool:
    """May an answer that has had ``parts`` parts (and whose window is open) still lack some?
    Yes, unless its route declares how many parts a complete answer has (``complete``, the
    route's ``answer_parts``: one from each system the upstream asks) and that many came, or a
    part said that nothing more comes (``ended``: :func:`ends_answer`).

    The one rule for what a drain waits for and what the restart's recovery pass tells
    (``MSC.E302 SWITCH RESTARTED BEFORE THE REST OF THE ANSWER``, PROTOCOL.md §4 "Stopping with
    an answer open"). Neither the NCIC/Nlets answers nor our stubs carry a part count, so what
    the agency declares for its upstream is all msc can know; without it every part may be
    followed by another, and the operator is told."""
    return not ended and (complete is None or parts < complete)


def ends_answer(text: str, markers: tuple[str, ...]) -> bool:
    """Does an answer part — ``text``, after its header (``QR.CA0130000.NO RECORD.NAM/…``) —
    end its answer? Yes when a field of its first line (between dots) is one of ``markers``,
    the route's ``answer_ends_on``: III answers ``NO RECORD`` and then no state sends anything
    (Nlets Wiki §15; what ``msc stub`` does for a QR with no record)."""
    if not markers:
        return False
    first = text.split("\n", 1)[0].rstrip("\r")
    return any(field.strip() in markers for field in first.split("."))


def _window(p: Pending) -> float:
    """``p``'s answer window, seconds (resolved when it was forwarded: :meth:`RequestTable.opened`)."""
    assert p.window_s is not None, "a forwarded request has its window"
    return p.window_s


def _timeout(p: Pending) -> float:
    """``p``'s wait for a first part, seconds (resolved when it was forwarded)."""
    assert p.timeout_s is not None, "a forwarded request has its timeout"
    return p.timeout_s


def _add(by_header: dict[str, Pending | list[Pending]], p: Pending) -> None:
    q = by_header.get(p.header)
    if q is None:
        by_header[p.header] = p
    elif isinstance(q, list):
        q.append(p)
    else:
        by_header[p.header] = [q, p]


def _remove(by_header: dict[str, Pending | list[Pending]], p: Pending) -> None:
    q = by_header.get(p.header)
    if q is p:
        del by_header[p.header]
    elif isinstance(q, list):
        try:
            q.remove(p)
        except ValueError:
            return
        if len(q) == 1:
            by_header[p.header] = q[0]


__all__ = ["LATE_MAX", "Match", "Pending", "RequestTable", "ends_answer", "rest_may_be_missing"]
