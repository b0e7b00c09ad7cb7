"""How much of refused traffic the journal keeps (JOURNAL.md "Refused traffic", issue 14).

Every accepted message keeps its whole text. A refused one is journaled in one of three
**forms**, decided per connection by :class:`RefusalWindow` (and, for a connection that has not
logged on or bound, by the per-address :class:`AddressBudget` as well):

``FULL``
    A ``REJECTED`` record with the whole text (secrets redacted, PROTOCOL.md §7): the first
    ``refused_full_per_minute`` refusals (and ``refused_full_bytes_per_minute`` characters) of
    each minute of a session that is logged on or bound.
``COMPACT``
    A ``REJECTED`` record with the first :data:`COMPACT_CHARS` characters of that text and, when
    it was longer, ``…[CHARS/n SHA256/hex]``: the full text's length and SHA-256 (:func:`compact`).
    Every refusal before logon or bind, and a session's refusals beyond its full allowance, up to
    ``refused_records_per_minute`` records a minute per connection.
``COUNTED``
    No record of its own: counted (per code: messages and bytes; first and last time; the
    first and last text, compact) in a :class:`Tally` that becomes a ``SUMMARY`` record once a
    minute and when the connection ends.

A ``LOGON`` the authentication service checked and refused is never merely counted (AC-7: every
attempt is recorded); those are bounded by the logon gate instead (``msc.server.logons``).

Pure: no I/O, no asyncio; every method takes the time. The costs of the forms differ on purpose:
``COUNTED`` reads nothing of the message but its length, so a flood costs the switch little.
"""

from __future__ import annotations

import builtins
import datetime as dt
import enum
import hashlib
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

#: Characters of a refused text a compact record keeps (a header, OIF, TAF, key, ORI and the
#: start of the first field take fewer).
COMPACT_CHARS = 80
#: Bytes of a payload that are decoded and examined for a compact record (the redaction scans
#: 512 characters, msc.protocol.redact.SCAN_LIMIT).
EXAMINE_BYTES = 512
#: Length of the refusal windows and the summary interval.
WINDOW_S = 60.0
#: Addresses whose unauthenticated activity is tracked at once (least recently seen forgotten
#: first; what they had not yet summarized goes into the "other addresses" summary).
MAX_ADDRESSES = 4096
#: Address summaries written per interval; the rest are added up in one "other addresses" record.
MAX_SUMMARIES = 20


class Form(enum.Enum):
    FULL = "full"
    COMPACT = "compact"
    COUNTED = "counted"


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def compact(text: str) -> str:
    """The compact form of a refused message's journal text (already decoded, secrets already
    redacted): its first :data:`COMPACT_CHARS` characters and, if it was longer,
    ``…[CHARS/n SHA256/hex]`` — the full text's length and the SHA-256 of its UTF-8 bytes, which an
    investigator can check against a packet capture (decode and redact it as msc does)."""
    if len(text) <= COMPACT_CHARS:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{text[:COMPACT_CHARS]}…[CHARS/{len(text)} SHA256/{digest}]"


@dataclass
class Tally:
    """What was counted instead of recorded: refusals per code (messages, bytes), other events
    (``CONNECT``, ``CLOSED LOGON TIMEOUT`` …) by name, the first and last time, and the first and
    last refused payload's start (rendered compact only when the summary is written)."""

    codes: dict[str, list[int]] = field(default_factory=dict)  # code -> [messages, bytes]
    events: Counter[str] = field(default_factory=Counter)
    first: float | None = None
    last: float | None = None
    first_payload: bytes | None = None
    last_payload: bytes | None = None

    def __bool__(self) -> bool:
        return bool(self.codes or self.events)

    def _seen(self, now: float) -> None:
        if self.first is None:
            self.first = now
        self.last = now

    def refused(self, code: str, payload: bytes, now: float) -> None:
        c = self.codes.get(code)
        if c is None:
            c = self.codes[code] = [0, 0]
        c[0] += 1
        c[1] += len(payload)
        head = payload[:EXAMINE_BYTES]
        if self.first_payload is None:
            self.first_payload = head
        self.last_payload = head
        self._seen(now)

    def event(self, name: str, now: float, n: int = 1) -> None:
        self.events[name] += n
        self._seen(now)

    def merge(self, other: Tally) -> None:
        for code, (n, b) in other.codes.items():
            c = self.codes.setdefault(code, [0, 0])
            c[0] += n
            c[1] += b
        self.events.update(other.events)
        if other.first is not None and other.last is not None:
            self.first = other.first if self.first is None else min(self.first, other.first)
            self.last = other.last if self.last is None else max(self.last, other.last)
        if self.first_payload is None:
            self.first_payload = other.first_payload
        if other.last_payload is not None:
            self.last_payload = other.last_payload

    @property
    def messages(self) -> int:
        return sum(n for n, _b in self.codes.values())

    @property
    def bytes(self) -> int:
        return sum(b for _n, b in self.codes.values())

    def render(self, decode: Callable[[builtins.bytes], str], redact: Callable[[str], str], *, texts: bool = True) -> str:
        """``<first>..<last>: EVENT/n …; REFUSED n MESSAGES b BYTES CODE/n …; FIRST "…" LAST "…"``."""
        parts = []
        if self.first is not None:
            parts.append(f"{iso(self.first)}..{iso(self.last if self.last is not None else self.first)}")
        if self.events:
            parts.append(" ".join(f"{name}/{n}" for name, n in sorted(self.events.items())))
        if self.codes:
            parts.append(f"REFUSED {self.messages} MESSAGES {self.bytes} BYTES "
                         + " ".join(f"{code}/{n}" for code, (n, _b) in sorted(self.codes.items())))
            if texts and self.first_payload is not None:
                first = redact(decode(self.first_payload))[:COMPACT_CHARS]
                last = redact(decode(self.last_payload or b""))[:COMPACT_CHARS]
                parts.append(f'FIRST "{first}" LAST "{last}"')
        return "; ".join(parts)


@dataclass(frozen=True)
class RefusalLimits:
    """Per connection and minute (``[journal] refused_*``, CONFIG.md)."""

    full: int = 120
    full_chars: int = 1024 * 1024
    records: int = 600


class RefusalWindow:
    """One connection's refusals in the current minute: which form the next one takes."""

    def __init__(self, limits: RefusalLimits) -> None:
        self.limits = limits
        self.start: float | None = None
        self.full = 0
        self.full_chars = 0
        self.records = 0
        self.refused = 0  # every refusal of the window, whatever its form (not those of shed requests)
        self.tally = Tally()  # this window's counted refusals

    def roll(self, now: float) -> Tally | None:
        """Start a new window if the current one is a minute old; returns the old window's
        counted refusals (to be summarized) if there were any."""
        if self.start is not None and now - self.start < WINDOW_S:
            return None
        done = self.tally if self.tally else None
        self.start = now
        self.full = self.full_chars = self.records = self.refused = 0
        self.tally = Tally()
        return done

    def form(self, now: float, *, logged_on: bool, chars: Callable[[], int], always: bool = False) -> Form:
        """The form of the next refusal (``chars()``: the length of its full journal text, asked
        only when it might be kept in full; ``always``: it must have a record of its own — a
        checked LOGON). Call :meth:`roll` first (it returns the minute that ended)."""
        return shared_form([self], now, logged_on=logged_on, chars=chars, always=always)

    def take(self) -> Tally:
        t, self.tally = self.tally, Tally()
        return t


def shared_form(windows: list[RefusalWindow], now: float, *, logged_on: bool, chars: Callable[[], int],
                always: bool = False, counts: bool = True) -> Form:
    """The form of the next refusal counted in every one of ``windows`` at once (a connection's,
    its user's, its address's): whole only while each of them has full-text allowance left, a
    record of its own only while each has records left — so a budget that belongs to a user or
    an address is not bought again by reconnecting. Call each window's :meth:`RefusalWindow.roll` first.
    ``counts``: the refusal counts towards ``max_refused_per_minute`` (not a request shed for the
    switch's own overload, :mod:`msc.routing.shedding`); its record takes the budgets all the same."""
    for w in windows:
        if w.start is None:
            w.start = now
        w.refused += int(counts)
    if logged_on and all(w.full < w.limits.full for w in windows):
        n = chars()
        if all(w.full_chars + n <= w.limits.full_chars for w in windows):
            for w in windows:
                w.full += 1
                w.full_chars += n
                w.records += 1
            return Form.FULL
    if always or all(w.records < w.limits.records for w in windows):
        for w in windows:
            w.records += 1
        return Form.COMPACT
    return Form.COUNTED


class SharedWindows:
    """Refusal windows that outlive connections: one per authenticated user (or bound station)
    and one per source address, at most :data:`MAX_ADDRESSES` of them (least recently used
    forgotten first). Their tallies are not used: what is counted goes to the connection's."""

    def __init__(self, limits: RefusalLimits) -> None:
        self.limits = limits
        self._windows: OrderedDict[str, RefusalWindow] = OrderedDict()

    def get(self, key: str, now: float) -> RefusalWindow:
        w = self._windows.get(key)
        if w is None:
            if len(self._windows) >= MAX_ADDRESSES:
                self._windows.popitem(last=False)
            w = self._windows[key] = RefusalWindow(self.limits)
        else:
            self._windows.move_to_end(key)
        w.limits = self.limits
        w.roll(now)
        return w

    def __len__(self) -> int:
        return len(self._windows)


class _Bucket:
    """A token bucket: ``capacity`` tokens, refilled at ``capacity`` per :data:`WINDOW_S`."""

    __slots__ = ("capacity", "tokens", "at")

    def __init__(self, capacity: int, now: float) -> None:
        self.capacity = capacity
        self.tokens = float(capacity)
        self.at = now

    def take(self, now: float) -> bool:
        if self.capacity <= 0:
            return False
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.capacity / WINDOW_S)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class Summary:
    """One summary record to write: ``source`` is an address (or None: "other addresses", with
    ``sources`` the number of them)."""

    source: str | None
    tally: Tally
    sources: int = 1


class AddressBudget:
    """The journal records connections that have not logged on or bound may cause, per source
    address and in all (``[journal] unauthenticated_records_per_minute`` and ``…_total``).

    :meth:`take` says whether such a connection may write one more record now; what may not is
    :meth:`count`-ed and comes back from :meth:`due` as at most :data:`MAX_SUMMARIES` + 1 summary
    records per interval. Memory is bounded: at most :data:`MAX_ADDRESSES` addresses are tracked.
    """

    def __init__(self, per_address: int, total: int, now: float) -> None:
        self.per_address = per_address
        self.total = total
        self._global = _Bucket(total, now)
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._tallies: dict[str, Tally] = {}
        self._others = Tally()
        self._others_sources = 0
        self._last_due = now

    def configure(self, per_address: int, total: int) -> None:
        """New limits (a reload): buckets already made keep their tokens."""
        self.per_address, self.total = per_address, total
        self._global.capacity = total
        for b in self._buckets.values():
            b.capacity = per_address

    def _bucket(self, source: str, now: float) -> _Bucket:
        b = self._buckets.get(source)
        if b is None:
            if len(self._buckets) >= MAX_ADDRESSES:
                old, _ = self._buckets.popitem(last=False)
                t = self._tallies.pop(old, None)
                if t:
                    self._others.merge(t)
                    self._others_sources += 1
            b = self._buckets[source] = _Bucket(self.per_address, now)
        else:
            self._buckets.move_to_end(source)
        return b

    def take(self, source: str, now: float) -> bool:
        """May a connection from ``source`` that has not logged on write one more record?"""
        if not self._bucket(source, now).take(now):
            return False
        return self._global.take(now)

    def count(self, source: str, now: float) -> Tally:
        """The tally of ``source``'s current interval, to count into."""
        self._bucket(source, now)
        t = self._tallies.get(source)
        if t is None:
            t = self._tallies[source] = Tally()
        return t

    def due(self, now: float, *, force: bool = False) -> list[Summary]:
        """Once per :data:`WINDOW_S` (or ``force``, at shutdown): the summaries to write."""
        if not force and now - self._last_due < WINDOW_S:
            return []
        self._last_due = now
        tallies = sorted(((s, t) for s, t in self._tallies.items() if t),
                         key=lambda st: -(st[1].messages + sum(st[1].events.values())))
        self._tallies = {}
        out = [Summary(s, t) for s, t in tallies[:MAX_SUMMARIES]]
        others, n = self._others, self._others_sources
        for _s, t in tallies[MAX_SUMMARIES:]:
            others.merge(t)
            n += 1
        if others:
            out.append(Summary(None, others, sources=n))
        self._others, self._others_sources = Tally(), 0
        return out

    @property
    def tracked(self) -> int:
        return len(self._buckets)
