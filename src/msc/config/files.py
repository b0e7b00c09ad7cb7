"""Files msc owns: crash-safe replacement, and owner-only modes for everything msc creates.

SECURITY.md "File modes": every directory msc creates is 0700 and every file 0600 (user IDs,
lockout state, message text and keys are in them), whatever the umask of the shell that
started it; the only exception is the public half of the checkpoint key, ``signing.pub`` (0644).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` so readers see the old content or the new, never a mix (write, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # exactly ``mode``: the umask neither widens nor narrows it
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600


def private_dir(path: Path) -> None:
    """Create ``path`` and any missing parents as 0700 (``Path.mkdir(parents=True)`` gives the
    parents the umask's mode, e.g. 0755), and tighten ``path`` itself if it exists with group
    or other access and belongs to this user (a directory made by an older msc)."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, PRIVATE_DIR)
        except FileExistsError:
            continue
        os.chmod(d, PRIVATE_DIR)  # mkdir's mode is filtered by the umask
    _tighten(path, PRIVATE_DIR)


def _tighten(path: Path, mode: int) -> None:
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            return
        if st.st_uid == os.getuid() and st.st_mode & 0o777 & ~mode:
            os.chmod(path, mode)
    except OSError:
        pass


PUBLIC_FILES = frozenset(("signing.pub",))


def tighten_tree(root: Path) -> None:
    """Make msc's own tree owner-only: directories 0700, files 0600 (``signing.pub`` 0644).
    Run by the daemon at start on its data and journal directories, so an installation made by
    an older msc (0755/0644) is corrected; a few dozen files, one ``stat`` each."""
    root = Path(root)
    if not root.is_dir():
        return
    _tighten(root, PRIVATE_DIR)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            _tighten(Path(dirpath) / name, PRIVATE_DIR)
        for name in filenames:
            if name not in PUBLIC_FILES:
                _tighten(Path(dirpath) / name, PRIVATE_FILE)


def private_db(path: Path) -> None:
    """Make sure the SQLite database ``path`` exists as 0600 *before* SQLite opens it: SQLite
    gives a database's ``-wal`` and ``-shm`` files the database file's mode, so a database made
    0644 and chmod-ed afterwards leaves them readable. Tightens an older database and its
    ``-wal``/``-shm`` too."""
    path = Path(path)
    private_dir(path.parent)
    if not path.exists():
        # Only a file that does not exist yet is opened here: closing a descriptor of a database
        # file drops every POSIX lock this process holds on it, including those of an SQLite
        # connection already open to it (SQLite's "close() kills locks" caveat).
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
        except FileExistsError:
            pass
        else:
            os.close(fd)
    for suffix in ("", "-wal", "-shm", "-journal"):
        _tighten(path.with_name(path.name + suffix), PRIVATE_FILE)


class FileLocked(OSError):
    """The lock is held by another process (only when not waiting for it)."""


@contextlib.contextmanager
def file_lock(path: Path, *, wait: bool = True) -> Iterator[int]:
    """Hold an exclusive ``flock`` on ``path`` (created 0600, its directory 0700) for the
    ``with`` block; yields the descriptor. The kernel drops the lock if the process dies.
    ``wait=False``: raise :class:`FileLocked` at once if another process holds it.

    The one lock helper: users.toml edits, the key ring, the journal's single writer."""
    path = Path(path)
    private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise FileLocked(f"{path} is locked by another process") from None
        yield fd
    finally:
        os.close(fd)  # closing the only descriptor of the open file description releases the lock


def open_sqlite(path: Path, schema: str, *, synchronous: str = "FULL"):
    """A connection to one of msc's own SQLite files (state.db tables): WAL, the given
    durability, the schema applied, mode 0600, usable from worker threads (callers lock)."""
    import sqlite3

    private_db(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.executescript(schema)
    return conn
