"""The ``msc`` command (OPERATIONS.md "The msc command"). Thin: parse arguments, call packages.

Exit codes: 0 ok, 1 the operation found a problem, 2 usage or configuration error (or the storage
unavailable now: nothing was done), 3 authentication refused.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from msc import __version__

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, EXIT_AUTH = 0, 1, 2, 3
EXIT_SIGPIPE = 141  # 128 + SIGPIPE: the reader of stdout went away (`msc … | head`)


def _parts(value: str) -> tuple[str, tuple[int, int, float]]:
    from msc.stubs.server import parse_parts

    try:
        return parse_parts(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _hostport(value: str) -> tuple[str, int]:
    from msc.config.validate import parse_hostport

    try:
        return parse_hostport(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _hostports(value: str) -> list[tuple[str, int]]:
    """``"a:1,b:2"`` → [(a, 1), (b, 2)]: one or more HOST:PORT, comma-separated."""
    parts = [p.strip() for p in value.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"{value!r}: an empty address in the list")
    return [_hostport(p) for p in parts]


def _load(args):
    from msc.cli.settings import load_settings

    return load_settings(args)


# -- serve / stub / terminal -----------------------------------------------------------------

def cmd_serve(args) -> int:
    from msc.journal.records import JournalError
    from msc.journal.writer import JournalBusy
    from msc.keyring import KeyError_
    from msc.ops.logging import configure
    from msc.server.main import serve
    from msc.server.switch import StartupError

    configure(level=args.log_level)
    settings = _load(args)
    # Every refusal to start is one line and exit 2 (OPERATIONS.md, msc serve): nothing of a
    # running instance is touched — its data_dir's serve.lock (or its ready file's lock) is what
    # refuses a second one, before this process opens, binds or writes anything
    # (msc.instance).
    try:
        return serve(settings, ready_file=args.ready_file)
    except JournalBusy as exc:
        print(f"error: msc serve did not start: {exc} (is msc serve already running with "
              f"{settings.config_path}?)", file=sys.stderr)
    except (StartupError, JournalError, KeyError_) as exc:
        print(f"error: msc serve did not start: {exc}", file=sys.stderr)
    except OSError as exc:  # a listener or the metrics endpoint cannot bind, a file cannot be read
        print(f"error: msc serve did not start: {exc}", file=sys.stderr)
    return EXIT_USAGE


def cmd_web(args) -> int:
    from msc.actions.identity import service_account_problem
    from msc.ops.logging import configure
    from msc.web.server import serve

    configure(level=args.log_level)
    settings = _load(args)
    if settings.config.web is None:
        print(f"error: {settings.config_path} has no [web] table (docs/WEB.md)", file=sys.stderr)
        return EXIT_USAGE
    problem = service_account_problem(settings)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return serve(settings, ready_file=args.ready_file)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def cmd_stub(args) -> int:
    import uvloop

    from msc.stubs.server import StubConfig, run

    host, port = args.listen
    cfg = StubConfig(role=args.role, host=host, port=port, control=args.control, log_path=args.log,
                     latency_ms=args.latency_ms, fail_rate=args.fail_rate, seed=args.seed,
                     heartbeat_s=args.heartbeat_s, tls_cert=args.tls_cert, tls_key=args.tls_key,
                     half_dead=args.half_dead, resend_s=args.resend_s, resend_max=args.resend_max,
                     parts=dict(args.parts), redeliver=args.redeliver)

    def ready(stub) -> None:
        ctl = f" control {stub.cfg.control[0]}:{stub.control_port}" if stub.cfg.control else ""
        print(f"msc stub {cfg.role} listening on {host}:{stub.port}{ctl}", file=sys.stderr, flush=True)
        if args.ready_file:
            with open(args.ready_file, "w") as fh:
                fh.write("ready\n")

    try:
        uvloop.run(run(cfg, ready=ready))
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # cannot listen (port in use, no such address, no permission), bad TLS files
        where = f"--listen {host}:{port}" + (f" / --control {args.control[0]}:{args.control[1]}" if args.control else "")
        print(f"error: msc stub {cfg.role} cannot start ({where}): {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def cmd_stub_control(args) -> int:
    """``msc stub-control HOST:PORT TEXT…``: send each TEXT as one line to a stub's control port
    (an unsolicited message to push, a notification to generate, or a ``/command``) and print each
    answer. Exit 1 when a stub answers ``ERR`` or cannot be reached."""
    import socket

    host, port = args.control
    try:
        with socket.create_connection((host, port), timeout=args.timeout) as sock:
            fh = sock.makefile("rwb")
            failed = False
            for text in args.text:
                fh.write(text.encode("ascii", "backslashreplace") + b"\n")
                fh.flush()
                answer = fh.readline().decode("ascii", "replace").rstrip("\r\n")
                if not answer:
                    print("error: the stub closed the connection", file=sys.stderr)
                    return EXIT_PROBLEM
                print(answer)
                failed |= answer.startswith("ERR")
    except OSError as exc:
        print(f"error: cannot reach the stub's control port {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_PROBLEM
    return EXIT_PROBLEM if failed else EXIT_OK


def cmd_terminal(args) -> int:
    from msc.cli.termclient import SCRIPT_RECONNECT_S
    from msc.cli.terminal import TerminalOptions, run

    (host, port), addresses = args.connect[0], args.connect
    for path in (args.ca, args.cert, args.key):
        if path is not None:  # before connecting: a file that cannot be read is named, exit 2 (_main)
            with open(path, "rb"):
                pass
    password = None
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    interactive = not (args.send or args.expect or args.user or args.bind)
    printer = args.bind and not (args.send or args.expect)  # stays bound and prints what comes
    reconnect_for = args.reconnect_for
    if reconnect_for is None and not interactive and not printer:
        # A script gives up; an operator's terminal and a printer keep trying.
        reconnect_for = SCRIPT_RECONNECT_S
    opts = TerminalOptions(
        host=host, port=port, header=args.header, send=args.send or [], expect=args.expect, user=args.user,
        password=password, otp=args.otp, timeout=args.timeout, tls=args.tls, ca=args.ca, cert=args.cert,
        key=args.key, interactive=interactive, fail_on_nak=args.fail_on_nak,
        bind=args.bind, addresses=addresses, reconnect_for=reconnect_for,
    )
    try:
        return asyncio.run(run(opts))
    except (ConnectionError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    except TimeoutError:
        print("error: timed out waiting for msc", file=sys.stderr)
        return EXIT_PROBLEM
    except KeyboardInterrupt:
        return EXIT_OK


# -- config / keys -----------------------------------------------------------------------------

def cmd_config_check(args) -> int:
    from msc.config.load import ConfigError, load

    try:
        s = load(args.config)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
        print(f"{len(exc.issues)} error(s)", file=sys.stderr)
        return EXIT_USAGE
    c = s.config
    print(f"ok: {s.config_path}: {len(c.listener)} listener(s), {len(c.upstream)} upstream(s), "
          f"{sum(len(r.mke) for r in c.route)} message key(s), {len(c.agency)} agencies, {len(c.station)} stations, "
          f"{len(c.pool)} pool(s); {s.users_path}: {len(s.users.user)} user(s)")
    return EXIT_OK


def cmd_keys(args) -> int:
    from msc.keyring import KeyError_
    from msc.storage.backends import Backends

    s = _load(args)
    try:
        ring = Backends(s).keyring()
        if ring.imported:
            print(f"note: {ring.imported}", file=sys.stderr)
        if args.action == "show":
            return show_signing_key(s, ring, args.format)
        if args.action == "init":
            mk = ring.init()
            print(f"master key {mk.id} at {s.key_file} (keep a copy offline: without it the journal cannot be read)")
            show_signing_key(s, ring, "text")
        else:
            from msc.cli.admin import record_admin
            from msc.cli.auth import ADMIN, logon

            if not args.as_user:
                print("error: msc keys rotate needs --as ADMIN_ID", file=sys.stderr)
                return EXIT_USAGE
            actor = logon(s, args, roles=ADMIN, op="keys rotate")
            old, new = ring.rotate()
            print(f"master key rotated: {old} -> {new}; data keys re-wrapped, no record re-encrypted")
            try:
                record_admin(s, f"KEYS ROTATE MASTER/{old} TO/{new}", user=actor)
            finally:  # rotated either way: the other nodes need the new file now
                if s.config.node is not None:
                    print(copy_master_key_notice(s.config.node.name, s.key_file, new))
    except KeyError_ as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def copy_master_key_notice(node: str, key_file, key_id: str) -> str:
    """What ``msc keys rotate`` says last on a node of a pair (``[node]``): the other nodes' master
    key files are the old key now, so they cannot open the key ring — not ready, and none takes
    over — until this file is copied to them (OPERATIONS.md "Rotating the master key on a pair").
    Names the file, the new key's id (what /readyz ``key_ring`` and ``msc status`` show) and the
    file's SHA-256, to check the copy with ``sha256sum`` (a digest of a 256-bit random key: no
    secret)."""
    import hashlib
    from pathlib import Path

    digest = hashlib.sha256(Path(key_file).read_bytes()).hexdigest()
    return (f"COPY THE MASTER KEY FILE TO EVERY OTHER NODE NOW: this is node {node} of a pair. Until {key_file}\n"
            f"  (master key {key_id}, sha256 {digest}) is copied to the same path on every other node,\n"
            "  owner-only (chmod 600), those nodes cannot open the key ring: they are not ready (/readyz key_ring)\n"
            "  and none of them takes over if this node fails. Nothing to restart: each sees the copy within seconds.")


def show_signing_key(s, ring, fmt: str) -> int:
    """``msc keys show``: the checkpoint key's public half and fingerprint, for the agency to publish
    (JOURNAL.md "Export bundles"): a court pins it with ``verify_bundle.py --fingerprint``."""
    import json

    ident = ring.signing_identity()
    if fmt == "json":
        print(json.dumps({"switch": s.config.switch.name, "algorithm": "Ed25519", "public_key": ident.public_b64,
                          "fingerprint_sha256": ident.fingerprint, "public_key_file": str(ident.pub_file),
                          "public_key_file_matches": ident.pub_file_matches}))
    else:
        # Each line's label is its --format json key (newcomer9: "fingerprint:" here, "fingerprint_sha256"
        # there — a script written from one read nothing from the other).
        print(f"checkpoint signing key of switch {s.config.switch.name} (Ed25519)")
        print(f"  public_key:          {ident.public_b64}")
        print(f"  fingerprint_sha256:  {ident.fingerprint}   (SHA-256 of the 32-byte public key)")
        print(f"  public_key_file:     {ident.pub_file}")
        print("Publish the fingerprint (or the key file) where courts and the state can find it, apart from any "
              "bundle;")
        print(f"they check an export with:  python3 verify_bundle.py --fingerprint {ident.fingerprint} bundle.zip")
    if not ident.pub_file_matches:
        print(f"error: {ident.pub_file} does not hold the key ring's public key (replaced or damaged): "
              "publish the fingerprint above, not that file", file=sys.stderr)
        return EXIT_PROBLEM
    return EXIT_OK


# -- users -------------------------------------------------------------------------------------

def cmd_user_add(args) -> int:
    from msc.cli.users import add_user

    return add_user(args, _load(args))


def build_parser() -> argparse.ArgumentParser:
    from msc.cli import options as opt

    p = opt.Parser(prog="msc", description="msc — a CLETS-style message switching computer")
    p.add_argument("--version", action="version", version=f"msc {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp):
        sp.add_argument("--config", required=True, help="path to msc.toml")
        return sp

    sp = with_config(sub.add_parser("serve", help="run the switch in the foreground"))
    sp.add_argument("--log-level", default="info", type=str.lower,
                    choices=("debug", "info", "warning", "error", "critical"))
    sp.add_argument("--ready-file", help="write 'ready' in this file once every listener is bound ('standby' "
                    "first on a node of a pair) and remove it when it stops serving; refused (exit 2) while "
                    "another running msc serve holds it")
    sp.set_defaults(func=cmd_serve)

    sp = with_config(sub.add_parser("web", help="run the web console (HTTPS) in the foreground (docs/WEB.md)"))
    sp.add_argument("--log-level", default="info")
    sp.add_argument("--ready-file", help="write this file (HOST:PORT) once the console listens")
    sp.set_defaults(func=cmd_web)

    sp = sub.add_parser("stub", help="run an upstream simulator")
    sp.add_argument("--role", choices=("clets", "ncic", "nlets", "dmv"), required=True)
    sp.add_argument("--listen", type=_hostport, required=True, metavar="HOST:PORT")
    sp.add_argument("--control", type=_hostport, metavar="HOST:PORT", help="accept unsolicited message texts (and /commands) here")
    sp.add_argument("--log", metavar="FILE", help="append every message received, one per line")
    sp.add_argument("--latency-ms", type=opt.non_negative, default=0.0)
    sp.add_argument("--fail-rate", type=opt.fraction, default=0.0, help="fraction of requests answered N (0..1)")
    sp.add_argument("--seed", type=opt.int_range(what="a whole number"), default=1)
    sp.add_argument("--parts", type=_parts, action="append", default=[], metavar="KEY=N[-M][@GAP_MS]",
                    help="answer KEY in N parts (N-M: by a seeded rule), GAP_MS apart; repeatable")
    sp.add_argument("--heartbeat-s", type=opt.seconds, default=30.0)
    sp.add_argument("--tls-cert", help="serve TLS with this certificate (PEM)")
    sp.add_argument("--tls-key", help="and this key")
    sp.add_argument("--half-dead", action="store_true",
                    help="accept connections and read, never answer (a half-dead host; control: /half-dead on|off)")
    sp.add_argument("--resend-s", type=opt.non_negative, default=2.0,
                    help="send a response the switch refused E501/E307 again after this many seconds (0: never)")
    sp.add_argument("--resend-max", type=opt.count, default=5, help="at most this many times")
    sp.add_argument("--redeliver", action="store_true",
                    help="keep what the switch left unanswered (no A/N) when a connection ended, and send it "
                         "again on its next connection, as a switching centre does")
    sp.add_argument("--ready-file", metavar="FILE", help="write this file once the stub listens")
    sp.set_defaults(func=cmd_stub)

    sp = sub.add_parser("stub-control", help="send lines to a stub's control port (push traffic, /commands)",
                        description="Each TEXT is one line to the stub's control port: an unsolicited message "
                                    "to push (\\r \\n \\t \\f \\xHH name bytes), 'NOTIFY $.L. MNEMONIC ORI' "
                                    "for a generated NCIC notice, or a /command; each answer is printed.")
    sp.add_argument("control", type=_hostport, metavar="HOST:PORT", help="the stub's --control address")
    sp.add_argument("text", nargs="+", metavar="TEXT")
    sp.add_argument("--timeout", type=opt.seconds, default=10.0)
    sp.set_defaults(func=cmd_stub_control)

    sp = sub.add_parser("terminal", help="an interactive line-mode terminal")
    sp.add_argument("--connect", type=_hostports, required=True, metavar="HOST:PORT[,HOST:PORT...]",
                    help="msc's address; several (comma-separated): tried in order, and the next one is "
                         "connected to when the connection is refused or lost (the active and standby node)")
    sp.add_argument("--header", type=opt.header, required=True, help="the mnemonic (or pool name) to use")
    sp.add_argument("--send", action="append", type=opt.message_text, metavar="TEXT",
                    help="send this message (repeatable; not a LOGON or PWD: a secret is never given on the "
                         "command line)")
    sp.add_argument("--expect", type=opt.count, default=0, metavar="N",
                    help="wait for N outputs answering the --send messages (each part of an answer counts, "
                         "and so does msc's MSC.Exxx notice of a request's fate: after an E302 no more parts "
                         "come, so the wait ends at --timeout, exit 1; a notice among the N outputs: exit 5)")
    sp.add_argument("--user", type=opt.user_id, help="log on as this user (scripts)")
    sp.add_argument("--otp", type=opt.otp, help="one-time password for --user (6 digits)")
    sp.add_argument("--password-stdin", action="store_true", help="read the password from stdin's first line")
    sp.add_argument("--bind", action="store_true",
                    help="send BIND (printers and hosts) instead of logging on; without --send/--expect it stays "
                         "bound and prints every output as it comes (a printer) until Ctrl-C, a signal or "
                         "(at a terminal) Ctrl-D, connecting to the next --connect address if the connection goes")
    sp.add_argument("--timeout", type=opt.seconds, default=30.0,
                    help="how long to wait for msc's answers (seconds; default 30)")
    sp.add_argument("--reconnect-for", type=opt.seconds, metavar="SECONDS",
                    help="with several --connect addresses: how long to keep trying them while none answers "
                         "(at the start and after a lost connection); default: an interactive terminal and a "
                         "--bind printer until one answers (a 'still trying' line now and then; Ctrl-C stops it), "
                         "a script (--send/--expect/--user) 120 s; given up: exit 4 (1 at the start). Also how "
                         "long a script tries again a logon msc could not decide (E503, E307, E501, E305: "
                         "not a wrong password), from the first such answer; given up: exit 75")
    sp.add_argument("--fail-on-nak", action="store_true")
    sp.add_argument("--tls", action="store_true")
    sp.add_argument("--ca")
    sp.add_argument("--cert")
    sp.add_argument("--key")
    sp.set_defaults(func=cmd_terminal)

    sp = with_config(sub.add_parser(
        "status", help="which node is active (the lease's holder) and this machine's node",
        description="Which node of a pair is active (the lease's holder, as the database says) and what this "
                    "machine's node is (its /readyz). Journals nothing; runs on either machine.",
        epilog="exit status: 0 a node is active, and this machine's node is it or a standby that could take over; "
               "1 no node is active — none holds the lease, or its holder is known not to serve (this machine's "
               "node holding it while not answering, not running or not active; a take its node never heard of) "
               "—, or the lease's database could not be asked (a single node: it does not serve); "
               "3 a node is active but this machine's node could not take over if it failed (not "
               "running, not answering, held back by its key ring, or unable to reach the lease's database): "
               "the pair cannot fail over. A monitoring check alerts on anything but 0."))
    sp.add_argument("--format", choices=("text", "json"), default="text")
    sp.set_defaults(func=lambda a: __import__("msc.cli.status", fromlist=["cmd_status"]).cmd_status(a, _load(a)))
    cfg = sub.add_parser("config", help="configuration files").add_subparsers(dest="action", required=True)
    sp = with_config(cfg.add_parser("check", help="validate msc.toml and users.toml"))
    sp.set_defaults(func=cmd_config_check)

    from msc.cli import auth as auth_cli

    sp = with_config(sub.add_parser("keys", help="master key and signing key",
                                    description="init: create the keys; rotate: new master key (an administrator, "
                                                "--as); show: the checkpoint key's fingerprint, for the agency to "
                                                "publish"))
    sp.add_argument("action", choices=("init", "rotate", "show"))
    sp.add_argument("--format", choices=("text", "json"), default="text", help="for show")
    auth_cli.add_arguments(sp, required=False)  # rotate: an administrator; init makes the key ring
    sp.set_defaults(func=cmd_keys)

    users = sub.add_parser("user", help="the user directory").add_subparsers(dest="action", required=True)
    sp = with_config(users.add_parser("add", help="add a user to users.toml"))
    sp.add_argument("--id", type=opt.user_id, required=True)
    sp.add_argument("--name", type=opt.person_name, required=True)
    sp.add_argument("--ori", type=opt.ori, required=True)
    sp.add_argument("--role", required=True, choices=("full", "ltfa", "practitioner", "admin", "investigator"))
    sp.add_argument("--dob", type=opt.date_text, help="YYYY-MM-DD (self-inquiry detection only)")
    sp.add_argument("--certified-until", type=opt.date_text, help="YYYY-MM-DD (proficiency, PPP §1.8.2)")
    sp.add_argument("--totp", action="store_true",
                    help="enrol a TOTP second factor (always for admin and investigator); prints the URI once")
    sp.add_argument("--as", dest="as_user", type=opt.user_id, metavar="ADMIN_ID",
                    help="the administrator adding the user (not needed only for the first administrator)")
    sp.add_argument("--password-stdin", action="store_true",
                    help="read from stdin: with --as your password, your one-time password, then the new "
                         "user's password, one per line; without --as only the new password")
    sp.set_defaults(func=cmd_user_add)
    for action, fn, help_ in (("passwd", "user_passwd", "set a new password"),
                              ("disable", "user_status", "disable (logs the user off at once)"),
                              ("enable", "user_status", "enable again"),
                              ("unlock", "user_unlock", "release a lockout (CJIS AC-7)"),
                              ("remove", "user_remove", "remove; the ID is not reassigned for 365 days")):
        sp = with_config(users.add_parser(action, help=help_))
        sp.add_argument("id", type=opt.user_id)
        # unlock: --as may be left out only to unlock an administrator while every one is locked
        auth_cli.add_arguments(sp, required=action != "unlock")
        sp.set_defaults(func=lambda a, fn=fn: getattr(__import__("msc.cli.users", fromlist=[fn]), fn)(a, _load(a)))
    sp = with_config(users.add_parser("list", help="list users, roles, status, lockouts, last logon"))
    sp.add_argument("--format", choices=("text", "json"), default="text")
    sp.set_defaults(func=lambda a: __import__("msc.cli.users", fromlist=["user_list"]).user_list(a, _load(a)))

    stations = sub.add_parser("station", help="stations at run time").add_subparsers(dest="action", required=True)
    for action in ("disable", "enable"):
        sp = with_config(stations.add_parser(action, help=f"{action} a station (PPP §1.9.1)"))
        sp.add_argument("mnemonic", type=opt.station)
        auth_cli.add_arguments(sp)
        sp.set_defaults(func=lambda a: __import__("msc.cli.users", fromlist=["station_status"]).station_status(a, _load(a)))

    from msc.cli import journal as journal_cli

    journal_cli.add_arguments(sub)
    from msc.cli import report as report_cli

    report_cli.add_arguments(sub)

    sp = sub.add_parser("demo", help="create the demo under DIR and run stubs + switch (make run)")
    sp.add_argument("--dir", default="var")
    sp.add_argument("--template", help="msc.toml to start from (default: the packaged demo config)")
    sp.add_argument("--init-only", action="store_true")
    sp.add_argument("--port-offset", type=opt.port_offset, default=0, metavar="N",
                    help="when the demo is created: add N to every port of its msc.toml (to run beside another)")
    sp.set_defaults(func=lambda a: __import__("msc.cli.demo", fromlist=["main"]).main(a))
    return p


def main(argv: list[str] | None = None) -> int:
    """The ``msc`` command. Whatever a sub-command prints, a reader that went away (``msc user
    list | head``) ends it quietly with status 141 (128 + SIGPIPE), not a traceback: stdout is
    flushed here, not at exit, and then pointed at /dev/null so the flush at exit cannot fail
    again (the Python documentation's "Note on SIGPIPE")."""
    try:
        try:
            return _main(argv)
        finally:  # (also after argparse's --help and its SystemExit)
            sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_SIGPIPE


def _main(argv: list[str] | None) -> int:
    # Every file and directory any msc command or the daemon creates is owner-only (SECURITY.md
    # "File modes"), whatever the shell's umask; the writer process and stubs inherit it.
    os.umask(0o077)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.func not in (cmd_serve, cmd_web):
        # Library warnings (the journal's indexer, …) go to stderr as JSON, never into stdout,
        # which carries a command's output (jsonl/csv search results).
        from msc.ops.logging import configure

        configure(level="warning", json=True)
    import sqlite3

    from msc.journal.records import JournalError, JournalUnavailable
    from msc.storage.backends import StorageUnavailable

    try:
        return args.func(args) or EXIT_OK
    except KeyboardInterrupt:
        return 130
    except StorageUnavailable as exc:  # [storage] backend = "postgresql" and its database cannot be reached
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except JournalError as exc:  # one a command did not handle itself: one line, never a traceback
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, JournalUnavailable) else EXIT_PROBLEM
    except TimeoutError as exc:  # a bound that ran out (a database that does not answer) unhandled below
        from msc.reasons import explain

        print(f"error: {explain(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except sqlite3.OperationalError as exc:  # state.db (or a journal file) locked or failing: one line, no traceback
        from msc.reasons import explain

        print(f"error: run-time state (state.db) unavailable, nothing was changed by this step: {explain(exc)}",
              file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        if exc.filename is None:
            raise  # not a file named on the command line or in the configuration: a fault, its traceback
        # A file a command was given that cannot be read or written (msc demo --template, a TLS
        # file, …): one line naming it and exit 2, like a --config that cannot be read — never a
        # traceback (newcomer trial F4). Each command's own handling, where it has one, comes first.
        print(f"error: {file_error(exc)}", file=sys.stderr)
        return EXIT_USAGE


def file_error(exc: OSError) -> str:
    """``PATH: No such file or directory`` for an OSError about a file (its ``filename``)."""
    what = exc.strerror or type(exc).__name__
    return f"{exc.filename}: {what}" if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}: {what}"


if __name__ == "__main__":
    sys.exit(main())
