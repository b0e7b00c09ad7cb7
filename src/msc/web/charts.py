"""Availability over the last 12 months (PPP §1.7.1: at least 98 %), month by month, and the
chart the administrator's page shows: a server-rendered SVG (no script, no external asset),
one bar per month against the 98 % line."""

from __future__ import annotations

import datetime as dt
from urllib.parse import quote

from msc.config.load import Settings
from msc.ops.availability import TARGET, LedgerBackend, between, current_run


def monthly(settings: Settings, now: float, running: bool, months: int = 12, *,
            ledger: LedgerBackend | None = None) -> list[dict]:
    """``[{"month": "2026-03", "ratio": 0.9991 | None, "down_s": …}, …]`` oldest first; a month
    before the ledger's first run has ``ratio`` None (nothing to measure). ``ledger``: the
    availability ledger to read (default: the configuration's, ``[storage]``); closed after."""
    if ledger is None:
        from msc.storage.backends import Backends

        ledger = Backends(settings).ledger()
    try:
        runs = ledger.runs()
    finally:
        ledger.close()
    current = current_run(runs, now, running=running, pair=settings.config.node is not None)
    today = dt.datetime.fromtimestamp(now, dt.UTC)
    y, m = today.year, today.month
    starts = []
    for _ in range(months):
        starts.append(dt.datetime(y, m, 1, tzinfo=dt.UTC))
        y, m = (y, m - 1) if m > 1 else (y - 1, 12)
    out = []
    for start in reversed(starts):
        nxt = dt.datetime(start.year + (start.month == 12), start.month % 12 + 1, 1, tzinfo=dt.UTC)
        s, e = start.timestamp(), min(nxt.timestamp(), now)
        if not runs or e <= runs[0].started:
            out.append({"month": start.strftime("%Y-%m"), "ratio": None, "up_s": 0.0, "down_s": 0.0})
            continue
        a = between(runs, max(s, runs[0].started), e, current=current)
        out.append({"month": start.strftime("%Y-%m"), "ratio": round(a.ratio, 6), "up_s": round(a.up_s, 1),
                    "down_s": round(a.down_s, 1)})
    return out


def availability_svg(months: list[dict], *, width: int = 720, height: int = 260) -> str:
    """A ``data:`` URI of the bar chart (y from 90 % to 100 %, the 98 % target drawn across)."""
    left, right, top, bottom = 48, 12, 16, 36
    pw, ph = width - left - right, height - top - bottom
    lo = 0.90

    def y(r: float) -> float:
        return top + ph * (1 - (max(lo, min(1.0, r)) - lo) / (1 - lo))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>']
    for pct in (0.90, 0.92, 0.94, 0.96, 0.98, 1.0):
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(pct):.1f}" y2="{y(pct):.1f}" stroke="#dddddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y(pct) + 4:.1f}" text-anchor="end" fill="#333333">{pct * 100:.0f} %</text>')
    n = max(1, len(months))
    slot = pw / n
    for i, mo in enumerate(months):
        x = left + i * slot + slot * 0.15
        w = slot * 0.7
        label = mo["month"][2:]
        parts.append(f'<text x="{x + w / 2:.1f}" y="{height - bottom + 16}" text-anchor="middle" fill="#333333">{label}</text>')
        r = mo["ratio"]
        if r is None:
            parts.append(f'<text x="{x + w / 2:.1f}" y="{top + ph - 4}" text-anchor="middle" fill="#999999">n/a</text>')
            continue
        color = "#2e7d32" if r >= TARGET else "#c62828"
        parts.append(f'<rect x="{x:.1f}" y="{y(r):.1f}" width="{w:.1f}" height="{top + ph - y(r):.1f}" fill="{color}">'
                     f'<title>{mo["month"]}: {r * 100:.3f} %</title></rect>')
    parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(TARGET):.1f}" y2="{y(TARGET):.1f}" '
                 f'stroke="#1565c0" stroke-width="2" stroke-dasharray="6 4"/>')
    parts.append(f'<text x="{left + 4}" y="{y(TARGET) - 4:.1f}" text-anchor="start" fill="#1565c0">98 % target</text>')
    parts.append("</svg>")
    return "data:image/svg+xml," + quote("".join(parts))
