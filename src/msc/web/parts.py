"""What the web console's parts share: the attributes and methods :class:`msc.web.app.WebConsole`
defines, declared once for the route classes it is made of (:mod:`msc.web.logon`,
:mod:`msc.web.operator`, :mod:`msc.web.investigator`, :mod:`msc.web.administrator`), so that the
type checker sees each where it is used (as :mod:`msc.server.parts` does for the switch).

Nothing here runs: ``WebConsole.__init__`` assigns every attribute (``msc web`` refuses a
configuration without ``[web]``, so ``web`` is always there) and defines every method.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection, Request
    from starlette.responses import Response

    from msc.config.model import ListenerSection, WebSection
    from msc.config.settings import Settings
    from msc.mnemonics.directory import Directory
    from msc.outage import Outage
    from msc.web.sessions import LogonLimiter, WebSession


class ConsoleParts:
    """The console's attributes and methods as its route classes use them (see the module docstring)."""

    settings: Settings
    web: WebSection
    directory: Directory
    prohibited: frozenset[str]
    listener: ListenerSection  # the [[listener]] operator logons are relayed to
    server_address: tuple[str, int] | None
    limiter: LogonLimiter
    ended_why: OrderedDict[str, str]
    storage: Outage  # the run-time state a console's logon and the administrator need (web.storage_unavailable)
    journal: Outage  # the journal the investigator's routes read and audit in (web.journal_unavailable)
    logon_journal: Outage  # the journal a console's logon is recorded in (web.logon_not_journaled)
    logoff_journal: Outage  # the journal a console's logoff is recorded in (web.session_end_failed)
    switch: Outage  # this machine's node an operator's logon is relayed to (web.switch_unreachable)

    def session_of(self, conn: HTTPConnection) -> WebSession | None:
        raise NotImplementedError  # msc.web.app.WebConsole.session_of

    def authed(self, request: Request, console: str | None = None) -> WebSession:
        raise NotImplementedError  # msc.web.app.WebConsole.authed

    def rotate(self, s: WebSession) -> None:
        raise NotImplementedError  # msc.web.app.WebConsole.rotate

    @staticmethod
    def set_cookie(resp: Response, s: WebSession) -> Response:
        raise NotImplementedError  # msc.web.app.WebConsole.set_cookie

    @staticmethod
    def same_certificate(conn: HTTPConnection, s: WebSession) -> bool:
        raise NotImplementedError  # msc.web.app.WebConsole.same_certificate

    async def end(self, s: WebSession, why: str, *, logoff: bool = False) -> None:
        raise NotImplementedError  # msc.web.app.WebConsole.end

    def end_later(self, s: WebSession, why: str) -> None:
        raise NotImplementedError  # msc.web.app.WebConsole.end_later

    def _output(self, s: WebSession, osn: int, payload: bytes) -> None:
        raise NotImplementedError  # msc.web.operator.OperatorRoutes._output

    def _sys(self, s: WebSession, text: str) -> None:
        raise NotImplementedError  # msc.web.operator.OperatorRoutes._sys

    def _push(self, s: WebSession, item: dict[str, Any]) -> None:
        raise NotImplementedError  # msc.web.operator.OperatorRoutes._push
