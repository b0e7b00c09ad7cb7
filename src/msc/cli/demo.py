"""``msc demo`` (what ``make run`` runs): create a demo switch under a directory and run it.

First run: copies the demo ``msc.toml``, creates the master and signing keys, and adds demo users
with random passwords, printed once (only their hashes are stored). ``--port-offset N`` adds N to
every port of the demo's configuration when it is created, so a second demo (or a test) can run
beside one on the default ports. Every run: starts two CLETS stubs (the primary and secondary
switching centres, at the addresses of the configuration's first upstream; each stub's control
port is its own port + 100) and ``msc serve`` as separate processes, prints how to connect (the
addresses the configuration says), and stops all three cleanly on Ctrl-C: the three run in their own
sessions, so the terminal's Ctrl-C reaches only this process, which then stops the switch first
(SIGTERM: drain, flush the journal, clean-stop record) and the stubs after it.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import secrets
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import cast

DEMO_USERS = (
    # id, name, ORI, role, dob
    ("JD1234", "DOE, JANE", "CA0130000", "full", "1984-03-02"),
    ("RS5678", "SMITH, ROBERT", "CA0130000", "ltfa", "1979-11-20"),
    ("EC0001", "GARCIA, ELENA", "CA0130100", "full", "1990-06-14"),
    ("EC0002", "NGUYEN, TOM", "CA0130100", "full", "1988-01-09"),
    ("INV001", "HOLMES, SARAH", "CA0130000", "investigator", None),
    ("ADM001", "ADAMS, CHRIS", "CA0130000", "admin", None),
)
STUB_LABELS = ("primary", "secondary")
CONTROL_PORT_DISTANCE = 100  # a stub's control port: its own port + 100 (7501 -> 7601)

# A quoted "HOST:PORT" in msc.toml (listener and metrics binds, upstream endpoints).
_ADDRESS_RE = re.compile(r'"(\d{1,3}(?:\.\d{1,3}){3}|localhost|\[[0-9A-Fa-f:]+\]):(\d{1,5})"')


def shift_ports(text: str, offset: int) -> str:
    """Every quoted ``"HOST:PORT"`` of a configuration text with ``offset`` added to its port
    (port 0, "any free port", stays 0). Raises ValueError when a port, or a stub's control port
    (the port + 100), would leave 1..65535."""

    def shifted(m: re.Match) -> str:
        port = int(m.group(2))
        if port == 0:
            return m.group(0)
        new = port + offset
        if not 1 <= new <= 65535 - CONTROL_PORT_DISTANCE:
            raise ValueError(f"port {port} + {offset} is out of range")
        return f'"{m.group(1)}:{new}"'

    return _ADDRESS_RE.sub(shifted, text)


def init(directory: Path, template: str | None, port_offset: int = 0) -> None:
    from msc.cli.admin import record_admin
    from msc.cli.auth import os_actor
    from msc.config.files import private_dir
    from msc.config.load import load
    from msc.config.model import Role, UserEntry, UsersFile
    from msc.keyring import KeyRing
    from msc.mnemonics import totp, userfile
    from msc.mnemonics.passwords import hash_password
    from msc.mnemonics.totp import PRIVILEGED

    private_dir(directory)
    cfg_path = directory / "msc.toml"
    if template:
        text = Path(template).read_text()
    else:
        text = resources.files("msc").joinpath("data/msc.toml").read_text()
    cfg_path.write_text(shift_ports(text, port_offset) if port_offset else text)
    settings = load(cfg_path)
    ring = KeyRing(settings.data_dir / "keys", settings.key_file)
    if not ring.exists:
        ring.init()
    aead = ring.users_aead()
    cost = settings.config.switch.password_cost  # the cost of every hash, the dummy's included
    today = dt.date.today()
    users, shown = [], []
    for uid, name, ori, role, dob in DEMO_USERS:
        pw = "demo-" + secrets.token_urlsafe(9)
        sealed = secret = None
        if role in PRIVILEGED:  # CJIS IA-2(1): the administrator and the investigator get TOTP
            secret = totp.new_secret()
            sealed = totp.seal_secret(aead, uid, secret)
        users.append(UserEntry(id=uid, name=name, ori=ori, role=cast(Role, role), password=hash_password(pw, ln=cost),
                               dob=dt.date.fromisoformat(dob) if dob else None, totp=sealed,
                               certified_until=today + dt.timedelta(days=730), created=today))
        shown.append((uid, name, ori, role, pw, secret))
    userfile.write(settings.users_path, UsersFile(user=tuple(users)))
    # The demo's administrator is made the way the first administrator is (docs/OPERATIONS.md):
    # a BOOTSTRAP record whose actor is the OS account that ran it (OS:<account>).
    record_admin(settings, f"BOOTSTRAP DEMO USERS {' '.join(u for u, *_ in DEMO_USERS)} "
                           "(NO ENABLED ADMINISTRATOR EXISTED)", user=os_actor())
    print("Demo users (passwords and TOTP secrets are shown only now; only hashes and sealed secrets are stored):")
    for uid, name, ori, role, pw, secret in shown:
        print(f"  {uid}  {role:<13} {ori}  {name:<16} password: {pw}")
        if secret is not None:
            print(f"          TOTP secret {base64.b32encode(secret).decode()}  "
                  f"({totp.provisioning_uri(secret, uid, settings.config.switch.name)})")
    print("""
The administrator and the investigator log on to msc commands with their password and a
one-time password from an authenticator app (or `oathtool --totp -b SECRET`), e.g.:

  .venv/bin/msc user list --config var/msc.toml
  .venv/bin/msc journal verify --config var/msc.toml --as ADM001
  .venv/bin/msc journal search --config var/msc.toml --as INV001 --case DEMO-1 --user JD1234
""")


def main(args) -> int:
    directory = Path(args.dir).resolve()
    if not (directory / "msc.toml").exists():
        try:
            init(directory, args.template, args.port_offset)
        except ValueError as exc:
            print(f"error: --port-offset: {exc}", file=sys.stderr)
            return 2
    elif args.port_offset:
        print(f"note: {directory / 'msc.toml'} exists: its ports are used (--port-offset applies when a demo "
              "is created)", file=sys.stderr)
    if args.init_only:
        return 0
    from msc.config.load import ConfigError, load
    from msc.config.validate import parse_hostport

    try:
        config = load(directory / "msc.toml").config
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
        return 2
    if not config.listener or not config.upstream:
        print(f"error: {directory / 'msc.toml'}: the demo needs a [[listener]] and an [[upstream]]", file=sys.stderr)
        return 2
    listen = config.listener[0].bind
    stubs = []  # (listen, control, label)
    for endpoint, label in zip(config.upstream[0].endpoints, STUB_LABELS, strict=False):
        host, port = parse_hostport(endpoint)
        control_host = f"[{host}]" if ":" in host else host
        stubs.append((endpoint, f"{control_host}:{port + CONTROL_PORT_DISTANCE}", label))
    nc_host, nc_port = parse_hostport(stubs[0][1])
    control = f"{nc_host} {nc_port}"  # as nc takes it

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    # Stopped some other way than Ctrl-C (kill, the terminal closing): stop the three the same way.
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    exe = [sys.executable, "-m", "msc"]
    from msc.config.files import private_dir

    logs = directory / "logs"
    private_dir(logs)
    procs = []
    try:
        for endpoint, control_at, label in stubs:
            procs.append(subprocess.Popen(
                [*exe, "stub", "--role", "clets", "--listen", endpoint, "--control", control_at,
                 "--log", str(logs / f"stub-{label}.log"), "--seed", "1",
                 # answers in several parts, as III and the state file + NCIC send them (PROTOCOL.md §4)
                 "--parts", "QR=2@1500", "--parts", "QW=2@300"],
                stderr=open(logs / f"stub-{label}.err", "a"), start_new_session=True))
        time.sleep(0.3)
        ready = directory / ".ready"
        ready.unlink(missing_ok=True)
        serve = subprocess.Popen([*exe, "serve", "--config", str(directory / "msc.toml"), "--ready-file", str(ready)],
                                 stderr=open(logs / "msc.log", "a"), start_new_session=True)
        procs.append(serve)
        deadline = time.monotonic() + 15
        while not ready.exists():
            if serve.poll() is not None or time.monotonic() > deadline:
                print(f"msc serve did not start; see {logs / 'msc.log'}", file=sys.stderr)
                return 1
            time.sleep(0.05)
        print(f"""msc is running (switch log: {logs / 'msc.log'}, stub logs: {logs}/stub-*.log)

  Terminal listener   {listen}     metrics http://{config.metrics.bind}/metrics
  CLETS stubs         {', '.join(f"{e} ({lab})" for e, _c, lab in stubs)}; push unsolicited
                      traffic with:  echo 'ICS1.YQ.CA0130000.NAM/SMITH, JOHN' | nc {control}
                      or a generated NCIC notice:  echo 'NOTIFY $.L. ICS2 CA0130000' | nc {control}

Connect a terminal and log on as JD1234 with the password shown when the demo was created:

  .venv/bin/msc terminal --connect {listen} --header ICS1

then type, for example:  QW.CA0130000.NAM/SMITH, JOHN.DOB/19800101

Press Ctrl-C to stop.""", flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        print("a demo process exited; stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
        return 0
    finally:
        # The switch first (it drains through the stubs), then the stubs.
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
