"""``msc web``: serve the web console over HTTPS with uvicorn (docs/WEB.md "Deployment").

A process of its own, not a listener inside ``msc serve``: the switch's event loop and attack
surface stay as they are, a slow or hostile browser never delays switching, and the operator's
browser session is by construction an ordinary terminal session at the switch.

TLS: the same context builder as the switch's listeners (:mod:`msc.config.tls`: TLS 1.2+, AEAD
ciphers only), with ALPN ``http/1.1``. uvicorn's access log is off (a URL is not a secret here,
but nothing is logged that could be one) and forwarded-for headers are never trusted (the
browser's own address is what the switch's TAF and the logon rate limit use). The HTTP protocol
is uvicorn's h11 one with the connection's TLS facts added to each request (:mod:`msc.web.peer`):
a browser's client certificate that verified against ``[web] tls.client_ca`` is passed on to the
switch (its CN in the PROXY v2 header).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
from pathlib import Path

import structlog

from msc.config.load import Settings
from msc.config.validate import parse_hostport

log = structlog.get_logger("msc.web")


def _digest(settings: Settings, tls) -> bytes:
    """SHA-256 over the certificate and key files (to tell whether a reload renewed them)."""
    h = hashlib.sha256()
    for name in (tls.cert, tls.key):
        h.update(Path(settings.path(name)).read_bytes())
    return h.digest()


def client_verification(settings: Settings, tls) -> dict[str, object]:
    """What the live context asks of browsers' certificates: ``client_ca`` (its path and a digest
    of the file) and ``require_client_cert``. An ``SSLContext`` can add trusted CAs but never drop
    one, so a change of these is not applied by a reload: it is reported as ``restart_needed``."""
    ca = None
    if tls.client_ca:
        try:
            ca = (str(settings.path(tls.client_ca)), hashlib.sha256(Path(settings.path(tls.client_ca)).read_bytes()).hexdigest())
        except OSError:
            ca = (str(settings.path(tls.client_ca)), None)
    return {"web.tls.client_ca": ca, "web.tls.require_client_cert": bool(tls.require_client_cert)}


def serve(settings: Settings, *, ready_file: str | None = None) -> int:
    import uvicorn
    import uvloop

    from msc.config.tls import server_ssl_context
    from msc.web.app import WebConsole
    from msc.web.peer import TlsH11Protocol

    web = settings.config.web
    host, port = parse_hostport(web.bind)

    live: list = []  # the one SSLContext uvicorn serves with (its factory is called once, at start)

    def ssl_context(_config, _default):
        ctx = server_ssl_context(settings, web.tls)
        ctx.set_alpn_protocols(["http/1.1"])
        live.append(ctx)
        return ctx

    console = WebConsole(settings)
    config = uvicorn.Config(console.app(), host=host, port=port, ssl_context_factory=ssl_context, http=TlsH11Protocol,
                            ws="websockets-sansio", ws_max_size=64 * 1024, access_log=False, proxy_headers=False,
                            server_header=False, log_config=None, lifespan="on", timeout_keep_alive=5,
                            limit_concurrency=1000, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)

    def reload() -> None:
        """SIGHUP: the console's settings (WebConsole.reload), then the certificate and key —
        checked in a context of their own first (a key that does not match its certificate is
        refused and the live context left as it was), then loaded into the live context, so new
        connections get the renewed certificate and open ones keep theirs."""
        done = console.reload()
        if done is None:
            return
        new, changed, restart = done
        tls = new.config.web.tls
        try:
            server_ssl_context(new, tls)
            files = _digest(new, tls)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            log.error("web.reload_tls_failed", error=type(exc).__name__, detail=str(exc)[:200])
        else:
            if files != loaded[0]:
                for ctx in live:
                    ctx.load_cert_chain(new.path(tls.cert), new.path(tls.key))
                loaded[0] = files
                changed.append("web.tls")
        wanted = client_verification(new, tls)
        pending = [k for k, v in wanted.items() if v != verifying[k]]
        if pending:
            # A security setting: never silently left as it was (the log says what still holds).
            log.warning("web.client_certificates_need_restart", settings=pending,
                        still_served={"client_ca": bool(verifying["web.tls.client_ca"]),
                                      "require_client_cert": verifying["web.tls.require_client_cert"]})
            restart.extend(pending)
        log.info("web.reloaded", changes=changed, restart_needed=restart)

    loaded = [_digest(settings, web.tls)]  # what the live context holds: a digest, not the key
    verifying = client_verification(settings, web.tls)  # what the live context asks of browsers

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, reload)
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
