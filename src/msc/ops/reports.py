"""Compliance reports an MSC administrator owes the state (OPERATIONS.md ``msc report …``).

* ``availability`` — PPP §1.7.1: ≥ 98 % over 12 months, scheduled downtime included.
* ``mnemonics`` — PPP §1.6.2: "Any terminal mnemonic that remains inactive for nine months will be
  deleted from the CLETS. Inactive mnemonics information will be made available to agencies 90
  days prior to deletion": every mnemonic unused for 6 months, with the date the state deletes it.
* ``users`` — CJIS AC-2 (disable accounts inactive 90 days) and PPP §1.8.2 (biennial
  proficiency): inactive operators and certifications expiring within 60 days.
* ``misuse`` — PPP §1.10: self-inquiries, refused criminal-history purposes, logon failures by
  user, and operator traffic outside business hours, from the journal's plaintext metadata (no
  message is decrypted).

Each function returns a plain dict (the JSON form); :func:`render` prints it for people. What
they read comes from ``sources`` (:class:`Sources`: ``msc.storage.backends.Backends`` — state.db
and the journal directory, or PostgreSQL), which the caller opens for the configuration.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import Counter
from typing import Any, Protocol

from msc.config.load import Settings
from msc.journal.interfaces import JournalReader
from msc.mnemonics.state import RuntimeState
from msc.ops.availability import TARGET, WINDOWS, LedgerBackend, compute, current_run, fmt_duration, iso

DAY = 86400
MNEMONIC_REPORT_DAYS = 182  # "inactive >= 6 months"
MNEMONIC_DELETE_DAYS = 274  # the state deletes after nine months
USER_INACTIVE_DAYS = 90
CERT_WARN_DAYS = 60
BUSINESS_HOURS = (dt.time(7, 0), dt.time(19, 0))  # Monday to Friday, in [switch] timezone


class Sources(Protocol):
    """Where the reports read (``msc.storage.backends.Backends`` for a configuration); each call
    opens a handle the report closes."""

    def ledger(self) -> LedgerBackend: ...

    def runtime_state(self) -> RuntimeState: ...

    def journal_reader(self) -> JournalReader: ...


def availability(settings: Settings, now: float, *, running: bool, sources: Sources) -> dict:
    ledger = sources.ledger()
    try:
        runs = ledger.runs()
    finally:
        ledger.close()
    current = current_run(runs, now, running=running, pair=settings.config.node is not None)
    windows: dict[str, dict[str, Any]] = {}
    out = {"target": TARGET, "now": iso(now), "windows": windows}
    for window in WINDOWS:
        a = compute(runs, now, window, current=current)
        windows[window] = {
            "since": iso(a.since), "ratio": round(a.ratio, 6), "up_s": round(a.up_s, 1), "down_s": round(a.down_s, 1),
            "meets_target": a.ratio >= TARGET,
            "outages": [{"start": iso(o.start), "end": iso(o.end), "seconds": round(o.seconds, 1),
                         "duration": fmt_duration(o.seconds), "scheduled": o.scheduled} for o in a.outages],
        }
    return out


def _first_tracked(sources: Sources) -> float | None:
    ledger = sources.ledger()
    try:
        runs = ledger.runs()
    finally:
        ledger.close()
    return runs[0].started if runs else None


def mnemonics(settings: Settings, now: float, *, sources: Sources) -> dict:
    cfg = settings.config
    store = sources.runtime_state()
    try:
        last = store.station_last_use()
    finally:
        store.close()
    since = _first_tracked(sources) or now
    all_mnemonics: list[tuple[str, str]] = []
    for st in cfg.station:
        for m in (st.mnemonics if st.kind == "host" else (st.mnemonic,)):
            all_mnemonics.append((m, f"{st.kind} {st.mnemonic}"))
    for p in cfg.pool:
        all_mnemonics += [(m, f"pool {p.name}") for m in p.mnemonics]
    rows = []
    for m, owner in all_mnemonics:
        used = last.get(m)
        ref = used if used else since
        idle_days = (now - ref) / DAY
        if idle_days >= MNEMONIC_REPORT_DAYS:
            rows.append({"mnemonic": m, "owner": owner, "last_use": iso(used) if used else None,
                         "inactive_days": int(idle_days),
                         "state_deletion": iso(ref + MNEMONIC_DELETE_DAYS * DAY)[:10]})
    return {"now": iso(now), "inactive_after_days": MNEMONIC_REPORT_DAYS, "deleted_by_state_after_days": MNEMONIC_DELETE_DAYS,
            "tracked_since": iso(since), "mnemonics": sorted(rows, key=lambda r: -r["inactive_days"])}


def users(settings: Settings, now: float, *, sources: Sources) -> dict:
    store = sources.runtime_state()
    try:
        state = store.users()
    finally:
        store.close()
    today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    since = _first_tracked(sources) or now
    inactive, expiring = [], []
    for u in settings.users.user:
        st = state.get(u.id)
        last = max(filter(None, (st.last_logon, st.last_use))) if st and (st.last_logon or st.last_use) else None
        created = dt.datetime.combine(u.created, dt.time(), dt.UTC).timestamp() if u.created else since
        ref = last if last else max(created, since)
        days = (now - ref) / DAY
        if u.status == "active" and days >= USER_INACTIVE_DAYS:
            inactive.append({"id": u.id, "name": u.name, "ori": u.ori, "role": u.role,
                             "last_activity": iso(last) if last else None, "inactive_days": int(days)})
        if u.certified_until is not None and u.status == "active" and (u.certified_until - today).days <= CERT_WARN_DAYS:
            expiring.append({"id": u.id, "name": u.name, "ori": u.ori, "certified_until": u.certified_until.isoformat(),
                             "days_left": (u.certified_until - today).days})
    return {"now": iso(now), "inactive_after_days": USER_INACTIVE_DAYS, "certification_warning_days": CERT_WARN_DAYS,
            "inactive": sorted(inactive, key=lambda r: -r["inactive_days"]),
            "certification_expiring": sorted(expiring, key=lambda r: r["days_left"])}


def misuse(settings: Settings, start: float, end: float, *, sources: Sources) -> dict:
    tz = zoneinfo.ZoneInfo(settings.config.switch.timezone)
    upstreams = {u.name for u in settings.config.upstream}
    self_inq: Counter = Counter()
    cori: Counter = Counter()
    logon: Counter = Counter()
    after: Counter = Counter()
    total: Counter = Counter()
    reader = sources.journal_reader()
    lo, hi = int(start * 1e6), int(end * 1e6)
    first, last = _period(lo), _period(max(lo, hi - 1))
    try:
        for period in reader.periods():
            if not first <= period <= last:
                continue  # a month's records all have times in that month
            for ts, kind, code, user, mke, peer, direction in reader.metadata(
                    period, ("ts", "kind", "code", "user", "mke", "peer", "direction"), start=lo, end=hi,
                    kinds=("REJECTED", "SESSION", "RECEIVED")):
                if kind == "RECEIVED" and direction != "in":
                    continue
                if kind == "SESSION" and code == "E208":
                    self_inq[user] += 1
                elif kind == "REJECTED" and code == "E209":
                    cori[user] += 1
                elif kind == "REJECTED" and mke == "LOGON" and code in ("E202", "E203"):
                    logon[user] += 1
                elif kind == "SESSION" and peer == "CLI" and code == "E202":  # an msc command's logon
                    logon[user] += 1
                elif kind == "RECEIVED" and peer not in upstreams and peer != "MSC" and user and mke not in ("LOGON",):
                    total[user] += 1
                    local = dt.datetime.fromtimestamp(ts / 1e6, tz)
                    if local.weekday() >= 5 or not BUSINESS_HOURS[0] <= local.time() < BUSINESS_HOURS[1]:
                        after[user] += 1
    finally:
        reader.close()

    def rows(c: Counter, key: str = "count") -> list[dict]:
        return [{"user": u, key: n} for u, n in c.most_common()]

    return {"from": iso(start), "to": iso(end), "timezone": str(tz),
            "business_hours": f"Mon-Fri {BUSINESS_HOURS[0]:%H:%M}-{BUSINESS_HOURS[1]:%H:%M}",
            "self_inquiries": rows(self_inq), "refused_cori_purposes": rows(cori), "logon_failures": rows(logon),
            "after_hours": [{"user": u, "messages": n, "of_total": total[u]} for u, n in after.most_common()]}


def _period(ts_us: int) -> str:
    d = dt.datetime.fromtimestamp(ts_us / 1e6, dt.UTC)
    return f"{d.year:04d}-{d.month:02d}"


def render(kind: str, doc: dict) -> str:
    out: list[str] = []
    if kind == "availability":
        out.append(f"Availability (target {doc['target']:.0%}, scheduled and unscheduled downtime included)")
        for window, w in doc["windows"].items():
            out.append(f"  {window:>5}: {w['ratio']:.4%} since {w['since']} — down {fmt_duration(w['down_s'])}, "
                       f"{'meets' if w['meets_target'] else 'BELOW'} target; {len(w['outages'])} outage(s)")
        outages = doc["windows"]["365d"]["outages"]
        if outages:
            out.append("  Outages (365 days):")
            for o in outages:
                out.append(f"    {o['start']} → {o['end']}  {o['duration']:>10}  {'scheduled' if o['scheduled'] else 'UNSCHEDULED'}")
    elif kind == "mnemonics":
        out.append(f"Mnemonics inactive {doc['inactive_after_days']} days or more (the state deletes a mnemonic after "
                   f"{doc['deleted_by_state_after_days']} days; tracking since {doc['tracked_since']})")
        for r in doc["mnemonics"] or [{"mnemonic": "(none)"}]:
            if "owner" not in r:
                out.append("  (none)")
                continue
            out.append(f"  {r['mnemonic']:<5} {r['owner']:<16} last use {r['last_use'] or 'never':<21} "
                       f"{r['inactive_days']:>4} days   state deletion {r['state_deletion']}")
    elif kind == "users":
        out.append(f"Users inactive {doc['inactive_after_days']} days or more (CJIS AC-2)")
        for r in doc["inactive"] or [None]:
            out.append("  (none)" if r is None else
                       f"  {r['id']:<7} {r['role']:<13} {r['ori']}  last activity {r['last_activity'] or 'never':<21} "
                       f"{r['inactive_days']:>4} days  {r['name']}")
        out.append(f"Certifications expiring within {doc['certification_warning_days']} days (PPP §1.8.2)")
        for r in doc["certification_expiring"] or [None]:
            out.append("  (none)" if r is None else
                       f"  {r['id']:<7} {r['ori']}  certified until {r['certified_until']} ({r['days_left']} days)  {r['name']}")
        if "disabled" in doc:
            out.append(f"Disabled now (--apply): {', '.join(doc['disabled']) or 'none'}")
    elif kind == "misuse":
        out.append(f"Misuse signals {doc['from']} → {doc['to']} (PPP §1.10)")
        for title, key, field in (("Self-inquiries refused (E208)", "self_inquiries", "count"),
                                  ("Criminal-history purposes refused (E209)", "refused_cori_purposes", "count"),
                                  ("Logon failures", "logon_failures", "count")):
            out.append(f"  {title}:")
            for r in doc[key] or [None]:
                out.append("    (none)" if r is None else f"    {r['user'] or '-':<7} {r[field]}")
        out.append(f"  Traffic outside business hours ({doc['business_hours']} {doc['timezone']}):")
        for r in doc["after_hours"] or [None]:
            out.append("    (none)" if r is None else f"    {r['user']:<7} {r['messages']} of {r['of_total']} messages")
    return "\n".join(out) + "\n"
