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
import datetime as dt
import ipaddress
import json
import re
import secrets
import tempfile
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from asgi_csrf import asgi_csrf
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from msc.actions import directory as admin_actions
from msc.actions import identity, investigate
from msc.actions.journaling import DaemonUnavailable, control, record
from msc.config.load import Settings
from msc.journal.records import Entry, JournalError, Kind
from msc.journal.search import Query
from msc.mnemonics.directory import Directory
from msc.protocol import framing, grammar
from msc.protocol.message import parse_pairs
from msc.protocol.proxy import cn_sendable
from msc.web import forms
from msc.web.filters import FilterError, search_query
from msc.web.inbox import classify
from msc.web.peer import verified_cn
from msc.web.relay import LinkClosed, SwitchLink

log = structlog.get_logger("msc.web")

STATIC = Path(__file__).parent / "static"
SESSION_COOKIE = "__Host-msc"
CSRF_COOKIE = "__Host-msc-csrf"
MAX_BODY = 256 * 1024
MAX_OUTPUTS = 1000  # kept per operator session for a page that reloads (the switch keeps the rest)
MAX_REQUESTS = 1000
PRELOGON_S = 15 * 60  # an unauthenticated session (banner acknowledged) lives this long
MAX_SESSIONS = 10000
#: Unauthenticated sessions one browser address may hold: beyond it that address's own oldest is
#: dropped, so no address (a flood of banner acknowledgements) can push out another's sessions.
MAX_PRELOGON_PER_ADDRESS = 1000
#: Acknowledgements of the system-use notification per browser address a minute (429 beyond): a
#: browser acknowledges once per session; room for a shift change behind one NAT.
BANNER_PER_MINUTE = 120
MAX_ENDED_KEPT = 10000  # why a session ended, kept for the page that asks after the end
CONSOLES = {"operator": None, "investigator": identity.INVESTIGATOR, "admin": identity.ADMIN}

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"strict-transport-security", b"max-age=31536000"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=(), usb=()"),
    (b"cache-control", b"no-store"),
]
_PASSWORD = re.compile(r"[ -~]{1,256}\Z")
_OTP = re.compile(r"[0-9]{6}\Z")
SESSION_KEYS = frozenset(("LOGON", "LOGOFF", "BIND", "PWD"))


# -- sessions ------------------------------------------------------------------------------------

@dataclass(eq=False)
class WebSession:
    sid: str
    created: float
    banner: str | None = None  # the system-use notification the person acknowledged
    console: str | None = None  # operator | investigator | admin, once logged on
    user: str | None = None
    ori: str | None = None
    logon_at: float = 0.0
    last_activity: float = 0.0
    link: SwitchLink | None = None
    mnemonic: str | None = None
    outputs: deque = field(default_factory=lambda: deque(maxlen=MAX_OUTPUTS))
    requests: OrderedDict = field(default_factory=OrderedDict)
    sockets: set = field(default_factory=set)
    ended: str | None = None
    ref_stem: str = ""
    ref_n: int = 0
    busy: bool = False
    cert_cn: str | None = None  # the verified client certificate's CN the logon came with
    address: str = ""  # the browser's address the session was made for (pre-logon accounting)

    def next_ref(self) -> str:
        """A reference of its own for every message (PROTOCOL.md §4: answers are linked by it):
        4 random [A-Z0-9] and a 2-character counter, drawn anew after 1,296 messages."""
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        if not self.ref_stem or self.ref_n >= 36 * 36:
            self.ref_stem = "".join(secrets.choice(alphabet) for _ in range(4))
            self.ref_n = 0
        n, self.ref_n = self.ref_n, self.ref_n + 1
        return self.ref_stem + alphabet[n // 36] + alphabet[n % 36]


class LogonLimiter:
    """At most ``per_minute`` events per browser address in any 60 s (bounded memory: the least
    recently seen addresses are forgotten beyond ``max_addresses``).

    For logons the event is a **failed** attempt: :meth:`allow` counts an attempt from its start
    (so a burst of parallel guesses is counted before any of them is answered) and
    :meth:`forgive` takes a successful one back — browsers behind one NAT or terminal server are
    not locked out by their colleagues' successful logons at a shift change, only by failures."""

    def __init__(self, per_minute: int, *, max_addresses: int = 10000, clock=time.monotonic) -> None:
        self.per_minute = per_minute
        self.max_addresses = max_addresses
        self.clock = clock
        self.seen: OrderedDict[str, deque] = OrderedDict()

    def allow(self, address: str) -> float | None:
        """Count one event for ``address``: its stamp (for :meth:`forgive`), or None when the
        address had ``per_minute`` in the last 60 s (nothing counted)."""
        now = self.clock()
        q = self.seen.pop(address, None) or deque()
        while q and now - q[0] >= 60:
            q.popleft()
        ok = len(q) < self.per_minute
        if ok:
            q.append(now)
        self.seen[address] = q
        while len(self.seen) > self.max_addresses:
            self.seen.popitem(last=False)
        return now if ok else None

    def forgive(self, address: str, stamp: float) -> None:
        """Take back the event counted at ``stamp`` (a logon that succeeded)."""
        q = self.seen.get(address)
        if q is not None:
            with contextlib.suppress(ValueError):
                q.remove(stamp)


# -- middleware ----------------------------------------------------------------------------------

def security_headers(app):
    async def wrapped(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)

        async def send_with_headers(event):
            if event["type"] == "http.response.start":
                names = {k.lower() for k, _ in event.get("headers", [])}
                event = {**event, "headers": [*event.get("headers", []),
                                              *((k, v) for k, v in SECURITY_HEADERS if k not in names)]}
            await send(event)

        await app(scope, receive, send_with_headers)

    return wrapped


def body_limit(app, limit: int = MAX_BODY):
    """Refuse request bodies over ``limit`` bytes (413) before anything buffers them."""
    async def wrapped(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        for k, v in scope.get("headers", []):
            if k == b"content-length" and (not v.isdigit() or int(v) > limit):
                return await Response("request too large", 413)(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            event = await receive()
            if event["type"] == "http.request":
                seen += len(event.get("body", b""))
                if seen > limit:
                    raise ValueError("request body over the limit")
            return event

        await app(scope, limited, send)

    return wrapped


# -- the console -----------------------------------------------------------------------------------

class WebConsole:
    """The state of one ``msc web`` process (sessions, the switch's edit table) and its app."""

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
            raise _Refused(401, "not logged on", ended=self.why_ended(request))
        if not self.same_certificate(request, s):
            raise _Refused(401, "not logged on")
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
            with contextlib.suppress(JournalError):
                await asyncio.to_thread(record, self.settings, [entry])
        log.info("web.session_ended", console=s.console, why=why)

    # -- pages and state -------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    async def state(self, request: Request) -> Response:
        s = self.session_of(request)
        if s is None or s.ended:
            s = self.new_session(_address(request))
        body = {"csrf": request.scope["csrftoken"](), "switch": self.settings.config.switch.name,
                "banner": self.settings.config.switch.banner, "acknowledged": s.banner is not None,
                "console": s.console, "user": s.user, "ori": s.ori, "mnemonic": s.mnemonic,
                "header": self.web.header or "", "idle_s": self.idle_s, "max_s": self.max_s,
                "consoles": list(CONSOLES)}
        return self.set_cookie(JSONResponse(body), s)

    async def banner(self, request: Request) -> Response:
        if self.banner_limiter.allow(_address(request)) is None:
            log.warning("web.banner_rate_limited")
            return JSONResponse({"error": "too many requests from this address; wait a minute"}, 429)
        s = self.session_of(request)
        if s is None:
            s = self.new_session(_address(request))
        s.banner = self.settings.config.switch.banner
        return self.set_cookie(JSONResponse({"ok": True}), s)

    # -- logon -----------------------------------------------------------------------------------

    async def logon(self, request: Request) -> Response:
        s = self.session_of(request)
        if s is None or s.banner is None:
            return JSONResponse({"error": "acknowledge the system-use notification first"}, 409)
        if s.console is not None or s.busy:
            return JSONResponse({"error": "already logged on"}, 409)
        client = _address(request)
        stamp = self.limiter.allow(client)
        if stamp is None:
            log.warning("web.logon_rate_limited")
            return JSONResponse({"error": "too many failed logons from this address; wait a minute"}, 429)
        resp = await self._logon(request, s)
        if resp.status_code == 200 or resp.status_code in (409, 503):
            # Only failures count: a logon that succeeded, or one never checked (the notification
            # changed, msc unreachable), is taken back.
            self.limiter.forgive(client, stamp)
        return resp

    async def _logon(self, request: Request, s: WebSession) -> Response:
        body = await _json(request)
        console = body.get("console", "operator")
        user = str(body.get("user", "")).strip().upper()
        password = str(body.get("password", ""))
        otp = str(body.get("otp", "")).strip()
        if console not in CONSOLES:
            return JSONResponse({"error": "unknown console"}, 400)
        if grammar.USER_ID_RE.match(user) is None:
            return JSONResponse({"error": "a user ID is 6 letters or digits", "field": "user"}, 400)
        if _PASSWORD.match(password) is None:
            return JSONResponse({"error": "a password is 1-256 printable characters", "field": "password"}, 400)
        if otp and _OTP.match(otp) is None:
            return JSONResponse({"error": "a one-time password is 6 digits", "field": "otp"}, 400)
        s.busy = True
        try:
            if console == "operator":
                header = str(body.get("header", "") or self.web.header or "").strip().upper()
                if re.fullmatch(grammar.HEADER, header) is None:
                    return JSONResponse({"error": "a station or pool is 4-10 letters or digits", "field": "header"}, 400)
                return await self._operator_logon(request, s, user, password, otp, header)
            return await self._console_logon(request, s, console, user, password, otp)
        finally:
            s.busy = False

    async def _console_logon(self, request: Request, s: WebSession, console: str, user: str, password: str,
                             otp: str) -> Response:
        attempt, entries = await asyncio.to_thread(
            identity.authenticate, self.settings, user, password, otp or None, roles=CONSOLES[console],
            op=f"{console} console", peer="WEB")
        try:
            await asyncio.to_thread(record, self.settings, entries)
        except JournalError:
            log.error("web.logon_not_journaled")
            return JSONResponse({"error": "the journal cannot record the logon: refused (fail closed)"}, 503)
        if not attempt.ok:
            return JSONResponse({"error": "LOGON REFUSED"}, 403)
        acct = self.directory.users.get(attempt.user_id)
        self.rotate(s)
        now = time.monotonic()
        s.console, s.user, s.ori = console, attempt.user_id, acct.ori if acct else None
        s.cert_cn = verified_cn(request.scope)
        s.logon_at = s.last_activity = now
        log.info("web.logon", console=console)
        return self.set_cookie(JSONResponse({"ok": True, "console": console, "user": s.user}), s)

    def switch_address(self) -> tuple[str, int]:
        from msc.config.validate import parse_hostport

        host, port = parse_hostport(self.listener.bind)
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        return host, port

    async def _operator_logon(self, request: Request, s: WebSession, user: str, password: str, otp: str,
                              header: str) -> Response:
        from msc.config.tls import client_ssl_context

        host, port = self.switch_address()
        web_tls = self.web.switch_tls
        ctx = client_ssl_context(self.settings, web_tls) if self.listener.tls is not None and web_tls else None
        link = SwitchLink(on_output=lambda osn, p: self._output(s, osn, p), on_sys=lambda t: self._sys(s, t),
                          on_closed=lambda why: asyncio.get_running_loop().create_task(self.end(s, why)),
                          max_frame=self.listener.max_frame)
        client = (request.client.host, request.client.port) if request.client else ("0.0.0.0", 0)
        server = self.server_address or ("127.0.0.1", 0)
        presented = cert_cn = verified_cn(request.scope)  # None unless it verified against [web] client_ca
        if cert_cn is not None and not cn_sendable(cert_cn):
            # No station can be bound to it through a relay: the logon goes on as without a
            # certificate (an address-bound station or pool still admits the browser).
            log.warning("web.client_cert_cn_not_passed", reason="not 1-64 printable ASCII characters")
            cert_cn = None
        try:
            browser, here = _plain_ip(client), _plain_ip(server)
            if ipaddress.ip_address(browser[0]).version != ipaddress.ip_address(here[0]).version:
                # A dual-stack bind (``[::]``) reached over IPv4: the header names one family;
                # where the browser came in is this server's business, not the switch's.
                here = ("0.0.0.0" if ipaddress.ip_address(browser[0]).version == 4 else "::", here[1])
            await link.connect(host, port, client=browser, server=here, client_cn=cert_cn,
                               ssl=ctx, server_hostname=web_tls.server_name if web_tls else None)
            banner = await link.wait_banner()
            if banner != s.banner:
                # The switch now says something else: the person acknowledges that first (AC-8).
                await link.close()
                s.banner = None
                return JSONResponse({"error": "the system-use notification changed: read and acknowledge it",
                                     "banner": banner}, 409)
            link.ack_banner()
            f = await link.request(f"{header}.LOGON.{user}.{otp or '-'}.{password}")
        except (TimeoutError, OSError, LinkClosed):
            await link.close()
            log.warning("web.switch_unreachable")
            return JSONResponse({"error": "msc is not reachable; try again shortly"}, 503)
        if f.type != framing.ACK:
            await link.close()
            return JSONResponse({"error": f.payload.decode("ascii", "replace")}, 403)
        pairs = parse_pairs(f.payload)
        acct = self.directory.users.get(pairs.get("USR", user))
        self.rotate(s)
        now = time.monotonic()
        s.console, s.user, s.link = "operator", pairs.get("USR", user), link
        s.cert_cn = presented
        s.mnemonic, s.ori = pairs.get("MNE", header[:4]), acct.ori if acct else None
        s.logon_at = s.last_activity = now
        log.info("web.logon", console="operator")
        return self.set_cookie(JSONResponse({"ok": True, "console": "operator", "user": s.user,
                                             "mnemonic": s.mnemonic}), s)

    async def logoff(self, request: Request) -> Response:
        s = self.session_of(request)
        if s is not None:
            await self.end(s, "LOGOFF", logoff=True)
        resp = JSONResponse({"ok": True})
        resp.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return resp

    async def activity(self, request: Request) -> Response:
        self.authed(request)
        return JSONResponse({"ok": True})

    # -- operator --------------------------------------------------------------------------------

    def _output(self, s: WebSession, osn: int, payload: bytes) -> None:
        for o in s.outputs:
            if o["osn"] == osn:  # delivered again (at-least-once): already shown or about to be
                if o["acked"] and s.link is not None:
                    s.link.ack(osn)
                return
        item = {"type": "output", "osn": osn, "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "acked": False, **classify(payload, s.mnemonic or "", frozenset(s.requests))}
        # A hit (or hit confirmation request) stays raised on every page of the session until the
        # person acknowledges it (Alt+H): not the same thing as "shown and acknowledged to msc".
        item["alert_open"] = item["alert"] is not None
        if item["ref"] in s.requests:
            s.requests[item["ref"]]["answers"] += 1
        s.outputs.append(item)
        self._push(s, item)

    def _sys(self, s: WebSession, text: str) -> None:
        if text.startswith("LOGOFF."):
            asyncio.get_running_loop().create_task(self.end(s, text[len("LOGOFF."):]))
        else:
            self._push(s, {"type": "sys", "text": text})

    def _push(self, s: WebSession, item: dict) -> None:
        for ws in list(s.sockets):
            asyncio.get_running_loop().create_task(_send(ws, item))

    async def forms(self, request: Request) -> Response:
        self.authed(request, "operator")
        return JSONResponse({"forms": forms.form_specs(self.directory, self.prohibited)})

    async def check(self, request: Request) -> Response:
        s = self.authed(request, "operator")
        body = await _json(request)
        return JSONResponse(forms.check(self.directory, self.prohibited, s.mnemonic or "XXXX", str(body.get("text", ""))))

    async def send(self, request: Request) -> Response:
        s = self.authed(request, "operator")
        body = await _json(request)
        text = str(body.get("text", "")).replace("\r\n", "\n").replace("\n", "\r\n").strip()
        if not text or not text.isascii():
            return JSONResponse({"error": "E102 only ASCII text can be sent"}, 400)
        if s.link is None:
            return JSONResponse({"error": "not connected to msc"}, 409)
        mke = text.split(".", 1)[0].strip().upper()
        if mke in SESSION_KEYS:
            # The page logs on and off itself; a password is never typed into a message here (it
            # would be shown in the sent list and kept in this process's memory).
            return JSONResponse({"error": f"{mke} is not sent from the web console (log on/off with its buttons; "
                                          "change your password with the Password form, Alt+W)"}, 400)
        ref = s.next_ref()
        s.requests[ref] = {"ref": ref, "mke": mke, "text": text, "status": "sending", "code": None, "reason": None,
                           "answers": 0, "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        while len(s.requests) > MAX_REQUESTS:
            s.requests.popitem(last=False)
        try:
            f = await s.link.request(f"{s.mnemonic}{ref}.{text}")
        except (TimeoutError, LinkClosed):
            s.requests[ref]["status"] = "unknown"
            return JSONResponse({"error": "the connection to msc ended before it answered", "ref": ref}, 503)
        req = s.requests[ref]
        if f.type == framing.ACK:
            req["status"] = "accepted"
        else:
            code, _, reason = f.payload.decode("ascii", "replace").partition(" ")
            req.update(status="refused", code=code, reason=reason)
        self._push(s, {"type": "request", **req})
        return JSONResponse(req)

    async def password(self, request: Request) -> Response:
        """The operator's own password change (CJIS IA-5): ``PWD.OLD.NEW`` sent to the switch on
        the session's own connection — the switch checks the old password (a wrong one counts
        toward the lockout, ``E202``), the password rules (``E108`` naming the rule) and journals
        ``PASSWORD CHANGED`` with both passwords redacted. Neither is kept here, shown in the sent
        list, or logged; the answer is the switch's own."""
        s = self.authed(request, "operator")
        body = await _json(request)
        old, new, repeat = (str(body.get(k, "")) for k in ("old", "new", "repeat"))
        if not (_PASSWORD.match(old) and _PASSWORD.match(new)):
            return JSONResponse({"error": "a password is 1 to 256 printable characters"}, 400)
        if new != repeat:
            return JSONResponse({"error": "the new password and its repetition differ"}, 400)
        if s.link is None:
            return JSONResponse({"error": "not connected to msc"}, 409)
        try:
            f = await s.link.request(f"{s.mnemonic}{s.next_ref()}.PWD.{old}.{new}")
        except (TimeoutError, LinkClosed):
            return JSONResponse({"error": "the connection to msc ended before it answered"}, 503)
        if f.type == framing.ACK:
            return JSONResponse({"ok": True})
        code, _, reason = f.payload.decode("ascii", "replace").partition(" ")
        return JSONResponse({"error": reason, "code": code}, 403 if code == "E202" else 400)

    async def inbox(self, ws: WebSocket) -> None:
        """The session's WebSocket: for an operator the inbox (outputs, requests, hit alerts); for
        every console the end of the session (``{"type": "ended", "why"}``) the moment the server
        ends it (idle logoff, session maximum, station or user disabled), so no page keeps showing
        CJI after its session ended."""
        s = self.session_of(ws)
        origin = ws.headers.get("origin", "")
        host = ws.headers.get("host", "")
        if origin != f"https://{host}":
            await ws.close(code=4401)
            return
        if s is None or s.console is None or s.ended or not self.same_certificate(ws, s):
            sid = ws.cookies.get(SESSION_COOKIE)
            if sid and sid in self.ended_why:  # tell the page why, then refuse
                await ws.accept()
                await _send(ws, {"type": "ended", "why": self.ended_why[sid]})
            await ws.close(code=4401)
            return
        await ws.accept()
        s.sockets.add(ws)
        try:
            await ws.send_json({"type": "hello", "mnemonic": s.mnemonic, "user": s.user,
                                "requests": list(s.requests.values()), "outputs": list(s.outputs)})
            while True:
                msg = await ws.receive_json()
                kind = msg.get("type") if isinstance(msg, dict) else None
                if kind == "shown":
                    self._shown(s, msg.get("osn"))
                elif kind == "alert_seen":
                    s.last_activity = time.monotonic()
                    self._alert_seen(s, msg.get("osn"))
                elif kind == "activity":
                    s.last_activity = time.monotonic()
        except (WebSocketDisconnect, ValueError, KeyError, RuntimeError):
            pass
        finally:
            s.sockets.discard(ws)

    def _shown(self, s: WebSession, osn) -> None:
        if not isinstance(osn, int):
            return
        for o in s.outputs:
            if o["osn"] == osn and not o["acked"]:
                o["acked"] = True
                if s.link is not None:
                    s.link.ack(osn)  # delivered: the page has shown it (PROTOCOL.md §5)
                return

    def _alert_seen(self, s: WebSession, osn) -> None:
        """The person acknowledged the hit alert of output ``osn`` (Alt+H) on one page: it is
        lowered on every page of the session (and stays lowered after a reload)."""
        if not isinstance(osn, int):
            return
        for o in s.outputs:
            if o["osn"] == osn and o.get("alert_open"):
                o["alert_open"] = False
                log.info("web.hit_acknowledged", alert=o["alert"])
                self._push(s, {"type": "alert_seen", "osn": osn})
                return

    # -- investigator ------------------------------------------------------------------------------

    def _query(self, body) -> tuple[str, Query]:
        try:
            return search_query(body)
        except FilterError as exc:
            raise _Refused(400, exc.message, field=exc.field) from None

    async def journal_search(self, request: Request) -> Response:
        s = self.authed(request, "investigator")
        body = await _json(request)
        case, q = self._query(body)
        try:
            records = await asyncio.to_thread(investigate.search_records, self.settings, s.user, case, q, fmt="web")
        except JournalError as exc:
            return JSONResponse({"error": f"the search could not be audited, nothing is shown: {exc}"}, 503)
        from msc.journal.export import record_json

        out = []
        for r in records:
            d = record_json(r)
            d["text"] = investigate.printable(r.text)
            out.append(d)
        header = investigate.report_header(self.settings, case, s.user, q, len(out))
        return JSONResponse({"header": header, "records": out, "filters": q.describe()})

    async def journal_check(self, request: Request) -> Response:
        """The search form checked without searching (nothing is read, nothing audited): the page
        asks before an export, whose answer is a download rather than something it can show."""
        self.authed(request, "investigator")
        self._query(await _json(request))
        return JSONResponse({"ok": True})

    async def journal_export(self, request: Request) -> Response:
        s = self.authed(request, "investigator")
        form = await request.form()
        body = {k: v for k, v in form.items() if k != "csrftoken"}
        body["tokens"] = str(body.get("tokens", ""))
        case, q = self._query(body)
        tmp = self.settings.data_dir / "web-exports"
        tmp.mkdir(mode=0o700, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="export-", suffix=".zip", dir=tmp)
        import os

        os.close(fd)
        path = Path(name)
        path.unlink()
        try:
            done = await asyncio.to_thread(investigate.export_bundle, self.settings, s.user, case, q, path,
                                           audited_out="web console download")
        except (JournalError, ValueError) as exc:
            path.unlink(missing_ok=True)
            return JSONResponse({"error": f"export refused: {exc}"}, 503)
        safe = re.sub(r"[^A-Za-z0-9_-]", "_", case)[:32]
        log.info("web.export", records=done.records)
        return FileResponse(path, media_type="application/zip", filename=f"msc-export-{safe}.zip",
                            headers={"x-msc-fingerprint": done.fingerprint},
                            background=BackgroundTask(path.unlink, missing_ok=True))

    async def journal_verify(self, request: Request) -> Response:
        s = self.authed(request, "investigator")
        res, audited = await asyncio.to_thread(investigate.verify_journal, self.settings, s.user)
        return JSONResponse({"ok": res.ok, "records": res.records, "checkpoints": res.checkpoints,
                             "tree_size": res.tree_size, "first_bad": res.first_bad, "reason": res.reason,
                             "seconds": round(res.seconds, 2), "audited": audited})

    # -- administrator -----------------------------------------------------------------------------

    async def stations(self, request: Request) -> Response:
        self.authed(request, "admin")
        return JSONResponse({"stations": await asyncio.to_thread(admin_actions.station_rows, self.settings)})

    async def station(self, request: Request) -> Response:
        s = self.authed(request, "admin")
        body = await _json(request)
        action = body.get("action")
        if action not in ("disable", "enable"):
            raise _Refused(400, "action is disable or enable")
        try:
            live = await asyncio.to_thread(admin_actions.set_station_status, self.settings, s.user,
                                           str(body.get("mnemonic", "")), disabled=action == "disable")
        except admin_actions.ActionRefused as exc:
            raise _Refused(400, str(exc)) from None
        except JournalError as exc:
            raise _Refused(503, f"not journaled: {exc}") from None
        return JSONResponse({"ok": True, "live": live})

    async def users(self, request: Request) -> Response:
        self.authed(request, "admin")
        doc = await asyncio.to_thread(admin_actions.user_rows, self._reloaded())
        doc["agencies"] = [{"ori": a.ori, "name": a.name} for a in self.settings.config.agency]
        doc["roles"] = list(admin_actions.ROLES)
        return JSONResponse(doc)

    def _reloaded(self) -> Settings:
        """users.toml as it is now (the switch, the CLI and this console all change it)."""
        from msc.config.load import load

        try:
            self.settings = load(self.settings.config_path)
            self.directory = Directory(self.settings)
        except Exception:
            log.warning("web.reload_failed")
        return self.settings

    async def user_add(self, request: Request) -> Response:
        s = self.authed(request, "admin")
        b = await _json(request)
        try:
            dob = dt.date.fromisoformat(b["dob"]) if b.get("dob") else None
            cert = dt.date.fromisoformat(b["certified_until"]) if b.get("certified_until") else None
        except ValueError:
            raise _Refused(400, "dates are YYYY-MM-DD") from None
        if str(b.get("password", "")) != str(b.get("repeat", "")):
            raise _Refused(400, "the passwords differ", field="repeat")
        try:
            added = await asyncio.to_thread(
                admin_actions.add_user, self._reloaded(), s.user, uid=str(b.get("id", "")), name=str(b.get("name", "")),
                ori=str(b.get("ori", "")), role=str(b.get("role", "")), password=str(b.get("password", "")), dob=dob,
                certified_until=cert, totp=bool(b.get("totp")))
        except admin_actions.ActionRefused as exc:
            raise _Refused(400, str(exc)) from None
        except JournalError as exc:
            raise _Refused(503, f"not journaled: {exc}") from None
        self._reloaded()
        out = {"ok": True, "id": added.user_id}
        if added.totp_uri:
            import segno

            out.update(totp_uri=added.totp_uri, totp_secret=added.totp_secret,
                       qr=segno.make(added.totp_uri, error="m").svg_data_uri(scale=5, border=2))
        return JSONResponse(out)

    async def user_status(self, request: Request) -> Response:
        s = self.authed(request, "admin")
        b = await _json(request)
        uid, action = str(b.get("id", "")).upper(), b.get("action")
        try:
            if action == "unlock":
                await asyncio.to_thread(admin_actions.unlock_user, self.settings, s.user, uid)
            elif action in ("disable", "enable"):
                await asyncio.to_thread(admin_actions.set_user_status, self._reloaded(), s.user, uid,
                                        disabled=action == "disable")
            else:
                raise _Refused(400, "action is disable, enable or unlock")
        except admin_actions.ActionRefused as exc:
            raise _Refused(400, str(exc)) from None
        except JournalError as exc:
            raise _Refused(503, f"not journaled: {exc}") from None
        self._reloaded()
        return JSONResponse({"ok": True})

    async def report(self, request: Request) -> Response:
        s = self.authed(request, "admin")
        kind = request.path_params["kind"]
        from msc.ops import reports

        now = time.time()
        if kind == "availability":
            from msc.web.charts import availability_svg, monthly

            running = await asyncio.to_thread(_daemon_running, self.settings)
            from msc.storage.backends import Backends

            sources = Backends(self.settings)
            doc = await asyncio.to_thread(reports.availability, self.settings, now, running=running, sources=sources)
            months = await asyncio.to_thread(monthly, self.settings, now, running)
            return JSONResponse({"doc": doc, "text": reports.render(kind, doc), "months": months,
                                 "chart": availability_svg(months)})
        if kind in ("mnemonics", "users"):
            from msc.storage.backends import Backends

            fn = reports.mnemonics if kind == "mnemonics" else reports.users
            settings = self._reloaded()
            doc = await asyncio.to_thread(fn, settings, now, sources=Backends(settings))
            return JSONResponse({"doc": doc, "text": reports.render(kind, doc)})  # the CLI's report
        if kind == "misuse" and request.method == "POST":
            b = await _json(request)
            from msc.journal.search import parse_time

            try:
                start = parse_time(b["from"]) / 1e6 if b.get("from") else now - 30 * 86400
                end = parse_time(b["to"]) / 1e6 if b.get("to") else now
            except ValueError as exc:
                raise _Refused(400, str(exc)) from None
            try:
                doc = await asyncio.to_thread(investigate.misuse_report, self.settings, s.user, start, end)
            except JournalError as exc:
                raise _Refused(503, f"the report could not be audited, nothing is shown: {exc}") from None
            return JSONResponse({"doc": doc, "text": reports.render("misuse", doc)})
        raise _Refused(404, "no such report")

    # -- the application -------------------------------------------------------------------------

    def app(self):
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
            Route("/api/journal/search", self.journal_search, methods=["POST"]),
            Route("/api/journal/check", self.journal_check, methods=["POST"]),
            Route("/api/journal/export", self.journal_export, methods=["POST"]),
            Route("/api/journal/verify", self.journal_verify, methods=["POST"]),
            Route("/api/admin/stations", self.stations), Route("/api/admin/station", self.station, methods=["POST"]),
            Route("/api/admin/users", self.users), Route("/api/admin/user", self.user_add, methods=["POST"]),
            Route("/api/admin/user/status", self.user_status, methods=["POST"]),
            Route("/api/admin/report/{kind}", self.report, methods=["GET", "POST"]),
        ]
        @contextlib.asynccontextmanager
        async def lifespan(_app):
            await self.startup()
            try:
                yield
            finally:
                await self.shutdown()

        app = Starlette(routes=routes, exception_handlers={_Refused: _refused}, lifespan=lifespan)
        protected = asgi_csrf(app, signing_secret=secrets.token_hex(32), cookie_name=CSRF_COOKIE,
                              cookie_secure=True, cookie_samesite="Strict",
                              always_protect={"/api/logon", "/api/banner"})
        return security_headers(body_limit(protected))


class _Refused(Exception):
    def __init__(self, status: int, message: str, *, field: str | None = None, ended: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field, self.ended = status, message, field, ended


async def _refused(request: Request, exc: _Refused) -> Response:
    return JSONResponse({"error": exc.message, **({"field": exc.field} if exc.field else {}),
                         **({"ended": exc.ended} if exc.ended else {})}, exc.status)


async def _json(request: Request) -> dict:
    try:
        body = json.loads(await request.body() or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise _Refused(400, "the request is not JSON") from None
    if not isinstance(body, dict):
        raise _Refused(400, "the request is not a JSON object")
    return body


async def _send(ws: WebSocket, item: dict) -> None:
    with contextlib.suppress(Exception):
        await ws.send_json(item)


def _address(request) -> str:
    """The browser's own address (forwarded-for headers are never trusted)."""
    return request.client.host if request.client else "0.0.0.0"


def _plain_ip(addr: tuple[str, int]) -> tuple[str, int]:
    """An IPv4-mapped IPv6 address as IPv4 (the PROXY header names one family)."""
    try:
        ip = ipaddress.ip_address(addr[0])
    except ValueError:
        return ("0.0.0.0", 0)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (str(ip), int(addr[1]))


def _daemon_running(settings: Settings) -> bool:
    try:
        control(settings, {"op": "ping"}, timeout=2.0)
        return True
    except DaemonUnavailable:
        return False
