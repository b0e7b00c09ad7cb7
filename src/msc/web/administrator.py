"""The administrator's console (docs/WEB.md "Administrator"): stations enabled and disabled, users
added, disabled, enabled and unlocked, the reports — each journaled by ``msc.actions`` under the
person logged on. A part of :class:`msc.web.app.WebConsole`. The storage away (PostgreSQL stopped,
state.db locked …) is not caught here: the app's handler answers it 503 (msc.web.api.STORAGE_AWAY).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from msc.actions import directory as admin_actions
from msc.actions import investigate
from msc.actions.journaling import DaemonUnavailable, control
from msc.config.load import Settings
from msc.journal.records import JournalError
from msc.mnemonics.directory import Directory
from msc.web.api import Refused, json_body
from msc.web.parts import ConsoleParts

log = structlog.get_logger("msc.web")


class AdministratorRoutes(ConsoleParts):
    """Administrator routes of :class:`msc.web.app.WebConsole` (see the module docstring)."""

    async def stations(self, request: Request) -> Response:
        self.authed(request, "admin")
        return JSONResponse({"stations": await asyncio.to_thread(admin_actions.station_rows, self.settings)})

    async def station(self, request: Request) -> Response:
        s = self.authed(request, "admin")
        body = await json_body(request)
        action = body.get("action")
        if action not in ("disable", "enable"):
            raise Refused(400, "action is disable or enable")
        try:
            live = await asyncio.to_thread(admin_actions.set_station_status, self.settings, s.who,
                                           str(body.get("mnemonic", "")), disabled=action == "disable")
        except admin_actions.ActionUnavailable:
            raise  # the storage away: 503 (msc.web.api.STORAGE_AWAY), not a refusal of the request
        except admin_actions.ActionRefused as exc:
            raise Refused(400, str(exc)) from None
        except JournalError as exc:
            raise Refused(503, f"not journaled: {exc}") from None
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
        b = await json_body(request)
        try:
            dob = dt.date.fromisoformat(b["dob"]) if b.get("dob") else None
            cert = dt.date.fromisoformat(b["certified_until"]) if b.get("certified_until") else None
        except ValueError:
            raise Refused(400, "dates are YYYY-MM-DD") from None
        if str(b.get("password", "")) != str(b.get("repeat", "")):
            raise Refused(400, "the passwords differ", field="repeat")
        try:
            added = await asyncio.to_thread(
                admin_actions.add_user, self._reloaded(), s.who, uid=str(b.get("id", "")), name=str(b.get("name", "")),
                ori=str(b.get("ori", "")), role=str(b.get("role", "")), password=str(b.get("password", "")), dob=dob,
                certified_until=cert, totp=bool(b.get("totp")))
        except admin_actions.ActionUnavailable:
            raise  # the storage away: 503 (msc.web.api.STORAGE_AWAY), not a refusal of the request
        except admin_actions.ActionRefused as exc:
            raise Refused(400, str(exc)) from None
        except JournalError as exc:
            raise Refused(503, f"not journaled: {exc}") from None
        self._reloaded()
        out = {"ok": True, "id": added.user_id}
        if added.totp_uri:
            import segno

            out.update(totp_uri=added.totp_uri, totp_secret=added.totp_secret,
                       qr=segno.make(added.totp_uri, error="m").svg_data_uri(scale=5, border=2))
        return JSONResponse(out)

    async def user_status(self, request: Request) -> Response:
        s = self.authed(request, "admin")
        b = await json_body(request)
        uid, action = str(b.get("id", "")).upper(), b.get("action")
        try:
            if action == "unlock":
                await asyncio.to_thread(admin_actions.unlock_user, self.settings, s.who, uid)
            elif action in ("disable", "enable"):
                await asyncio.to_thread(admin_actions.set_user_status, self._reloaded(), s.who, uid,
                                        disabled=action == "disable")
            else:
                raise Refused(400, "action is disable, enable or unlock")
        except admin_actions.ActionUnavailable:
            raise  # the storage away: 503 (msc.web.api.STORAGE_AWAY), not a refusal of the request
        except admin_actions.ActionRefused as exc:
            raise Refused(400, str(exc)) from None
        except JournalError as exc:
            raise Refused(503, f"not journaled: {exc}") from None
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
            b = await json_body(request)
            from msc.journal.search import parse_time

            try:
                start = parse_time(b["from"]) / 1e6 if b.get("from") else now - 30 * 86400
                end = parse_time(b["to"]) / 1e6 if b.get("to") else now
            except ValueError as exc:
                raise Refused(400, str(exc)) from None
            try:
                doc = await asyncio.to_thread(investigate.misuse_report, self.settings, s.who, start, end)
            except JournalError as exc:
                raise Refused(503, f"the report could not be audited, nothing is shown: {exc}") from None
            return JSONResponse({"doc": doc, "text": reports.render("misuse", doc)})
        raise Refused(404, "no such report")


def _daemon_running(settings: Settings) -> bool:
    try:
        control(settings, {"op": "ping"}, timeout=2.0)
        return True
    except DaemonUnavailable:
        return False
