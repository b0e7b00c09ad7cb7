"""What a session may use — and all it may use (uvicorn's ``ServerState`` is the model).

A :class:`msc.server.session.Session` is given one :class:`Services` by the switch and never sees
the :class:`msc.server.switch.Switch`: accounts (logon, PWD, a host's OIF), admission (route,
authorization, capacity, the request's records), delivery (its outputs), the journal, the
connection registry, the refusal budgets, the configuration, a clock and the metrics. The
switch, in turn, reaches a session only through its public methods (``close``, ``logoff``,
``reconfigure``, ``tick``, ``summarize_refusals``) and the delivery ``Sink``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from msc.journal.records import Entry, Kind

if TYPE_CHECKING:
    from msc.config.model import Config
    from msc.config.settings import Settings
    from msc.mnemonics.accounts import Accounts
    from msc.mnemonics.directory import Directory
    from msc.ops.metrics import Metrics
    from msc.routing.admission import Admission
    from msc.routing.delivery import Delivery
    from msc.routing.router import Router
    from msc.server.budgets import Budgets
    from msc.server.refusals import RefusalWindow


class Attached(Protocol):
    """What the registry and the switch may use of a session (:class:`msc.server.session.Session`):
    its public methods, nothing private."""

    mnemonic: str | None
    endpoint: str | None
    alloc: Any
    taf: str | None
    refusals: RefusalWindow

    @property
    def kind(self) -> str | None: ...

    @property
    def inflight(self) -> int: ...  # messages awaiting their journal commit

    def replaced(self) -> None: ...

    def close(self, why: str | None = None) -> None: ...

    def logoff(self, why: str) -> None: ...

    def reconfigure(self, directory: Directory) -> None: ...

    def tick(self, now: float, cfg: Config) -> None: ...

    def summarize_refusals(self, *, force: bool = False) -> None: ...


class JournalWriter(Protocol):
    """The journal as a session writes it: records in, a future of their sequence numbers out."""

    def submit(self, entries: list[Entry]) -> asyncio.Future[list[int]]: ...


@dataclass(slots=True, eq=False)
class Services:
    accounts: Accounts
    admission: Admission
    delivery: Delivery
    journal: JournalWriter
    registry: Registry
    budgets: Budgets  # what refused and unauthenticated traffic may cost
    settings: Callable[[], Settings]
    directory: Callable[[], Directory]
    clock: Callable[[], float]  # wall clock, seconds (journal times, certification dates)
    metrics: Metrics


class Registry:
    """The switch's connections, and which session holds each delivery endpoint (a station's
    mnemonic, a pooled mnemonic lent to a session)."""

    def __init__(self, *, delivery: Callable[[], Delivery], accounts: Accounts, journal: Callable[[], Any],
                 directory: Callable[[], Directory], router: Callable[[], Router], metrics: Metrics) -> None:
        self.sessions: set[Attached] = set()
        self.holders: dict[str, Attached] = {}  # endpoint → the session it is attached to
        self._delivery = delivery
        self._accounts = accounts
        self._journal = journal
        self._directory = directory
        self._router = router
        self._metrics = metrics

    def __iter__(self) -> Iterator[Attached]:
        return iter(list(self.sessions))

    def __len__(self) -> int:
        return len(self.sessions)

    def add(self, sess: Attached) -> None:
        self.sessions.add(sess)

    def discard(self, sess: Attached) -> None:
        self.sessions.discard(sess)

    def __contains__(self, sess: object) -> bool:
        return sess in self.sessions

    def bound(self, sess: Attached) -> None:
        """``sess`` logged on or bound: it holds its endpoint (a newer session of the same
        station replaces an older one — a restarted terminal)."""
        endpoint = sess.mnemonic
        assert endpoint is not None
        old = self.holders.get(endpoint)
        if old is not None and old is not sess:
            old.replaced()
        if sess.alloc is not None:
            # A new loan starts with an empty queue: what waits is an ended allocation's (an
            # output committed after its session ended, or restored from the last run).
            self._router().redirect_waiting(endpoint)
        self.holders[endpoint] = sess
        sess.endpoint = endpoint
        self._metrics.sessions.labels(sess.kind).inc()
        self._delivery().attach(endpoint, sess)  # type: ignore[arg-type]  # a Session is a Sink

    def unbound(self, sess: Attached, why: str) -> None:
        endpoint = sess.endpoint
        if sess.alloc is not None:
            self.release_pooled(sess, why)
        if endpoint is None:
            return
        sess.endpoint = None
        if self.holders.get(endpoint) is sess:
            del self.holders[endpoint]
        self._delivery().detach(endpoint, sess)  # type: ignore[arg-type]
        self._metrics.sessions.labels(sess.kind).dec()

    def release_pooled(self, sess: Attached, why: str) -> None:
        """Give a pooled session's mnemonic back; what still waits for it goes to the pool's
        defined destination or is recorded undelivered (PPP §1.6.2 B 1 f)."""
        alloc = sess.alloc
        if alloc is None:
            return
        sess.alloc = None
        self._accounts.release(alloc)
        self._journal().submit([Entry(kind=Kind.SESSION, peer=alloc.pool, mnemonic=alloc.mnemonic, user=alloc.user,
                                      taf=sess.taf, text=f"POOL {alloc.pool} RELEASE {alloc.mnemonic} {why}")])
        self._router().redirect_waiting(alloc.mnemonic)
