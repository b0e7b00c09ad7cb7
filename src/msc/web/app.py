"""The web console's ASGI application (Starlette): pages, the JSON API, the inbox WebSocket.

Security properties (docs/WEB.md "Security"), each enforced here:

* **Sessions** live in this process; the browser holds only a random 256-bit ID in the
  ``__Host-msc`` cookie (``Secure``, ``HttpOnly``, ``SameSite=Strict``, ``Path=/``, set with
  Starlette's cookie API), replaced at every logon (no fixation) and removed at logoff.
* **CSRF**: every state-changing request carries the token of ``asgi-csrf``'s double-submit
  cookie in ``x-csrftoken`` (or a ``csrftoken`` form field); logon and the banner are protected
  even before a session cookie exists. The WebSocket is refused unless its ``Origin`` is this site.
* **Headers**: a strict Content-Security-Policy (only this origin's scripts and styles, nothing
  inline, no framing), HSTS, ``nosniff``, ``no-referrer``, ``Cache-Control: no-store`` on
  everything (CJI must not be cached).
* **Nothing secret in URLs, logs or browser storage**: every message, password and code travels
  in POST bodies or the WebSocket; the access log is off and this module logs event names only;
  the page keeps what it shows in memory (a reload asks the server again).
* **Logon**: the system-use notification acknowledged first (CJIS AC-8), at most
  ``[web] logon_attempts_per_minute`` attempts per browser address (on top of the
  authentication service's lockout), idle logoff and the 12-hour re-authentication enforced
  here as at the switch.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import OrderedDict
from pathlib import Path

import structlog
from asgi_csrf import asgi_csrf
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from msc.actions.journaling import record
from msc.aio import spawn
from msc.config.load import Settings
from msc.journal.records import Entry, JournalError, Kind
from msc.mnemonics.directory import Directory
from msc.outage import Outage
from msc.web.administrator import AdministratorRoutes
from msc.web.api import STORAGE_AWAY, Refused, client_address, refused_json, storage_reason, storage_unavailable
from msc.web.investigator import InvestigatorRoutes
from msc.web.logon import LogonRoutes
from msc.web.middleware import body_limit, security_headers
from msc.web.operator import OperatorRoutes
from msc.web.peer import verified_cn
from msc.web.sessions import CONSOLES, SESSION_COOKIE, LogonLimiter, WebSession

log = structlog.get_logger("msc.web")

STATIC = Path(__file__).parent / "static"
CSRF_COOKIE = "__Host-msc-csrf"
PRELOGON_S = 15 * 60  # an unauthenticated session (banner acknowledged) lives this long
MAX_SESSIONS = 10000
#: Unauthenticated sessions one browser address may hold: beyond it that address's own oldest is
#: dropped, so no address (a flood of banner acknowledgements) can push out another's sessions.
MAX_PRELOGON_PER_ADDRESS = 1000
#: Acknowledgements of the system-use notification per browser address a minute (429 beyond): a
#: browser acknowledges once per session; room for a shift change behind one NAT.
BANNER_PER_MINUTE = 120
MAX_ENDED_KEPT = 10000  # why a session ended, kept for the page that asks after the end


# -- the console -----------------------------------------------------------------------------------

class WebConsole(LogonRoutes, OperatorRoutes, InvestigatorRoutes, AdministratorRoutes):
    """The state of one ``msc web`` process (sessions, the switch's edit table) and its app; the
    routes of each area are its parts (``web/logon.py``, ``operator.py``, ``investigator.py``,
    ``administrator.py``)."""

    def __init__(self, settings: Settings, *, server_address: tuple[str, int] | None = None) -> None:
        self.settings = settings
        self.web = settings.config.web
        self.directory = Directory(settings)
        sw = settings.config.switch
        self.prohibited = frozenset(sw.prohibited_purposes)
        self.idle_s, self.max_s = sw.idle_logoff_s, sw.session_max_s
        self.sessions: dict[str, WebSession] = {}
        # Why each recently ended session ended (by its old ID): a page that learns of the end
        # from a 401 or a refused WebSocket says why (IDLE, SESSION MAXIMUM …), bounded.
        self.ended_why: OrderedDict[str, str] = OrderedDict()
        self.limiter = LogonLimiter(self.web.logon_attempts_per_minute)
        self.banner_limiter = LogonLimiter(BANNER_PER_MINUTE)
        self.max_sessions = MAX_SESSIONS
        self.max_prelogon_per_address = MAX_PRELOGON_PER_ADDRESS
        # The unauthenticated sessions of each browser address, oldest first.
        self.prelogon: dict[str, OrderedDict[str, None]] = {}
        self.server_address = server_address
        self._sweeper: asyncio.Task | None = None
        self.listener = next(lc for lc in settings.config.listener if lc.name == self.web.listener)
        self.bound = self.web.bind  # what the server listens on until a restart
        # The storage this process opens for each request (msc.actions: the run-time state, the
        # journal through the switch or directly) away: every request refused as before, but each
        # source said once per outage of this process, not per request — a browser retrying its
        # logon flooded the log (msc.outage; OPERATIONS.md "One outage, one warning"). ``storage``:
        # the console logons' and the administrator's routes' (the run-time state, the user
        # directory, the ledger); ``journal``: the investigator's routes' (the journal read and
        # audited) — two, so that on SQLite a locked state.db and a journal that reads well do not
        # end each other's outage at every request (_storage_away, _stored).
        self.storage = Outage("web.storage_unavailable", "web.storage_available", logger=log, counted="refused")
        self.journal = Outage("web.journal_unavailable", "web.journal_available", logger=log, counted="refused")
        self.logon_journal = Outage("web.logon_not_journaled", "web.logon_journaled", logger=log, counted="refused",
                                    level="error")
        self.logoff_journal = Outage("web.session_end_failed", "web.session_end_journaled", logger=log,
                                     counted="refused")
        # An operator's logon relayed to this machine's node: its listeners closed (a standby, a
        # stopped switch) was a warning per attempt — a browser retrying flooded the log.
        self.switch = Outage("web.switch_unreachable", "web.switch_reachable", logger=log, counted="refused")

    # -- lifecycle -------------------------------------------------------------------------------

    async def startup(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="web-session-timers")
        log.info("web.started", bind=self.web.bind, switch_listener=self.listener.name)

    async def shutdown(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
        for s in list(self.sessions.values()):
            await self.end(s, "SHUTDOWN", logoff=True)

    def reload(self) -> tuple[Settings, list[str], list[str]] | None:
        """SIGHUP (docs/WEB.md "Reload"): re-read ``msc.toml`` and ``users.toml`` and apply what a
        running console can change — the banner, the edit table behind the forms and their inline
        checks, the station or pool offered, the listener new operator logons go to (and how),
        the logon rate limit, idle and session limits — without ending a session. A configuration
        ``load`` refuses (or one without ``[web]``) changes nothing. Returns ``(settings, changed,
        restart_needed)`` — ``restart_needed`` names what only a restart applies (``web.bind``) —
        or None when refused. The caller (``msc.web.server``) reloads the certificate."""
        from msc.config.load import ConfigError, load

        try:
            new = load(self.settings.config_path)
        except ConfigError as exc:
            log.error("web.reload_failed", errors=len(exc.issues), first=str(exc.issues[0]))
            return None
        except OSError as exc:
            log.error("web.reload_failed", errors=1, first=f"{self.settings.config_path}: {exc.strerror}")
            return None
        if new.config.web is None:
            log.error("web.reload_failed", errors=1, first="no [web] table")
            return None
        old_cfg, new_cfg = self.settings.config, new.config
        changed = [name for name, a, b in (
            ("switch.banner", old_cfg.switch.banner, new_cfg.switch.banner),
            ("edits", old_cfg.edit, new_cfg.edit),
            ("web.header", old_cfg.web.header, new_cfg.web.header),
            ("web.listener", (old_cfg.web.listener, self.listener, old_cfg.web.switch_tls),
             (new_cfg.web.listener, next(lc for lc in new_cfg.listener if lc.name == new_cfg.web.listener),
              new_cfg.web.switch_tls)),
            ("web.logon_attempts_per_minute", old_cfg.web.logon_attempts_per_minute,
             new_cfg.web.logon_attempts_per_minute),
            ("switch.idle_logoff_s", old_cfg.switch.idle_logoff_s, new_cfg.switch.idle_logoff_s),
            ("switch.session_max_s", old_cfg.switch.session_max_s, new_cfg.switch.session_max_s),
            ("switch.prohibited_purposes", old_cfg.switch.prohibited_purposes, new_cfg.switch.prohibited_purposes),
        ) if a != b]
        restart = ["web.bind"] if self.bound != new_cfg.web.bind else []
        self.settings, self.web, self.directory = new, new_cfg.web, Directory(new)
        self.listener = next(lc for lc in new_cfg.listener if lc.name == self.web.listener)
        self.prohibited = frozenset(new_cfg.switch.prohibited_purposes)
        self.idle_s, self.max_s = new_cfg.switch.idle_logoff_s, new_cfg.switch.session_max_s
        self.limiter.per_minute = self.web.logon_attempts_per_minute
        return new, changed, restart

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for s in list(self.sessions.values()):
                try:
                    if s.console is None:
                        if now - s.created > PRELOGON_S:
                            self.sessions.pop(s.sid, None)
                            self._forget_prelogon(s)
                    elif now - s.last_activity > self.idle_s:
                        await self.end(s, "IDLE", logoff=True)
                    elif now - s.logon_at > self.max_s:
                        await self.end(s, "SESSION MAXIMUM", logoff=True)
                except Exception:
                    log.exception("web.sweep_error")

    # -- session helpers -------------------------------------------------------------------------

    def session_of(self, conn) -> WebSession | None:
        sid = conn.cookies.get(SESSION_COOKIE)
        return self.sessions.get(sid) if sid else None

    def new_session(self, address: str) -> WebSession:
        """A new unauthenticated session for a browser at ``address``. Bounded per address and in
        all: at ``max_prelogon_per_address`` the address's own oldest unauthenticated session is
        dropped; at ``max_sessions`` the oldest of the address holding the most (the asking
        address when it holds as many) — so a flood from one address drops its own sessions,
        never another browser's on its way to the logon form."""
        own = self.prelogon.setdefault(address, OrderedDict())
        if len(own) >= self.max_prelogon_per_address:
            self._drop_oldest_prelogon(address)
        if len(self.sessions) >= self.max_sessions and self.prelogon:
            most = max(self.prelogon, key=lambda a: len(self.prelogon[a]))
            if len(own) >= len(self.prelogon[most]):
                most = address
            self._drop_oldest_prelogon(most)
        s = WebSession(sid=secrets.token_urlsafe(32), created=time.monotonic(), address=address)
        self.sessions[s.sid] = s
        self.prelogon.setdefault(address, OrderedDict())[s.sid] = None
        return s

    def _drop_oldest_prelogon(self, address: str) -> None:
        own = self.prelogon.get(address)
        if own:
            sid, _ = own.popitem(last=False)
            self.sessions.pop(sid, None)
        if not own:
            self.prelogon.pop(address, None)

    def _forget_prelogon(self, s: WebSession) -> None:
        own = self.prelogon.get(s.address)
        if own is not None:
            own.pop(s.sid, None)
            if not own:
                del self.prelogon[s.address]

    def rotate(self, s: WebSession) -> None:
        """A new session ID at logon: an ID seen before logon is worth nothing after it."""
        self.sessions.pop(s.sid, None)
        self._forget_prelogon(s)  # authenticated now: no longer counted against its address
        s.sid = secrets.token_urlsafe(32)
        self.sessions[s.sid] = s

    @staticmethod
    def set_cookie(resp: Response, s: WebSession) -> Response:
        resp.set_cookie(SESSION_COOKIE, s.sid, path="/", secure=True, httponly=True, samesite="strict")
        return resp

    def authed(self, request: Request, console: str | None = None) -> WebSession:
        s = self.session_of(request)
        if s is None or s.console is None or s.ended or (console is not None and s.console != console):
            raise Refused(401, "not logged on", ended=self.why_ended(request))
        if not self.same_certificate(request, s):
            raise Refused(401, "not logged on")
        s.last_activity = time.monotonic()
        return s

    def why_ended(self, conn) -> str:
        """Why the session this request's cookie names ended (``SESSION ENDED`` when unknown)."""
        sid = conn.cookies.get(SESSION_COOKIE)
        return self.ended_why.get(sid, "SESSION ENDED") if sid else "SESSION ENDED"

    @staticmethod
    def same_certificate(conn, s: WebSession) -> bool:
        """A session logged on with a client certificate is used only with that certificate (and
        one without, only without one): a session cookie taken to another browser is worth nothing
        for a station bound by certificate."""
        if verified_cn(conn.scope) == s.cert_cn:
            return True
        log.warning("web.certificate_differs_from_logon", console=s.console)
        return False

    def end_later(self, s: WebSession, why: str) -> None:
        """:meth:`end`, from a callback (the switch link closed, a ``LOGOFF.`` notice): fired off,
        its end retrieved — the console's logoff record refused by a journal database that is away
        is said by :meth:`end` once per outage (``web.session_end_failed``), not a task's traceback."""
        spawn(self.end(s, why), event="web.session_end_failed", expected=(JournalError, OSError), logger=log,
              console=s.console)

    async def end(self, s: WebSession, why: str, *, logoff: bool = False) -> None:
        """End a web session: tell its pages, log off at the switch (operator) or journal the
        console's logoff, forget it."""
        if s.ended:
            return
        s.ended = why
        self.sessions.pop(s.sid, None)
        self._forget_prelogon(s)
        if s.console is not None:
            self.ended_why[s.sid] = why
            while len(self.ended_why) > MAX_ENDED_KEPT:
                self.ended_why.popitem(last=False)
        for ws in list(s.sockets):
            with contextlib.suppress(Exception):
                await ws.send_json({"type": "ended", "why": why})
                await ws.close(code=4000)
        if s.link is not None:
            link, s.link = s.link, None
            if logoff and not link.closed:
                with contextlib.suppress(Exception):
                    await link.request(f"{s.mnemonic}.LOGOFF", timeout=5)
            await link.close()
        elif s.console in ("investigator", "admin"):
            entry = Entry(kind=Kind.SESSION, peer="WEB", user=s.user, text=f"LOGOFF WEB {why}")
            try:
                await asyncio.to_thread(record, self.settings, [entry])
            except (JournalError, OSError) as exc:
                # The journal (or its database, opened here when no switch runs) away: the logoff
                # record is refused — said once per outage, not per session (every idle session the
                # sweep ended said it again, an OSError as a traceback).
                self.logoff_journal.failed(str(exc) or type(exc).__name__, console=s.console)
            else:
                self.logoff_journal.ok()
        log.info("web.session_ended", console=s.console, why=why)

    # -- pages and state -------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    async def state(self, request: Request) -> Response:
        s = self.session_of(request)
        if s is None or s.ended:
            s = self.new_session(client_address(request))
        body = {"csrf": request.scope["csrftoken"](), "switch": self.settings.config.switch.name,
                "banner": self.settings.config.switch.banner, "acknowledged": s.banner is not None,
                "console": s.console, "user": s.user, "ori": s.ori, "mnemonic": s.mnemonic,
                "header": self.web.header or "", "idle_s": self.idle_s, "max_s": self.max_s,
                "consoles": list(CONSOLES)}
        return self.set_cookie(JSONResponse(body), s)

    async def banner(self, request: Request) -> Response:
        if self.banner_limiter.allow(client_address(request)) is None:
            log.warning("web.banner_rate_limited")
            return JSONResponse({"error": "too many requests from this address; wait a minute"}, 429)
        s = self.session_of(request)
        if s is None:
            s = self.new_session(client_address(request))
        s.banner = self.settings.config.switch.banner
        return self.set_cookie(JSONResponse({"ok": True}), s)

    # -- the storage away ------------------------------------------------------------------------

    async def _storage_away(self, request: Request, exc: Exception) -> Response:
        """Starlette's handler for :data:`msc.web.api.STORAGE_AWAY` raised by any route: 503
        (``Retry-After``), said once per outage (``web.storage_unavailable``), never a 500 and
        uvicorn's "Exception in ASGI application" per request. The session, its cookie and the
        CSRF cookie are left as they were: the page goes on once the storage is back."""
        self._outage_of(request).failed(storage_reason(exc), path=request.url.path,
                                        write=getattr(request.state, "write", True))
        return storage_unavailable(request)

    def _outage_of(self, request: Request) -> Outage:
        return self.journal if request.url.path.startswith("/api/journal/") else self.storage

    def _stored(self, endpoint, *, write: bool = False):
        """``endpoint`` (a route that uses the storage) whose success ends its outage: the
        ``web.storage_available`` / ``web.journal_available`` line (with ``refused``) when it
        answers below 400 again. ``write``: the route changes the storage; a route that only reads
        does not end an outage a write began (on SQLite the stations' list reads through a
        ``state.db`` another process holds while a station change is refused: msc.outage).
        A route not wrapped here counts as a write when it fails."""
        async def run(request: Request) -> Response:
            request.state.write = write
            resp = await endpoint(request)
            if resp.status_code < 400:
                self._outage_of(request).ok(path=request.url.path, write=write)
            return resp

        return run

    # -- the application -------------------------------------------------------------------------

    def app(self):
        stored = self._stored
        routes = [
            Route("/", self.index), Route("/operator", self.index), Route("/investigator", self.index),
            Route("/admin", self.index),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
            Route("/api/state", self.state), Route("/api/banner", self.banner, methods=["POST"]),
            Route("/api/logon", self.logon, methods=["POST"]), Route("/api/logoff", self.logoff, methods=["POST"]),
            Route("/api/activity", self.activity, methods=["POST"]),
            Route("/api/forms", self.forms), Route("/api/check", self.check, methods=["POST"]),
            Route("/api/send", self.send, methods=["POST"]), WebSocketRoute("/api/inbox", self.inbox),
            Route("/api/password", self.password, methods=["POST"]),
            # The investigator's routes each journal the act (an audit record): writes.
            Route("/api/journal/search", stored(self.journal_search, write=True), methods=["POST"]),
            Route("/api/journal/check", self.journal_check, methods=["POST"]),
            Route("/api/journal/export", stored(self.journal_export, write=True), methods=["POST"]),
            Route("/api/journal/verify", stored(self.journal_verify, write=True), methods=["POST"]),
            Route("/api/admin/stations", stored(self.stations)),
            Route("/api/admin/station", stored(self.station, write=True), methods=["POST"]),
            Route("/api/admin/users", stored(self.users)),
            Route("/api/admin/user", stored(self.user_add, write=True), methods=["POST"]),
            Route("/api/admin/user/status", stored(self.user_status, write=True), methods=["POST"]),
            Route("/api/admin/report/{kind}", stored(self.report), methods=["GET", "POST"]),
        ]
        @contextlib.asynccontextmanager
        async def lifespan(_app):
            await self.startup()
            try:
                yield
            finally:
                await self.shutdown()

        handlers = {Refused: refused_json, **dict.fromkeys(STORAGE_AWAY, self._storage_away)}
        app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
        protected = asgi_csrf(app, signing_secret=secrets.token_hex(32), cookie_name=CSRF_COOKIE,
                              cookie_secure=True, cookie_samesite="Strict",
                              always_protect={"/api/logon", "/api/banner"})
        return security_headers(body_limit(protected))
