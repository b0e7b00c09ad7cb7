"""Where unsolicited and administrative traffic lands: the unsolicited table, TAMF and 24 × 7.

* **The unsolicited table** (CONFIG.md ``[[unsolicited]]``, PROTOCOL.md §5): every message from
  an upstream that answers no request is classified by its *kind* — its message key (``YQ``,
  ``LW`` …) or, for an NCIC notification that has none, its ``$.X.`` prefix (``$.L.``, ``$.H.``
  …; :attr:`msc.protocol.message.UpstreamMessage.kind`). A rule's ``deliver`` says where it goes:
  ``"24x7"`` — to a station staffed 24 hours a day (below); ``"addressed"`` — to the addressed
  station, mnemonic, group or ORI as it is. A kind no rule names goes to the addressed station
  and is counted (``msc_unsolicited_total{class="unknown"}``).
* **TAMF** (Time Activated Message Forwarding, PPP §1.5.4): a ``[[forward]]`` rule sends a
  station's traffic to another station on the listed days between ``start`` and ``end`` in the
  rule's time zone. A window whose end is not after its start runs past midnight: ``SAT`` 18:00 →
  07:00 is Saturday 18:00 to Sunday 07:00. ``start == end`` means the whole day. Rules are not
  chained (a forwarded message is not forwarded again), so rules cannot loop. TAMF applies to
  unsolicited and administrative traffic, not to the answer to an operator's own request.
* **24 × 7** (PPP §1.6.2 A): "All fixed CLETS terminals receiving hit confirmation requests or
  locate messages must directly terminate such messages at a printer or to a queue of a terminal
  staffed 24 hours a day/seven days a week": if the station a 24 × 7 kind lands on is not staffed
  24 × 7 or not connected, it goes to the agency's ``duty_station``.
"""

from __future__ import annotations

import datetime as dt
import re
import weakref
import zoneinfo
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from msc.mnemonics.directory import Directory, Forward

DAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
DELIVER_24X7 = "24x7"
DELIVER_ADDRESSED = "addressed"
UNKNOWN = "unknown"  # the class of a kind no rule names


@dataclass(frozen=True)
class Rule:
    """One row of the unsolicited table: ``kinds`` (exact, or a prefix ending in ``*``) → ``deliver``."""

    name: str
    kinds: tuple[str, ...]
    deliver: str  # "24x7" | "addressed"


#: The shipped table; ``[[unsolicited]]`` rules in msc.toml are added to it, and a kind pattern
#: given there replaces the same pattern here. Sources: PPP §1.6.2 A (hit confirmation requests
#: and locate messages at a 24 × 7 station); NCIC 2000 Operating Manual (locate keys are L + the
#: file's letter: LW wanted person, LM missing person, LV vehicle, LL license plate, LA article,
#: LB boat, LG gun, LS securities, LP vehicle/boat part — variants such as LWJ share the prefix;
#: §6.7 "automatic notification of locate" is the $.L. notification to the record's ORI;
#: Protective Interest File §1.9 "$.H.TTP threat to protectee notification"; Wanted Person File
#: §2.8 "the $.8. program" (out-of-state record notices); the "$K" program — missing key data
#: 30 days after an entry, NCJ 138002; missing/unidentified person comparison notices $.M./$.P.);
#: Nlets: YQ hit confirmation request — "the entering agency … must be available 24-hours a
#: day, 7 days a week for confirmation" (Nlets Wiki §16); AA Amber Alert; LQ/LR are Nlets
#: *generic* inquiries/responses (not locates, although they start with L); AM/AML
#: administrative messages.
DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("hit-confirmation", ("YQ",), DELIVER_24X7),
    Rule("locate", ("$.L.", "LW*", "LM*", "LV*", "LL*", "LA*", "LB*", "LG*", "LS*", "LP*"), DELIVER_24X7),
    Rule("hit-notification", ("$.H.",), DELIVER_24X7),
    Rule("amber-alert", ("AA",), DELIVER_24X7),
    Rule("ncic-notice", ("$.8.", "$.K.", "$.M.", "$.P."), DELIVER_ADDRESSED),
    Rule("hit-confirmation-response", ("YR",), DELIVER_ADDRESSED),
    Rule("administrative", ("AM", "AML"), DELIVER_ADDRESSED),
    Rule("nlets-generic", ("LQ", "LR"), DELIVER_ADDRESSED),
)

KIND_PATTERN = re.compile(r"(?:\$\.[A-Z0-9]\.|\$\.\*|[A-Z0-9]{2,6}|[A-Z0-9]{1,5}\*)\Z")


class Classifier:
    """Kind → rule. An exact pattern beats a prefix; a longer prefix beats a shorter one."""

    def __init__(self, configured: Iterable[Rule] = (), defaults: Iterable[Rule] = DEFAULT_RULES) -> None:
        self._exact: dict[str, Rule] = {}
        prefixes: dict[str, Rule] = {}
        self.names: list[str] = []
        # Configured rules first: a pattern they give replaces the default one.
        for rule in (*configured, *defaults):
            if rule.name not in self.names:
                self.names.append(rule.name)
            for k in rule.kinds:
                if k.endswith("*"):
                    prefixes.setdefault(k[:-1], rule)
                else:
                    self._exact.setdefault(k, rule)
        self._prefixes = sorted(prefixes.items(), key=lambda kv: -len(kv[0]))

    def classify(self, kind: str | None) -> Rule | None:
        """The rule for a kind, or None when no rule names it (unknown)."""
        if not kind:
            return None
        rule = self._exact.get(kind)
        if rule is not None:
            return rule
        for prefix, rule in self._prefixes:
            if kind.startswith(prefix):
                return rule
        return None


_CLASSIFIERS: weakref.WeakKeyDictionary[Directory, Classifier] = weakref.WeakKeyDictionary()


def classifier(directory: Directory) -> Classifier:
    """The table of a configuration snapshot (built once per :class:`Directory`)."""
    c = _CLASSIFIERS.get(directory)
    if c is None:
        rules = [Rule(u.name, tuple(u.kinds), u.deliver) for u in directory.settings.config.unsolicited]
        c = _CLASSIFIERS[directory] = Classifier(rules)
    return c


def needs_24x7(directory: Directory, kind: str | None) -> bool:
    rule = classifier(directory).classify(kind)
    return rule is not None and rule.deliver == DELIVER_24X7


def rule_active(rule: Forward, now: dt.datetime) -> bool:
    local = now.astimezone(zoneinfo.ZoneInfo(rule.timezone))
    t = local.time()
    today = DAYS[local.weekday()]
    yesterday = DAYS[(local.weekday() - 1) % 7]
    if rule.start == rule.end:
        return today in rule.days
    if rule.start < rule.end:
        return today in rule.days and rule.start <= t < rule.end
    # past midnight: from start on a listed day until end on the next day
    return (today in rule.days and t >= rule.start) or (yesterday in rule.days and t < rule.end)


def tamf(directory: Directory, mnemonic: str, now: dt.datetime) -> str:
    for rule in directory.forwards:
        if rule.source == mnemonic and rule_active(rule, now):
            return rule.target
    return mnemonic


def land(directory: Directory, mnemonic: str, staffed_24x7_needed: bool, now: dt.datetime,
         connected: Callable[[str], bool]) -> str:
    """The mnemonic that should receive unsolicited traffic addressed to ``mnemonic``.

    TAMF first; then, for a kind that needs 24 × 7, the agency's duty station unless the station
    that owns the mnemonic (a CAD host for its workstation mnemonics, a printer, a terminal) is
    staffed 24 × 7 and connected.
    """
    target = tamf(directory, mnemonic, now)
    if staffed_24x7_needed:
        st = directory.station_of(target)
        endpoint = directory.endpoint_of(target)
        if st is None or not st.staffed_24x7 or endpoint is None or not connected(endpoint):
            ori = st.ori if st is not None else _pool_ori(directory, target)
            agency = directory.agencies.get(ori) if ori else None
            if agency is not None and agency.duty_station:
                return agency.duty_station
    return target


def _pool_ori(directory: Directory, mnemonic: str) -> str | None:
    pool = directory.pools.get(directory.pool_of.get(mnemonic, ""))
    return pool.ori if pool is not None else None
