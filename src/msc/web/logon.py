"""The web console's logon and logoff (docs/WEB.md "Logon"): the investigator's and administrator's
consoles authenticate here (``msc.actions.identity``, journaled), an operator logs on at the switch
through a relayed terminal session (``msc.web.relay``, a PROXY header naming the browser). A part
of :class:`msc.web.app.WebConsole`, which owns the sessions it rotates and ends.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from msc.actions import identity
from msc.actions.journaling import record
from msc.protocol import framing, grammar
from msc.protocol.message import parse_pairs
from msc.protocol.proxy import cn_sendable
from msc.web.api import PASSWORD_RE, RETRY_AFTER_S, STORAGE_AWAY, UNAVAILABLE, client_address, json_body, storage_reason
from msc.web.parts import ConsoleParts
from msc.web.peer import verified_cn
from msc.web.relay import LinkClosed, SwitchLink
from msc.web.sessions import CONSOLES, SESSION_COOKIE, WebSession

log = structlog.get_logger("msc.web")
NOT_A_CODE = ("That is not a one-time password (6 digits, spaces allowed; empty if your account has none): "
              "it was not checked (if it was your password, it was neither shown nor kept). "
              "Type the code your authenticator shows.")


def one_time_password(typed: object) -> str | None:
    """What was typed in the logon form's one-time password field, as the OTP of ``LOGON``
    (PROTOCOL.md §2: six digits, or ``-`` for an account without TOTP) and of the authentication
    service: ``None`` for no code (nothing typed, or ``-``); the six ASCII digits, without the
    spaces an authenticator app groups them by (``123 456``). ``ValueError`` (:data:`NOT_A_CODE`)
    for anything else, a non-string JSON value included: it is refused before any check — most
    often it is the password typed in the wrong field, which must not travel in a field msc does
    not treat as one nor count toward a lockout (CJIS IA-6; ``msc terminal`` has the same rule)."""
    try:
        return grammar.typed_otp(typed)
    except ValueError:
        raise ValueError(NOT_A_CODE) from None


class LogonRoutes(ConsoleParts):
    """Logon routes of :class:`msc.web.app.WebConsole` (see the module docstring)."""

    async def logon(self, request: Request) -> Response:
        s = self.session_of(request)
        if s is None or s.banner is None:
            return JSONResponse({"error": "acknowledge the system-use notification first"}, 409)
        if s.console is not None or s.busy:
            return JSONResponse({"error": "already logged on"}, 409)
        client = client_address(request)
        stamp = self.limiter.allow(client)
        if stamp is None:
            log.warning("web.logon_rate_limited")
            return JSONResponse({"error": "too many failed logons from this address; wait a minute"}, 429)
        resp = await self._logon(request, s)
        if resp.status_code in (200, 400, 409, 503):
            # Only failures count: a logon that succeeded, or one never checked (a field that is not
            # a user ID, password or one-time password; the notification changed; msc unreachable),
            # is taken back.
            self.limiter.forgive(client, stamp)
        return resp

    async def _logon(self, request: Request, s: WebSession) -> Response:
        body = await json_body(request)
        console = body.get("console", "operator")
        user = str(body.get("user", "")).strip().upper()
        password = str(body.get("password", ""))
        typed_otp = body.get("otp", "")
        if console not in CONSOLES:
            return JSONResponse({"error": "unknown console"}, 400)
        if grammar.USER_ID_RE.match(user) is None:
            return JSONResponse({"error": "a user ID is 6 letters or digits", "field": "user"}, 400)
        if PASSWORD_RE.match(password) is None:
            return JSONResponse({"error": "a password is 1-256 printable characters", "field": "password"}, 400)
        try:
            otp = one_time_password(typed_otp) or ""
        except ValueError:
            return JSONResponse({"error": NOT_A_CODE, "field": "otp"}, 400)
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
        roles = CONSOLES[console]
        assert roles is not None  # the investigator's or administrator's console (an operator logs on at the switch)
        try:
            attempt, entries = await asyncio.to_thread(
                identity.authenticate, self.settings, user, password, otp or None, roles=roles,
                op=f"{console} console", peer="WEB")
        except STORAGE_AWAY as exc:  # the run-time state away (PostgreSQL, or state.db locked or
            # failing — a 500 and a traceback per attempt once): nothing decided
            # once per outage, not per logon; a write (the attempt is counted toward the lockout)
            self.storage.failed(storage_reason(exc), console=console, write=True)
            return JSONResponse({"error": UNAVAILABLE}, 503, headers={"retry-after": str(RETRY_AFTER_S)})
        self.storage.ok(console=console)  # decided: the run-time state answers (again)
        try:
            await asyncio.to_thread(record, self.settings, entries)
        except STORAGE_AWAY as exc:  # JournalError, or the journal's database opened here and away
            self.logon_journal.failed(storage_reason(exc), console=console)  # once per outage, not per logon
            return JSONResponse({"error": "the journal cannot record the logon: refused (fail closed)"}, 503)
        self.logon_journal.ok(console=console)
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
                          on_closed=lambda why: self.end_later(s, why),
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
            self.switch.ok(console="operator")  # the switch answered (whatever the logon comes to)
            if banner != s.banner:
                # The switch now says something else: the person acknowledges that first (AC-8).
                await link.close()
                s.banner = None
                return JSONResponse({"error": "the system-use notification changed: read and acknowledge it",
                                     "banner": banner}, 409)
            link.ack_banner()
            f = await link.request(f"{header}.LOGON.{user}.{otp or '-'}.{password}")
        except (TimeoutError, OSError, LinkClosed) as exc:
            await link.close()
            self.switch.failed(exc, console="operator")  # once per outage, not per logon (msc.outage)
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


def _plain_ip(addr: tuple[str, int]) -> tuple[str, int]:
    """An IPv4-mapped IPv6 address as IPv4 (the PROXY header names one family)."""
    try:
        ip = ipaddress.ip_address(addr[0])
    except ValueError:
        return ("0.0.0.0", 0)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (str(ip), int(addr[1]))
