"""What every route of the web console shares: a refusal answered as JSON (:class:`Refused`), the
storage being away (:data:`STORAGE_AWAY`, answered by :func:`storage_unavailable`), the request's
JSON body, a push on a WebSocket, the browser's own address, the password's form.
"""

from __future__ import annotations

import contextlib
import html
import json
import re
import sqlite3

import asyncpg
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.websockets import WebSocket

from msc.actions.directory import ActionUnavailable
from msc.journal.records import JournalError
from msc.reasons import explain
from msc.storage.errors import STATE_ERRORS

PASSWORD_RE = re.compile(r"[ -~]{1,256}\Z")

#: Every exception that means "the storage cannot be used now" when a route of the console meets
#: it — the one list (docs/WEB.md "When the storage is away"): the run-time state's
#: (:data:`msc.storage.errors.STATE_ERRORS`: PostgreSQL's StorageUnavailable, SQLite's
#: OperationalError — ``state.db`` or a journal file locked or failing), the journal's refusal
#: (JournalError: its database away, or the standby's node, NotTheActiveNode), an administrator's
#: action refused for the storage (ActionUnavailable), and PostgreSQL's driver's own errors should
#: one get past a store's wrapping. A route that meets one is answered 503 (:func:`storage_unavailable`)
#: and said once per outage, never a 500 with "Exception in ASGI application". A route that
#: explains a JournalError in words of its own (a search not audited, an action not journaled)
#: catches it first.
STORAGE_AWAY: tuple[type[Exception], ...] = (
    *STATE_ERRORS, JournalError, ActionUnavailable,
    asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError,
)
#: Seconds a browser or script is asked to wait before trying again (``Retry-After``).
RETRY_AFTER_S = 10
UNAVAILABLE = "STORAGE UNAVAILABLE, TRY AGAIN"
UNAVAILABLE_TEXT = "msc's storage (its database) cannot be used right now, so this request was not completed."
MAYBE_DONE = "If you were changing something, check whether it was done before you repeat it."


def storage_reason(exc: BaseException) -> str:
    """Why, for the log (never for the browser): a StorageUnavailable's own line names the store
    and its servers and database without the password (``safe_dsn``); SQLite's does not name it."""
    if isinstance(exc, sqlite3.OperationalError):
        return f"SQLite: {explain(exc)}"
    if isinstance(exc, (OSError, JournalError, ActionUnavailable)):
        return " ".join(str(exc).split()) or explain(exc)
    return explain(exc)


def storage_unavailable(request: Request) -> Response:
    """The answer to a request the storage could not serve: 503 with ``Retry-After``; JSON
    (``{"error": "STORAGE UNAVAILABLE, TRY AGAIN: …"}``) for the page's own requests, a short page
    in the console's style for a browser's navigation (the export form's download). No exception
    text (it may name the database's servers); what could have been half done is said for a change."""
    # A search, a report, a verification or an export is a POST (CSRF, nothing in the URL) but
    # changes nothing except its AUDIT record; an administrator's action may have been half done.
    changing = request.method == "POST" and not request.url.path.startswith(("/api/journal/", "/api/admin/report/"))
    headers = {"retry-after": str(RETRY_AFTER_S)}
    if "text/html" not in request.headers.get("accept", ""):
        text = f"{UNAVAILABLE}: {UNAVAILABLE_TEXT}" + (f" {MAYBE_DONE}" if changing else "")
        return JSONResponse({"error": text, "unavailable": "storage"}, 503, headers=headers)
    body = "".join((
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        "<title>msc: storage unavailable</title>\n"
        '<link rel="icon" href="/static/icon.svg" type="image/svg+xml">\n'
        '<link rel="stylesheet" href="/static/app.css">\n</head>\n<body>\n'
        '<header id="top"><span id="sysname">msc</span></header>\n<main>\n'
        '<section id="unavailable-view" aria-labelledby="unavailable-title">\n'
        '<h1 id="unavailable-title">Storage unavailable</h1>\n'
        f"<p>{html.escape(UNAVAILABLE_TEXT, quote=False)} Try again in a moment.</p>\n",
        f"<p>{html.escape(MAYBE_DONE, quote=False)}</p>\n" if changing else "",
        '<p><a href="/">Back to the console</a></p>\n</section>\n</main>\n</body>\n</html>\n'))
    return HTMLResponse(body, 503, headers=headers)


class Refused(Exception):
    """A request refused: answered ``{"error": message, "field"?, "ended"?}`` with ``status``."""

    def __init__(self, status: int, message: str, *, field: str | None = None, ended: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field, self.ended = status, message, field, ended


async def refused_json(request: Request, exc: Refused) -> Response:
    return JSONResponse({"error": exc.message, **({"field": exc.field} if exc.field else {}),
                         **({"ended": exc.ended} if exc.ended else {})}, exc.status)


async def json_body(request: Request) -> dict:
    try:
        body = json.loads(await request.body() or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise Refused(400, "the request is not JSON") from None
    if not isinstance(body, dict):
        raise Refused(400, "the request is not a JSON object")
    return body


async def ws_send(ws: WebSocket, item: dict) -> None:
    with contextlib.suppress(Exception):
        await ws.send_json(item)


def client_address(request) -> str:
    """The browser's own address (forwarded-for headers are never trusted)."""
    return request.client.host if request.client else "0.0.0.0"
