"""Request admission: may this message go, where, and with which records (PROTOCOL.md §2–§4).

A session has decided *who* sends (the logged-on operator, or a host's OIF) and hands the rest
here: the route of the message key (E301), the authorization matrix (E204–E209,
:mod:`msc.mnemonics.authz`), room in the sender's own output queue (E307), the upstream's
capacity (E302 down, E307 over ``max_in_flight``), and the request's :class:`Pending` and
journal records. ``AM`` is admitted the same way, with its destinations resolved by
:mod:`msc.routing.destinations` (local ones delivered, the rest forwarded upstream).

Nothing here writes to a client or to the journal: the caller journals :attr:`Admitted.entries`
and, only once they are committed, acknowledges the client and calls :meth:`Admission.go`
(fail closed, ARCHITECTURE.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from msc.journal.records import Entry, Kind
from msc.mnemonics import authz
from msc.mnemonics.directory import Directory, User
from msc.protocol.codes import ProtocolError, Reject
from msc.protocol.message import AM, AdminText, Input, Transaction
from msc.routing.delivery import Delivery, Output
from msc.routing.destinations import admin_destinations
from msc.routing.requests import Pending
from msc.routing.router import Router


@dataclass(frozen=True, slots=True)
class Sender:
    """Who sends a message, as the session established it (PPP §1.6.7 OIF, §1.6.8 TAF)."""

    user: User  # the operator (a terminal's logged-on user, or a host's OIF account)
    oif: str  # the OIF msc sends upstream
    taf: str  # the TAF msc sends upstream
    authorizations: frozenset[str]  # the station's or pool's
    serves: frozenset[str]  # ORIs the station or pool serves
    endpoint: str  # where answers go (the session's delivery endpoint)
    peer: str | None  # the journal's peer name of the sending station or pool
    alloc: int | None = None  # the ACP allocation of a pooled mnemonic


@dataclass(slots=True)
class Admitted:
    """An admitted message: journal :attr:`entries`, then (committed) :meth:`Admission.go`."""

    entries: list[Entry]
    category: str
    pending: Pending | None = None  # what goes upstream (None: an AM to local destinations only)
    forwarded: bytes = b""
    outputs: list[Output] = field(default_factory=list)  # an AM's local deliveries
    at: list[int] = field(default_factory=list)  # each output's record index in entries
    reserved: dict[str, int] = field(default_factory=dict)  # queue slots held until go() or failed()


class LastUse:
    """Last use of users and stations (CJIS AC-2, PPP §1.6.2 inactive mnemonics), flushed to
    state.db about once a minute by the switch."""

    __slots__ = ("users", "stations")

    def __init__(self) -> None:
        self.users: dict[str, float] = {}
        self.stations: dict[str, float] = {}

    def used(self, user: str, mnemonic: str, now: float) -> None:
        self.users[user] = now
        self.stations[mnemonic] = now

    def take(self) -> tuple[dict[str, float], dict[str, float]]:
        users, stations, self.users, self.stations = self.users, self.stations, {}, {}
        return users, stations

    def give_back(self, users: dict[str, float], stations: dict[str, float]) -> None:
        """What :meth:`take` gave that could not be stored (its database away): kept for the
        next flush, the later time of each winning."""
        for mine, theirs in ((self.users, users), (self.stations, stations)):
            for k, t in theirs.items():
                mine[k] = max(t, mine.get(k, t))


class Admission:
    """The one place a message becomes a request (or is refused with its code)."""

    def __init__(self, *, directory: Callable[[], Directory], router: Router, delivery: Delivery,
                 clock: Callable[[], float], metrics, journal, admin_upstream: Callable[[], str | None],
                 last_use: LastUse) -> None:
        self.directory = directory
        self.router = router
        self.delivery = delivery
        self.clock = clock
        self.metrics = metrics
        self.journal = journal
        self.admin_upstream = admin_upstream
        self.last_use = last_use

    def new_txn(self) -> str:
        return self.router.new_txn()

    def today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC).date()

    def category(self, inp: Input) -> str | None:
        """The metric category of a message (its route's; ``admin`` for AM; None if unknown)."""
        route = self.directory().routes.get(inp.mke)
        return route.category if route else ("admin" if inp.mke == AM else None)

    # -- a routed request -----------------------------------------------------------------

    def request(self, inp: Input, body: Transaction, sender: Sender) -> Admitted:
        """Admit a routed transaction; raises :class:`ProtocolError` with its code if not."""
        d = self.directory()
        mke = inp.mke
        route = d.routes.get(mke)
        if route is None:
            raise ProtocolError(Reject.E301, f"UNKNOWN MESSAGE KEY {mke}")
        self._authorize(inp, body, sender, route, d)
        # The request's fate (its first answer part, or its notice) gets a slot in the asker's
        # queue now, or the request is refused: the operator's own outputs are not being taken,
        # no new work until they are (PROTOCOL.md §5 "Bounds").
        slot = {sender.endpoint: 1}
        if not self.delivery.reserve(slot, path="request"):
            raise ProtocolError(Reject.E307, "OUTPUT QUEUE FULL, ACKNOWLEDGE OUTPUTS FIRST")
        link, refused = self.router.capacity(route)
        if refused is not None or link is None:
            self.delivery.release(slot)
            raise ProtocolError(refused or Reject.E302)
        txn = self.router.new_txn()
        oif, taf = sender.oif, sender.taf
        self.last_use.used(oif, inp.mnemonic, self.clock())
        cori = route.category == authz.CORI
        purpose = body.get("PUR") if cori else None
        requester = body.get("ATN") if cori else None
        recipient = body.get("REL") if cori else None
        forwarded = inp.normalized(oif, taf)
        common: dict[str, Any] = dict(mnemonic=inp.mnemonic, user=oif, taf=taf, ori=body.ori, mke=mke, txn=txn,
                                      purpose=purpose, requester=requester, recipient=recipient)
        entries = [
            Entry(kind=Kind.RECEIVED, direction="in", peer=sender.peer, text=inp.journal_text(), **common),
            Entry(kind=Kind.FORWARDED, direction="out", peer=link.name, text=forwarded, same_fields_as_previous=True,
                  **common),
        ]
        pending = Pending(txn=txn, header=inp.header, mnemonic=inp.mnemonic, endpoint=sender.endpoint,
                          alloc=sender.alloc, user=oif, taf=taf, ori=body.ori, mke=mke, category=route.category,
                          upstream=link.name, purpose=purpose, requester=requester, recipient=recipient,
                          window_s=route.answer_window_s, timeout_s=route.timeout_s,
                          parts_complete=route.answer_parts, expects_answer=not route.one_way, slot=True)
        return Admitted(entries, route.category, pending, forwarded.encode("ascii"), reserved=slot)

    def _authorize(self, inp: Input, body, sender: Sender, route, d: Directory) -> None:
        denied = authz.decide(user=sender.user, authorizations=sender.authorizations, serves=sender.serves,
                              route=route, body=body, prohibited_purposes=d.prohibited_purposes,
                              today=self.today(), edit=d.edits.get(route.mke) if route is not None else None)
        if denied is None:
            return
        if denied.reject is Reject.E208:
            self.metrics.self_inquiry.inc()
            self.journal.submit([Entry(kind=Kind.SESSION, direction="-", peer=sender.peer, mnemonic=inp.mnemonic,
                                       user=sender.user.id, taf=sender.taf, code=Reject.E208.code,
                                       text="SECURITY SELF-INQUIRY REFUSED")])
        raise ProtocolError(denied.reject, denied.detail)

    # -- an administrative message (AM) ---------------------------------------------------

    def admin(self, inp: Input, body: AdminText, sender: Sender) -> Admitted:
        """``AM`` (PROTOCOL.md §2, PPP §1.6.5): to local mnemonics, ORIs and groups, and through
        the upstream to every destination msc does not host. Authorized as category ``admin``."""
        d = self.directory()
        self._authorize(inp, body, sender, None, d)
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        local, remote = admin_destinations(d, body.destinations, now=now, attached=self.delivery.attached)
        link = None
        if remote:
            link = self.router.links.get(self.admin_upstream() or "")
            if link is None or not link.up:
                raise ProtocolError(Reject.E302)
        # Each local destination gets the message with the sender in place of the destination
        # list (in parts if longer than a station can take). Admission is all or nothing: room
        # for every output in every destination queue, reserved before the commit (PROTOCOL.md §5
        # "Bounds"); and a remote part reserves the sender's slot for its fate (E302).
        copies = []
        counts: dict[str, int] = {}
        for endpoint, m in local:
            payload = f"{m}.AM.{body.ori}.{inp.mnemonic}.TXT {body.text}".encode("ascii", "replace")
            split = self.router._split(payload)
            copies.append((endpoint, m, payload, split))
            counts[endpoint] = counts.get(endpoint, 0) + len(split[1])
        if remote:
            counts[sender.endpoint] = counts.get(sender.endpoint, 0) + 1
        if not self.delivery.reserve(counts, path="admin"):
            full = next((e for e, n in counts.items() if not self.delivery.room(e, n)), sender.endpoint)
            raise ProtocolError(Reject.E307, f"QUEUE OF {full} FULL, TRY AGAIN")
        txn = self.router.new_txn()
        oif, taf = sender.oif, sender.taf
        common: dict[str, Any] = dict(user=oif, taf=taf, ori=body.ori, mke=inp.mke, txn=txn)
        adm = Admitted([Entry(kind=Kind.RECEIVED, direction="in", peer=sender.peer, mnemonic=inp.mnemonic,
                              text=inp.journal_text(), **common)], "admin", reserved=counts)
        if remote:
            assert link is not None
            control = "".join(f".{c}" for c in body.control)  # the Nlets control field goes along
            forwarded = f"{inp.header}.*{oif}.#{taf}.AM.{body.ori}.{','.join(remote)}{control}.TXT {body.text}"
            adm.entries.append(Entry(kind=Kind.FORWARDED, direction="out", peer=link.name, mnemonic=inp.mnemonic,
                                     text=forwarded, **common))
            adm.forwarded = forwarded.encode("ascii", "replace")
            adm.pending = Pending(txn=txn, header=inp.header, mnemonic=inp.mnemonic, endpoint=sender.endpoint,
                                  user=oif, taf=taf, ori=body.ori, mke=inp.mke, category="admin",
                                  upstream=link.name, expects_answer=False, slot=True)
        for endpoint, m, payload, split in copies:
            outs, ents, pos = self.router.prepare([(endpoint, m)], payload, inp.mnemonic, dict(common), None, None,
                                                  split=split)
            adm.outputs += outs
            adm.at += [len(adm.entries) + i for i in pos]
            adm.entries += ents
        return adm

    # -- after the commit -----------------------------------------------------------------

    def go(self, adm: Admitted, seqs: list[int]) -> None:
        """The admitted message's records are committed (``seqs``): deliver and forward it."""
        if adm.outputs:
            self.router.deliver_committed(adm.outputs, adm.at, seqs)
        if adm.pending is not None:
            # Nothing comes back for an AM: the upstream's A is its answer, a lost link E302.
            self.router.dispatch(adm.pending, adm.forwarded)

    def failed(self, adm: Admitted, exc: BaseException | None) -> None:
        """The admitted message's records were not committed (the client was told E501): give
        back the queue slots it reserved; outputs whose records landed anyway are closed
        (:meth:`msc.routing.router.Router.landed_undelivered`)."""
        self.delivery.release(adm.reserved)
        if adm.outputs:
            self.router.landed_undelivered(adm.outputs, adm.at, exc)
