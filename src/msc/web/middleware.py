"""The web console's ASGI middleware: the security headers on every response (a strict
Content-Security-Policy, HSTS, ``nosniff``, ``no-referrer``, ``Cache-Control: no-store``: CJI
must not be cached) and the request body limit (docs/WEB.md "Security").
"""

from __future__ import annotations

from starlette.responses import Response

MAX_BODY = 256 * 1024
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
