"""Reading and atomically rewriting ``users.toml`` (the "user security file", PPP Exhibit C).

Writers take an advisory lock, re-read the file, apply one change, validate the result the same
way ``msc config check`` does, and replace the file atomically (write, fsync, rename). A reader —
the daemon — therefore sees the old file or the new one, never half of either.

With ``[storage] backend = "postgresql"`` the authoritative copy of the user directory is a
versioned document in the database (:class:`UsersStore`, :mod:`msc.storage.pgusers`), shared by
every node of a pair; ``users.toml`` is each machine's copy of it, kept for the file's readers
(the daemon's directory, ``msc config check``, ``msc user list``). Every writer passes the store
to :func:`update`: the change is applied to the database's copy and committed there first (a
change that cannot be committed is not made: the store's error is raised, the file untouched),
then the file is rewritten with what was committed. :func:`sync` installs the database's copy on
a machine (a node at start, at takeover, and every few seconds); :func:`publish` makes a hand
edit of the file the database's copy (``SIGHUP`` on the active node). Decision (issue 16,
newcomer8 #1): one document rather than a table of users — it is exactly what the file holds, so
a node's copy is byte for byte the database's, a hand edit is published whole (validated like the
file), and every writer keeps the one code path it had; a change is one row update under a row
lock, so two writers on two machines serialise and neither's change is lost.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple, Protocol

import msgspec
import tomli_w

from msc.config.files import atomic_write, file_lock
from msc.config.model import RemovedUser, UserEntry, UsersFile

ID_REUSE_DAYS = 365  # CJIS IA-4d (PPP §1.6.7 B says six months; the stricter applies)
HEADER = (
    "# users.toml: the msc user directory (PPP Exhibit C \"user security file\").\n"
    "# Written by `msc user ...`; hand edits are validated like msc.toml.\n"
    "# Passwords are salted scrypt hashes; TOTP secrets are encrypted with the master key.\n\n"
)


def _entry_dict(u: UserEntry) -> dict:
    d = msgspec.structs.asdict(u)
    return {k: v for k, v in d.items() if v is not None}


def dumps(users: UsersFile) -> str:
    doc: dict = {}
    if users.user:
        doc["user"] = [_entry_dict(u) for u in users.user]
    if users.removed:
        doc["removed"] = [msgspec.structs.asdict(r) for r in users.removed]
    return HEADER + tomli_w.dumps(doc)


def read(path: Path) -> UsersFile:
    if not path.exists():
        return UsersFile()
    return msgspec.toml.decode(path.read_bytes(), type=UsersFile)


def loads(text: str) -> UsersFile:
    """A users document (the file's text, or the database's copy); raises msgspec.DecodeError."""
    return msgspec.toml.decode(text.encode(), type=UsersFile)


class Document(NamedTuple):
    """The database's copy of the user directory: its version (1, 2, … one per committed
    change) and its text (exactly what ``users.toml`` holds)."""

    version: int
    text: str


class UsersStore(Protocol):
    """Where the authoritative user directory lives when it is not the file
    (:class:`msc.storage.pgusers.PgUsersStore`). Every call is blocking and bounded; a call the
    store could not make raises ``OSError`` (``msc.storage.errors.StorageUnavailable``)."""

    def describe(self) -> str:
        """Where it is, for a person's message (never a password)."""
        ...

    def version(self) -> int | None:
        """The current version, None when nothing was stored yet."""
        ...

    def read(self) -> Document | None:
        ...

    def update(self, change: Callable[[Document | None], str | None]) -> tuple[Document | None, bool]:
        """In one transaction holding the row: ``change(current)`` gives the new text (None: no
        change); it may raise to abort. Returns the document now stored and whether it was written."""
        ...

    def close(self) -> None:
        """End its connection (a later call connects again)."""
        ...


class UsersConflict(Exception):
    """A hand edit of users.toml could not be published: the database's copy changed since this
    machine's copy was installed (``str()`` says what to do)."""


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    with file_lock(path.with_name(f".{path.name}.lock")):
        yield


def write(path: Path, users: UsersFile) -> None:
    atomic_write(path, dumps(users).encode(), 0o600)


def update(path: Path, change: Callable[[UsersFile], UsersFile], validate: Callable[[UsersFile], None] | None = None,
           *, store: UsersStore | None = None) -> UsersFile:
    """Apply ``change`` under the lock; ``validate`` may raise to abort without writing.

    ``store`` (PostgreSQL): ``change`` applies to the database's copy (the first change of a
    database that holds none applies to this machine's file: it is imported), the result is
    committed there, then written to ``path``. The store's ``OSError`` means nothing changed."""
    with locked(path):
        if store is None:
            new = change(read(path))
            if validate is not None:
                validate(new)
            write(path, new)
            return new
        made: list[UsersFile] = []
        before: list[str | None] = []

        def on_document(doc: Document | None) -> str | None:
            before.append(None if doc is None else doc.text)
            new = change(loads(doc.text) if doc is not None else read(path))
            if validate is not None:
                validate(new)
            made.append(new)
            text = dumps(new)
            return None if doc is not None and doc.text == text else text

        doc, _ = store.update(on_document)
        assert doc is not None
        mine = file_text(path)
        if mine is not None and mine != doc.text and before[-1] is not None and mine != before[-1]:
            # This file was not the database's copy (a hand edit not yet published, a stale copy):
            # kept beside it, never dropped unseen.
            keep_aside(path, dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ"))
        _install(path, doc.text)
        return made[-1]


def file_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _install(path: Path, text: str) -> None:
    if file_text(path) != text:
        atomic_write(path, text.encode(), 0o600)


def keep_aside(path: Path, stamp: str) -> Path:
    """Copy ``path`` to ``users.toml.replaced-<stamp>`` (0600; ``-2``, ``-3`` … after it when a
    file of that name exists: two replacements within a second) before it is replaced."""
    aside = path.with_name(f"{path.name}.replaced-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.replaced-{stamp}-{n}")
    atomic_write(aside, path.read_bytes(), 0o600)
    return aside


class Synced(NamedTuple):
    """What :func:`sync` did: the database's document now installed; ``imported``: this
    machine's file became the database's first copy; ``kept``: where the replaced file (a hand
    edit, or a copy that was not the database's) was kept; ``pending``: the file differs from the
    database's copy and was left alone (a hand edit on the active node, published by SIGHUP)."""

    doc: Document
    imported: bool = False
    kept: Path | None = None
    pending: bool = False


def sync(path: Path, store: UsersStore, *, last: Document | None, keep_edits: bool, stamp: str) -> Synced:
    """Install the database's copy of the user directory as ``path`` (see the module docstring).

    ``last``: the document this machine installed last (None: none yet, at start). A database
    that holds none imports the file (the first node to start wins; the other installs the
    winner's). A file that differs from the database's copy is replaced — kept beside it first
    (:func:`keep_aside`) unless it is ``last``'s text (this machine's own, superseded) — except
    when ``keep_edits`` (the active node) and the database has not changed since ``last``: a hand
    edit waiting for its SIGHUP (``pending``). Raises the store's ``OSError``; a file the
    database has no copy of and that cannot be read as a users file raises ``msgspec.DecodeError``."""
    if last is not None and store.version() == last.version:
        text = file_text(path)
        if text == last.text:
            return Synced(last)  # (the usual look: one small query, one small file read)
        if keep_edits:
            return Synced(last, pending=True)
    with locked(path):
        imported = False
        doc = store.read()
        if doc is None:
            own = file_text(path)
            if own is None:
                own = dumps(UsersFile())
            loads(own)  # refuse to publish what is not a users file

            def first(cur: Document | None) -> str | None:
                return own if cur is None else None

            doc, imported = store.update(first)
            assert doc is not None
        text = file_text(path)
        if text == doc.text:
            return Synced(doc, imported)
        if keep_edits and last is not None and doc.version == last.version:
            return Synced(doc, pending=True)
        kept = None
        if text is not None and (last is None or text != last.text):
            kept = keep_aside(path, stamp)
        atomic_write(path, doc.text.encode(), 0o600)
        return Synced(doc, imported, kept)


def publish(path: Path, store: UsersStore, *, last: Document | None) -> Document | None:
    """Make this machine's ``users.toml`` (validated by the caller, a hand edit) the database's
    copy: committed only if the database still holds ``last`` (the copy this machine installed);
    raises :class:`UsersConflict` if another change came first, the store's ``OSError`` if it
    could not be asked. Returns the new document, or None when the file is the database's copy."""
    with locked(path):
        text = file_text(path)
        if text is None:
            text = dumps(UsersFile())
        if last is not None and text == last.text:
            return None

        def swap(cur: Document | None) -> str | None:
            if cur is not None and cur.text == text:
                return None
            if cur is not None and (last is None or cur.version != last.version):
                raise UsersConflict(
                    f"users.toml was edited here while the user directory in {store.describe()} changed "
                    f"(version {last.version if last else 'none'} → {cur.version}): the edit is not published")
            return text

        doc, written = store.update(swap)
        return doc if written else None


def replace_user(users: UsersFile, uid: str, fn: Callable[[UserEntry], UserEntry]) -> UsersFile:
    found = False
    out = []
    for u in users.user:
        if u.id == uid:
            found = True
            u = fn(u)
        out.append(u)
    if not found:
        raise LookupError(uid)
    return msgspec.structs.replace(users, user=tuple(out))


def remove_user(users: UsersFile, uid: str, today: dt.date) -> UsersFile:
    if not any(u.id == uid for u in users.user):
        raise LookupError(uid)
    return UsersFile(user=tuple(u for u in users.user if u.id != uid),
                     removed=(*users.removed, RemovedUser(id=uid, removed=today)))
