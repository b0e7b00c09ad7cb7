"""Cross-field validation of a decoded configuration.

Types are checked by msgspec when the files are decoded; this module checks what types cannot:
formats (mnemonics, ORIs, addresses), uniqueness, references between tables, and the regulatory
floors (retention >= 1096 days, PPP §1.7.1 A). The grammar comes from :mod:`msc.protocol.grammar`
so a mnemonic means the same thing in the config as on the wire.
"""

from __future__ import annotations

import ipaddress
import re
import stat
import urllib.parse
import zoneinfo
from collections.abc import Sequence

from msc.config.issues import ConfigIssue, locate
from msc.config.model import BUILTIN_CATEGORIES, ForwardSection
from msc.config.settings import Settings
from msc.protocol import edits as ed
from msc.protocol import grammar as g
from msc.protocol.message import SPECIAL_KEYS

MIN_RETENTION_DAYS = 1096  # PPP §1.7.1 A: three years of journals
_CATEGORY_RE = re.compile(r"[a-z][a-z0-9_]{0,30}\Z")
_TIME_RE = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]\Z")
NCIC_UPDATE_PREFIXES = ("E", "M", "X", "C", "L")


def parse_hostport(value: str) -> tuple[str, int]:
    """``"127.0.0.1:7400"`` / ``"[::1]:7400"`` → (host, port); raises ValueError."""
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
    else:
        host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT")
    return host, int(port)


def one_way_keys(route) -> frozenset[str]:
    """The keys of a route that await no answer (responses and one-way messages, PROTOCOL.md §4):
    the route's ``one_way``, or by default the keys of ``grammar.ONE_WAY_KEYS`` among ``mke``."""
    if route.one_way is not None:
        return frozenset(route.one_way)
    return frozenset(k for k in route.mke if k in g.ONE_WAY_KEYS)


def entry_keys(route) -> frozenset[str]:
    """The keys of a route that enter or change records (need the ``entry`` authorization)."""
    if route.entry is not None:
        return frozenset(route.entry)
    return frozenset(k for k in route.mke if k.startswith(NCIC_UPDATE_PREFIXES))


class _Checker:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.issues: list[ConfigIssue] = []
        self._texts: dict[str, str] = {}
        self._unique: dict[tuple, tuple] = {}

    def _text(self, file: str) -> str:
        if file not in self._texts:
            try:
                with open(file, encoding="utf-8", errors="replace") as fh:
                    self._texts[file] = fh.read()
            except OSError:
                self._texts[file] = ""
        return self._texts[file]

    def _place(self, path: str, users: bool) -> tuple[str, int | None]:
        file = str(self.s.users_path if users else self.s.config_path)
        parts: list[str | int] = []
        for name, index in re.findall(r"([A-Za-z_][\w]*)|\[(\d+)\]", path):
            parts.append(name if name else int(index))
        if parts and parts[-1] == "from_":
            parts[-1] = "from"
        return file, locate(self._text(file), parts)

    def add(self, path: str, message: str, *, users: bool = False) -> None:
        file, line = self._place(path, users)
        self.issues.append(ConfigIssue(file, path, message, line))

    def where(self, path: str, *, users: bool = False) -> str:
        """``path (file:line)`` — the other place of a conflict, for the message."""
        file, line = self._place(path, users)
        return f"{path} ({file}:{line})" if line else f"{path} ({file})"

    def unique(self, space: str, value, path: str, what: str, *, owner: object = None, users: bool = False) -> None:
        """Record ``value`` in the namespace ``space``; a second claim by a different ``owner``
        (default: every claim is its own owner) is an issue naming both places."""
        key = (space, value)
        first = self._unique.get(key)
        if first is None:
            self._unique[key] = (path, users, owner if owner is not None else path)
            return
        first_path, first_users, first_owner = first
        if owner is not None and owner == first_owner and path != first_path:
            return
        self.add(path, f"{what} {value} is already used by {self.where(first_path, users=first_users)}", users=users)


def validate(settings: Settings) -> list[ConfigIssue]:
    c = _Checker(settings)
    cfg = settings.config
    sw = cfg.switch

    if not sw.name.strip():
        c.add("switch.name", "must not be empty")
    for key in ("idle_logoff_s", "session_max_s", "queue_expiry_s", "drain_timeout_s"):
        if getattr(sw, key) <= 0:
            c.add(f"switch.{key}", "must be > 0")
    if sw.queue_max < 1:
        c.add("switch.queue_max", "must be >= 1")
    if not 1024 * 1024 <= sw.output_memory_bytes <= 1 << 34:
        c.add("switch.output_memory_bytes", "must be 1 MiB to 16 GiB (1048576..17179869184)")
    if not 4 <= sw.password_cost <= 20:
        c.add("switch.password_cost", "must be 4..20 (log2 of scrypt's N; 15 or more in production)")
    if sw.max_logon_checks is not None and not 1 <= sw.max_logon_checks <= 64:
        c.add("switch.max_logon_checks", "must be 1..64 (default: the CPUs, at most 4)")
    if sw.logon_queue < 0:
        c.add("switch.logon_queue", "must be >= 0")
    for key in ("logon_wait_s", "logon_failures_window_s"):
        if getattr(sw, key) <= 0:
            c.add(f"switch.{key}", "must be > 0")
    if sw.logon_failures_per_address < 1:
        c.add("switch.logon_failures_per_address", "must be >= 1")
    if not 0 <= sw.logon_throttle_delay_s <= 60:
        c.add("switch.logon_throttle_delay_s", "must be 0..60 (seconds)")
    for i, p in enumerate(sw.prohibited_purposes):
        if not re.fullmatch(r"[A-Z0-9]", p):
            c.add(f"switch.prohibited_purposes[{i}]", "a purpose code is one character [A-Z0-9]")
    _check_tz(c, "switch.timezone", sw.timezone)

    # listeners (names, and every address the daemon binds: listeners and metrics)
    binds: list[tuple[tuple[str, int], str]] = []
    for i, ln in enumerate(cfg.listener):
        p = f"listener[{i}]"
        c.unique("listener name", ln.name, f"{p}.name", "listener name")
        try:
            binds.append((parse_hostport(ln.bind), f"{p}.bind"))
        except ValueError as exc:
            c.add(f"{p}.bind", str(exc))
        if not 64 <= ln.max_frame <= 16 * 1024 * 1024:
            c.add(f"{p}.max_frame", "must be between 64 and 16777216")
        if ln.max_connections < 1:
            c.add(f"{p}.max_connections", "must be >= 1")
        for key in ("heartbeat_s", "read_timeout_s", "rate_limit", "logon_timeout_s", "tls_handshake_timeout_s"):
            if getattr(ln, key) <= 0:
                c.add(f"{p}.{key}", "must be > 0")
        for key in ("max_pending_per_address", "max_refused", "max_refused_per_minute"):
            if getattr(ln, key) < 1:
                c.add(f"{p}.{key}", "must be >= 1")
        if ln.tls is not None:
            for key in ("cert", "key", "client_ca"):
                value = getattr(ln.tls, key)
                if value is not None and not settings.path(value).is_file():
                    c.add(f"{p}.tls.{key}", f"file not found: {value}")
            if ln.tls.require_client_cert and ln.tls.client_ca is None:
                c.add(f"{p}.tls.client_ca", "require_client_cert needs client_ca")
        if ln.proxy_protocol and not ln.trusted_proxies:
            c.add(f"{p}.trusted_proxies", "proxy_protocol needs the relays' addresses (IP or CIDR) it trusts")
        if ln.trusted_proxies and not ln.proxy_protocol:
            c.add(f"{p}.trusted_proxies", "only with proxy_protocol = true")
        for k, proxy in enumerate(ln.trusted_proxies):
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                c.add(f"{p}.trusted_proxies[{k}]", f"{proxy!r} is not an IP address or CIDR")
    try:
        binds.append((parse_hostport(cfg.metrics.bind), "metrics.bind"))
    except ValueError as exc:
        c.add("metrics.bind", str(exc))
    _check_binds(c, binds)
    if cfg.web is not None:
        _check_web(c, settings, cfg)
    if cfg.node is not None:
        _check_node(c, settings, cfg)

    j = cfg.journal
    if j.retention_days < MIN_RETENTION_DAYS:
        c.add("journal.retention_days", f"must be >= {MIN_RETENTION_DAYS} (three years, PPP §1.7.1 A)")
    # The unsigned tail (records after the last signed checkpoint) is bounded by these two
    # (JOURNAL.md "Integrity"): their maxima keep it small.
    if not 1 <= j.checkpoint_every <= 10000:
        c.add("journal.checkpoint_every", "must be between 1 and 10000 records")
    if not 0 < j.checkpoint_interval_s <= 60:
        c.add("journal.checkpoint_interval_s", "must be > 0 and at most 60 seconds")
    for key in ("refused_full_per_minute", "refused_full_chars_per_minute", "refused_records_per_minute",
                "unauthenticated_records_per_minute", "unauthenticated_records_per_minute_total"):
        if getattr(j, key) < 0:
            c.add(f"journal.{key}", "must be >= 0")
    if j.verify_interval_s < 0:
        c.add("journal.verify_interval_s", "must be >= 0 (0: no background verification)")
    _check_storage(c, settings, cfg.storage)

    # upstreams and routes
    upstreams = {u.name for u in cfg.upstream}
    for i, u in enumerate(cfg.upstream):
        p = f"upstream[{i}]"
        c.unique("upstream name", u.name, f"{p}.name", "upstream name")
        if not 1 <= len(u.endpoints) <= 2:
            c.add(f"{p}.endpoints", "give a primary and optionally a secondary endpoint")
        for k, ep in enumerate(u.endpoints):
            try:
                parse_hostport(ep)
            except ValueError as exc:
                c.add(f"{p}.endpoints[{k}]", str(exc))
            # A secondary equal to the primary is no failover at all.
            c.unique(f"endpoint of upstream {i}", ep, f"{p}.endpoints[{k}]", "endpoint")
        for key in ("timeout_s", "heartbeat_s", "ack_timeout_s", "resend_wait_s"):
            if getattr(u, key) is not None and getattr(u, key) <= 0:
                c.add(f"{p}.{key}", "must be > 0")
        if u.heartbeat_s > 0 and u.ack_timeout_s is not None and u.ack_timeout_s > 2 * u.heartbeat_s:
            # An idle link is probed after heartbeat_s; the probe must fail within the
            # dead-link bound of 3 x heartbeat_s (PROTOCOL.md §1, §4).
            c.add(f"{p}.ack_timeout_s", "must be <= 2 x heartbeat_s (the dead-link bound is 3 x heartbeat_s)")
        if u.max_in_flight < 1:
            c.add(f"{p}.max_in_flight", "must be >= 1")
        if not 2 <= u.max_inbound <= 65536:
            c.add(f"{p}.max_inbound", "must be 2..65536")
        if u.tls is not None:
            for key in ("ca", "cert", "key"):
                value = getattr(u.tls, key)
                if value is not None and not settings.path(value).is_file():
                    c.add(f"{p}.tls.{key}", f"file not found: {value}")
    seen_keys: dict[str, int] = {}  # message key -> its route
    key_paths: dict[str, str] = {}  # message key -> where it is routed
    categories = set(BUILTIN_CATEGORIES)
    for i, r in enumerate(cfg.route):
        p = f"route[{i}]"
        if not r.mke:
            c.add(f"{p}.mke", "must list at least one message key")
        for k, key in enumerate(r.mke):
            if g.MKE_RE.match(key) is None:
                c.add(f"{p}.mke[{k}]", f"{key!r} is not a message key (2-6 [A-Z0-9])")
            elif key in SPECIAL_KEYS:
                c.add(f"{p}.mke[{k}]", f"{key} is handled by msc itself and cannot be routed")
            elif key in seen_keys:
                c.add(f"{p}.mke[{k}]", f"{key} is already routed by {c.where(key_paths[key])}")
            else:
                seen_keys[key] = i
                key_paths[key] = f"{p}.mke[{k}]"
        if r.upstream not in upstreams:
            c.add(f"{p}.upstream", f"no [[upstream]] named {r.upstream!r}")
        if _CATEGORY_RE.match(r.category) is None:
            c.add(f"{p}.category", "a category is lower-case letters, digits and _")
        elif r.category in BUILTIN_CATEGORIES:
            c.add(f"{p}.category", f"{r.category!r} is reserved")
        categories.add(r.category)
        if r.entry is not None:
            for k, key in enumerate(r.entry):
                if key not in r.mke:
                    c.add(f"{p}.entry[{k}]", f"{key} is not one of this route's keys")
        if r.one_way is not None:
            for k, key in enumerate(r.one_way):
                if key not in r.mke:
                    c.add(f"{p}.one_way[{k}]", f"{key} is not one of this route's keys")

    _check_edits(c, cfg, seen_keys)
    timeouts = {u.name: u.timeout_s for u in cfg.upstream}
    for i, r in enumerate(cfg.route):
        if r.timeout_s is not None and not r.timeout_s > 0:
            c.add(f"route[{i}].timeout_s", "must be > 0")
        timeout = r.timeout_s if r.timeout_s is not None else timeouts.get(r.upstream)
        if r.answer_window_s is not None and timeout is not None and not r.answer_window_s >= timeout:
            c.add(f"route[{i}].answer_window_s",
                  f"must be >= the route's timeout_s ({timeout:g}): an answer that may come until then "
                  "must find its request")
    if not sw.late_answer_s >= 0:
        c.add("switch.late_answer_s", "must be >= 0")
    _check_unsolicited(c, cfg.unsolicited)

    if sw.admin_upstream is not None and sw.admin_upstream not in upstreams:
        c.add("switch.admin_upstream", f"no [[upstream]] named {sw.admin_upstream!r}")

    # agencies
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
        _check_addresses(c, p, st.addresses, st.client_cert_cn)
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
        _check_addresses(c, p, pl.addresses, pl.client_cert_cn)
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
        _check_tz(c, f"{p}.timezone", f.timezone)
    _check_forward_overlap(c, cfg.forward)

    # users.toml
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
    return c.issues


def _check_edits(c: _Checker, cfg, routed: dict[str, int]) -> None:
    """``[edits]`` and ``[[edit]]`` (CONFIG.md "Edits"): known tags and formats, purpose codes,
    each key routed and edited once, no rule that nothing could pass."""
    e = cfg.edits
    prohibited = frozenset(cfg.switch.prohibited_purposes)
    for k, code in enumerate(e.purpose_codes):
        if re.fullmatch("[A-Z]", code) is None:
            c.add(f"edits.purpose_codes[{k}]", f"{code!r} is not a purpose code (one letter)")
    for tag, fmt in e.formats.items():
        if g.TAG_RE.match(tag) is None:
            c.add("edits.formats", f"{tag!r} is not a tag (3 letters A-Z)")
        if fmt not in ed.FORMATS:
            c.add("edits.formats", f"unknown format {fmt!r} for {tag} (known: {', '.join(sorted(ed.FORMATS))})")
    edited: dict[str, int] = {}
    edited_at: dict[str, str] = {}
    for i, sec in enumerate(cfg.edit):
        p = f"edit[{i}]"
        if not sec.mke:
            c.add(f"{p}.mke", "must list at least one message key")
        for k, key in enumerate(sec.mke):
            if key not in routed:
                c.add(f"{p}.mke[{k}]", f"{key} is not routed by any [[route]]: an edit for it never applies")
            if key in edited:
                c.add(f"{p}.mke[{k}]", f"{key} already has its edits in {c.where(edited_at[key])}")
            edited.setdefault(key, i)
            edited_at.setdefault(key, f"{p}.mke[{k}]")
        cori = any(cfg.route[routed[key]].category == "cori" for key in sec.mke if key in routed)
        rule = ed.from_section(sec, sec.mke[0] if sec.mke else "", purpose_codes=tuple(e.purpose_codes),
                               formats={})
        for name, message in ed.check(rule, prohibited_purposes=prohibited, cori=cori):
            c.add(f"{p}.{name}", message)
        if len(set(sec.required)) != len(sec.required):
            c.add(f"{p}.required", "a tag is listed twice")


# A kind of unsolicited traffic (PROTOCOL.md §5): a message key, an NCIC notification "$.X.", a
# prefix of either ending in "*" ("LW*" every wanted-person locate key, "$.*" every notification).
_KIND_RE = re.compile(rf"(?:{g.MKE}|{g.NCIC_NOTIFICATION}|[A-Z0-9]{{1,5}}\*|\$\.\*)\Z")
_CLASS_RE = re.compile(r"[a-z][a-z0-9_-]{0,30}\Z")


def _check_unsolicited(c: _Checker, rules) -> None:
    names: dict[str, int] = {}
    kinds: dict[str, str] = {}
    for i, u in enumerate(rules):
        p = f"unsolicited[{i}]"
        if _CLASS_RE.match(u.name) is None or u.name == "unknown":
            c.add(f"{p}.name", "a class name is lower-case letters, digits, - and _ (not 'unknown')")
        elif u.name in names:
            c.add(f"{p}.name", f"{u.name!r} is already used by {c.where(f'unsolicited[{names[u.name]}].name')}")
        else:
            names[u.name] = i
        if not u.kinds:
            c.add(f"{p}.kinds", "must list at least one kind")
        for k, kind in enumerate(u.kinds):
            if _KIND_RE.match(kind) is None:
                c.add(f"{p}.kinds[{k}]", f"{kind!r} is not a kind: a message key (YQ), an NCIC "
                      "notification ($.L.) or a prefix ending in * (LW*, $.*)")
            elif kind in kinds:
                c.add(f"{p}.kinds[{k}]", f"{kind} is already classified by {c.where(kinds[kind])}")
            else:
                kinds[kind] = f"{p}.kinds[{k}]"


_WILDCARD_HOSTS = frozenset(("0.0.0.0", "::", "*", ""))


def _check_binds(c: _Checker, binds: list[tuple[tuple[str, int], str]]) -> None:
    """No two sockets of the daemon on one address: the same host and port, or the same port
    with a wildcard host (``0.0.0.0``/``::`` takes the port on every address)."""
    for i, ((host, port), path) in enumerate(binds):
        if port == 0:  # port 0 asks the kernel for any free port: no conflict
            continue
        for (other_host, other_port), other in binds[:i]:
            if port == other_port and (host == other_host or host in _WILDCARD_HOSTS or other_host in _WILDCARD_HOSTS):
                c.add(path, f"address {host}:{port} is already bound by {c.where(other)}")
                break


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


def _check_forward_overlap(c: _Checker, forwards: Sequence[ForwardSection]) -> None:
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


def _check_web(c: _Checker, settings, cfg) -> None:
    """``[web]`` (docs/WEB.md): HTTPS only; the listener it relays to takes its PROXY headers."""
    w = cfg.web
    try:
        wb = parse_hostport(w.bind)
    except ValueError as exc:
        c.add("web.bind", str(exc))
        wb = None
    if w.tls is None:
        c.add("web.tls", "the web console serves HTTPS only: give tls = { cert = …, key = … }")
    else:
        for key in ("cert", "key", "client_ca"):
            value = getattr(w.tls, key)
            if value is not None and not settings.path(value).is_file():
                c.add(f"web.tls.{key}", f"file not found: {value}")
    lc = next((ln for ln in cfg.listener if ln.name == w.listener), None)
    if lc is None:
        c.add("web.listener", f"no [[listener]] named {w.listener!r}")
    else:
        if not lc.proxy_protocol:
            c.add("web.listener", f"listener {w.listener!r} needs proxy_protocol = true (the browsers' own addresses "
                                  "reach the switch in PROXY headers)")
        if lc.tls is not None and w.switch_tls is None:
            c.add("web.switch_tls", f"listener {w.listener!r} has tls: give switch_tls = {{ ca = … }}")
        try:
            lb = parse_hostport(lc.bind)
            if wb is not None and lb == wb:
                c.add("web.bind", f"the same address as listener {w.listener!r}")
        except ValueError:
            pass
    if w.header is not None and w.header not in {p.name for p in cfg.pool} and \
            w.header not in {st.mnemonic for st in cfg.station if st.kind == "terminal"}:
        c.add("web.header", f"{w.header!r} is neither a [[pool]] nor a terminal [[station]]")
    if not 1 <= w.logon_attempts_per_minute <= 1000:
        c.add("web.logon_attempts_per_minute", "must be 1..1000")


_NODE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")


def _check_node(c: _Checker, settings, cfg) -> None:
    """``[node]`` (OPERATIONS.md "Running two nodes"): a name, a lease time, and a PostgreSQL
    database to hold the lease in — named by a libpq URI without a password."""
    n = cfg.node
    if not _NODE_NAME_RE.match(n.name):
        c.add("node.name", "1..63 characters: letters, digits, '.', '_' or '-' (unique per node)")
    if not 1 <= n.lease_ttl_s <= 600:
        c.add("node.lease_ttl_s", "must be 1..600 (seconds)")
    storage = getattr(cfg, "storage", None)
    shared = storage is not None and getattr(storage, "backend", None) == "postgresql"
    if n.lease_dsn is None:
        if not shared:
            c.add("node.lease_dsn", "give the PostgreSQL database that holds the lease "
                                    "(postgresql://user@host:5432/db?target_session_attrs=read-write)")
    else:
        for problem in dsn_problems(n.lease_dsn):
            c.add("node.lease_dsn", problem)
    if n.lease_password_file is not None:
        pw = settings.path(n.lease_password_file)
        if not pw.is_file():
            c.add("node.lease_password_file", f"file not found: {n.lease_password_file}")
        elif pw.stat().st_mode & 0o077:
            c.add("node.lease_password_file", f"{n.lease_password_file} is readable by others: chmod 600 (a password)")


#: target_session_attrs values asyncpg (the PostgreSQL client) understands.
SESSION_ATTRS = frozenset(("any", "primary", "standby", "prefer-standby", "read-write", "read-only"))
#: libpq connection parameters (libpq "Parameter Key Words") that asyncpg's URI parser does not take:
#: it passes every unknown query parameter on to the server as a run-time setting, and the server
#: refuses the connection (FATAL: unrecognized configuration parameter "connect_timeout") — found
#: when make ha-soak's connection string had connect_timeout.
LIBPQ_ONLY_PARAMS = frozenset((
    "hostaddr", "connect_timeout", "channel_binding", "options", "fallback_application_name", "keepalives",
    "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout", "replication",
    "gssencmode", "requiressl", "sslcompression", "sslcertmode", "sslcrldir", "sslsni", "requirepeer",
    "gssdelegation", "load_balance_hosts", "require_auth"))


def _check_storage(c: _Checker, settings, st) -> None:
    """``[storage]`` (CONFIG.md "Storage"). A password never belongs in msc.toml: a dsn that
    carries one is refused (and never echoed back in the message)."""
    if st.backend == "sqlite":
        for key in ("dsn", "password_file"):
            if getattr(st, key) is not None:
                c.add(f"storage.{key}", 'only with backend = "postgresql"')
        return
    if not st.dsn:
        c.add("storage.dsn", 'backend = "postgresql" needs a connection URI (postgresql://user@host/db)')
    else:
        for problem in dsn_problems(st.dsn):
            c.add("storage.dsn", problem)
    if st.password_file is not None:
        path = settings.path(st.password_file)
        try:
            mode = path.stat().st_mode
        except OSError:
            c.add("storage.password_file", f"file not found: {st.password_file}")
        else:
            if not stat.S_ISREG(mode):
                c.add("storage.password_file", "must be a regular file")
            elif mode & 0o077:
                c.add("storage.password_file", f"mode {stat.S_IMODE(mode):04o}: must not be readable by group or others "
                                               "(chmod 600)")


NO_PASSWORD = ("no password in the connection string: give it in a file (storage.password_file, "
               "node.lease_password_file) or the environment (PGPASSWORD)")


def dsn_problems(dsn: str) -> list[str]:
    """What is wrong with a PostgreSQL connection URI for msc (empty: nothing). The URI form
    (libpq's "Connection URIs", which asyncpg parses): ``postgresql://[user@]host[:port][,host[:port]…]
    /dbname[?param=value&…]``. Refused: libpq's ``key=value`` form, a password in the URI (user
    info or ``password=``), an empty host or a bad port, several hosts without
    ``target_session_attrs=read-write`` (or ``primary``) — msc would write to whichever answered."""
    try:
        parts = urllib.parse.urlsplit(dsn)
    except ValueError:  # an unclosed [IPv6] host, …
        return ["is not a well-formed connection URI (an IPv6 host is written [addr]:port)"]
    if parts.scheme not in ("postgresql", "postgres"):
        return ["must be a libpq URI: postgresql://user@host:port/dbname (libpq's key=value form is not accepted)"]
    problems = []
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    if ":" in userinfo:
        problems.append(NO_PASSWORD)
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    # An '@' after the server: user information cut short by a '/', '?' or '#' (a password with
    # one of them makes "user:pass/word@host" parse as host "user", port "pass" and a path);
    # "??password=" parses as the key "?password"; libpq's keys are case-insensitive.
    after_server = dsn.partition("//")[2][len(parts.netloc):]
    if "password" in urllib.parse.unquote(parts.query).lower() or "@" in after_server:
        problems.append(NO_PASSWORD + " (an '@' in a database name or parameter is written %40)")
    if parts.fragment or dsn.endswith("#"):
        problems.append("a connection URI has no '#' part")
    netloc_hosts = hostlist.split(",") if hostlist else []
    hosts = netloc_hosts + [h for v in query.get("host", []) for h in v.split(",")]
    if not any(h.strip() for h in hosts):
        problems.append("name the server: postgresql://user@host:5432/db (several hosts: h1:5432,h2:5432)")
    for h in hosts:
        host, port = h, ""
        if h.startswith("["):  # [IPv6]:port
            host, _, rest = h[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
        elif h.count(":") == 1:
            host, _, port = h.partition(":")
        if not host and "host" not in query:
            problems.append("a host is empty")
        elif h and h in netloc_hosts and not _DSN_HOST_RE.match(h):  # (a query's host= may be a socket path)
            problems.append("each server is host[:port] (several: h1:5432,h2:5432; IPv6 in brackets)")
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            problems.append("a port must be 1..65535")
    unknown = sorted({k.lower() for k in query} & LIBPQ_ONLY_PARAMS)
    if unknown:
        problems.append(f"{', '.join(unknown)}: a libpq setting msc's client (asyncpg) does not know — it would "
                        "reach the server as a run-time parameter and every connection would be refused; leave "
                        "it out (asyncpg reads host, port, dbname, user, passfile, sslmode, sslcert, sslkey, "
                        "sslrootcert, sslcrl, target_session_attrs, …)")
    attrs = query.get("target_session_attrs", [])
    if attrs and attrs[-1] not in SESSION_ATTRS:
        problems.append(f"target_session_attrs must be one of {', '.join(sorted(SESSION_ATTRS))}")
    if len(hosts) > 1 and (not attrs or attrs[-1] not in ("read-write", "primary")):
        problems.append("several hosts need target_session_attrs=read-write (else a standby may be chosen)")
    return problems


#: One host of a libpq URI: a name or address (percent-encoded: a socket directory) or [IPv6],
#: and an optional port.
_DSN_HOST_RE = re.compile(r"(?:[A-Za-z0-9._~%-]+|\[[0-9A-Fa-f:.%A-Za-z]+\])(?::[0-9]{1,5})?\Z")


def _check_tz(c: _Checker, path: str, name: str) -> None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        c.add(path, f"unknown time zone {name!r}")


def _check_addresses(c: _Checker, p: str, addresses, cn) -> None:
    if not addresses and cn is None:
        c.add(f"{p}.addresses", "give addresses or client_cert_cn: who may claim it")
    for k, a in enumerate(addresses):
        try:
            ipaddress.ip_network(a, strict=False)
        except ValueError:
            c.add(f"{p}.addresses[{k}]", f"{a!r} is not an IP address or CIDR")
