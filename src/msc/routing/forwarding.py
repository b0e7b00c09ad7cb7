"""Where unsolicited and administrative traffic lands: TAMF and the 24 × 7 rule.

* **TAMF** (Time Activated Message Forwarding, PPP §1.5.4): a ``[[forward]]`` rule sends a
  station's traffic to another station on the listed days between ``start`` and ``end`` in the
  rule's time zone. A window whose end is not after its start runs past midnight: ``SAT`` 18:00 →
  07:00 is Saturday 18:00 to Sunday 07:00. ``start == end`` means the whole day. Rules are not
  chained (a forwarded message is not forwarded again), so rules cannot loop. TAMF applies to
  unsolicited and administrative traffic, not to the answer to an operator's own request.
* **24 × 7** (PPP §1.6.2 A): hit confirmation requests (``YQ``) and locate notices (``L?`` keys)
  "must directly terminate … at a printer or to a queue of a terminal staffed 24 hours a
  day/seven days a week": if the addressed station is not staffed 24 × 7 or not connected, they go
  to the agency's ``duty_station``.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Callable

from msc.mnemonics.directory import Directory, Forward

DAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
_LOCATE = re.compile(r"L[A-Z]\Z")


def needs_24x7(mke: str | None) -> bool:
    return mke == "YQ" or (mke is not None and _LOCATE.match(mke) is not None)


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


def land(directory: Directory, mnemonic: str, mke: str | None, now: dt.datetime,
         connected: Callable[[str], bool]) -> str:
    """The station that should receive unsolicited traffic addressed to a station mnemonic."""
    target = tamf(directory, mnemonic, now)
    if needs_24x7(mke):
        st = directory.stations.get(target)
        endpoint = directory.endpoint_of(target)
        if st is None or not st.staffed_24x7 or endpoint is None or not connected(endpoint):
            agency = directory.agencies.get(st.ori) if st is not None else None
            if agency is not None and agency.duty_station:
                return agency.duty_station
    return target
