"""msc.journal — the append-only, encrypted, tamper-evident journal (JOURNAL.md).

A library with its own API: it never imports routing, the server or the directory.
"""

from msc.journal.journal import Journal
from msc.journal.records import Entry, JournalError, Kind, Record
from msc.keyring import KeyRing

__all__ = ["Entry", "Journal", "JournalError", "KeyRing", "Kind", "Record"]
