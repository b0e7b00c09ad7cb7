"""The investigator's console (docs/WEB.md "Investigator"): journal search, the form's check,
export bundles as downloads, verification — each audited by ``msc.actions.investigate`` under the
person logged on. A part of :class:`msc.web.app.WebConsole`.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from pathlib import Path

import structlog
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from msc.actions import investigate
from msc.journal.records import JournalError
from msc.journal.search import Query
from msc.web.api import Refused, json_body
from msc.web.filters import FilterError, search_query
from msc.web.parts import ConsoleParts

log = structlog.get_logger("msc.web")


class InvestigatorRoutes(ConsoleParts):
    """Investigator routes of :class:`msc.web.app.WebConsole` (see the module docstring)."""

    def _query(self, body) -> tuple[str, Query]:
        try:
            return search_query(body)
        except FilterError as exc:
            raise Refused(400, exc.message, field=exc.field) from None

    async def journal_search(self, request: Request) -> Response:
        s = self.authed(request, "investigator")
        body = await json_body(request)
        case, q = self._query(body)
        try:
            records = await asyncio.to_thread(investigate.search_records, self.settings, s.who, case, q, fmt="web")
        except JournalError as exc:
            return JSONResponse({"error": f"the search could not be audited, nothing is shown: {exc}"}, 503)
        from msc.journal.export import record_json

        out = []
        for r in records:
            d = record_json(r)
            d["text"] = investigate.printable(r.text)
            out.append(d)
        header = investigate.report_header(self.settings, case, s.who, q, len(out))
        return JSONResponse({"header": header, "records": out, "filters": q.describe()})

    async def journal_check(self, request: Request) -> Response:
        """The search form checked without searching (nothing is read, nothing audited): the page
        asks before an export, whose answer is a download rather than something it can show."""
        self.authed(request, "investigator")
        self._query(await json_body(request))
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
            done = await asyncio.to_thread(investigate.export_bundle, self.settings, s.who, case, q, path,
                                           audited_out="web console download")
        except (JournalError, ValueError) as exc:
            path.unlink(missing_ok=True)
            return JSONResponse({"error": f"export refused: {exc}"}, 503)
        except BaseException:  # the storage away (answered 503 by the app's handler): no partial bundle left
            path.unlink(missing_ok=True)
            raise
        safe = re.sub(r"[^A-Za-z0-9_-]", "_", case)[:32]
        log.info("web.export", records=done.records)
        return FileResponse(path, media_type="application/zip", filename=f"msc-export-{safe}.zip",
                            headers={"x-msc-fingerprint": done.fingerprint},
                            background=BackgroundTask(path.unlink, missing_ok=True))

    async def journal_verify(self, request: Request) -> Response:
        s = self.authed(request, "investigator")
        res, audited = await asyncio.to_thread(investigate.verify_journal, self.settings, s.who)
        return JSONResponse({"ok": res.ok, "records": res.records, "checkpoints": res.checkpoints,
                             "tree_size": res.tree_size, "first_bad": res.first_bad, "reason": res.reason,
                             "seconds": round(res.seconds, 2), "audited": audited})
