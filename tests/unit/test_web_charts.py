"""Availability by calendar month for the administrator's chart (msc.ops.availability.between,
msc.web.charts): PPP §1.7.1's 98 % over 12 months, scheduled downtime included."""

from __future__ import annotations

import datetime as dt
from urllib.parse import unquote

import pytest

from msc.ops.availability import Ledger, Run, between, compute
from msc.web.charts import availability_svg, monthly

DAY = 86400.0


def utc(*a) -> float:
    return dt.datetime(*a, tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize("runs,since,until,up,down", [
    ([Run(1, 0, 100, 100)], 0, 100, 100, 0),
    ([Run(1, 0, 40, 40), Run(2, 60, 100, 100)], 0, 100, 80, 20),  # a 20 s outage
    ([Run(1, 0, 40, 40), Run(2, 60, 100, 100)], 50, 100, 40, 10),  # the window starts inside it
    ([Run(1, 0, 40, 40), Run(2, 60, 100, 100)], 0, 50, 40, 10),  # the window ends inside it
    ([Run(1, 0, 40, None)], 0, 100, 40, 60),  # crashed: down since its last heartbeat
    ([Run(1, 200, 300, 300)], 0, 100, 0, 0),  # a run after the window counts nothing
])
def test_between(runs, since, until, up, down):
    a = between(runs, since, until)
    assert (round(a.up_s), round(a.down_s)) == (up, down)


def test_compute_is_between_over_its_window():
    runs = [Run(1, 0, 40 * DAY, 40 * DAY), Run(2, 41 * DAY, 400 * DAY, None)]
    now = 400 * DAY
    assert compute(runs, now, "30d").ratio == between(runs, now - 30 * DAY, now).ratio
    assert compute(runs, now, "365d", current=2).down_s == between(runs, now - 365 * DAY, now, current=2).down_s


def test_monthly_from_the_ledger_and_the_chart(tmp_path):
    from types import SimpleNamespace

    db = tmp_path / "state.db"
    ledger = Ledger(db)
    ledger.start(utc(2026, 9, 1))
    ledger.heartbeat(utc(2026, 10, 10))  # crashed on 10 October, back on the 11th
    ledger.stop(utc(2026, 10, 10))
    ledger.start(utc(2026, 10, 11))
    ledger.heartbeat(utc(2026, 11, 15))
    ledger.close()
    months = monthly(SimpleNamespace(state_db=db, config=SimpleNamespace(node=None)), utc(2026, 11, 15), running=True, ledger=Ledger(db))
    assert [m["month"] for m in months][-3:] == ["2026-09", "2026-10", "2026-11"] and len(months) == 12
    assert months[0]["ratio"] is None  # before the first run: nothing to measure
    sep, octo, nov = months[-3:]
    assert sep["ratio"] == 1.0 and nov["ratio"] == 1.0
    assert octo["down_s"] == pytest.approx(DAY) and octo["ratio"] == pytest.approx(30 / 31, abs=1e-6)
    svg = unquote(availability_svg(months))
    assert svg.startswith("data:image/svg+xml,<svg") and "98 % target" in svg
    assert svg.count("<rect") == 1 + 3  # background + three measured months
    assert "#c62828" in svg  # October is below 98 %: drawn red
