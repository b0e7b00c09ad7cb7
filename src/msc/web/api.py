"""What every route of the web console shares: a refusal answered as JSON (:class:`Refused`), the
request's JSON body, a push on a WebSocket, the browser's own address, the password's form.
"""

from __future__ import annotations

import contextlib
import json
import re

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket

PASSWORD_RE = re.compile(r"[ -~]{1,256}\Z")


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
