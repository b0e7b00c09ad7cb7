"""The daemon's own sections: ``[switch]``, ``[[listener]]``, ``[metrics]``, ``[web]``, ``[node]``,
``[journal]`` and ``[storage]`` (CONFIG.md) — bounds, addresses no two sockets share, TLS files,
the retention floor (PPP §1.7.1 A) and PostgreSQL connection URIs without a password.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse

from msc.config.checker import Checker, check_tz, parse_hostport
from msc.config.secrets import libpq_passfile_problem, password_file_problem

MIN_RETENTION_DAYS = 1096  # PPP §1.7.1 A: three years of journals


def check_switch(c: Checker) -> None:
    """``[switch]``: names, time limits, queue and memory bounds, logon checks, purpose codes."""
    sw = c.s.config.switch
    if not sw.name.strip():
        c.add("switch.name", "must not be empty")
    for key in ("idle_logoff_s", "session_max_s", "queue_expiry_s", "drain_timeout_s"):
        if getattr(sw, key) <= 0:
            c.add(f"switch.{key}", "must be > 0")
    if sw.queue_max < 1:
        c.add("switch.queue_max", "must be >= 1")
    if not 0 <= sw.shed_wait_s <= 60:
        c.add("switch.shed_wait_s", "must be 0..60 (seconds; 0: never shed new requests)")
    if not 0 <= sw.shed_interval_s <= 60:
        c.add("switch.shed_interval_s", "must be 0..60 (seconds)")
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
    check_tz(c, "switch.timezone", sw.timezone)


def check_listeners(c: Checker) -> None:
    """``[[listener]]``, ``[metrics]``, ``[web]`` and ``[node]``: every address the daemon binds."""
    settings = c.s
    cfg = settings.config
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


def check_journal(c: Checker) -> None:
    """``[journal]`` (the retention floor, the unsigned tail's bounds, refusal budgets) and ``[storage]``."""
    settings = c.s
    cfg = settings.config
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


_WILDCARD_HOSTS = frozenset(("0.0.0.0", "::", "*", ""))


def _check_binds(c: Checker, binds: list[tuple[tuple[str, int], str]]) -> None:
    """No two sockets of the daemon on one address: the same host and port, or the same port
    with a wildcard host (``0.0.0.0``/``::`` takes the port on every address)."""
    for i, ((host, port), path) in enumerate(binds):
        if port == 0:  # port 0 asks the kernel for any free port: no conflict
            continue
        for (other_host, other_port), other in binds[:i]:
            if port == other_port and (host == other_host or host in _WILDCARD_HOSTS or other_host in _WILDCARD_HOSTS):
                c.add(path, f"address {host}:{port} is already bound by {c.where(other)}")
                break


def _check_web(c: Checker, settings, cfg) -> None:
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


def _check_node(c: Checker, settings, cfg) -> None:
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
        bad = password_file_problem(settings.path(n.lease_password_file))
        if bad is not None:
            c.add("node.lease_password_file", bad)
    elif n.lease_dsn is not None:
        bad = libpq_passfile_problem(n.lease_dsn)
        if bad is not None:
            c.add("node.lease_dsn", bad)


#: target_session_attrs values asyncpg (the PostgreSQL client) understands.
SESSION_ATTRS = frozenset(("any", "primary", "standby", "prefer-standby", "read-write", "read-only"))
#: Those that let msc write: it journals, so it must reach the primary (``any`` only with one host).
WRITABLE_ATTRS = ("read-write", "primary")
#: The query parameters msc's client (asyncpg) takes as libpq does (libpq "Parameter Key Words";
#: lowercase, as libpq spells them). Any other goes to the server as a run-time setting —
#: ``?foo=bar`` fails every connection (``unrecognized configuration parameter "foo"``) — except
#: application_name, which libpq and the server both know.
KNOWN_PARAMS = frozenset((
    "host", "port", "dbname", "user", "passfile", "sslmode", "sslcert", "sslkey", "sslrootcert", "sslcrl",
    "sslnegotiation", "ssl_min_protocol_version", "ssl_max_protocol_version", "target_session_attrs",
    "krbsrvname", "gsslib", "application_name"))
#: Allowed values of the parameters that have a fixed set (asyncpg refuses the rest at connect time).
PARAM_VALUES = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "ssl_min_protocol_version": ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
    "ssl_max_protocol_version": ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
    "sslnegotiation": ("postgres", "direct"),
    "gsslib": ("gssapi", "sspi"),
}
#: libpq connection parameters (libpq "Parameter Key Words") that asyncpg's URI parser does not take:
#: it passes every unknown query parameter on to the server as a run-time setting, and the server
#: refuses the connection (FATAL: unrecognized configuration parameter "connect_timeout") — found
#: when make ha-soak's connection string had connect_timeout.
LIBPQ_ONLY_PARAMS = frozenset((
    "hostaddr", "connect_timeout", "channel_binding", "options", "fallback_application_name", "keepalives",
    "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout", "replication",
    "gssencmode", "requiressl", "sslcompression", "sslcertmode", "sslcrldir", "sslsni", "requirepeer",
    "gssdelegation", "load_balance_hosts", "require_auth"))


def _check_storage(c: Checker, settings, st) -> None:
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
        # What msc serve would refuse (msc.config.secrets.read_password, the one reader of it):
        # missing, not a file, readable by others, its first line empty, not UTF-8, or padded.
        bad = password_file_problem(settings.path(st.password_file))
        if bad is not None:
            c.add("storage.password_file", bad)
    elif st.dsn:
        bad = libpq_passfile_problem(st.dsn)  # the client's own (passfile=, PGPASSFILE, ~/.pgpass)
        if bad is not None:
            c.add("storage.dsn", bad)


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
    # (a key that names a password, however written; not a value — a passfile's path may say "password")
    password_param = (any("password" in k.lower() for k in query)
                      or "password=" in urllib.parse.unquote(parts.query).lower())
    if password_param:
        problems.append(NO_PASSWORD)
    elif "@" in after_server:
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
    if any(k.lower() == "service" for k in query):
        problems.append("service: msc's client (asyncpg) does not read a service file as libpq does (an unknown "
                        "service is ignored, not refused): name the host, port, database and user in the URI")
    named = {k.lower() for k in query} & (LIBPQ_ONLY_PARAMS | {"service"})
    strange = sorted(k for k in query if k not in KNOWN_PARAMS and k.lower() not in named and "password" not in k.lower())
    if strange:
        problems.append(f"{', '.join(strange)}: not a connection parameter msc's client knows — it would reach the "
                        "server as a run-time setting and the connection be refused; known: "
                        f"{', '.join(sorted(KNOWN_PARAMS))}")
    for key, allowed in PARAM_VALUES.items():
        values = query.get(key, [])
        if values and values[-1] not in allowed:
            problems.append(f"{key} must be one of {', '.join(allowed)}")
    attrs = query.get("target_session_attrs", [])
    if attrs and attrs[-1] not in SESSION_ATTRS:
        problems.append(f"target_session_attrs must be one of {', '.join(sorted(SESSION_ATTRS))}")
    elif len(hosts) > 1 and (not attrs or attrs[-1] not in WRITABLE_ATTRS):
        problems.append("several hosts need target_session_attrs=read-write (else a standby may be chosen)")
    elif attrs and attrs[-1] not in (*WRITABLE_ATTRS, "any"):
        problems.append(f"target_session_attrs={attrs[-1]}: msc writes (its journal), so it needs the primary — "
                        "read-write (or primary; with one host, any)")
    if dsn != dsn.strip() or any(ch.isspace() for ch in dsn):
        # A leading one is dropped by the URI parser, a trailing one becomes part of the
        # database's name ("msc "): neither is what was meant.
        problems.append("has a space (or another blank) in it — a leading or trailing one included: remove it "
                        "(a space inside a name is written %20)")
    return problems


#: One host of a libpq URI: a name or address (percent-encoded: a socket directory) or [IPv6],
#: and an optional port.
_DSN_HOST_RE = re.compile(r"(?:[A-Za-z0-9._~%-]+|\[[0-9A-Fa-f:.%A-Za-z]+\])(?::[0-9]{1,5})?\Z")
