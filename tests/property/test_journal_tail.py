"""The unsigned tail stays within its stated bound (JOURNAL.md "The unsigned tail").

After every commit, the records after the last signed checkpoint number at most
``checkpoint_every`` plus the other records of the one append that crosses the mark — whatever
the burst of appends and their sizes.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msc.journal import Entry, Journal, KeyRing


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(every=st.integers(1, 300), groups=st.lists(st.integers(1, 12), min_size=1, max_size=400),
       yield_every=st.integers(1, 500))
def test_unsigned_tail_never_exceeds_the_bound(every, groups, yield_every):
    async def go():
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            ring = KeyRing(d / "keys", d / "keys" / "master.key")
            ring.init()
            worst = 0
            j: Journal | None = None

            def committed(_entries, _seconds):
                nonlocal worst
                worst = max(worst, j.last_seq - j.tree_size)

            j = Journal(d / "journal", ring, checkpoint_every=every, synchronous="normal", on_commit=committed)
            await j.open()
            futs = []
            for i, n in enumerate(groups):
                futs.append(j.submit([Entry(kind="RECEIVED", text=f"{i}.{k}") for k in range(n)]))
                if i % yield_every == 0:
                    await asyncio.sleep(0)
            await asyncio.gather(*futs)
            await j.close()
            return worst

    worst = asyncio.run(go())
    assert worst <= every + max(groups) - 1
