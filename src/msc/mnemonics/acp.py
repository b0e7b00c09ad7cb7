"""The Access Control Point for mnemonic pools (CLETS PPP §1.6.2 B).

"The agency must establish an Access Control Point (ACP) to control the dynamic allocation of
mnemonics. The ACP shall provide user authentication and auditing of mnemonics." (§1.6.2 B 1 a)

A pooled client logs on with the pool's name; the ACP lends it a free mnemonic for the length of
the operator's session and takes it back at logoff, idle logoff or disconnect. Free mnemonics are
handed out least-recently-released first, so a mnemonic's traffic history stays easy to read.
Each allocation has an id: a late response for a mnemonic that has since been lent to someone
else is recognisably not theirs (§1.6.2 B 1 f).
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass

from msc.mnemonics.directory import Pool


@dataclass(frozen=True)
class Allocation:
    id: int
    pool: str
    mnemonic: str
    user: str


class AccessControlPoint:
    def __init__(self, pools: dict[str, Pool]) -> None:
        self._ids = itertools.count(1)
        self._free: dict[str, deque[str]] = {}
        self._held: dict[str, Allocation] = {}
        self.update(pools)

    def update(self, pools: dict[str, Pool]) -> None:
        """Apply a reloaded configuration: keep current loans, add and drop free mnemonics."""
        free: dict[str, deque[str]] = {}
        for name, pool in pools.items():
            old = self._free.get(name, deque())
            keep = [m for m in old if m in pool.mnemonics]
            new = [m for m in pool.mnemonics if m not in keep and m not in self._held]
            free[name] = deque(keep + new)
        self._free = free

    def allocate(self, pool: str, user: str) -> Allocation | None:
        q = self._free.get(pool)
        if not q:
            return None
        a = Allocation(next(self._ids), pool, q.popleft(), user)
        self._held[a.mnemonic] = a
        return a

    def release(self, mnemonic: str) -> Allocation | None:
        a = self._held.pop(mnemonic, None)
        if a is not None and a.pool in self._free:
            self._free[a.pool].append(mnemonic)
        return a

    def holder(self, mnemonic: str) -> Allocation | None:
        return self._held.get(mnemonic)

    def free_count(self, pool: str) -> int:
        return len(self._free.get(pool, ()))

    def pools(self) -> list[str]:
        return list(self._free)
