"""The routing sections: ``[[upstream]]``, ``[[route]]``, ``[edits]`` and ``[[edit]]``,
``[[unsolicited]]`` (CONFIG.md) — each message key routed once to an upstream that exists, its
edits known and passable, its timeouts consistent, each kind of unsolicited traffic classified once.
"""

from __future__ import annotations

import re

from msc.config.checker import Checker, parse_hostport
from msc.config.model import BUILTIN_CATEGORIES
from msc.protocol import edits as ed
from msc.protocol import grammar as g
from msc.protocol.message import SPECIAL_KEYS

_CATEGORY_RE = re.compile(r"[a-z][a-z0-9_]{0,30}\Z")


def check_routes(c: Checker) -> set[str]:
    """Upstreams, routes, edits and unsolicited classes; the categories routes define (for the
    directory's authorizations)."""
    settings = c.s
    cfg = settings.config
    sw = cfg.switch
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
        _check_answer_parts(c, p, r)

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
    return categories


def _check_answer_parts(c: Checker, p: str, r) -> None:
    """``answer_parts`` (PROTOCOL.md §4): a count of at least 1, for keys of the route that await
    an answer, on a route whose answer may come in parts (it declares ``answer_window_s``)."""
    declared = r.answer_parts
    if declared is None:
        return
    if r.answer_window_s is None:
        c.add(f"{p}.answer_parts", "needs answer_window_s: without it a route's answer is one part")
    one_way = set(r.one_way) if r.one_way is not None else {k for k in r.mke if k in g.ONE_WAY_KEYS}
    for key, n in (declared.items() if isinstance(declared, dict) else [(None, declared)]):
        where = f"{p}.answer_parts" + (f".{key}" if key is not None else "")
        if key is not None and key not in r.mke:
            c.add(where, f"{key} is not one of this route's keys")
        elif key is not None and key in one_way:
            c.add(where, f"{key} is one-way: no answer is awaited")
        if isinstance(n, bool) or not n >= 1:
            c.add(where, "must be a whole number >= 1 (the parts of a complete answer)")


def _check_edits(c: Checker, cfg, routed: dict[str, int]) -> None:
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


def _check_unsolicited(c: Checker, rules) -> None:
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
