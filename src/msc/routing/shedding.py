"""Shedding new requests when the switch is overloaded (PROTOCOL.md §5 "Overload", CONFIG.md
"Overload").

When more is offered than the journal can commit, the queue of records waiting for it grows,
and everything that waits there — a new request's ``RECEIVED``, an answer from the upstream, a
delivery — waits longer and longer: measured (docs/PERFORMANCE.md "Overload"), 3,000 requests/s
offered to a switch that carried ~600/s left its oldest record waiting 3–5 s, the answers
unread in the upstream link behind ``max_inbound``, and it completed fewer than it could carry.
The switch therefore refuses **new** work (a terminal's or host's request, an ``AM``) with
``E307 SWITCH BUSY, TRY AGAIN`` while the journal's queue delay is above a target, and keeps
the work in progress — answers, unsolicited traffic, deliveries, acknowledgements, logons —
whose records go on being committed in order. The refusal is decided before the message is
parsed (:meth:`msc.routing.admission.Admission.shed`, from the session): under overload a
refusal must cost much less than the transaction it spares, or refusing the excess alone eats
the capacity (measured: a refusal after the full parse and authorization cost about a third of
a whole transaction, and 5x capacity offered then completed nothing). A refusal is journaled
like every refusal (``REJECTED``, within the refusal budgets), and it is the switch's own
condition, not the peer's doing: it does not count towards a connection's
``max_refused_per_minute``.

The measure is an *age*, not a count (as CoDel's, Nichols & Jacobson, RFC 8289): the time the
oldest record not yet committed has waited (:meth:`msc.journal.journal.Journal.oldest_wait_s`).
It says the same on a fast disk and a slow one, for small records and large, and it sees a
stalled disk at once; a count would need tuning to each. Like CoDel it tolerates a short burst:
only a delay that has stayed above ``target_s`` for ``interval_s`` sheds; once shedding, a new
rise above the target within ``interval_s`` of the last shed request sheds at once (the queue
is still standing, not a new burst).

:class:`Overload` is the rule alone — no clock, no journal, no I/O — so it is tested as a table.
"""

from __future__ import annotations

#: The text of the refusal (PROTOCOL.md §6: E307, "try again").
SHED_TEXT = "SWITCH BUSY, TRY AGAIN"


class Overload:
    """The shedding rule: may a new request be admitted now?

    ``admit(now, waited, target_s, interval_s, held=False)``: ``now`` any monotonic seconds;
    ``waited`` the journal's queue delay at ``now`` (s); ``target_s`` the delay above which new
    requests are shed (0: never shed); ``interval_s`` how long the delay must stay above it
    before the first shed (0: at once); ``held``: the request's upstream link is not being read
    because ``max_inbound`` of its messages already wait for the journal — the answers of the
    work in progress are held back, and a new request is shed at once (with ``target_s`` > 0),
    whatever the delay: more requests would only add answers to the wait. The limits are
    arguments, not state: a reload applies to the next call.
    """

    __slots__ = ("above_since", "last_shed")

    def __init__(self) -> None:
        self.above_since: float | None = None  # when the delay was first seen above the target
        self.last_shed: float | None = None  # when a request was last shed

    def admit(self, now: float, waited: float, target_s: float, interval_s: float, *, held: bool = False) -> bool:
        if target_s <= 0:
            return True
        if held:
            self.last_shed = now
            return False
        if waited <= target_s:
            self.above_since = None
            return True
        if self.above_since is None or now < self.above_since:
            self.above_since = now
        standing = now - self.above_since >= interval_s
        recent = self.last_shed is not None and 0 <= now - self.last_shed < interval_s
        if standing or recent:
            self.last_shed = now
            return False
        return True

