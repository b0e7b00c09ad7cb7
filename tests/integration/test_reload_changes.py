"""A reload names every setting it changed, in the ``config.reloaded`` log line and the ``CONFIG
RELOAD OK`` journal record (newcomer6: ``"changes": []`` after a SIGHUP that changed
drain_timeout_s). The real Switch, its msc.toml edited on disk, as an administrator does."""

from __future__ import annotations

import pytest

from msc.journal.search import Query, search

pytestmark = pytest.mark.timeout(120)

#: (what is edited in msc.toml — old line, new line —, what the record names)
EDITS = [
    ("drain_timeout_s = 10\n", "drain_timeout_s = 2\n", "switch.drain_timeout_s: 10 → 2"),  # the newcomer's
    ("timeout_s = 30\n", "timeout_s = 12\n", "upstream clets: timeout_s: 30 → 12"),
    ("idle_logoff_s = 1800\n", "idle_logoff_s = 900\n", "switch.idle_logoff_s: 1800 → 900"),
]


@pytest.mark.parametrize(("old", "new", "named"), EDITS)
async def test_a_reload_names_what_it_changed(harness, old, new, named):
    sw = await harness.start_switch(switch_extra="drain_timeout_s = 10")
    path = harness.tmp / "msc.toml"
    text = path.read_text()
    assert text.count(old) >= 1
    path.write_text(text.replace(old, new, 1))
    assert await sw.reload()
    await sw.journal.flush()
    (record,) = [r for r in search(sw.settings.journal_dir, sw.journal.keyring, Query(kind="ADMIN"))
                 if r.text.startswith("CONFIG RELOAD OK")]
    assert named in record.text, record.text
