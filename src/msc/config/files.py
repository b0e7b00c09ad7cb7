"""Crash-safe file replacement, shared by everything that rewrites a file msc owns."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` so readers see the old content or the new, never a mix (write, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
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


def open_sqlite(path: Path, schema: str, *, synchronous: str = "FULL"):
    """A connection to one of msc's own SQLite files (state.db tables): WAL, the given
    durability, the schema applied, mode 0600, usable from worker threads (callers lock)."""
    import sqlite3

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.executescript(schema)
    os.chmod(path, 0o600)
    return conn
