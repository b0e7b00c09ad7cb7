"""Where traffic for a destination lands: the one resolver for AM fan-out (a terminal's or host's
administrative message) and for upstream traffic (answers and unsolicited messages).

A destination is a group, an ORI (its stations that receive administrative traffic, or its
duty station for a 24 × 7 kind), a pooled mnemonic (its pool's defined destination, PPP §1.6.2 B
1 f) or a station's mnemonic. Each station found is then landed: TAMF, and for a 24 × 7 kind the
duty station unless the station is staffed and connected (:func:`msc.routing.forwarding.land`).
The answer is a list of ``(endpoint, mnemonic)`` pairs, each once, in the order found.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable

from msc.mnemonics.directory import Directory
from msc.protocol.codes import ProtocolError, Reject
from msc.routing.forwarding import land

Destination = tuple[str, str]  # (delivery endpoint, mnemonic)


def pooled(d: Directory, mnemonic: str) -> list[Destination]:
    """PPP §1.6.2 B 1 f: "Unsolicited messages cannot be delivered to a pooled mnemonic unless
    there is a defined destination, such as a printer." (PROTOCOL.md §5). E306 if it has none."""
    pool = d.pools.get(d.pool_of.get(mnemonic, ""))
    target = pool.unsolicited_to if pool else None
    endpoint = d.endpoint_of(target) if target else None
    if endpoint is None or target is None:
        raise ProtocolError(Reject.E306, f"NO DEFINED DESTINATION FOR POOLED MNEMONIC {mnemonic}")
    return [(endpoint, target)]


def stations_named(d: Directory, dest: str, *, staffed: bool = False) -> list[str] | None:
    """The stations ``dest`` names, or ``None`` if msc hosts no such destination.

    ``staffed``: the traffic is of a 24 × 7 kind — an ORI's duty station takes it, and a pooled
    mnemonic without a defined destination falls back to its pool agency's duty station. An ORI
    none of whose stations receive administrative traffic names no station (``[]``). Raises
    E306 for a pooled mnemonic with nowhere to go.
    """
    if dest in d.groups:
        return list(d.groups[dest])
    if dest in d.agencies:
        agency = d.agencies[dest]
        if staffed and agency.duty_station:
            return [agency.duty_station]
        return d.admin_receivers(dest)
    mnemonic = dest[:4]
    if mnemonic in d.pool_of:
        try:
            return [t for _e, t in pooled(d, mnemonic)]
        except ProtocolError:
            # A 24 x 7 kind for a pool without a printer still has a defined destination: the
            # pool agency's duty station.
            pool = d.pools[d.pool_of[mnemonic]]
            duty = d.agencies[pool.ori].duty_station if staffed and pool.ori in d.agencies else None
            if duty is None:
                raise
            return [duty]
    if d.endpoint_of(mnemonic) is None:
        return None
    return [mnemonic]


def landed(d: Directory, stations: Iterable[str], *, staffed: bool, now: dt.datetime,
           attached: Callable[[str], bool], into: list[Destination] | None = None) -> list[Destination]:
    """Land each station (TAMF, the 24 × 7 rule) and add its ``(endpoint, mnemonic)`` to
    ``into`` once."""
    out = [] if into is None else into
    for m in stations:
        target = land(d, m, staffed, now, attached)
        endpoint = d.endpoint_of(target)
        if endpoint is not None and (endpoint, target) not in out:
            out.append((endpoint, target))
    return out


def upstream_destination(d: Directory, dest: str, *, staffed: bool, now: dt.datetime,
                         attached: Callable[[str], bool]) -> list[Destination]:
    """Where an unsolicited upstream message for ``dest`` lands; E304 if nowhere, E306 for a
    pooled mnemonic with no defined destination."""
    stations = stations_named(d, dest, staffed=staffed)
    if stations is None:
        raise ProtocolError(Reject.E304, f"DESTINATION {dest} UNKNOWN")
    if not stations and dest in d.agencies:
        raise ProtocolError(Reject.E304, f"NO STATION OF {dest} RECEIVES ADMINISTRATIVE TRAFFIC")
    out = landed(d, stations, staffed=staffed, now=now, attached=attached)
    if not out:
        raise ProtocolError(Reject.E304, f"DESTINATION {dest} UNKNOWN")
    return out


def admin_destinations(d: Directory, destinations: Iterable[str], *, now: dt.datetime,
                       attached: Callable[[str], bool]) -> tuple[list[Destination], list[str]]:
    """An ``AM``'s destination list split into where msc delivers it and what goes upstream
    ("a DEST msc does not host goes upstream", PROTOCOL.md §2, PPP §1.6.5). E306 for a pooled
    mnemonic with no defined destination."""
    local: list[Destination] = []
    remote: list[str] = []
    for dest in destinations:
        stations = stations_named(d, dest)
        if stations is None:
            remote.append(dest)
        else:
            landed(d, stations, staffed=False, now=now, attached=attached, into=local)
    return local, remote
