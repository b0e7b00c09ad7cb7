"""The directory: agencies (ORIs), stations, pools, groups and users, built from the config.

A :class:`Directory` is an immutable snapshot. A reload builds a new one and swaps it in, so a
message is always judged against one consistent configuration.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field

from msc.config.load import Settings
from msc.config.validate import answer_parts, entry_keys, one_way_keys
from msc.protocol import edits
from msc.protocol.edits import KeyEdit

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Agency:
    ori: str
    name: str
    duty_station: str | None


@dataclass(frozen=True)
class Station:
    """A static terminal, a host (CAD/RMS/LAN) or a printer (PPP §1.6.2 A, §1.6.6)."""

    mnemonic: str
    kind: str  # terminal | host | printer
    ori: str
    serves: frozenset[str]
    networks: tuple[IPNetwork, ...]
    cert_cn: str | None
    mnemonics: frozenset[str]  # a host's workstation mnemonics (itself for others)
    authorizations: frozenset[str]
    receives_admin: bool
    staffed_24x7: bool
    disabled: bool

    def admits(self, peer_ip: str | None, peer_cn: str | None) -> bool:
        return admits(self.networks, self.cert_cn, peer_ip, peer_cn)


@dataclass(frozen=True)
class Pool:
    """A mnemonic pool behind the Access Control Point (PPP §1.6.2 B)."""

    name: str
    ori: str
    serves: frozenset[str]
    mnemonics: tuple[str, ...]
    networks: tuple[IPNetwork, ...]
    cert_cn: str | None
    authorizations: frozenset[str]
    unsolicited_to: str | None

    def admits(self, peer_ip: str | None, peer_cn: str | None) -> bool:
        return admits(self.networks, self.cert_cn, peer_ip, peer_cn)


@dataclass(frozen=True)
class User:
    id: str
    name: str
    ori: str
    role: str
    password_hash: str = field(repr=False)
    dob: dt.date | None
    totp: str | None = field(repr=False)
    certified_until: dt.date | None
    active: bool


@dataclass(frozen=True)
class Route:
    mke: str
    upstream: str
    category: str
    entry: bool
    answer_window_s: float | None = None  # PROTOCOL.md §4; None: the timeout
    timeout_s: float | None = None  # None: the upstream's timeout_s
    one_way: bool = False  # a response or one-way key: no answer awaited (PROTOCOL.md §4)
    answer_parts: int | None = None  # the parts of a complete answer; None: not known (PROTOCOL.md §4)


@dataclass(frozen=True)
class Forward:
    """A TAMF rule (PPP §1.5.4): traffic for ``source`` goes to ``target`` during the window."""

    source: str
    target: str
    days: frozenset[str]
    start: dt.time
    end: dt.time
    timezone: str


def admits(networks: tuple[IPNetwork, ...], cert_cn: str | None, peer_ip: str | None, peer_cn: str | None) -> bool:
    """Is a peer allowed to claim this station? Every configured check must pass."""
    if cert_cn is not None and peer_cn != cert_cn:
        return False
    if networks:
        if peer_ip is None:
            return False
        try:
            ip = ipaddress.ip_address(peer_ip)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in networks)
    return cert_cn is not None


def _time(s: str) -> dt.time:
    h, m = s.split(":")
    return dt.time(int(h), int(m))


class Directory:
    def __init__(self, settings: Settings, *, disabled_stations: frozenset[str] = frozenset()) -> None:
        """``disabled_stations``: stations disabled at run time (``msc station disable``)."""
        cfg = settings.config
        self.settings = settings
        self.disabled_stations = disabled_stations
        self.agencies = {a.ori: Agency(a.ori, a.name, a.duty_station) for a in cfg.agency}
        self.stations: dict[str, Station] = {}
        self.host_of: dict[str, str] = {}  # workstation mnemonic → host station mnemonic
        for s in cfg.station:
            nets = tuple(ipaddress.ip_network(a, strict=False) for a in s.addresses)
            mnes = frozenset(s.mnemonics) if s.kind == "host" else frozenset((s.mnemonic,))
            st = Station(s.mnemonic, s.kind, s.ori, frozenset(s.serves), nets, s.client_cert_cn, mnes,
                         frozenset(s.authorizations), s.receives_admin, s.staffed_24x7,
                         s.status == "disabled" or s.mnemonic in disabled_stations)
            self.stations[s.mnemonic] = st
            if s.kind == "host":
                for m in s.mnemonics:
                    self.host_of[m] = s.mnemonic
        self.pools: dict[str, Pool] = {}
        self.pool_of: dict[str, str] = {}  # pooled mnemonic → pool name
        for p in cfg.pool:
            nets = tuple(ipaddress.ip_network(a, strict=False) for a in p.addresses)
            self.pools[p.name] = Pool(p.name, p.ori, frozenset(p.serves), tuple(p.mnemonics), nets,
                                      p.client_cert_cn, frozenset(p.authorizations), p.unsolicited_to)
            for m in p.mnemonics:
                self.pool_of[m] = p.name
        self.groups = {g.name: tuple(g.members) for g in cfg.group}
        self.routes: dict[str, Route] = {}
        for r in cfg.route:
            entries, one_way, parts = entry_keys(r), one_way_keys(r), answer_parts(r)
            for k in r.mke:
                self.routes[k] = Route(k, r.upstream, r.category, k in entries, r.answer_window_s, r.timeout_s,
                                       k in one_way, parts.get(k))
        self.forwards = tuple(
            Forward(f.from_, f.to, frozenset(f.days), _time(f.start), _time(f.end), f.timezone) for f in cfg.forward
        )
        self.users: dict[str, User] = {
            u.id: User(u.id, u.name, u.ori, u.role, u.password, u.dob, u.totp, u.certified_until, u.status == "active")
            for u in settings.users.user
        }
        self.prohibited_purposes = frozenset(cfg.switch.prohibited_purposes)
        # Message-key edits of every routed key (CONFIG.md "Edits", msc.protocol.edits).
        self.edits: dict[str, KeyEdit] = edits.table(
            list(self.routes), cfg.edit, use_builtin=cfg.edits.builtin,
            purpose_codes=tuple(cfg.edits.purpose_codes), formats=dict(cfg.edits.formats))

    # -- lookups --------------------------------------------------------------------------

    def endpoint_of(self, mnemonic: str) -> str | None:
        """The delivery endpoint (OSN sequence and queue) that serves an addressed mnemonic.

        A terminal or printer is its own endpoint; a host's workstation mnemonics share the
        host station's; a pooled mnemonic is its own.
        """
        if mnemonic in self.host_of:
            return self.host_of[mnemonic]
        if mnemonic in self.stations or mnemonic in self.pool_of:
            return mnemonic
        return None

    def station_of(self, mnemonic: str) -> Station | None:
        """The station owning a mnemonic (a host for its workstation mnemonics)."""
        st = self.stations.get(mnemonic)
        if st is not None and st.kind != "host":
            return st
        host = self.host_of.get(mnemonic)
        return self.stations.get(host) if host else st

    def admin_receivers(self, ori: str) -> list[str]:
        """Every station of an agency that receives administrative traffic."""
        return [s.mnemonic for s in self.stations.values() if s.ori == ori and s.receives_admin]
