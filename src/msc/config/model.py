"""msgspec Structs for ``msc.toml`` and ``users.toml`` (CONFIG.md), one per table.

Decoding is strict: unknown keys are errors, and every field has the type CONFIG.md gives.
Cross-references (a station's ORI is a configured agency, a route names a configured upstream …)
are checked in :mod:`msc.config.validate`.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from msgspec import Struct, field

DEFAULT_BANNER = (
    "This is a restricted criminal justice information system. Use is monitored\n"
    "and audited; unauthorized use is prohibited and may be punished. Use means consent."
)

StationKind = Literal["terminal", "host", "printer"]
Role = Literal["full", "ltfa", "practitioner", "admin", "investigator"]
Status = Literal["active", "disabled"]
Day = Literal["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"]

#: Categories msc defines itself; route categories are added to these (E204).
BUILTIN_CATEGORIES = frozenset(("admin", "entry"))


class _Table(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class ServerTls(_Table, frozen=True, kw_only=True):
    cert: str
    key: str
    client_ca: str | None = None
    require_client_cert: bool = False


class ClientTls(_Table, frozen=True, kw_only=True):
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    server_name: str | None = None


class SwitchSection(_Table, frozen=True, kw_only=True):
    name: str = "MSC"
    data_dir: str = "var"
    users_file: str = "users.toml"
    banner: str = DEFAULT_BANNER
    idle_logoff_s: float = 1800
    session_max_s: float = 43200
    # PPP §1.6.1 D: no criminal-history access for licensing, certification or employment.
    prohibited_purposes: tuple[str, ...] = ("E", "J")
    # Store-and-forward (PROTOCOL.md §5): how long an output waits, how many per mnemonic.
    queue_expiry_s: float = 72 * 3600
    queue_max: int = 10000
    # Issue 14: output texts wait in the journal; at most this many bytes of them are kept in
    # memory (for sessions that take them now), all mnemonics together.
    output_memory_bytes: int = 32 * 1024 * 1024
    drain_timeout_s: float = 10
    # PROTOCOL.md §5 "Overload": new requests (not answers, deliveries or logons) are refused E307
    # while the oldest record waiting for the journal has waited longer than shed_wait_s, once it
    # has stayed so for shed_interval_s (msc.routing.shedding). shed_wait_s = 0: never shed.
    shed_wait_s: float = 0.2
    shed_interval_s: float = 0.5
    timezone: str = "UTC"  # for reports' "after hours"
    admin_upstream: str | None = None  # where AM to remote destinations goes (default: the first upstream)
    # PROTOCOL.md §4: after its answer window, a request is remembered this long (at most 10,000
    # of them) so that a late part with its header is still linked to it by txn.
    late_answer_s: float = 3600
    # CJIS IA-5(1)(a): the scrypt cost of password hashes, log2(N) with r = 8, p = 1. Hashes at
    # another cost are replaced at the user's next logon (msc.mnemonics.passwords).
    password_cost: int = 15
    # SECURITY.md "Bounded under abuse": the work logons may cost. At most this many password
    # checks (one KDF each) at once (default: the CPUs, at most 4); at most logon_queue more wait,
    # best first, each at most logon_wait_s; beyond that a LOGON is refused E307 unchecked.
    max_logon_checks: int | None = None
    logon_queue: int = 64
    logon_wait_s: float = 5
    # A source address may have at most this many failed (or unanswered) logons within the window
    # (a success takes its own back); beyond it its logons are refused E307 unchecked.
    logon_failures_per_address: int = 10
    logon_failures_window_s: float = 60
    # Such a refusal is answered this long after the LOGON (its connection's further messages wait
    # meanwhile): a guesser past its rate is slowed to one LOGON per connection and delay, instead
    # of costing the switch thousands of E307 a second (OpenSSH's PerSourcePenalties, in spirit).
    logon_throttle_delay_s: float = 1

    @property
    def logon_checks(self) -> int:
        """``max_logon_checks``, or its default: the CPUs, at most 4."""
        import os

        return self.max_logon_checks or max(1, min(4, os.cpu_count() or 1))


class ListenerSection(_Table, frozen=True, kw_only=True):
    name: str
    bind: str
    max_frame: int = 32768
    max_connections: int = 1000
    heartbeat_s: float = 30
    read_timeout_s: float = 10
    rate_limit: float = 200
    tls: ServerTls | None = None
    # SECURITY.md "Connections": a connection must acknowledge the banner and log on (or bind)
    # within logon_timeout_s, and a TLS one finish its handshake within tls_handshake_timeout_s
    # (counted against max_connections meanwhile), else it is closed. At most
    # max_pending_per_address connections from one address (IPv6: one /64) that have not logged
    # on; a newer one takes the slot of the oldest, as a new connection to a full listener does.
    logon_timeout_s: float = 60
    tls_handshake_timeout_s: float = 10
    max_pending_per_address: int = 32
    # A connection that has not logged on or bound is closed at its max_refused-th refused
    # message; one that has, when it sends more than max_refused_per_minute refused in a minute.
    max_refused: int = 10
    max_refused_per_minute: int = 3000
    # CONFIG.md "Listeners": every connection begins with a PROXY protocol header (v1 or v2) naming
    # the client a relay (the web console, HAProxy …) connects for; accepted only from these
    # addresses (IP or CIDR), any other peer is closed at once. The header's address is then the
    # session's peer: its TAF and the address stations and pools are bound by.
    proxy_protocol: bool = False
    trusted_proxies: tuple[str, ...] = ()


class WebSection(_Table, frozen=True, kw_only=True):
    """``[web]``: the web console, ``msc web`` (docs/WEB.md)."""

    bind: str = "127.0.0.1:8443"
    tls: ServerTls | None = None  # required: HTTPS only, with the switch's TLS minimums
    listener: str = "web"  # the [[listener]] it connects to (proxy_protocol, trusting this host)
    switch_tls: ClientTls | None = None  # how to reach that listener when it has tls
    header: str | None = None  # the station or pool the operator's logon form offers
    logon_attempts_per_minute: int = 10  # per browser address, on top of the account lockout


class MetricsSection(_Table, frozen=True, kw_only=True):
    bind: str = "127.0.0.1:9400"


class JournalSection(_Table, frozen=True, kw_only=True):
    dir: str = "var/journal"
    key_file: str = "var/keys/master.key"
    retention_days: int = 1096
    synchronous: Literal["full", "normal"] = "full"
    checkpoint_every: int = 1000  # records; with checkpoint_interval_s: the unsigned tail bound (JOURNAL.md)
    checkpoint_interval_s: float = 10
    verify_interval_s: float = 3600  # start a background verification pass at most this often (0: never)
    # JOURNAL.md "Refused traffic": per connection and minute, a logged-on or bound session's first
    # refused_full_per_minute refusals (refused_full_chars_per_minute characters) keep their full
    # text, then compact records up to refused_records_per_minute, then they are counted in a
    # summary. Connections not logged on get compact records only, at most
    # unauthenticated_records_per_minute per source address and ..._total in all; the rest
    # are counted in one summary per address and minute.
    refused_full_per_minute: int = 120
    refused_full_chars_per_minute: int = 1048576
    refused_records_per_minute: int = 600
    unauthenticated_records_per_minute: int = 30
    unauthenticated_records_per_minute_total: int = 600


class NodeSection(_Table, frozen=True, kw_only=True):
    """``[node]``: this ``msc serve`` is one node of an active/standby pair (OPERATIONS.md
    "Running two nodes"). Absent: a single node, always active (the SQLite default)."""

    name: str  # unique per node: the lease's holder, in logs and metrics
    lease_ttl_s: float = 5  # a crashed active is replaced after at most this (plus the standby's poll)
    # The lease's database (a libpq URI, no password in it). Once [storage] is PostgreSQL, the
    # lease lives in that database and these two may be left out.
    lease_dsn: str | None = None
    lease_password_file: str | None = None


class StorageSection(_Table, frozen=True, kw_only=True):
    """Where the journal and the durable state live (CONFIG.md "Storage"): SQLite files under
    ``switch.data_dir`` and ``journal.dir`` (the default), or a PostgreSQL database."""

    backend: Literal["sqlite", "postgresql"] = "sqlite"
    #: PostgreSQL only: a libpq connection URI, ``postgresql://user@host1:5432,host2:5432/db?target_session_attrs=read-write``
    #: (several hosts: the first that is a primary). Never a password (see password_file).
    dsn: str | None = None
    #: PostgreSQL only: a file (mode 0600 or stricter) whose first line is the password; without
    #: it, libpq's environment applies (PGPASSWORD, PGPASSFILE or ~/.pgpass).
    password_file: str | None = None


class UpstreamSection(_Table, frozen=True, kw_only=True):
    name: str
    endpoints: tuple[str, ...]
    timeout_s: float = 30
    heartbeat_s: float = 30
    #: The upstream must answer each M and H (A/N/H) within this; else the connection has
    #: failed and traffic moves to the other endpoint (PROTOCOL.md §4 "Link health").
    #: Default: 10 s, or 2 x heartbeat_s if that is less.
    ack_timeout_s: float | None = None
    #: A request whose answer msc could not journal (the upstream was told N E501) waits this
    #: long, once the journal records again, for the upstream to send the answer again; then the
    #: operator gets MSC.E501 (PROTOCOL.md §4 "Every request learns its fate"). A message msc
    #: journaled and could not acknowledge is known by its resend this long after the link's next
    #: connection came up (PROTOCOL.md §4 "Messages msc journaled and could not acknowledge").
    resend_wait_s: float = 30
    max_in_flight: int = 1000
    #: Messages from this upstream (answers, unsolicited traffic) waiting for their journal commit
    #: at once, per connection; beyond it msc stops reading the link until half are answered, so
    #: a burst waits in the upstream, not in msc's memory (issue 14).
    max_inbound: int = 128
    tls: ClientTls | None = None

    @property
    def ack_timeout(self) -> float:
        """``ack_timeout_s``, or its default: 10 s, at most 2 x ``heartbeat_s``."""
        return self.ack_timeout_s if self.ack_timeout_s is not None else min(10.0, 2 * self.heartbeat_s)


class RouteSection(_Table, frozen=True, kw_only=True):
    mke: tuple[str, ...]
    upstream: str
    category: str
    #: Keys of this route that enter or change records (need the "entry" authorization).
    #: Default: the NCIC update keys among ``mke`` (first letter E, M, X, C or L).
    entry: tuple[str, ...] | None = None
    #: How long after a request was forwarded further parts of its answer are still linked to it
    #: (PROTOCOL.md §4: a III QR is answered by the FBI and then by states). Default: the
    #: upstream's ``timeout_s``; never shorter than it.
    answer_window_s: float | None = None
    #: How long to wait for the first part before ``MSC.E303`` (default: the upstream's
    #: ``timeout_s``): a hit confirmation (YQ) is answered within 10 minutes (urgent) or an hour.
    timeout_s: float | None = None
    #: Keys of this route that are themselves a response or one-way (a YR answers a YQ): forwarded
    #: and journaled, no answer awaited (PROTOCOL.md §4). Default: the keys among ``mke`` that
    #: ``msc.protocol.grammar.ONE_WAY_KEYS`` names (YR, DR, RR, KR, CR, IR, FR, BR, AR, AM);
    #: ``[]``: every key awaits an answer.
    one_way: tuple[str, ...] | None = None
    #: How many parts a complete answer has — one from each system the upstream asks (a QW: the
    #: state file and NCIC) — for every key of the route, or by key (``{ QW = 2, QV = 1 }``);
    #: the largest if it varies. A request that had that many parts owes its operator no notice
    #: after a restart and keeps no drain waiting (PROTOCOL.md §4 "Stopping with an answer
    #: open"). Default: not known (the notice is given after any part while the window is open).
    answer_parts: int | dict[str, int] | None = None
    #: Fields that end an answer: a part whose first line carries one of them (between dots,
    #: after the header) is the whole answer — nothing more comes (III: ``NO RECORD``, no state
    #: holds anything to send). Same effect as ``answer_parts`` reached (PROTOCOL.md §4).
    answer_ends_on: tuple[str, ...] = ()


class AgencySection(_Table, frozen=True, kw_only=True):
    ori: str
    name: str
    duty_station: str | None = None


class StationSection(_Table, frozen=True, kw_only=True):
    mnemonic: str
    kind: StationKind
    ori: str
    serves: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()
    client_cert_cn: str | None = None
    mnemonics: tuple[str, ...] = ()
    authorizations: tuple[str, ...] = ()
    receives_admin: bool = False
    staffed_24x7: bool = False
    status: Status = "active"


class PoolSection(_Table, frozen=True, kw_only=True):
    name: str
    ori: str
    serves: tuple[str, ...] = ()
    mnemonics: tuple[str, ...]
    addresses: tuple[str, ...] = ()
    client_cert_cn: str | None = None
    authorizations: tuple[str, ...] = ()
    unsolicited_to: str | None = None


class GroupSection(_Table, frozen=True, kw_only=True):
    name: str
    members: tuple[str, ...]


class ForwardSection(_Table, frozen=True, kw_only=True):
    from_: str = field(name="from")
    to: str
    days: tuple[Day, ...] = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
    start: str = "00:00"
    end: str = "00:00"
    timezone: str = "UTC"


#: The FBI III purpose codes (msc.protocol.edits.III_PURPOSE_CODES; a unit test keeps them equal).
III_PURPOSE_CODES = ("A", "C", "D", "F", "H", "I", "J", "S", "V", "X")


class EditsSection(_Table, frozen=True, kw_only=True):
    """``[edits]``: defaults of the message-key edits (CONFIG.md "Edits")."""

    builtin: bool = True  # msc's built-in rule for a routed key without an [[edit]]
    purpose_codes: tuple[str, ...] = III_PURPOSE_CODES  # what PUR/ may carry
    formats: dict[str, str] = {}  # tag -> format name, added to / overriding the built-in ones


class EditSection(_Table, frozen=True, kw_only=True):
    """``[[edit]]``: the edits of one or more message keys."""

    mke: tuple[str, ...]
    required: tuple[str, ...] = ()
    one_of: tuple[tuple[str, ...], ...] = ()
    repeatable: tuple[str, ...] | None = None
    purpose_codes: tuple[str, ...] | None = None
    formats: dict[str, str] = {}
    max_destinations: int = 5


class UnsolicitedSection(_Table, frozen=True, kw_only=True):
    """A row of the unsolicited table (PROTOCOL.md §5): message kinds and where they go."""

    name: str  # the class, as the label of msc_unsolicited_total
    kinds: tuple[str, ...]  # message keys ("YQ"), NCIC notifications ("$.L."), prefixes ("LW*", "$.*")
    deliver: Literal["24x7", "addressed"]


class Config(_Table, frozen=True, kw_only=True):
    """The whole of ``msc.toml``."""

    switch: SwitchSection = SwitchSection()
    listener: tuple[ListenerSection, ...] = ()
    metrics: MetricsSection = MetricsSection()
    journal: JournalSection = JournalSection()
    storage: StorageSection = StorageSection()
    upstream: tuple[UpstreamSection, ...] = ()
    route: tuple[RouteSection, ...] = ()
    agency: tuple[AgencySection, ...] = ()
    station: tuple[StationSection, ...] = ()
    pool: tuple[PoolSection, ...] = ()
    group: tuple[GroupSection, ...] = ()
    forward: tuple[ForwardSection, ...] = ()
    edits: EditsSection = EditsSection()
    edit: tuple[EditSection, ...] = ()
    unsolicited: tuple[UnsolicitedSection, ...] = ()
    web: WebSection | None = None
    node: NodeSection | None = None


class UserEntry(_Table, frozen=True, kw_only=True):
    """One ``[[user]]`` of ``users.toml``."""

    id: str
    name: str
    ori: str
    role: Role
    password: str
    dob: dt.date | None = None
    totp: str | None = None
    certified_until: dt.date | None = None
    status: Status = "active"
    created: dt.date | None = None


class RemovedUser(_Table, frozen=True, kw_only=True):
    """A tombstone: a removed user ID is not reassigned for 365 days (CJIS IA-4d)."""

    id: str
    removed: dt.date


class UsersFile(_Table, frozen=True, kw_only=True):
    """The whole of ``users.toml``."""

    user: tuple[UserEntry, ...] = ()
    removed: tuple[RemovedUser, ...] = ()
