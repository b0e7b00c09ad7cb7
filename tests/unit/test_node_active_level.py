"""``node.active`` (newcomer trial F8): a warning only for a failover — the lease of another node ran
out and this node took it over; an ordinary start (a lease that was free, released, or this node's
own) says it at info, so a warning alert on it fires only when the pair failed over."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from msc.server.roles import NodeRole


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict]] = []

    def info(self, event: str, **kw) -> None:
        self.lines.append(("info", event, kw))

    def warning(self, event: str, **kw) -> None:
        self.lines.append(("warning", event, kw))


@pytest.mark.parametrize("taken, previous, level", [
    ("free", None, "info"),
    ("released", "msc-a", "info"),
    ("own", "msc-b", "info"),
    ("failover", "msc-a", "warning"),
])
def test_node_active_is_a_warning_only_at_a_failover(taken, previous, level):
    log = Log()
    node = SimpleNamespace(node_name="msc-b", log=log, metrics=SimpleNamespace(role=lambda *a: None))
    NodeRole.became_active(node, 7, taken=taken, previous=previous)  # type: ignore[arg-type]
    assert log.lines == [(level, "node.active", {"node": "msc-b", "epoch": 7, "taken": taken, "previous": previous})]
    assert node.role == "active" and node.lease_epoch == 7
