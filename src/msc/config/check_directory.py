"""The directory's sections: ``[[agency]]``, ``[[station]]``, ``[[pool]]``, ``[[group]]``,
``[[forward]]`` (CONFIG.md) and users.toml — ORIs, mnemonics and user IDs in their grammar
(PPP §1.6.2 A, §1.6.7), every name a message can be addressed to once, references that resolve,
hashes and sealed secrets only, a removed ID not reassigned (CJIS IA-4d).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from msc.config.checker import Checker, check_addresses, check_tz
from msc.config.model import ForwardSection
from msc.protocol import grammar as g

_TIME_RE = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]\Z")


def check_directory(c: Checker, categories: set[str]) -> None:
    """Agencies, stations, pools, groups and forwarding rules; ``categories``: those the routes
    define (a station's or pool's authorizations name them)."""
    cfg = c.s.config
    agencies = {a.ori for a in cfg.agency}
    for i, a in enumerate(cfg.agency):
        c.unique("ORI", a.ori, f"agency[{i}].ori", "ORI")
        if g.ORI_RE.match(a.ori) is None:
            c.add(f"agency[{i}].ori", f"{a.ori!r} is not an ORI (2 letters + 7 [A-Z0-9])")

    # Every name a message can be addressed to (PROTOCOL.md §2 AM DEST, §3 headers): station
    # mnemonics, host workstation mnemonics, pooled mnemonics, pool names (a pool's logon
    # header) and group names — one namespace, each name once, or a later table silently takes
    # an earlier one's traffic (a second [[station]] ICS1 replaced the duty station on reload).
    # A host may list its own station mnemonic among its workstation mnemonics.
    def claim(name: str, owner: str, path: str) -> None:
        c.unique("address", name, path, "name", owner=owner)

    stations = {}
    for i, st in enumerate(cfg.station):
        p = f"station[{i}]"
        stations[st.mnemonic] = st
        if g.MNEMONIC_RE.match(st.mnemonic) is None:
            c.add(f"{p}.mnemonic", f"{st.mnemonic!r} is not a mnemonic (4 [A-Z0-9], PPP §1.6.2 A)")
        claim(st.mnemonic, f"station[{i}]", f"{p}.mnemonic")
        if st.ori not in agencies:
            c.add(f"{p}.ori", f"no [[agency]] with ORI {st.ori}")
        for k, ori in enumerate(st.serves):
            if ori not in agencies:
                c.add(f"{p}.serves[{k}]", f"no [[agency]] with ORI {ori}")
        if st.kind != "printer" and not st.serves:
            c.add(f"{p}.serves", "list the agencies whose users may operate this station")
        check_addresses(c, p, st.addresses, st.client_cert_cn)
        if st.kind == "host":
            if not st.mnemonics:
                c.add(f"{p}.mnemonics", "a host lists its workstation mnemonics")
            for k, m in enumerate(st.mnemonics):
                if g.MNEMONIC_RE.match(m) is None:
                    c.add(f"{p}.mnemonics[{k}]", f"{m!r} is not a mnemonic")
                claim(m, f"station[{i}]", f"{p}.mnemonics[{k}]")  # the host's own names
                c.unique(f"workstation of station {i}", m, f"{p}.mnemonics[{k}]", "workstation mnemonic")
        elif st.mnemonics:
            c.add(f"{p}.mnemonics", "only host stations have workstation mnemonics")
        for k, cat in enumerate(st.authorizations):
            if cat not in categories:
                c.add(f"{p}.authorizations[{k}]", f"unknown category {cat!r} (known: {', '.join(sorted(categories))})")
        if st.kind == "printer" and st.authorizations:
            c.add(f"{p}.authorizations", "a printer only receives")

    pools = set()
    for i, pl in enumerate(cfg.pool):
        p = f"pool[{i}]"
        pools.add(pl.name)
        if g.POOL_NAME_RE.match(pl.name) is None:
            c.add(f"{p}.name", f"{pl.name!r} is not a pool name (4-10 [A-Z0-9])")
        claim(pl.name, f"{p}.name", f"{p}.name")
        if pl.ori not in agencies:
            c.add(f"{p}.ori", f"no [[agency]] with ORI {pl.ori}")
        if not pl.serves:
            c.add(f"{p}.serves", "list the agencies whose users may log on to this pool")
        for k, ori in enumerate(pl.serves):
            if ori not in agencies:
                c.add(f"{p}.serves[{k}]", f"no [[agency]] with ORI {ori}")
        if not pl.mnemonics:
            c.add(f"{p}.mnemonics", "a pool needs at least one mnemonic")
        for k, m in enumerate(pl.mnemonics):
            if g.MNEMONIC_RE.match(m) is None:
                c.add(f"{p}.mnemonics[{k}]", f"{m!r} is not a mnemonic")
            claim(m, f"{p}.mnemonics[{k}]", f"{p}.mnemonics[{k}]")
        check_addresses(c, p, pl.addresses, pl.client_cert_cn)
        for k, cat in enumerate(pl.authorizations):
            if cat not in categories:
                c.add(f"{p}.authorizations[{k}]", f"unknown category {cat!r}")
        if pl.unsolicited_to is not None and pl.unsolicited_to not in stations:
            c.add(f"{p}.unsolicited_to", f"no [[station]] {pl.unsolicited_to}")

    for i, a in enumerate(cfg.agency):
        if a.duty_station is not None:
            duty = stations.get(a.duty_station)
            if duty is None:
                c.add(f"agency[{i}].duty_station", f"no [[station]] {a.duty_station}")
            elif duty.kind == "host":
                c.add(f"agency[{i}].duty_station", "the 24x7 destination must be a terminal or printer")

    groups = set()
    for i, gr in enumerate(cfg.group):
        p = f"group[{i}]"
        if g.GROUP_NAME_RE.match(gr.name) is None:
            c.add(f"{p}.name", f"{gr.name!r} is not a group name (2-10 [A-Z0-9])")
        claim(gr.name, f"{p}.name", f"{p}.name")
        if gr.name in agencies:
            c.add(f"{p}.name", f"{gr.name} is an agency's ORI: an AM to it would be ambiguous")
        groups.add(gr.name)
        for k, m in enumerate(gr.members):
            if m not in stations:
                c.add(f"{p}.members[{k}]", f"no [[station]] {m}")
            c.unique(f"member of group {i}", m, f"{p}.members[{k}]", "member")

    for i, f in enumerate(cfg.forward):
        p = f"forward[{i}]"
        if f.from_ not in stations:
            c.add(f"{p}.from_", f"no [[station]] {f.from_}")
        if f.to not in stations:
            c.add(f"{p}.to", f"no [[station]] {f.to}")
        if f.from_ == f.to:
            c.add(f"{p}.to", "a station cannot forward to itself")
        for key in ("start", "end"):
            if _TIME_RE.match(getattr(f, key)) is None:
                c.add(f"{p}.{key}", "time of day is HH:MM (24 h)")
        check_tz(c, f"{p}.timezone", f.timezone)
    _check_forward_overlap(c, cfg.forward)


def check_users(c: Checker) -> None:
    """users.toml: IDs, agencies, password hashes, sealed TOTP secrets, removed IDs."""
    settings = c.s
    agencies = {a.ori for a in settings.config.agency}
    users = settings.users
    removed = {r.id for r in users.removed}
    for i, usr in enumerate(users.user):
        p = f"user[{i}]"
        c.unique("user ID", usr.id, f"{p}.id", "user ID", users=True)
        if g.USER_ID_RE.match(usr.id) is None:
            c.add(f"{p}.id", f"{usr.id!r} is not a user ID (6 [A-Z0-9], PPP §1.6.7)", users=True)
        if usr.ori not in agencies:
            c.add(f"{p}.ori", f"no [[agency]] with ORI {usr.ori} in {settings.config_path.name}", users=True)
        if not (usr.password.startswith("$scrypt$") or usr.password.startswith("$argon2")):
            c.add(f"{p}.password", "must be a hash written by `msc user add` (never plaintext)", users=True)
        if usr.totp is not None and not usr.totp.startswith("enc:"):
            c.add(f"{p}.totp", "must be an encrypted secret written by `msc user add --totp`", users=True)
        if usr.id in removed:
            c.add(f"{p}.id", f"{usr.id} was removed and may not be reassigned yet (CJIS IA-4d)", users=True)
    for i, gone in enumerate(users.removed):
        c.unique("removed user ID", gone.id, f"removed[{i}].id", "removed user ID", users=True)
        if g.USER_ID_RE.match(gone.id) is None:
            c.add(f"removed[{i}].id", f"{gone.id!r} is not a user ID", users=True)


def _minutes(rule) -> set[tuple[int, int]]:
    """The (day, minute-of-day) slots a [[forward]] rule covers, in its own time zone."""
    days = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
    try:
        sh, sm = map(int, rule.start.split(":"))
        eh, em = map(int, rule.end.split(":"))
    except ValueError:
        return set()
    start, end = sh * 60 + sm, eh * 60 + em
    out: set[tuple[int, int]] = set()
    for day in rule.days:
        d = days.index(day)
        if start == end:
            out.update((d, m) for m in range(1440))
        elif start < end:
            out.update((d, m) for m in range(start, end))
        else:  # past midnight: into the next day
            out.update((d, m) for m in range(start, 1440))
            out.update(((d + 1) % 7, m) for m in range(end))
    return out


def _check_forward_overlap(c: Checker, forwards: Sequence[ForwardSection]) -> None:
    """One station's traffic goes to one place at a time: two [[forward]] rules of the same
    station (in the same time zone) may not cover the same minute."""
    seen: list[tuple[ForwardSection, set[tuple[int, int]], int]] = []
    for i, f in enumerate(forwards):
        slots = _minutes(f)
        for other, other_slots, j in seen:
            if other.from_ == f.from_ and other.timezone == f.timezone and slots & other_slots:
                c.add(f"forward[{i}].from_", f"{f.from_} is already forwarded at these times by {c.where(f'forward[{j}].from_')}")
                break
        seen.append((f, slots, i))
