"""How a connection becomes an operator's, a host's or a printer's, and stops being one: LOGON,
PWD, LOGOFF, BIND, a forced logoff, a new directory (PROTOCOL.md §2–§3, PPP §1.6.2, CJIS AC-7,
AC-11, IA-5).

A layer of :class:`msc.server.session.Session`, above :class:`~msc.server.refusing.Refusing`.
:class:`msc.mnemonics.accounts.Accounts` decides a logon or password change; this journals the
outcome and answers the client (:meth:`~msc.server.connection.Connection.commit_then`), moves the state machine
(:data:`msc.server.machine.TRANSITIONS`) and attaches the session to its endpoint
(:class:`msc.server.services.Registry`).
"""

from __future__ import annotations

import asyncio
import time

from msc.aio import spawn
from msc.journal.records import Entry, Kind
from msc.mnemonics.accounts import LoggedOn
from msc.mnemonics.directory import Directory, Pool, Station, User
from msc.protocol import framing
from msc.protocol.codes import ProtocolError, Reject
from msc.protocol.message import Input, Logon, PasswordChange, format_pairs
from msc.server.machine import Event, Role, State
from msc.server.refusing import Refusing
from msc.storage.errors import StorageUnavailable


class Operator(Refusing):
    """LOGON, PWD, LOGOFF, BIND and their kin (see the module docstring)."""

    # -- logon and PWD (decided by msc.mnemonics.accounts) ----------------------------------

    def _begin_logon(self, xid: int, inp: Input, body: Logon) -> None:
        directory = self.svc.directory()
        pool = directory.pools.get(inp.header)
        mach = self.machine
        if pool is not None:
            if not mach.can(Event.CLAIM_POOL) or (self.pool is not None and self.pool is not pool):
                raise ProtocolError(Reject.E210)
            if not pool.admits(self.peer_ip, self.peer_cn):
                raise ProtocolError(Reject.E210, "THIS ADDRESS MAY NOT USE THIS POOL")
        else:
            st = directory.stations.get(inp.mnemonic)
            if st is None or st.kind != "terminal" or not st.admits(self.peer_ip, self.peer_cn):
                raise ProtocolError(Reject.E210)
            if (self.mnemonic is not None and self.mnemonic != st.mnemonic) or not mach.can(Event.CLAIM_TERMINAL):
                raise ProtocolError(Reject.E210)
            if st.disabled:
                raise ProtocolError(Reject.E204, "STATION DISABLED")
            # PPP §1.6.2 A: the first header claims the static mnemonic for this connection.
            mach.handle(Event.CLAIM_TERMINAL)
            self.station, self.mnemonic = st, st.mnemonic
        mach.hold()  # further frames wait until the logon is decided
        self.checking = True  # its slot is not taken meanwhile (msc.server.listener)
        spawn(self._logon(xid, inp, body, pool), event="session.internal_error", logger=self.log)

    async def _logon(self, xid: int, inp: Input, body: Logon, pool: Pool | None) -> None:
        try:
            release = (lambda: self.svc.registry.release_pooled(self, "RELOGON")) if self.alloc is not None else None
            outcome = await self.svc.accounts.logon(body, source=self.source, station=self.station, pool=pool,
                                                    release_previous=release)
            if isinstance(outcome, LoggedOn) or outcome.why is None:
                self.svc.storage.ok()  # decided: the run-time state answers (again)
            if isinstance(outcome, LoggedOn):
                await self._logged_on(xid, outcome, pool)
            else:
                if outcome.delay_s > 0:
                    # Answered after a delay, the connection's further frames held meanwhile: a
                    # guesser past its rate gets one answer per connection and delay. It is not
                    # being checked: its slot may go to a newer connection and its logon deadline
                    # runs (a close meanwhile still leaves the refusal's record).
                    self.checking = False
                    await asyncio.sleep(outcome.delay_s)
                if outcome.locked is not None:
                    self._journal_session("LOCKOUT", code=Reject.E203.code, user=outcome.locked)
                    self.log.warning("session.lockout", locked_user=outcome.locked)
                if outcome.failed is not None:  # CJIS AC-7: every attempt on the account is recorded
                    # The real reason's code is journaled; the operator is shown ``reject`` (E202).
                    self._journal_session(f"LOGON FAILED {outcome.failed}", code=(outcome.cause or outcome.reject).code,
                                          user=body.user)
                    self.log.info("session.logon", outcome="refused", code=outcome.reject.code)
                if outcome.why is not None:  # E503: the run-time state could not be used
                    self._storage_unavailable(xid, inp, outcome.why)
                    return
                self._reject(xid, outcome.reject, outcome.detail, inp.journal_text(), inp,
                             always=outcome.failed is not None)
        except StorageUnavailable as exc:
            self._storage_unavailable(xid, inp, str(exc))
        except Exception:
            self._internal_error(xid, inp)
        finally:
            self.checking = False
            self._release_held()

    async def _logged_on(self, xid: int, ok: LoggedOn, pool: Pool | None) -> None:
        mnemonic, user, alloc = ok.mnemonic, ok.user, ok.alloc
        text = "LOGON OK" + (f" POOL {pool.name} ALLOCATE {mnemonic}" if pool else "")
        entry = Entry(kind=Kind.SESSION, peer=pool.name if pool else mnemonic, mnemonic=mnemonic, user=user.id,
                      taf=self.taf, text=text)

        def give_back(_exc: BaseException | None = None) -> None:
            if alloc is not None:
                self.svc.accounts.release(alloc)

        def committed(seqs: list[int]) -> None:
            if self.state is State.CLOSED:  # gone while the record was written
                if alloc is not None and pool is not None:
                    give_back()
                    self.svc.journal.submit([Entry(kind=Kind.SESSION, peer=pool.name, mnemonic=mnemonic, user=user.id,
                                                   taf=self.taf, text=f"POOL {pool.name} RELEASE {mnemonic} DISCONNECT")])
                return
            if self.user_rec is not None:
                self._unbind("RELOGON")  # before the new loan is stored: the unbind gives loans back
            self.alloc = alloc
            if pool is not None:
                self.machine.handle(Event.CLAIM_POOL)
            self.user_rec, self.mnemonic, self.pool = user, mnemonic, pool
            self.machine.logged_on(time.monotonic())
            self.log = self.log.bind(mnemonic=mnemonic, user=user.id)
            self._established()
            self.svc.registry.bound(self)
            self.svc.registry.opened(self, seqs[0])  # open in the journal until its end is committed
            self.log.info("session.logon", outcome="ok")

        fut = self.commit_then([entry], xid, format_pairs(MNE=mnemonic, USR=user.id), after=committed, failed=give_back)
        await asyncio.wait([fut])  # the held frames wait for the logon's outcome

    async def _change_password(self, xid: int, inp: Input, body: PasswordChange, user: User) -> None:
        try:
            outcome = await self.svc.accounts.change_password(user, body)
            if isinstance(outcome, User) or outcome.why is None:
                self.svc.storage.ok()
            if isinstance(outcome, User):
                if self.user_rec is not None and self.user_rec.id == outcome.id:
                    self.user_rec = outcome
                fut = self.commit_then([self._session_entry("PASSWORD CHANGED"),
                                        Entry(kind=Kind.ADMIN, user=user.id, mnemonic=self.mnemonic,
                                              text=f"USER PASSWD {user.id} BY PWD")], xid)
                await asyncio.wait([fut])
                return
            if outcome.locked is not None:
                self._journal_session("LOCKOUT", code=Reject.E203.code, user=outcome.locked)
                self.log.warning("session.lockout", locked_user=outcome.locked)
            if outcome.failed is not None:
                self._journal_session(f"PASSWORD CHANGE FAILED {outcome.failed}", code=Reject.E202.code)
            if outcome.why is not None:  # E503: the run-time state could not be used
                self._storage_unavailable(xid, inp, outcome.why)
                return
            self._reject(xid, outcome.reject, outcome.detail, inp.journal_text(), inp)
        except StorageUnavailable as exc:
            self._storage_unavailable(xid, inp, str(exc))
        except Exception:
            self._internal_error(xid, inp)
        finally:
            self._release_held()

    def _release_held(self) -> None:
        self._perform(self.machine.release())
        now = time.monotonic()
        while (a := self.machine.next_action(now)) is not None:
            self._perform_one(a)

    # -- logoff, bind ---------------------------------------------------------------------

    def _logoff(self, xid: int) -> None:
        entry = self._session_entry("LOGOFF")
        self._unbind("LOGOFF")
        role = self.machine.role
        self.machine.handle(Event.LOGOFF)
        if role is Role.POOL:
            self.mnemonic = None  # the mnemonic went back to its pool
        elif role in (Role.HOST, Role.PRINTER):
            self.station = self.mnemonic = None
        self._pending_again()
        self.commit_then([entry], xid)

    def logoff(self, why: str) -> None:
        """Log the operator off from msc's side (IDLE, SESSION MAXIMUM, USER DISABLED …)."""
        self.log.info("session.forced_logoff", why=why)
        self.svc.journal.submit([self._session_entry(f"LOGOFF {why}")])
        self._unbind(why)
        self.send_sys(f"LOGOFF.{why}")
        if self.machine.role is Role.POOL:
            self.mnemonic = None
        if self.state is State.OPERATOR:
            self.machine.handle(Event.LOGOFF)
            self._pending_again()

    def _bind(self, xid: int, inp: Input) -> None:
        st = self.svc.directory().station_of(inp.mnemonic)
        if self.machine.role in (Role.HOST, Role.PRINTER):
            self._check_mnemonic(inp)
            self._write(framing.ack(xid))
            return
        if st is None or st.kind not in ("host", "printer") or self.state is not State.READY:
            raise ProtocolError(Reject.E210)
        self._bind_station(st)
        self.commit_then([self._session_entry("BIND")], xid, format_pairs(MNE=st.mnemonic))

    def _bind_station(self, st: Station) -> None:
        if not st.admits(self.peer_ip, self.peer_cn):
            raise ProtocolError(Reject.E210)
        if st.disabled:
            raise ProtocolError(Reject.E204, "STATION DISABLED")
        self.machine.handle(Event.BIND_HOST if st.kind == "host" else Event.BIND_PRINTER)
        self.station, self.mnemonic = st, st.mnemonic
        self.log = self.log.bind(mnemonic=st.mnemonic)
        self._established()
        self.svc.registry.bound(self)
        self._journal_session("BIND").add_done_callback(
            lambda f: None if f.cancelled() or f.exception() is not None else self.svc.registry.opened(self, f.result()[0]))

    def _unbind(self, why: str) -> None:
        if self.endpoint is not None or self.user_rec is not None or self.machine.role in (Role.HOST, Role.PRINTER):
            self.svc.registry.unbound(self, why)
        self.user_rec = None

    def replaced(self) -> None:
        """The same station connected again (a restarted terminal): the newer session wins."""
        self._unbind("REPLACED")
        self.close("REPLACED")

    def reconfigure(self, directory: Directory) -> None:
        """A new directory (reload, ``msc station``, ``msc user``): judge the next message by it;
        log off a user it removed or disabled, close a station it removed or disabled."""
        if self.station is not None and self.station.mnemonic in directory.stations:
            self.station = directory.stations[self.station.mnemonic]
        if self.pool is not None:
            self.pool = directory.pools.get(self.pool.name, self.pool)
        if self.user_rec is not None:
            u = directory.users.get(self.user_rec.id)
            if u is None or not u.active:
                self.logoff("USER DISABLED" if u else "USER REMOVED")
            else:
                self.user_rec = u
        st = directory.stations.get(self.station.mnemonic) if self.station is not None else None
        if self.station is not None and (st is None or st.disabled):
            self.svc.journal.submit([self._session_entry("STATION DISABLED")])
            self._unbind("STATION DISABLED")
            self.close("STATION DISABLED")
