"""The operator's console (docs/WEB.md "Operator"): the forms and their inline checks, a message
sent on the session's own relayed connection, the password change, and the inbox WebSocket
(outputs shown and acknowledged, hit alerts raised and lowered). A part of
:class:`msc.web.app.WebConsole`.
"""

from __future__ import annotations

import datetime as dt
import time

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from msc.aio import spawn
from msc.protocol import framing
from msc.protocol.redact import redact
from msc.web import forms
from msc.web.api import PASSWORD_RE, json_body, ws_send
from msc.web.inbox import classify
from msc.web.parts import ConsoleParts
from msc.web.relay import LinkClosed
from msc.web.sessions import SESSION_COOKIE, WebSession

log = structlog.get_logger("msc.web")
MAX_REQUESTS = 1000
SESSION_KEYS = frozenset(("LOGON", "LOGOFF", "BIND", "PWD"))


class OperatorRoutes(ConsoleParts):
    """Operator routes of :class:`msc.web.app.WebConsole` (see the module docstring)."""

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
            self.end_later(s, text[len("LOGOFF."):])
        else:
            self._push(s, {"type": "sys", "text": text})

    def _push(self, s: WebSession, item: dict) -> None:
        for ws in list(s.sockets):
            spawn(ws_send(ws, item), event="web.send_failed", logger=log)

    async def forms(self, request: Request) -> Response:
        self.authed(request, "operator")
        return JSONResponse({"forms": forms.form_specs(self.directory, self.prohibited)})

    async def check(self, request: Request) -> Response:
        s = self.authed(request, "operator")
        body = await json_body(request)
        return JSONResponse(forms.check(self.directory, self.prohibited, s.mnemonic or "XXXX", str(body.get("text", ""))))

    async def send(self, request: Request) -> Response:
        s = self.authed(request, "operator")
        body = await json_body(request)
        text = str(body.get("text", "")).replace("\r\n", "\n").replace("\n", "\r\n").strip()
        if not text or not text.isascii():
            return JSONResponse({"error": "E102 only ASCII text can be sent"}, 400)
        if s.link is None:
            return JSONResponse({"error": "not connected to msc"}, 409)
        mke = text.split(".", 1)[0].strip().upper()
        if mke in SESSION_KEYS or redact(text) != text:
            # The page logs on and off itself; a password is never typed into a message here (it
            # would be shown in the sent list and kept in this process's memory). Any spelling the
            # journal would redact (PROTOCOL.md §7: "logon JD1234 …", "ICS1.LOGON.…", "PASSWORD …")
            # is refused as well, and not repeated.
            what = mke if mke in SESSION_KEYS else "A logon or password change"
            return JSONResponse({"error": f"{what} is not sent from the web console (log on/off with its buttons; "
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
        body = await json_body(request)
        old, new, repeat = (str(body.get(k, "")) for k in ("old", "new", "repeat"))
        if not (PASSWORD_RE.match(old) and PASSWORD_RE.match(new)):
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
                await ws_send(ws, {"type": "ended", "why": self.ended_why[sid]})
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
