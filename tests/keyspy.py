"""A spy on a key ring's month keys, shared by the key ring contract and the switch's month-key
integration tests."""

from __future__ import annotations

import threading

from msc.keyring import KeyError_, KeyRing


class KeyMaking:
    """Which threads asked the key ring's store to make a month's key (its ``make`` ran: this
    handle made it, or raced another that stored first), and which months: wraps one handle's
    ``store.period_entry``. ``made``: (month, thread id) in order. ``fail``: the store cannot be
    reached (each call raises :class:`msc.keyring.KeyError_` with it)."""

    def __init__(self, ring: KeyRing) -> None:
        self.made: list[tuple[str, int]] = []
        self.fail: str | None = None
        inner = ring.store.period_entry

        def period_entry(period, make):
            if self.fail is not None:
                raise KeyError_(self.fail)
            ran: list[int] = []
            wrapped = None if make is None else (lambda master: ran.append(1) or make(master))
            got = inner(period, wrapped)
            if ran:
                self.made.append((period, threading.get_ident()))
            return got

        ring.store.period_entry = period_entry  # type: ignore[method-assign]
