"""One outage, one warning: what a periodic task or a scrape says when its storage is away.

A look repeated every few seconds (the user directory's every 2 s, the queues' snapshot every
0.5 s, a read-back retried every second) or at every ``/metrics`` scrape meets a database that is
away again and again; logging each failure made one line per tick — at error, with a traceback,
for the logon counts at every scrape (newcomer9 F3). The lease keeper's ``lease.unavailable``
set the pattern this generalises:

- the first failure after success (or since the start) is logged once, ``event`` at warning
  (or the caller's ``level``) with its reason (``error``, or the caller's ``field``) and the caller's context, no traceback;
- later failures of the same outage say nothing (whatever their reason: a stopped server is
  "shutting down", then "connection refused", then "starting up");
- the first success after it is logged once at info (``recovered``, with ``was``: the first
  failure's reason); the next failure is a new outage and is said again;
- an outage that began with a failed *write* is ended only by a write that succeeds: on SQLite a
  ``state.db`` held by another process's transaction still lets reads through (WAL), and each
  read that worked ended the outage the next write began again — two warning/recovery pairs for
  one 40-s lock (the web console's routes; ``failed(write=True)``, ``ok(write=False)``).

An unexpected error (not an outage: a fault of msc) is logged at error with its traceback, also
once until a success — never at every tick. Pure: importable from every msc package.
"""

from __future__ import annotations

from typing import Any

import structlog

from msc.reasons import explain


class Outage:
    """The state of one repeated call (one per store and caller): :meth:`failed` at each
    failure, :meth:`ok` at each success."""

    def __init__(self, event: str, recovered: str, *, logger: Any = None, field: str = "error",
                 counted: str | None = None, level: str = "warning", **context: Any) -> None:
        self.event = event
        #: The level the start of an outage is said at: ``warning``, or ``error`` for a line that
        #: was an error before it was said once per outage (``web.logon_not_journaled``: a logon
        #: refused because the journal could not record it).
        self.level = level
        self.recovered = recovered
        self.field = field  # the reason's key in the log line
        #: With ``counted``, the recovery line says under that key how many calls failed in the
        #: outage, the first included (``refused``: the journal's commits; ``late``: calls that
        #: ended after their callers stopped waiting).
        self.counted = counted
        self.failures = 0
        self.log = logger if logger is not None else structlog.get_logger("msc")
        self.context = context
        #: The reason of the failure that began the current outage; None while the calls succeed.
        self.reason: str | None = None
        #: Whether the failure that began the current outage was a write's: then a read's success
        #: does not end it (``ok(write=False)``).
        self.began_by_write = False

    @property
    def down(self) -> bool:
        return self.reason is not None

    def failed(self, exc: BaseException | str, *, unexpected: bool = False, write: bool = False,
               **extra: Any) -> bool:
        """A call failed (``exc``: the exception or a reason already said in words). Logs when it
        begins an outage, with ``extra`` (what this call was: a session's peer and message key,
        say); True then. ``unexpected``: a fault of msc, not the storage being away — said at
        error with its traceback. ``write``: the call changes the storage (a read's success will
        not end an outage a write began)."""
        if self.reason is not None:
            self.failures += 1
            return False
        self.failures = 1
        self.began_by_write = write
        self.reason = exc if isinstance(exc, str) else explain(exc)
        if unexpected:
            self.log.error(self.event, exc_info=exc if isinstance(exc, BaseException) else None,
                           **{self.field: self.reason}, **extra, **self.context)
        else:
            getattr(self.log, self.level)(self.event, **{self.field: self.reason}, **extra, **self.context)
        return True

    def ok(self, *, write: bool = True, **extra: Any) -> bool:
        """A call succeeded: ends an outage (logged at info, with ``extra``: what the outage
        cost, say); True when one ended. ``write=False``: the call only read — it ends an outage
        a read began, not one a write began (the storage may still refuse writes)."""
        if self.reason is None or (self.began_by_write and not write):
            return False
        was, self.reason = self.reason, None
        if self.counted is not None:
            extra[self.counted] = self.failures
        self.log.info(self.recovered, was=was, **extra, **self.context)
        return True
