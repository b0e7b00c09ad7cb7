"""The one place that turns ``[storage]`` into storage objects (CONFIG.md "Storage").

Every part of msc that keeps durable state — the switch, the ``msc`` command's actions, the web
console, the reports — opens it through :class:`Backends`, never by naming ``state.db`` or the
journal directory itself, so that a configuration with ``backend = "postgresql"`` can never
write to the SQLite files by accident (and the other way round)::

    b = Backends(settings)
    state = b.runtime_state()          # msc.mnemonics.state.RuntimeState
    journal = b.journal(keyring, …)    # msc.journal.journal.Journal on the configured storage

SQLite: ``data_dir/state.db`` (run-time state, delivery queues and OSNs, the availability
ledger) and the journal directory. PostgreSQL: one database for all of it
(:mod:`msc.storage.pgjournal`, :mod:`msc.storage.pgstate`); the journal's writer checks the
node's fence (``fence``: :meth:`msc.ha.keeper.LeaseKeeper.fence`, when ``[node]`` is set) inside
each commit transaction.

Each call opens a new handle; the caller closes it (``close()``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from msc.journal.journal import Journal
from msc.journal.reader import Reader
from msc.journal.records import JournalError
from msc.reasons import explain
from msc.storage.errors import STATE_ERRORS, StorageUnavailable

if TYPE_CHECKING:
    from msc.config.load import Settings
    from msc.journal.interfaces import JournalReader, JournalStorage
    from msc.keyring import KeyRing
    from msc.mnemonics.state import RuntimeState
    from msc.mnemonics.userfile import UsersStore
    from msc.ops.availability import LedgerBackend
    from msc.routing.outbox import OutboxBackend
    from msc.storage.pgjournal import Fence
    from msc.storage.postgres import PgSettings

T = TypeVar("T")


__all__ = ["STATE_ERRORS", "Backends", "Deferred", "StorageUnavailable"]


def _opening(what: str, backends: Backends, open_: Callable[[], T]) -> T:
    try:
        return open_()
    except StorageUnavailable:
        raise
    except Exception as exc:
        if backends._pg is None:
            raise
        from msc.storage.postgres import DB_ERRORS

        if isinstance(exc, (*DB_ERRORS, JournalError)):
            raise StorageUnavailable(f"{what} on {backends.describe()}: {explain(exc)}") from None
        raise


class Backends:
    """The storage a configuration names: ``[storage] backend`` ("sqlite" or "postgresql").

    Raises ``OSError``/``ValueError`` when PostgreSQL's password file cannot be read (the
    configuration check has looked at it first). Opening a PostgreSQL handle raises
    :class:`StorageUnavailable` when the database cannot be reached or refuses the login."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.backend = settings.config.storage.backend
        self._pg: PgSettings | None = None
        if self.backend == "postgresql":
            from msc.storage.postgres import PgSettings

            try:
                self._pg = PgSettings.from_settings(settings)
            except ValueError as exc:  # a password file that cannot be used (the message names it)
                raise StorageUnavailable(str(exc)) from None

    @property
    def postgresql(self) -> bool:
        return self._pg is not None

    def describe(self) -> str:
        """Where the state is, for an operator's message (never the password)."""
        if self._pg is None:
            return f"SQLite ({self.settings.state_db.parent})"
        from msc.storage.postgres import safe_dsn

        return f"PostgreSQL ({safe_dsn(self._pg.dsn)})"

    def close(self, *handles: Any) -> None:
        """Close each handle's connections (its ``close``), the ``None``s skipped; a handle that
        fails to close (its database already gone) does not stop the others."""
        for handle in handles:
            if handle is not None:
                with contextlib.suppress(Exception):
                    handle.close()

    # -- run-time state, queues, ledger --------------------------------------------------

    def runtime_state(self) -> RuntimeState:
        if self._pg is None:
            from msc.mnemonics.state import StateStore

            return StateStore(self.settings.state_db)
        from msc.storage.pgstate import PgRuntimeState

        pg = self._pg
        return _opening("run-time state", self, lambda: PgRuntimeState(pg))

    def outbox(self) -> OutboxBackend:
        if self._pg is None:
            from msc.routing.outbox import OutboxStore

            return OutboxStore(self.settings.state_db)
        from msc.storage.pgstate import PgOutbox

        pg = self._pg
        return _opening("delivery queues", self, lambda: PgOutbox(pg))

    def ledger(self) -> LedgerBackend:
        if self._pg is None:
            from msc.ops.availability import Ledger

            return Ledger(self.settings.state_db)
        from msc.storage.pgstate import PgLedger

        pg = self._pg
        return _opening("availability ledger", self, lambda: PgLedger(pg))

    # -- the journal ---------------------------------------------------------------------

    def journal_storage(self, fence: Fence | None = None) -> JournalStorage | None:
        """None for SQLite (the Journal's own files), else the PostgreSQL journal whose writer
        runs ``fence(conn)`` first in every durable transaction."""
        if self._pg is None:
            return None
        from msc.storage.pgjournal import PgStorage

        return PgStorage(self._pg, fence=fence)

    def journal(self, keyring: KeyRing | None = None, *, fence: Fence | None = None, **kw: Any) -> Journal:
        """The journal (:meth:`msc.journal.journal.Journal.from_settings`) on this storage, its
        keys from ``keyring`` (default: :meth:`keyring`)."""
        return Journal.from_settings(self.settings, keyring if keyring is not None else self.keyring(),
                                     storage=self.journal_storage(fence), **kw)

    # -- the user directory ----------------------------------------------------------------

    def users_store(self) -> UsersStore | None:
        """Where the authoritative user directory is besides ``users.toml``: None for SQLite (the
        file is the directory); for PostgreSQL the database's copy every node enforces
        (:class:`msc.storage.pgusers.PgUsersStore`, connected at its first call; the caller closes
        it). Every writer of users.toml passes it to :func:`msc.mnemonics.userfile.update`."""
        if self._pg is None:
            return None
        from msc.storage.pgusers import PgUsersStore

        return PgUsersStore(self._pg)

    # -- the key ring --------------------------------------------------------------------

    def keyring(self, log: Any = None) -> KeyRing:
        """The key ring (JOURNAL.md "Encryption"): the file ``data_dir/keys/keyring.json`` for
        SQLite; for PostgreSQL the database's, shared by every node
        (:class:`msc.storage.pgkeyring.PgKeyStore`) — a key ring file left on this machine from
        before is imported into it first, once (:meth:`msc.keyring.KeyRing.import_file`; ``log``,
        a structlog logger, gets ``keyring.imported``). The master key is ``journal.key_file``
        either way. Raises :class:`msc.keyring.KeyError_` when the file and the database disagree
        or the database cannot be reached; the caller closes the ring (``close()``)."""
        from msc.keyring import KeyRing

        keys, master = self.settings.data_dir / "keys", self.settings.key_file
        if self._pg is None:
            return KeyRing(keys, master)
        from msc.storage.pgkeyring import PgKeyStore

        ring = KeyRing(keys, master, PgKeyStore(self._pg))
        try:
            if ring.path.exists() and ring.import_file() and log is not None:
                log.warning("keyring.imported", detail=ring.imported)
        except BaseException:
            ring.close()
            raise
        return ring

    @contextmanager
    def journal_source(self) -> Iterator[Path | JournalReader]:
        """What the journal's library functions read (``search``, ``verify``, ``write_bundle``
        …): the SQLite journal directory, or a PostgreSQL reader closed when the block ends."""
        if self._pg is None:
            yield self.settings.journal_dir
            return
        reader = self.journal_reader()
        try:
            yield reader
        finally:
            reader.close()

    def journal_reader(self) -> JournalReader:
        """A reader of the committed journal (search, verify, export, reports); the caller closes it."""
        if self._pg is None:
            return Reader(self.settings.journal_dir)
        from msc.storage.pgjournal import PgReader

        pg = self._pg
        return _opening("journal", self, lambda: PgReader(pg))


class Deferred:
    """A storage handle (e.g. :meth:`Backends.runtime_state`) opened at :meth:`open` or at its
    first use: a standby node of a pair opens its run-time state only when it takes over.
    ``until_open``: calls answered without opening it, by name (a standby serves no logon, so
    its view of locked accounts may be empty until then). ``close`` closes it only if opened."""

    def __init__(self, open_: Callable[[], Any], *, until_open: dict[str, Callable[[], Any]] | None = None) -> None:
        self._open = open_
        self._handle: Any = None
        self._until_open = until_open or {}

    def open(self) -> Any:
        if self._handle is None:
            self._handle = self._open()
        return self._handle

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()

    def abort(self, why: str) -> None:
        """The opened handle's ``abort(why)`` if it has one (PostgreSQL's: give waiting callers
        back now); nothing when it was never opened."""
        if self._handle is not None and hasattr(self._handle, "abort"):
            self._handle.abort(why)

    def __getattr__(self, name: str) -> Any:
        if self._handle is None and name in self._until_open:
            return self._until_open[name]
        return getattr(self.open(), name)
