"""``msc user …`` and ``msc station …``: the user directory lifecycle and stations at run time
(OPERATIONS.md, CJIS IA-4/IA-5, AC-2, PPP §1.9.1).

Every command that changes something logs an administrator on first (``--as``, :mod:`msc.cli.auth`)
and its ``ADMIN`` record names them. Two exceptions, run by the service account, each recorded with
``OS:<account>`` as the actor (:func:`msc.cli.auth.os_actor`): the bootstrap — while no enabled
administrator account exists, ``msc user add --role admin`` without ``--as`` makes one, recorded
as ``BOOTSTRAP`` — and, while every enabled administrator is locked out, ``msc user unlock ID``
of one of them without ``--as``.
"""

from __future__ import annotations

import datetime as dt
import getpass
import sys

import msgspec

from msc.config.load import ConfigError, Settings
from msc.config.model import UserEntry, UsersFile
from msc.mnemonics import userfile
from msc.mnemonics.passwords import hash_password, problem_for
from msc.mnemonics.totp import PRIVILEGED
from msc.mnemonics.userfile import ID_REUSE_DAYS
from msc.protocol import grammar

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


def _date(value: str | None, what: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise SystemExit(f"error: {what} must be YYYY-MM-DD") from None


def read_new_password(args, uid: str) -> str:
    """The new user's password: the next line of stdin (after the administrator's two with
    ``--as``), or asked twice on the terminal."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise SystemExit("error: no terminal to ask for the new password: use --password-stdin")
    pw = getpass.getpass(f"New password for {uid}: ")
    if getpass.getpass("Repeat it: ") != pw:
        raise SystemExit("error: the passwords differ")
    return pw


def _admin(settings: Settings, args, op: str) -> str:
    from msc.cli.auth import ADMIN, logon

    return logon(settings, args, roles=ADMIN, op=op)


def validate_users(settings: Settings, users: UsersFile) -> None:
    """Validate a prospective users.toml against the running configuration; raises ConfigError."""
    from msc.config.validate import validate

    probe = Settings(config=settings.config, users=users, config_path=settings.config_path,
                     users_path=settings.users_path, base_dir=settings.base_dir)
    issues = [i for i in validate(probe) if i.file == str(settings.users_path)]
    if issues:
        raise ConfigError(issues)


def add_user(args, settings: Settings) -> int:
    uid = args.id.upper()
    if grammar.USER_ID_RE.match(uid) is None:
        print("error: a user ID is 6 characters [A-Z0-9] (PPP §1.6.7)", file=sys.stderr)
        return EXIT_USAGE
    today = dt.date.today()
    current = userfile.read(settings.users_path)
    if any(u.id == uid for u in current.user):
        print(f"error: user {uid} already exists", file=sys.stderr)
        return EXIT_USAGE
    for r in current.removed:
        if r.id == uid and (today - r.removed).days < ID_REUSE_DAYS:
            print(f"error: {uid} was removed on {r.removed} and may not be reassigned before "
                  f"{r.removed + dt.timedelta(days=ID_REUSE_DAYS)} (CJIS IA-4d)", file=sys.stderr)
            return EXIT_USAGE
    if args.ori not in {a.ori for a in settings.config.agency}:
        print(f"error: no agency with ORI {args.ori} in {settings.config_path}", file=sys.stderr)
        return EXIT_USAGE
    bootstrap = False
    if args.as_user is None:
        from msc.cli.auth import enabled_admins, os_actor, require_service_account

        require_service_account(settings)
        # The bootstrap is open only while no enabled administrator account exists. A locked one
        # still exists (another administrator, or the service account, unlocks it: `msc user
        # unlock`), so five wrong passwords cannot reopen it.
        if enabled_admins(settings):
            print("error: --as ADMIN_ID is required (an enabled administrator exists; only the first one is made "
                  "without it)", file=sys.stderr)
            return EXIT_USAGE
        if args.role != "admin":
            print("error: no enabled administrator exists yet: make one first (msc user add --role admin …, "
                  "without --as)", file=sys.stderr)
            return EXIT_USAGE
        bootstrap = True
        actor = os_actor()
    else:
        actor = _admin(settings, args, "user add")
    pw = read_new_password(args, uid)
    problem = problem_for(settings, pw, uid, args.name, args.ori)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    totp_secret = uri = None
    # CJIS IA-2(1): privileged accounts (admin, investigator) always get a second factor.
    if args.totp or args.role in PRIVILEGED:
        from msc.mnemonics.totp import enrol

        totp_secret, uri = enrol(settings, uid)
    entry = UserEntry(id=uid, name=args.name, ori=args.ori, role=args.role,
                      password=hash_password(pw, ln=settings.config.switch.password_cost),
                      dob=_date(args.dob, "--dob"), totp=totp_secret,
                      certified_until=_date(args.certified_until, "--certified-until"), created=today)

    def change(users: UsersFile) -> UsersFile:
        if any(u.id == uid for u in users.user):
            raise SystemExit(f"error: user {uid} already exists")
        kept = tuple(r for r in users.removed if r.id != uid)
        return msgspec.structs.replace(users, user=(*users.user, entry), removed=kept)

    try:
        userfile.update(settings.users_path, change, lambda u: validate_users(settings, u))
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
        return EXIT_USAGE
    from msc.cli.admin import notify_users_changed

    text = f"USER ADD {uid} ROLE/{args.role} ORI/{args.ori}" + (" TOTP" if totp_secret else "")
    if bootstrap:
        text = f"BOOTSTRAP {text} (NO ENABLED ADMINISTRATOR EXISTED)"
    notify_users_changed(settings, text, user=actor)
    print(f"added {uid} ({args.role}, {args.ori}) to {settings.users_path}" +
          (f" — the first administrator (bootstrap by {actor}, journaled)" if bootstrap else ""))
    if uri:
        from urllib.parse import parse_qs, urlparse

        print("TOTP provisioning URI (shown once; enrol it in the user's authenticator now):")
        print(uri)
        print(f"  secret (for manual entry): {parse_qs(urlparse(uri).query)['secret'][0]}")
    return EXIT_OK


def _find(settings: Settings, uid: str):
    u = next((u for u in userfile.read(settings.users_path).user if u.id == uid), None)
    if u is None:
        raise SystemExit(f"error: no user {uid} in {settings.users_path}")
    return u


def _change(settings: Settings, uid: str, fn) -> None:
    try:
        userfile.update(settings.users_path, lambda users: userfile.replace_user(users, uid, fn),
                        lambda u: validate_users(settings, u))
    except LookupError:
        raise SystemExit(f"error: no user {uid} in {settings.users_path}") from None
    except ConfigError as exc:
        raise SystemExit("\n".join(f"error: {i}" for i in exc.issues)) from None


def user_passwd(args, settings: Settings) -> int:
    uid = args.id.upper()
    u = _find(settings, uid)
    actor = _admin(settings, args, "user passwd")
    pw = read_new_password(args, uid)
    problem = problem_for(settings, pw, uid, u.name, u.ori)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    hashed = hash_password(pw, ln=settings.config.switch.password_cost)
    _change(settings, uid, lambda e: msgspec.structs.replace(e, password=hashed))
    from msc.cli.admin import notify_users_changed

    notify_users_changed(settings, f"USER PASSWD {uid}", user=actor)
    print(f"password of {uid} changed")
    return EXIT_OK


def user_status(args, settings: Settings) -> int:
    uid = args.id.upper()
    status = "disabled" if args.action == "disable" else "active"
    _find(settings, uid)
    actor = _admin(settings, args, f"user {args.action}")
    _change(settings, uid, lambda e: msgspec.structs.replace(e, status=status))
    from msc.cli.admin import notify_users_changed

    notify_users_changed(settings, f"USER {args.action.upper()} {uid}", user=actor)
    print(f"{uid} {status}" + (" (logged off within a second if the switch is running)" if status == "disabled" else ""))
    return EXIT_OK


def user_unlock(args, settings: Settings) -> int:
    from msc.cli.admin import DaemonUnavailable, control, record_admin
    from msc.mnemonics.state import StateStore

    uid = args.id.upper()
    _find(settings, uid)
    recovery = ""
    if args.as_user is None:
        # Recovery: every enabled administrator is locked out, so none can log on to unlock
        # another. The service account (it owns the master key) may unlock an administrator —
        # who must still log on with their password and one-time password — recorded with the OS
        # account as the actor. Nothing else is allowed without --as.
        from msc.cli.auth import enabled_admins, locked, os_actor, require_service_account

        require_service_account(settings)
        admins = enabled_admins(settings)
        if not admins or not set(admins) <= locked(settings) or uid not in admins:
            print("error: --as ADMIN_ID is required (without it only a locked administrator can be unlocked, and "
                  "only while every enabled administrator is locked)", file=sys.stderr)
            return EXIT_USAGE
        actor, recovery = os_actor(), " (EVERY ENABLED ADMINISTRATOR WAS LOCKED)"
    else:
        actor = _admin(settings, args, "user unlock")
    store = StateStore(settings.state_db)  # shared with the daemon; it re-reads at once when told
    try:
        store.unlock(uid)
    finally:
        store.close()
    try:
        control(settings, {"op": "auth_changed"})
    except DaemonUnavailable:
        pass
    record_admin(settings, f"USER UNLOCK {uid}{recovery}", user=actor)
    print(f"{uid} unlocked")
    return EXIT_OK


def user_remove(args, settings: Settings) -> int:
    uid = args.id.upper()
    _find(settings, uid)
    actor = _admin(settings, args, "user remove")
    today = dt.date.today()
    userfile.update(settings.users_path, lambda users: userfile.remove_user(users, uid, today))
    from msc.cli.admin import notify_users_changed

    notify_users_changed(settings, f"USER REMOVE {uid}", user=actor)
    print(f"{uid} removed; the ID cannot be reassigned before {today + dt.timedelta(days=ID_REUSE_DAYS)} (CJIS IA-4d)")
    return EXIT_OK


def user_list(args, settings: Settings) -> int:
    import json

    from msc.mnemonics.state import StateStore

    users = userfile.read(settings.users_path)
    state = StateStore(settings.state_db).users() if settings.data_dir.exists() else {}
    rows = []
    for u in users.user:
        st = state.get(u.id)

        def when(t):
            return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds") if t else None

        rows.append({"id": u.id, "name": u.name, "ori": u.ori, "role": u.role, "status": u.status,
                     "locked": bool(st and st.locked_at), "totp": u.totp is not None,
                     "certified_until": u.certified_until.isoformat() if u.certified_until else None,
                     "last_logon": when(st.last_logon) if st else None})
    if args.format == "json":
        print(json.dumps({"users": rows, "removed": [{"id": r.id, "removed": r.removed.isoformat()} for r in users.removed]},
                         indent=1))
        return EXIT_OK
    print(f"{'ID':<7} {'ROLE':<13} {'ORI':<10} {'STATUS':<9} {'LOCKED':<7} {'TOTP':<5} {'CERTIFIED':<11} {'LAST LOGON':<26} NAME")
    for r in rows:
        print(f"{r['id']:<7} {r['role']:<13} {r['ori']:<10} {r['status']:<9} {'yes' if r['locked'] else 'no':<7} "
              f"{'yes' if r['totp'] else 'no':<5} {r['certified_until'] or '-':<11} {r['last_logon'] or '-':<26} {r['name']}")
    for gone in users.removed:
        print(f"{gone.id:<7} (removed {gone.removed}; not reassignable until "
              f"{gone.removed + dt.timedelta(days=ID_REUSE_DAYS)})")
    return EXIT_OK


def station_status(args, settings: Settings) -> int:
    """``msc station disable|enable`` (PPP §1.9.1: a stolen or misplaced terminal, at once)."""
    from msc.cli.admin import DaemonUnavailable, control, record_admin
    from msc.mnemonics.state import StateStore

    mnemonic = args.mnemonic.upper()
    if mnemonic not in {s.mnemonic for s in settings.config.station}:
        print(f"error: no station {mnemonic} in {settings.config_path}", file=sys.stderr)
        return EXIT_USAGE
    disabled = args.action == "disable"
    actor = _admin(settings, args, f"station {args.action}")
    try:
        reply = control(settings, {"op": "station", "mnemonic": mnemonic, "disabled": disabled})
        if not reply.get("ok"):
            raise SystemExit(f"error: {reply.get('error')}")
        live = True
    except DaemonUnavailable:
        store = StateStore(settings.state_db)
        store.set_station(mnemonic, disabled)
        store.close()
        live = False
    record_admin(settings, f"STATION {args.action.upper()} {mnemonic}", user=actor)
    print(f"station {mnemonic} {'disabled' if disabled else 'enabled'}" + (" in the running switch" if live else ""))
    return EXIT_OK
