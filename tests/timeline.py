"""Journals that ran for years, built in seconds with an injected clock.

Retention counts only time the journal observed (msc.journal.retention): a journal that jumps
three years between two records has not "seen" them. These helpers write a record at least every
``STEP_S`` (less than ``TIMELINE_GAP_S``), as a running switch does with its hourly checkpoints.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from msc.journal import Entry, Journal, KeyRing

STEP_S = 6840.0  # 1.9 h: below retention.TIMELINE_GAP_S (2 h)


class Clock:
    """A settable clock for Journal(clock=…) and Switch(clock=…)."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def utc(y: int, m: int, d: int, h: int = 12) -> float:
    return dt.datetime(y, m, d, h, tzinfo=dt.UTC).timestamp()


async def run_for(j: Journal, clock: Clock, until: float, *, step: float = STEP_S, text: str = "HEARTBEAT") -> int:
    """Advance ``clock`` to ``until`` writing one ADMIN record every ``step`` seconds."""
    n = 0
    while clock.t + step < until:
        clock.t += step
        await j.append(Entry(kind="ADMIN", text=text))
        n += 1
    clock.t = until
    return n


async def build_continuous(directory: Path, ring: KeyRing, start: float, end: float, *, name: str = "MSC",
                           first_texts: list[str] = (), checkpoint_every: int = 500) -> tuple[Journal, Clock]:
    """A journal that ran from ``start`` to ``end`` (returned open; the caller closes it):
    ``first_texts`` are RECEIVED records at ``start``, then a record every STEP_S."""
    clock = Clock(start)
    j = Journal(directory, ring, name=name, clock=clock, synchronous="normal", checkpoint_every=checkpoint_every)
    await j.open()
    for t in first_texts:
        await j.append(Entry(kind="RECEIVED", user="TS0001", mnemonic="ICS1", text=t))
    await run_for(j, clock, end)
    return j, clock


def build_dir(d: Path, start: float, end: float, *, name: str = "TEST-MSC") -> Path:
    """``d/keys`` (a new key ring) and ``d/journal``: a journal that ran from ``start`` to ``end``
    with five case records at the start. The layout of a test config's ``data`` directory."""
    import asyncio

    ring = KeyRing(d / "keys", d / "keys" / "master.key")
    ring.init()

    async def go():
        j, _clock = await build_continuous(d / "journal", ring, start, end, name=name,
                                           first_texts=[f"ICS1.QW.CA0130000.NAM/CASE, R{i}" for i in range(5)])
        await j.close()

    asyncio.run(go())
    return d
