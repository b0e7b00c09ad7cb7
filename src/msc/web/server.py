"""``msc web``: serve the web console over HTTPS with uvicorn (docs/WEB.md "Deployment").

A process of its own, not a listener inside ``msc serve``: the switch's event loop and attack
surface stay as they are, a slow or hostile browser never delays switching, and the operator's
browser session is by construction an ordinary terminal session at the switch.

TLS: the same context builder as the switch's listeners (:mod:`msc.config.tls`: TLS 1.2+, AEAD
ciphers only), with ALPN ``http/1.1``. uvicorn's access log is off (a URL is not a secret here,
but nothing is logged that could be one) and forwarded-for headers are never trusted (the
browser's own address is what the switch's TAF and the logon rate limit use).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import structlog

from msc.config.load import Settings
from msc.config.validate import parse_hostport

log = structlog.get_logger("msc.web")


def serve(settings: Settings, *, ready_file: str | None = None) -> int:
    import uvicorn
    import uvloop

    from msc.config.tls import server_ssl_context
    from msc.web.app import WebConsole

    web = settings.config.web
    host, port = parse_hostport(web.bind)

    def ssl_context(_config, _default):
        ctx = server_ssl_context(settings, web.tls)
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    console = WebConsole(settings)
    config = uvicorn.Config(console.app(), host=host, port=port, ssl_context_factory=ssl_context, http="h11",
                            ws="websockets-sansio", ws_max_size=64 * 1024, access_log=False, proxy_headers=False,
                            server_header=False, log_config=None, lifespan="on", timeout_keep_alive=5,
                            limit_concurrency=1000, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if server.started:
            sock = server.servers[0].sockets[0].getsockname()
            console.server_address = (sock[0], sock[1])
            log.info("web.listening", bind=f"{sock[0]}:{sock[1]}")
            if ready_file:
                Path(ready_file).write_text(f"{sock[0]}:{sock[1]}\n")
        await task

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(main())
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    return 0 if server.started else 2
