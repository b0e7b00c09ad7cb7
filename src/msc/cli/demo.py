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

One demo per directory (``DIR/.demo.lock``, held while it runs and removed when it ends — also
after ``--init-only`` — so a copy of the directory, as the pair recipe makes, carries no lock): a
second one on the same directory says so and touches nothing of the first. Before starting anything it checks that every
port it will listen on is free, and it starts the switch only once both of its own stubs say they
listen (their ready files): the switch never talks to somebody else's stub. A stub that exits
(killed to exercise failover) is reported with the command that starts it again; the demo stops
only on Ctrl-C or when the switch exits.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import errno
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
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
#: How the demo's stubs answer in several parts, as III and the state file + NCIC send them
#: (PROTOCOL.md §4): QW as config/msc.toml's answer_parts expects (the state file, then NCIC);
#: QR as the FBI and one state. OPERATIONS.md's pair recipe starts its stub with the same.
DEMO_STUB_PARTS = ("QR=2@1500", "QW=2@300")
WEB_PORT = 8443  # the web console's HTTPS (moved by --port-offset like every other port)

# A quoted "HOST:PORT" in msc.toml (listener and metrics binds, upstream endpoints).
_ADDRESS_RE = re.compile(r'"(\d{1,3}(?:\.\d{1,3}){3}|localhost|\[[0-9A-Fa-f:]+\]):(\d{1,5})"')


def _where(settings, ori: str, role: str) -> str:
    """Where a demo user logs on: the terminal stations and pools serving its agency (an operator
    at a pool of another agency gets a bare E202, like a wrong password), or the consoles."""
    from msc.mnemonics.totp import PRIVILEGED

    if role in PRIVILEGED:
        return "web console / msc command"
    cfg = settings.config
    stations = [st.mnemonic for st in cfg.station if st.kind == "terminal" and ori in st.serves]
    pools = [p.name for p in cfg.pool if ori in p.serves]
    places = [*stations, *(f"pool {p}" for p in pools)]
    return "at " + (", ".join(places[:-1]) + " or " if len(places) > 1 else "") + places[-1] if places else ""


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


def _packaged_text() -> str:
    return resources.files("msc").joinpath("data/msc.toml").read_text()


def _dsn_ports(dsn: str) -> set[int]:
    """The ports of a libpq URI's hosts (``postgresql://user@h1:5432,[::1]:5433/db``)."""
    hosts = dsn.partition("://")[2].split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]
    ports = (h.rpartition(":")[2] for h in hosts.split(",") if not h.endswith("]"))
    return {int(p) for p in ports if p.isdigit()}


def web_bind(doc: dict, port_offset: int = 0) -> str:
    """Where the ``[web]`` table ``msc demo`` adds to a template without one binds: at the host of
    the template's ``web`` listener (else its first), on a port the template does not use — its
    listeners', metrics', upstream endpoints', the demo's stubs' control ports (+100), its
    database's: WEB_PORT (8443, where README and the docs show the console) when it is free and
    inside the span of the ports the demo listens on (lowest to highest), else the lowest free
    port in that span, else the first free one above it (newcomer9: 8443 whatever the template
    said; issue 16: 8443 moved by the first listener's distance from 7400 could fall outside the
    template's ports or on one of them). WEB_PORT when the template has no listener to go by.
    ``--port-offset`` then moves it with every other port (8443 + N). A port this machine cannot
    bind at that host now (another program listens there, :func:`port_in_use` — tried at the
    port it will have, ``port_offset`` added) is skipped like one of the template's: printed by
    ``--init-only``, it is one the next start can listen on (newcomer trial F6)."""
    from msc.config.validate import parse_hostport

    try:
        listeners = [ln for ln in doc.get("listener") or [] if isinstance(ln, dict) and "bind" in ln]
        host = parse_hostport(listeners[0]["bind"])[0]
        host = next((parse_hostport(ln["bind"])[0] for ln in listeners if ln.get("name") == "web"), host)
        listened = {port for _what, _host, port in _ports_of(doc)}
        used = listened | {parse_hostport(e)[1] for u in doc.get("upstream") or [] for e in u.get("endpoints", [])}
        for dsn in ((doc.get("storage") or {}).get("dsn"), (doc.get("node") or {}).get("lease_dsn")):
            used |= _dsn_ports(dsn) if isinstance(dsn, str) else set()
    except (IndexError, KeyError, TypeError, ValueError, AttributeError):
        return f"127.0.0.1:{WEB_PORT}"

    def free(p: int) -> bool:
        return p not in used and not (0 < p + port_offset < 65536 and port_in_use(host, p + port_offset))

    if not listened:  # no port to go by (every listener on port 0, "any free port")
        port = WEB_PORT
    elif min(listened) <= WEB_PORT <= max(listened) and free(WEB_PORT):
        port = WEB_PORT  # the packaged file used as a template (the pair recipe): where the docs say
    else:
        port = next((p for p in range(min(listened), 65536) if free(p)), WEB_PORT)
    return f"{f'[{host}]' if ':' in host else host}:{port}"


def config_text(template: str | None, port_offset: int = 0) -> str:
    """The ``msc.toml`` a new demo gets: the template (default: the packaged demo configuration),
    with a ``[web]`` table added when it has none (its own is kept; :data:`WEB_PORT` for the
    packaged one, :func:`web_bind` for a template), every port
    moved by ``port_offset``. Raises ValueError (a port out of range)."""
    text = Path(template).read_text() if template else _packaged_text()
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        doc = {}  # msc.toml's load says what is wrong with it, naming the file and line
    if "web" not in doc:
        # The packaged demo's on WEB_PORT (README's https://127.0.0.1:8443/), a template's beside its ports.
        bind = web_bind(doc, port_offset) if template else f"127.0.0.1:{WEB_PORT}"
        text += f'''
[web]                                  # added by msc demo (docs/WEB.md)
bind = "{bind}"
tls = {{ cert = "tls/web.crt", key = "tls/web.key" }}
listener = "web"
header = "ICSWEB"
'''
    return shift_ports(text, port_offset) if port_offset else text


def init(directory: Path, template: str | None, port_offset: int = 0) -> None:
    from msc.actions.directory import update_users
    from msc.cli.admin import record_admin
    from msc.cli.auth import os_actor
    from msc.config.files import private_dir
    from msc.config.load import load
    from msc.config.model import Role, UserEntry, UsersFile
    from msc.mnemonics import totp
    from msc.mnemonics.passwords import hash_password
    from msc.mnemonics.totp import PRIVILEGED

    text = config_text(template, port_offset)  # ValueError: a port out of range, before anything is made
    private_dir(directory)
    cfg_path = directory / "msc.toml"
    # The web console (docs/WEB.md): HTTPS with a self-signed certificate made here.
    from msc.web.certs import self_signed

    self_signed(directory / "tls" / "web.crt", directory / "tls" / "web.key")
    cfg_path.write_text(text)
    settings = load(cfg_path)
    from msc.storage.backends import Backends

    ring = Backends(settings).keyring()
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
    # (PostgreSQL: the database's copy too, which every node of a pair installs — the pair recipe's
    # "the users go into PostgreSQL", OPERATIONS.md "Running two nodes".)
    update_users(settings, lambda _old: UsersFile(user=tuple(users)))
    # The demo's administrator is made the way the first administrator is (docs/OPERATIONS.md):
    # a BOOTSTRAP record whose actor is the OS account that ran it (OS:<account>).
    record_admin(settings, f"BOOTSTRAP DEMO USERS {' '.join(u for u, *_ in DEMO_USERS)} "
                           "(NO ENABLED ADMINISTRATOR EXISTED)", user=os_actor())
    print("Demo users (passwords and TOTP secrets are shown only now; only hashes and sealed secrets are stored):")
    for uid, name, ori, role, pw, secret in shown:
        print(f"  {uid}  {role:<13} {ori}  {name:<16} {_where(settings, ori, role):<28} password: {pw}")
        if secret is not None:
            print(f"          TOTP secret {base64.b32encode(secret).decode()}  "
                  f"({totp.provisioning_uri(secret, uid, settings.config.switch.name)})")
    msc, cfg = msc_command(), shlex.quote(str(cfg_path.absolute()))  # absolute: runnable from any directory
    print(f"""
The administrator and the investigator log on to msc commands with their password and a
one-time password from an authenticator app (or `oathtool --totp -b SECRET`), e.g.:

  {msc} user list --config {cfg}
  {msc} journal verify --config {cfg} --as ADM001
  {msc} journal search --config {cfg} --as INV001 --case DEMO-1 --user JD1234
""")
    if settings.config.web is not None:  # the template's own [web], or the one added (web_bind)
        moved = web_port_moved(text, port_offset)
        if moved is not None:
            print(moved)
        print(f"The web console (msc web) listens at https://{settings.config.web.bind}/ ([web] bind in {cfg_path.absolute()}).")


LOCK_NAME = ".demo.lock"
NEW_DEMO_HINT_OFFSET = 1000


def demo_ports(text: str) -> list[tuple[str, str, int]]:
    """(what, host, port) of every port the demo listens on, from a configuration's text: the
    terminal listeners, the metrics endpoint, the two stubs of the first upstream and their control
    ports (port + 100). Port 0 ("any free port") is left out."""
    return _ports_of(tomllib.loads(text))


def _ports_of(doc: dict) -> list[tuple[str, str, int]]:
    """:func:`demo_ports` of a configuration read."""
    from msc.config.validate import parse_hostport

    out = []
    for i, lc in enumerate(doc.get("listener", [])):
        out.append((f"terminal listener {i + 1}", *parse_hostport(lc["bind"])))
    if "bind" in doc.get("metrics", {}):
        out.append(("metrics endpoint", *parse_hostport(doc["metrics"]["bind"])))
    if "bind" in doc.get("web", {}):
        out.append(("web console", *parse_hostport(doc["web"]["bind"])))
    for endpoint, label in zip((doc.get("upstream") or [{}])[0].get("endpoints", []), STUB_LABELS, strict=False):
        host, port = parse_hostport(endpoint)
        out.append((f"{label} CLETS stub", host, port))
        out.append((f"{label} CLETS stub's control port", host, port + CONTROL_PORT_DISTANCE))
    return [(what, host, port) for what, host, port in out if port]


def port_in_use(host: str, port: int) -> bool:
    """Would a listener on host:port fail because something listens there now? (Bound as the
    servers bind, SO_REUSEADDR on, and closed at once.)"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def msc_command(argv0: str | None = None) -> str:
    """The ``msc`` command as the user can run it from any directory (newcomer trial F5: the demo
    printed ``.venv/bin/msc …``, relative to the repository — from elsewhere ``No such file``):
    plain ``msc`` when that is on PATH and is the command running now, else the running one's
    absolute path (``python -m msc``: the interpreter's, ``-m msc``). ``argv0``: ``sys.argv[0]``."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    if not argv0 or Path(argv0).name == "__main__.py":  # python -m msc
        return f"{shlex.quote(os.path.abspath(sys.executable))} -m msc"
    running = Path(os.path.abspath(argv0))
    on_path = shutil.which("msc")
    if on_path is not None and Path(on_path).resolve() == running.resolve():
        return "msc"
    return shlex.quote(str(running))


def web_port_moved(text: str, port_offset: int = 0) -> str | None:
    """One line when the ``[web]`` table the demo added (:func:`config_text`) is not on
    :data:`WEB_PORT` (+ ``port_offset``) because another program listens there now — where the
    docs show the console, so the user is told (newcomer trial F5); else None."""
    from msc.config.validate import parse_hostport

    try:
        doc = tomllib.loads(text)
        host, port = parse_hostport(doc["web"]["bind"])
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError):
        return None
    wanted = WEB_PORT + port_offset
    if "# added by msc demo" not in text or port == wanted or not port_in_use(host, wanted):
        return None
    return (f"note: port {wanted} is in use on {host} (another program listens there): the web console's "
            f"[web] bind is {host}:{port} instead.")


def move_command(dir_arg: str, template: str | None, directory: Path, *, beside: bool) -> str:
    """The command that runs a demo on ports NEW_DEMO_HINT_OFFSET higher, as the user ran this one
    (newcomer trial F6: the advice was ``make run DEMO_DIR=<name>2 …`` — a path relative to the
    repository, and no template — after ``msc demo --dir /srv/… --template T``).

    ``beside``: ``directory`` exists (its ``msc.toml`` keeps its ports), so a new demo beside it,
    ``DIR2``; else this very demo, created on other ports. ``make run``'s form (with the ``msc
    demo`` line it runs) only when it is the same command: no ``--template``, a directory named
    relative to where ``make`` runs (the repository). Else the ``msc demo`` line with absolute
    paths, its template kept: this run's ``--template``, or — beside an existing directory — that
    directory's own ``msc.toml`` (what it was made from, every port then moved by N)."""
    offset = NEW_DEMO_HINT_OFFSET
    if template is None and not Path(dir_arg).is_absolute():
        name = dir_arg.rstrip("/") + ("2" if beside else "")
        make_dir = "" if name == "var" else f"DEMO_DIR={shlex.quote(name)} "
        return f"make run {make_dir}PORT_OFFSET={offset} (msc demo --dir {shlex.quote(name)} --port-offset {offset})"
    if beside:
        cmd = ["msc", "demo", "--dir", str(directory.with_name(directory.name + "2")),
               "--template", str(directory / "msc.toml")]
    else:
        cmd = ["msc", "demo", "--dir", str(directory)]
        if template is not None:
            cmd += ["--template", str(Path(template).resolve())]
    return shlex.join([*cmd, "--port-offset", str(offset)])


def _lock(directory: Path, beside: str = ""):
    """Hold DIR/.demo.lock for this demo's life (:func:`_unlock` removes it); None (and a
    message, with ``beside``: the command that starts another demo beside it) when another demo
    holds it.

    The file exists only while a demo holds it. A demo that opened the file just before the
    holder removed it may lock that removed file: it then finds that the name no longer leads
    to what it locked, and tries again with the name's file — two demos never both believe
    they hold the directory."""
    import fcntl

    path = directory / LOCK_NAME
    while True:
        fh = open(path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            pid = fh.read().strip() or "?"
            fh.close()
            print(f"error: a demo is already running in {directory} (pid {pid}); use it, stop it with Ctrl-C in "
                  f"its terminal" + (f", or start another beside it: {beside}" if beside else ""), file=sys.stderr)
            return None
        try:
            same = os.path.samestat(os.fstat(fh.fileno()), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        fh.close()  # the holder removed it as it ended: lock the file the name leads to now
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


def _unlock(directory: Path, fh) -> None:
    """Give up DIR/.demo.lock: removed while still held (so nobody takes a name about to go),
    then closed — nothing of a demo's run is left for a copy of the directory to carry."""
    with contextlib.suppress(OSError):
        (directory / LOCK_NAME).unlink()
    fh.close()


def _last_error(path: Path, since: int) -> str:
    """The reason a process gave in its log (written after offset ``since``): its last
    ``error:`` line, or its last line."""
    try:
        with open(path, "rb") as fh:
            fh.seek(since)
            lines = [ln.strip() for ln in fh.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors or lines or [""])[-1]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _exit_status(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit status {code}"


def main(args) -> int:
    from msc.config.files import private_dir

    if args.template is not None:
        # Before anything is made: a template that cannot be read is one error line, exit 2
        # (msc.cli.main's file errors), not a traceback after DIR was created (newcomer trial F4).
        Path(args.template).read_bytes()
    directory = Path(args.dir).resolve()
    private_dir(directory)
    lock = _lock(directory, move_command(args.dir, args.template, directory, beside=True))
    if lock is None:
        return 2
    try:
        return _run(args, directory)
    finally:
        _unlock(directory, lock)


def _run(args, directory: Path) -> int:
    cfg_path = directory / "msc.toml"
    created = cfg_path.exists()
    if created:
        text = cfg_path.read_text()
        if args.port_offset:
            print(f"note: {cfg_path} exists: its ports are used (--port-offset applies when a demo is created)",
                  file=sys.stderr)
    else:
        try:
            text = config_text(args.template, args.port_offset)
        except ValueError as exc:
            print(f"error: --port-offset: {exc}", file=sys.stderr)
            return 2
    if not args.init_only:
        try:
            ports = demo_ports(text)
        except (ValueError, KeyError, TypeError) as exc:
            print(f"error: {cfg_path}: cannot read the demo's addresses: {exc}", file=sys.stderr)
            return 2
        for what, host, port in ports:
            if port_in_use(host, port):
                again = move_command(args.dir, args.template, directory, beside=created)
                if created:
                    how = (f"{cfg_path} keeps the ports it was created with: stop what listens on {port}, change "
                           f"that port in {cfg_path}, or start a new demo beside it: {again}")
                else:
                    how = f"run this demo on other ports: {again}"
                print(f"error: port {port} ({what}, {host}:{port}) is in use by another program or demo; {how}",
                      file=sys.stderr)
                return 2
    if not created:
        try:
            init(directory, args.template, args.port_offset)
        except ValueError as exc:
            print(f"error: --port-offset: {exc}", file=sys.stderr)
            return 2
    if args.init_only:
        return 0
    from msc.config.load import ConfigError, load
    from msc.config.validate import parse_hostport

    try:
        config = load(cfg_path).config
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
        return 2
    if not config.listener or not config.upstream:
        print(f"error: {cfg_path}: the demo needs a [[listener]] and an [[upstream]]", file=sys.stderr)
        return 2
    listen = config.listener[0].bind
    stubs = []  # (listen, control, label)
    for endpoint, label in zip(config.upstream[0].endpoints, STUB_LABELS, strict=False):
        host, port = parse_hostport(endpoint)
        control_host = f"[{host}]" if ":" in host else host
        stubs.append((endpoint, f"{control_host}:{port + CONTROL_PORT_DISTANCE}", label))

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    # Stopped some other way than Ctrl-C (kill, the terminal closing): stop them all the same way.
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    exe = [sys.executable, "-m", "msc"]
    from msc.config.files import private_dir

    logs = directory / "logs"
    private_dir(logs)
    procs: list = []  # (name, Popen, log file, log offset at start, command, ready file): _spawn
    ready = directory / ".ready"
    try:
        for endpoint, control_at, label in stubs:
            cmd = [*exe, "stub", "--role", "clets", "--listen", endpoint, "--control", control_at,
                   "--log", str(logs / f"stub-{label}.log"), "--seed", "1",
                   *(a for parts in DEMO_STUB_PARTS for a in ("--parts", parts))]
            _spawn(procs, f"the {label} CLETS stub ({endpoint})", cmd, logs / f"stub-{label}.err",
                   directory / f".ready-stub-{label}")
        # Our own stubs must listen before the switch dials their addresses: else it could reach
        # whatever else listens there (another user's demo).
        if not _all_ready(procs, time.monotonic() + 15):
            return 2
        serve = _spawn(procs, "msc serve", [*exe, "serve", "--config", str(cfg_path)], logs / "msc.log", ready)
        if not _all_ready(procs[-1:], time.monotonic() + 15):
            return 1
        web = None
        if config.web is not None:
            web = _spawn(procs, "msc web", [*exe, "web", "--config", str(cfg_path)], logs / "web.log",
                         directory / ".web-ready")
            if not _all_ready(procs[-1:], time.monotonic() + 15):
                return 1
        msc = msc_command()
        print(f"""msc is running (switch log: {logs / "msc.log"}, stub logs: {logs}/stub-*.log)

  Terminal listener   {listen}     metrics http://{config.metrics.bind}/metrics
  CLETS stubs         {', '.join(f"{e} ({lab}, control {c})" for e, c, lab in stubs)}
                      push unsolicited traffic through a stub's control port:
    {msc} stub-control {stubs[0][1]} 'ICS1.YQ.CA0130000.NAM/SMITH, JOHN'
    {msc} stub-control {stubs[0][1]} 'NOTIFY $.L. ICS2 CA0130000'     (a generated NCIC notice)
                      Kill a stub to exercise failover: the switch keeps running and this
                      demo prints the command that starts it again.

Connect a terminal and log on as JD1234 with the password shown when the demo was created:

  {msc} terminal --connect {listen} --header ICS1

then type, for example:  QW.CA0130000.NAM/SMITH, JOHN.DOB/19800101
""", flush=True)
        if web is not None and config.web is not None:
            print(f"""  Web console         https://{config.web.bind}/   (self-signed certificate: {directory / 'tls' / 'web.crt'};
                      log: {logs / 'web.log'})
  Operator:       log on as JD1234 with the password shown when the demo was created (no one-time
                  password), station or pool ICSWEB, then use the QW form (Alt+1) and press Enter.
                  EC0001 and EC0002 (El Centro PD) use their agency's pool: ECMDT.
  Investigator:   INV001 with its password and a one-time password (oathtool --totp -b SECRET).
  Administrator:  ADM001 likewise. To see a stolen terminal cut off: an operator logged on at
                  station ICS1 in another window, then Stations, Disable ICS1.
""", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        return _watch(procs, serve, web)
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
        return 0
    finally:
        # The switch first (it drains through the stubs), then the stubs.
        for _name, p, *_rest in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        # Only what this demo made (it holds DIR/.demo.lock): its ready files.
        for _name, _p, _log, _start, _cmd, ready_file in procs:
            ready_file.unlink(missing_ok=True)


def _spawn(procs: list, name: str, cmd: list[str], log_file: Path, ready_file: Path) -> subprocess.Popen:
    """Start one of the demo's processes (its stderr appended to ``log_file``; it creates
    ``ready_file`` once it serves) and add it to ``procs`` as (name, Popen, log file, the log's
    size at start, command, ready file)."""
    ready_file.unlink(missing_ok=True)
    cmd = [*cmd, "--ready-file", str(ready_file)]
    start = _size(log_file)
    p = subprocess.Popen(cmd, stderr=open(log_file, "a"), start_new_session=True)
    procs.append((name, p, log_file, start, cmd, ready_file))
    return p


def _all_ready(procs: list, deadline: float) -> bool:
    """Wait until each of ``procs`` has made its ready file; if one exits or the deadline passes
    first, say which and why (its log's last error, its exit status) on stderr and return False."""
    for name, p, log_file, start, _cmd, ready_file in procs:
        while not ready_file.exists():
            if p.poll() is not None or time.monotonic() > deadline:
                reason = _last_error(log_file, start) or ("not ready within 15 s" if p.poll() is None
                                                          else _exit_status(p.returncode))
                print(f"error: {name} did not start: {reason} (log: {log_file})", file=sys.stderr)
                return False
            time.sleep(0.05)
    return True


def _watch(procs: list, serve, web=None) -> int:
    """Until Ctrl-C or the switch (or the web console) exits: a stub that exits is reported (which,
    why, and how to start it again) and the switch keeps running — failover is what a stub's death
    exercises."""
    watching = [x for x in procs if x[1] is not serve and x[1] is not web]
    while True:
        for name, p, log_file, start, *_ in procs:
            if (p is serve or p is web) and p.poll() is not None:
                reason = _last_error(log_file, start)
                print(f"{name} exited ({_exit_status(p.returncode)}{': ' + reason if reason else ''}); "
                      f"stopping the demo (log: {log_file})", file=sys.stderr, flush=True)
                return 1
        for item in list(watching):
            name, p, err, start, cmd, _ready = item
            if p.poll() is not None:
                watching.remove(item)
                reason = _last_error(err, start) if p.returncode > 0 else ""
                print(f"{name} exited ({_exit_status(p.returncode)}{': ' + reason if reason else ''}); the switch "
                      f"keeps running (failover). Start the stub again with:\n  {shlex.join(cmd)} "
                      f"2>>{shlex.quote(str(err))}", file=sys.stderr, flush=True)
        time.sleep(0.2)
