"""The web console's sessions: one :class:`WebSession` per browser session (the browser holds only
its random ID, in the ``__Host-msc`` cookie) and the per-address :class:`LogonLimiter`
(docs/WEB.md "Security").
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from msc.actions import identity
from msc.web.relay import SwitchLink

SESSION_COOKIE = "__Host-msc"
MAX_OUTPUTS = 1000  # kept per operator session for a page that reloads (the switch keeps the rest)
#: The consoles a person logs on to, and the roles each needs (None: any operator).
CONSOLES = {"operator": None, "investigator": identity.INVESTIGATOR, "admin": identity.ADMIN}


@dataclass(eq=False)
class WebSession:
    sid: str
    created: float
    banner: str | None = None  # the system-use notification the person acknowledged
    console: str | None = None  # operator | investigator | admin, once logged on
    user: str | None = None
    ori: str | None = None
    logon_at: float = 0.0
    last_activity: float = 0.0
    link: SwitchLink | None = None
    mnemonic: str | None = None
    outputs: deque = field(default_factory=lambda: deque(maxlen=MAX_OUTPUTS))
    requests: OrderedDict = field(default_factory=OrderedDict)
    sockets: set = field(default_factory=set)
    ended: str | None = None
    ref_stem: str = ""
    ref_n: int = 0
    busy: bool = False
    cert_cn: str | None = None  # the verified client certificate's CN the logon came with
    address: str = ""  # the browser's address the session was made for (pre-logon accounting)

    @property
    def who(self) -> str:
        """The logged-on person's user ID (a session ``WebConsole.authed`` let through has one: the
        logon sets the console and the user together)."""
        assert self.user is not None
        return self.user

    def next_ref(self) -> str:
        """A reference of its own for every message (PROTOCOL.md §4: answers are linked by it):
        4 random [A-Z0-9] and a 2-character counter, drawn anew after 1,296 messages."""
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        if not self.ref_stem or self.ref_n >= 36 * 36:
            self.ref_stem = "".join(secrets.choice(alphabet) for _ in range(4))
            self.ref_n = 0
        n, self.ref_n = self.ref_n, self.ref_n + 1
        return self.ref_stem + alphabet[n // 36] + alphabet[n % 36]


class LogonLimiter:
    """At most ``per_minute`` events per browser address in any 60 s (bounded memory: the least
    recently seen addresses are forgotten beyond ``max_addresses``).

    For logons the event is a **failed** attempt: :meth:`allow` counts an attempt from its start
    (so a burst of parallel guesses is counted before any of them is answered) and
    :meth:`forgive` takes a successful one back — browsers behind one NAT or terminal server are
    not locked out by their colleagues' successful logons at a shift change, only by failures."""

    def __init__(self, per_minute: int, *, max_addresses: int = 10000, clock=time.monotonic) -> None:
        self.per_minute = per_minute
        self.max_addresses = max_addresses
        self.clock = clock
        self.seen: OrderedDict[str, deque] = OrderedDict()

    def allow(self, address: str) -> float | None:
        """Count one event for ``address``: its stamp (for :meth:`forgive`), or None when the
        address had ``per_minute`` in the last 60 s (nothing counted)."""
        now = self.clock()
        q = self.seen.pop(address, None) or deque()
        while q and now - q[0] >= 60:
            q.popleft()
        ok = len(q) < self.per_minute
        if ok:
            q.append(now)
        self.seen[address] = q
        while len(self.seen) > self.max_addresses:
            self.seen.popitem(last=False)
        return now if ok else None

    def forgive(self, address: str, stamp: float) -> None:
        """Take back the event counted at ``stamp`` (a logon that succeeded)."""
        q = self.seen.get(address)
        if q is not None:
            with contextlib.suppress(ValueError):
                q.remove(stamp)
