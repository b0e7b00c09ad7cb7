"""What a reload reports as changed (msc.config.diff): every setting, not only listeners, links,
stations and routes (newcomer6: ``config.reloaded "changes": []`` after drain_timeout_s changed)."""

from __future__ import annotations

import msgspec
import pytest

from msc.config.diff import changes
from msc.config.load import load
from tests.conftest import make_config


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return load(make_config(tmp_path_factory.mktemp("diff"))).config


def with_(config, table: str, **values):
    return msgspec.structs.replace(config, **{table: msgspec.structs.replace(getattr(config, table), **values)})


#: (how the new configuration differs, the lines)
CASES = [
    (lambda c: c, []),
    (lambda c: with_(c, "switch", drain_timeout_s=2.0), ["switch.drain_timeout_s: 10 → 2"]),
    (lambda c: with_(c, "switch", queue_max=50, late_answer_s=60.0),
     ["switch.queue_max: 10000 → 50", "switch.late_answer_s: 3600 → 60"]),
    (lambda c: with_(c, "journal", checkpoint_interval_s=5.0, synchronous="normal"),
     ["journal.synchronous: full → normal", "journal.checkpoint_interval_s: 60 → 5"]),
    (lambda c: with_(c, "metrics", bind="127.0.0.1:9999"), ["metrics.bind changed"]),
    (lambda c: msgspec.structs.replace(c, listener=(msgspec.structs.replace(c.listener[0], max_connections=10),)),
     [f"listener {'{name}'}: max_connections: 1000 → 10"]),
    (lambda c: msgspec.structs.replace(c, upstream=(msgspec.structs.replace(c.upstream[0], timeout_s=5.0),)),
     [f"upstream {'{up}'}: timeout_s: 30 → 5"]),
    (lambda c: msgspec.structs.replace(c, edit=c.edit[:1]), ["[[edit]] updated"]),
    (lambda c: msgspec.structs.replace(c, route=c.route[:1]), []),  # the reload's own "routes updated"
]


@pytest.mark.parametrize(("change", "expected"), CASES)
def test_every_changed_setting_is_named(cfg, change, expected):
    names = {"name": cfg.listener[0].name, "up": cfg.upstream[0].name}
    assert changes(cfg, change(cfg)) == [e.replace("{name}", names["name"]).replace("{up}", names["up"])
                                         for e in expected]
