"""Loopback ports for servers a test starts itself (``msc serve``, stubs, PostgreSQL, the demo).

A port found free and then released is only safe until someone else binds it. Two things can
take it before the test's server does:

* the kernel, for any ``bind(..., 0)`` or outgoing connection on the machine (an in-process
  Switch on port 0, a client's source port) — it allocates only from the ephemeral range
  (``/proc/sys/net/ipv4/ip_local_port_range``, 32768–60999 by default);
* another test process (``pytest -n 2`` workers, another checkout's run) handing out the same
  port.

So ports are chosen *below* the ephemeral range, where the kernel never allocates, and every
port handed out is recorded for :data:`HOLD_S` seconds in a registry file shared by every test
process of this user (``flock``-ed), so no two callers get the same one while its server starts.
Each candidate must also bind now (nothing else listens on it). Nothing here imports msc.
"""

from __future__ import annotations

import fcntl
import os
import random
import socket
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

#: How long a port handed out stays reserved (s): far longer than any server takes to bind it.
HOLD_S = 300.0
#: Width of the band below the ephemeral range that ports come from.
BAND = 12000
_REGISTRY = Path(tempfile.gettempdir()) / f"msc-test-ports-{os.getuid()}"
#: Not the global ``random``: tests (hypothesis among them) seed that one.
_rng = random.SystemRandom()


def _band() -> tuple[int, int]:
    """[low, high) below the kernel's ephemeral range."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return max(1024, low - BAND), low


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def claim(ports: Iterable[int]) -> bool:
    """Reserve all of ``ports`` at once if none is reserved by anyone and each binds now."""
    wanted = list(ports)
    fd = os.open(_REGISTRY, os.O_RDWR | os.O_CREAT, 0o600)
    with os.fdopen(fd, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        now = time.time()
        held: dict[int, float] = {}
        for line in f.read().splitlines():
            parts = line.split()
            try:
                port, at = int(parts[0]), float(parts[1])
            except (ValueError, IndexError):
                continue
            if now - at < HOLD_S:
                held[port] = at
        ok = not any(p in held for p in wanted) and all(_bindable(p) for p in wanted)
        if ok:
            held.update(dict.fromkeys(wanted, now))
        f.seek(0)
        f.truncate()
        f.writelines(f"{p} {at}\n" for p, at in held.items())
    return ok


def free_port() -> int:
    """A loopback TCP port nothing listens on, that no other test process is given for a while
    and that the kernel will not give to a ``port 0`` socket or an outgoing connection."""
    low, high = _band()
    for _ in range(200):
        port = _rng.randrange(low, high)
        if claim([port]):
            return port
    raise RuntimeError(f"no free port in {low}..{high - 1}")
