"""Connecting to PostgreSQL, and running its asyncio client for blocking callers.

The client is asyncpg (chosen by measurement: ``bench/pg_client_bench.py``, 2-4x less client CPU
per record than psycopg 3 for every method; bench/results/pg-client-20261130-125319.md). It parses libpq's URI form
of a connection string — several hosts, ``target_session_attrs=read-write`` to find the primary,
``passfile=`` — but not libpq's ``key=value`` form, so ``[storage] dsn`` is a URI
(:func:`msc.config.validate.dsn_problems`).

The password is never in msc.toml: ``password_file`` (its first line), else libpq's environment
(``PGPASSWORD``, ``PGPASSFILE``, ``~/.pgpass``), which asyncpg reads itself. Neither the
password nor the URI appears in a log line or an exception message msc writes.

:class:`Blocking` runs coroutines on an event loop of its own in a daemon thread, for the
storage interfaces that are blocking (the reader, run-time state, queues, ledger): the ``msc``
command calls them directly and the switch from worker threads, as with SQLite.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import structlog

from msc.config.secrets import configured_password
from msc.outage import Outage

if TYPE_CHECKING:
    from msc.config.settings import Settings

T = TypeVar("T")
log = structlog.get_logger("msc.storage")

#: No statement of msc's waits longer than this for the server (s): a server that stopped
#: answering surfaces as an error (E501 for the journal), never as a hang.
COMMAND_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0
#: A blocking caller (:class:`Blocking`) waits at most this long for one call of the run-time
#: state, the queues or the ledger — its connection included — and then gets an error, whatever
#: the database does (a frozen or cut-off server answers nothing, not even a reset). A logon
#: during a database outage is refused within this long (E503), never left hanging, and a
#: worker thread is never held for ever: ``msc serve``'s teardown waits for them.
CALL_TIMEOUT_S = 12.0

#: Errors that mean "the database did not do it" (or may not have): the caller re-reads the truth.
#: InternalClientError is what asyncpg raises on a connection its server died under ("cannot switch
#: to state 15; another operation is in progress", from a pool's reset): make ha-soak saw it escape
#: the run-time state as an internal error when the PostgreSQL primary was killed.
DB_ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError,
                                              asyncio.TimeoutError, ConnectionError,
                                              asyncpg.InternalClientError)


@dataclass(frozen=True)
class PgSettings:
    """Where the database is: a connection URI and, optionally, its password (kept out of repr)."""

    dsn: str
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> PgSettings:
        """``[storage]`` of a validated configuration (backend = "postgresql"). Raises ValueError
        (the message names the setting and the file) when its ``password_file`` is not usable
        (:func:`msc.config.secrets.read_password`), or, without one, when the libpq password file
        the client would read is readable by others (the client would ignore it, and the login
        fail as a wrong password); OSError when the file cannot be read."""
        st = settings.config.storage
        if st.backend != "postgresql" or not st.dsn:
            raise ValueError('[storage] backend is not "postgresql"')
        return cls(st.dsn, configured_password(settings, st.dsn, st.password_file, "[storage] password_file"))

    async def connect(self) -> asyncpg.Connection:
        """One connection (the first host of the URI that matches its target_session_attrs)."""
        kw: dict[str, Any] = {"timeout": CONNECT_TIMEOUT_S, "command_timeout": COMMAND_TIMEOUT_S}
        if self.password is not None:
            kw["password"] = self.password
        try:
            return await asyncpg.connect(self.dsn, **kw)
        except TimeoutError:  # (asyncpg's has no message: say which bound ran out)
            raise TimeoutError(f"no answer from the database within {CONNECT_TIMEOUT_S:g} s while connecting"
                               ) from None

    async def pool(self, max_size: int = 4) -> asyncpg.Pool:
        """A pool without a floor (``min_size=0``): connections are made when a call needs one.
        With a floor asyncpg redials a database that went away in the background, every 1–60 s,
        and logs each failure with a traceback on stderr (not msc's log); without one the next
        call connects by itself, within its own bound."""
        kw: dict[str, Any] = {"timeout": CONNECT_TIMEOUT_S, "command_timeout": COMMAND_TIMEOUT_S}
        if self.password is not None:
            kw["password"] = self.password
        return await asyncpg.create_pool(self.dsn, min_size=0, max_size=max_size, **kw)


def reason(exc: BaseException) -> str:
    """An error's message for a log line or an exception msc raises: its first line, at most 300
    characters (asyncpg's messages carry no password); for an error without a message (a timeout)
    what it means and its type (:func:`msc.reasons.explain`)."""
    from msc.reasons import explain

    return str(exc).splitlines()[0][:300] if str(exc).strip() else explain(exc)


class Blocking:
    """An event loop in a daemon thread, for blocking callers of asyncpg.

    :meth:`run` may be called from any thread but the loop's own; calls from several threads
    interleave on the loop (each implementation serialises what must be serialised). Every call
    is bounded (``timeout``, default ``CALL_TIMEOUT_S``): the caller's thread is given back by
    then whatever the database does, with ``TimeoutError``, and the call is cancelled on the
    loop. :meth:`abort` gives every waiting caller back at once (``ConnectionAbortedError``).
    """

    def __init__(self, name: str, *, timeout: float = CALL_TIMEOUT_S) -> None:
        self.timeout = timeout
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(self._unretrieved)
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._lock = threading.Lock()
        self._aborted: str | None = None
        # Calls that ended after their callers stopped waiting — during an outage, one per call
        # that ran out of time: the first said, the rest counted, and the next call answered says
        # how many. Under a lock of their own, reentrant: asyncio reports an unretrieved end when
        # its task is collected, in the loop's thread or in whichever thread the collector runs —
        # possibly one holding this lock already (or _lock, hence not that one).
        self._late = Outage("storage.call_ended_late", "storage.calls_answered", logger=log, counted="late")
        self._late_lock = threading.RLock()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
        """``coro`` on the loop; its result, or its exception; ``TimeoutError`` after ``timeout``
        seconds (default: this runner's); ``ConnectionAbortedError`` once :meth:`abort` ran."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("Blocking.run called on its own loop")
        with self._lock:
            if self._aborted is not None or self.loop.is_closed():
                coro.close()
                raise ConnectionAbortedError(self._aborted or "the database handle is closed")
            fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
            self._pending.add(fut)
        try:
            result = fut.result(self.timeout if timeout is None else timeout)
        except concurrent.futures.TimeoutError:  # (the builtin TimeoutError since Python 3.11)
            if fut.done() and not fut.cancelled():
                # The call's own TimeoutError (its connect's bound, a statement's), not this
                # wait's: raised as it is, saying the bound that ran out — not this one.
                raise
            fut.cancel()  # the call ends on the loop (asyncpg cancels its statement) without us
            raise TimeoutError(f"no answer from the database within {self.timeout if timeout is None else timeout:g} s"
                               ) from None
        except concurrent.futures.CancelledError:
            raise ConnectionAbortedError(self._aborted or "the call was cancelled") from None
        finally:
            with self._lock:
                self._pending.discard(fut)
        if self._late.down:  # (read without the lock: a late end missed here is seen at the next call)
            self._answered()
        return result

    def _answered(self) -> None:
        """A call was answered: the calls that ended late before it are said (and forgotten)."""
        with self._late_lock:
            self._late.ok()

    def _unretrieved(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """What asyncio would print as "Task exception was never retrieved" (with a traceback, on
        stderr): the end of a call whose caller stopped waiting — its bound passed, or
        :meth:`abort` cut its connection under it. Its caller was told already; after an abort
        nothing more is said, else one log line without a traceback — once until a call is
        answered again (:meth:`_answered` says how many ended late meanwhile)."""
        if self._aborted is not None:
            return
        exc = context.get("exception")
        why = reason(exc) if exc is not None else str(context.get("message"))
        with self._late_lock:
            self._late.failed(why)

    def abort(self, why: str) -> None:
        """Refuse every later call and give every caller now waiting back at once (their calls
        are cancelled on the loop). Does not block: for a process that must end now."""
        with self._lock:
            self._aborted = why
            pending, self._pending = list(self._pending), set()
        for fut in pending:
            fut.cancel()

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.abort("the database handle is closed")
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class OneConnection:
    """One asyncpg connection for blocking callers (the key ring, the user directory): opened on
    a :class:`Blocking` loop named ``name`` at the first :meth:`run`, its schema created then
    (``ddl`` under ``lock_key``: :func:`create_schema`), and opened again at the next call after a
    database error cut it. Not locked: its owner runs one statement sequence at a time."""

    def __init__(self, pg: PgSettings, name: str, ddl: str, lock_key: int) -> None:
        self.pg, self.name, self.ddl, self.lock_key = pg, name, ddl, lock_key
        self._runner: Blocking | None = None
        self._conn: asyncpg.Connection | None = None

    def run(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """``work(connection)`` on the loop; its result, or its exception (``DB_ERRORS`` as the
        database or the client raised them; the connection is then dropped)."""
        if self._runner is None:
            self._runner = Blocking(self.name)

        async def go() -> T:
            if self._conn is None or self._conn.is_closed():
                self._conn = None
                conn = await self.pg.connect()
                try:
                    await create_schema(conn, self.ddl, self.lock_key)
                except BaseException:
                    conn.terminate()
                    raise
                self._conn = conn
            try:
                return await work(self._conn)
            except DB_ERRORS:
                conn, self._conn = self._conn, None  # the next call reconnects
                if conn is not None:
                    conn.terminate()
                raise

        return self._runner.run(go())

    def abort(self, why: str) -> None:
        """Give a waiting call back now (``ConnectionAbortedError``), refuse later ones and cut
        the connection, without waiting for anything (a node that stepped down)."""
        runner, conn = self._runner, self._conn
        if runner is None:
            return
        runner.abort(why)
        if conn is not None and not runner.loop.is_closed():
            runner.loop.call_soon_threadsafe(conn.terminate)

    def close(self) -> None:
        """Close the connection (at most 5 s; else it is cut) and the loop. A later :meth:`run`
        opens both again."""
        runner, self._runner = self._runner, None
        conn, self._conn = self._conn, None
        if runner is None:
            return
        if conn is not None and not conn.is_closed():
            try:
                runner.run(conn.close(timeout=5))
            except Exception:  # noqa: BLE001 - its server may be gone; the socket closes with the loop
                conn.terminate()
        runner.close()


async def create_schema(conn: asyncpg.Connection, ddl: str, lock_key: int) -> None:
    """Run idempotent DDL once even when several processes open the database at the same moment
    (``CREATE … IF NOT EXISTS`` alone races on the catalog): under a transaction advisory lock."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key)
        await conn.execute(ddl)


def safe_dsn(dsn: str) -> str:
    """The servers and database of a connection URI, for an operator's message: no user info,
    no query (``[storage] dsn`` holds no password — the configuration check refuses one — but a
    message shows only what it needs)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(dsn)
        servers = parts.netloc.rpartition("@")[2]
        return f"{servers}{parts.path}"
    except ValueError:
        return "the configured database"
