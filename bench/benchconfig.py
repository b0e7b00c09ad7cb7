"""A benchmark configuration: many terminal stations, bench users, stubs on given ports."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from msc.config.model import UserEntry, UsersFile
from msc.keyring import KeyRing
from msc.mnemonics import userfile
from msc.mnemonics.passwords import hash_password

PASSWORD = "bench horse battery"
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def mnemonic(i: int) -> str:
    """Distinct 4-character mnemonics: X + three base-36 digits (46,656 of them)."""
    a, rest = divmod(i, 36 * 36)
    b, c = divmod(rest, 36)
    return "X" + ALPHABET[a] + ALPHABET[b] + ALPHABET[c]


def write(directory: Path, *, port: int, metrics_port: int, upstream_ports: list[int], stations: int,
          synchronous: str = "full", timeout_s: float = 30, heartbeat_s: float = 30, extra: str = "",
          switch_extra: str = "") -> Path:
    """``extra``: TOML appended at the end (more tables); ``switch_extra``: more ``[switch]`` keys."""
    directory.mkdir(parents=True, exist_ok=True)
    endpoints = ", ".join(f'"127.0.0.1:{p}"' for p in upstream_ports)
    parts = [f'''[switch]
name = "BENCH-MSC"
data_dir = "data"
idle_logoff_s = 86400
queue_max = 100000
password_cost = 4
# Every bench terminal logs on from 127.0.0.1 at once: the per-address logon bounds (SECURITY.md
# "Bounded under abuse") would take the load generator for a flood.
logon_failures_per_address = {stations + 100}
{switch_extra}

[[listener]]
name = "terminals"
bind = "127.0.0.1:{port}"
max_connections = {stations + 100}
rate_limit = 100000
max_pending_per_address = {stations + 100}
# Every bench terminal is the one operator BN0001, and ~9 % of the mix is refused on purpose
# (E301, E108): thousands a minute of one user, where in service each terminal is its own
# operator. The per-user bound (3,000 a minute) would close every bench connection mid-run —
# the closed loop then measured fewer terminals than it said and the open loop hung
# (notes/pgp99.md). The bound's own behaviour is measured by bench/abuse_bench.py.
max_refused_per_minute = 100000000
heartbeat_s = 300
read_timeout_s = 60

[metrics]
bind = "127.0.0.1:{metrics_port}"

[journal]
dir = "data/journal"
key_file = "data/keys/master.key"
synchronous = "{synchronous}"
# The production defaults (JOURNAL.md "The unsigned tail"): the bench pays for the checkpoint
# cadence the switch really runs with.
checkpoint_every = 1000
checkpoint_interval_s = 10

[[upstream]]
name = "clets"
endpoints = [{endpoints}]
timeout_s = {timeout_s}
heartbeat_s = {heartbeat_s}
max_in_flight = 100000

[[route]]
mke = ["QW", "QV", "EW", "MW", "XW", "CW", "YQ", "YR"]
upstream = "clets"
category = "cjis"

[[route]]
mke = ["QH", "QR"]
upstream = "clets"
category = "cori"

[[route]]
mke = ["DQ", "RQ", "KQ"]
upstream = "clets"
category = "dmv"

[[agency]]
ori = "CA0130000"
name = "Imperial County Sheriff's Office"
''']
    for i in range(stations):
        parts.append(f'''[[station]]
mnemonic = "{mnemonic(i)}"
kind = "terminal"
ori = "CA0130000"
serves = ["CA0130000"]
addresses = ["127.0.0.0/8"]
authorizations = ["cjis", "cori", "dmv", "admin", "entry"]
receives_admin = true
''')
    parts.append(extra)
    cfg = directory / "msc.toml"
    cfg.write_text("\n".join(parts))
    today = dt.date.today()
    userfile.write(directory / "users.toml", UsersFile(user=(UserEntry(
        id="BN0001", name="BENCH, OPERATOR", ori="CA0130000", role="full", password=hash_password(PASSWORD, ln=4),
        certified_until=today + dt.timedelta(days=365)),)))
    ring = KeyRing(directory / "data" / "keys", directory / "data" / "keys" / "master.key")
    if not ring.exists:
        ring.init()
    return cfg
