"""``msc journal accept``: the explicit, journaled way past the start-up self-check.

The switch refuses to start on a journal that failed its self-check (:mod:`msc.journal.selfcheck`).
Once an administrator knows the cause (a disk replaced, a restore from backup, an intrusion under
investigation), they accept it — and the acceptance is itself the first thing journaled:

* **records lost after the last checkpoint** (the journal is shorter than its high-water mark,
  nothing else wrong): the journal continues; an ``ADMIN`` record (code ``ACCEPT``) names the
  administrator, the lost range and the reason. The lost sequence numbers are used again from
  there on — the record says so;
* **no journal where one existed** (every journal file gone): a new journal starts at record 1
  with that record;
* **an altered journal** (a bad signature or record, a cut below a signed checkpoint, a forged
  purge, another journal): only with ``new_journal``: the journal directory is renamed
  ``<dir>.set-aside-<UTC time>`` — kept, as evidence — and a new journal starts, its first record
  saying where the old one is and what was wrong with it.

Nothing here deletes a journal file.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from msc.journal.interfaces import JournalStorage
from msc.journal.records import JournalError
from msc.journal.selfcheck import JournalRefused
from msc.keyring import KeyRing


def accept(directory: Path, keyring: KeyRing, *, name: str, reason: str, actor: str, new_journal: bool = False,
           synchronous: str = "full", high_water: Path | None = None, storage: JournalStorage | None = None) -> str:
    """Accept what the self-check finds (see the module docstring). Returns what was done.

    Raises JournalError when the journal cannot be accepted as asked (an altered journal without
    ``new_journal``), or when the daemon holds the journal (then there is nothing to accept).
    ``storage``: the journal's backend when it is not the SQLite directory (PostgreSQL); setting
    an altered journal aside is then the database administrator's (a dump, then an empty
    database), and ``new_journal`` is refused with a message that says so.
    """
    from msc.journal.journal import Journal

    reason = " ".join(reason.split())
    if not reason:
        raise JournalError("give a reason (it is recorded in the journal)")

    async def open_accepting(why: str) -> Journal:
        j = Journal(directory, keyring, name=name, synchronous=synchronous, high_water=high_water, accept=(why, actor),
                    storage=storage)
        await j.open()
        return j

    async def go() -> str:
        try:
            j = await open_accepting(reason)
        except JournalRefused as exc:
            if new_journal and storage is not None:
                raise JournalError(f"{exc.result.summary()}. On PostgreSQL the journal is not set aside by msc: keep "
                                   "the database as evidence (pg_dump, or rename it) and point [storage] dsn at a new, "
                                   "empty database (docs/OPERATIONS.md)") from None
            if not new_journal:
                raise JournalError(f"{exc.result.summary()}. This is not a loss the journal can continue from: "
                                   "`msc journal accept --new-journal` sets this journal aside (renamed, kept as "
                                   "evidence) and starts a new one") from None
            aside = directory.with_name(f"{directory.name}.set-aside-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}")
            directory.rename(aside)
            j = await open_accepting(f"{reason} (PREVIOUS JOURNAL SET ASIDE AT {aside}: {exc.result.summary()})")
            accepted = j.accepted
            await j.close()
            return (f"the journal was set aside at {aside} ({exc.result.summary()}); a new journal starts with an "
                    f"ADMIN record of your acceptance ({'; '.join(accepted)})")
        accepted = j.accepted
        size = j.last_seq
        await j.close()
        if not accepted:
            return "the journal passed its self-check: nothing to accept"
        return f"accepted: {'; '.join(accepted)}; the journal continues at record {size} with an ADMIN record of it"

    return asyncio.run(go())
