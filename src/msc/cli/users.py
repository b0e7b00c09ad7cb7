"""``msc user …`` and ``msc station …``: the user directory lifecycle and stations at run time
(OPERATIONS.md, CJIS IA-4/IA-5, AC-2, PPP §1.9.1).

Every command that changes something logs an administrator on first (``--as``, :mod:`msc.cli.auth`)
and its ``ADMIN`` record names them (:mod:`msc.actions.directory`, shared with the web console).
Two exceptions, run by the service account, each recorded with ``OS:<account>`` as the actor
(:func:`msc.actions.identity.os_actor`): the bootstrap — while no enabled administrator account
exists, ``msc user add --role admin`` without ``--as`` makes one, recorded as ``BOOTSTRAP`` — and,
while every enabled administrator is locked out, ``msc user unlock ID`` of one of them without
``--as``.
"""

from __future__ import annotations

import datetime as dt
import getpass
import sys
from collections.abc import Callable

import msgspec

from msc.actions import directory
from msc.actions.directory import (  # noqa: F401  (used by msc demo and older callers)
    ID_REUSE_DAYS,
    PRIVILEGED,
    ActionRefused,
    password_problem,
    validate_users,
)
from msc.config.load import Settings
from msc.mnemonics import userfile
from msc.mnemonics.passwords import hash_password

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


def _admin(settings: Settings, args, op: str, first: Callable[[], None] | None = None) -> str:
    from msc.cli.auth import ADMIN, logon

    return logon(settings, args, roles=ADMIN, op=op, first=first)


class _NewPassword:
    """``logon``'s ``first`` for a command that sets a password: reads the new password and
    refuses one the policy refuses (exit 2) before the administrator's one-time code is used up."""

    def __init__(self, args, settings: Settings, uid: str, name: str, ori: str) -> None:
        self.args, self.settings, self.uid, self.name, self.ori = args, settings, uid, name, ori
        self.value = ""

    def __call__(self) -> None:
        pw = read_new_password(self.args, self.uid)
        problem = password_problem(pw, self.uid, self.name, self.settings, self.ori)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            raise SystemExit(EXIT_USAGE)
        self.value = pw


def add_user(args, settings: Settings) -> int:
    uid = args.id.upper()
    try:
        directory.check_new_user(settings, uid, args.ori, args.role, dt.date.today())
    except ActionRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
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
        pw = read_new_password(args, uid)
    else:
        new = _NewPassword(args, settings, uid, args.name, args.ori)
        actor = _admin(settings, args, "user add", first=new)
        pw = new.value
    try:
        added = directory.add_user(settings, actor, uid=uid, name=args.name, ori=args.ori, role=args.role,
                                   password=pw, dob=_date(args.dob, "--dob"),
                                   certified_until=_date(args.certified_until, "--certified-until"),
                                   totp=args.totp, bootstrap=bootstrap)
    except ActionRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"added {uid} ({args.role}, {args.ori}) to {directory.users_where(settings)}" +
          (f" — the first administrator (bootstrap by {actor}, journaled)" if bootstrap else ""))
    if added.totp_uri:
        print("TOTP provisioning URI (shown once; enrol it in the user's authenticator now):")
        print(added.totp_uri)
        print(f"  secret (for manual entry): {added.totp_secret}")
    return EXIT_OK


def _find(settings: Settings, uid: str):
    try:
        return directory.find_user(settings, uid)
    except ActionRefused as exc:
        raise SystemExit(f"error: {exc}") from None


def _change(settings: Settings, uid: str, fn) -> None:
    try:
        directory.change_user(settings, uid, fn)
    except ActionRefused as exc:
        raise SystemExit(f"error: {exc}") from None


def user_passwd(args, settings: Settings) -> int:
    uid = args.id.upper()
    u = _find(settings, uid)
    new = _NewPassword(args, settings, uid, u.name, u.ori)
    actor = _admin(settings, args, "user passwd", first=new)
    hashed = hash_password(new.value, ln=settings.config.switch.password_cost)
    _change(settings, uid, lambda e: msgspec.structs.replace(e, password=hashed))
    from msc.cli.admin import notify_users_changed

    notify_users_changed(settings, f"USER PASSWD {uid}", user=actor)
    print(f"password of {uid} changed" + (f" in {directory.users_where(settings)}"
                                           if settings.config.storage.backend == "postgresql" else ""))
    return EXIT_OK


def user_status(args, settings: Settings) -> int:
    uid = args.id.upper()
    disabled = args.action == "disable"
    _find(settings, uid)
    actor = _admin(settings, args, f"user {args.action}")
    try:
        directory.set_user_status(settings, actor, uid, disabled=disabled)
    except ActionRefused as exc:
        raise SystemExit(f"error: {exc}") from None
    if settings.config.storage.backend == "postgresql":
        # A pair: the database's copy, which every node applies within its next look (USERS_RECHECK_S).
        print(f"{uid} {'disabled' if disabled else 'active'} in {directory.users_where(settings)}" +
              (" — logged off within a few seconds on whichever node serves them" if disabled else ""))
    else:
        print(f"{uid} {'disabled' if disabled else 'active'}" +
              (" (logged off within a second if the switch is running)" if disabled else ""))
    return EXIT_OK


def user_unlock(args, settings: Settings) -> int:
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
    directory.unlock_user(settings, actor, uid, recovery=recovery)
    print(f"{uid} unlocked")
    return EXIT_OK


def user_remove(args, settings: Settings) -> int:
    uid = args.id.upper()
    _find(settings, uid)
    actor = _admin(settings, args, "user remove")
    today = dt.date.today()
    try:
        directory.update_users(settings, lambda users: userfile.remove_user(users, uid, today))
    except ActionRefused as exc:
        raise SystemExit(f"error: {exc}") from None
    from msc.cli.admin import notify_users_changed

    notify_users_changed(settings, f"USER REMOVE {uid}", user=actor)
    where = f" from {directory.users_where(settings)}" if settings.config.storage.backend == "postgresql" else ""
    print(f"{uid} removed{where}; the ID cannot be reassigned before {today + dt.timedelta(days=ID_REUSE_DAYS)} (CJIS IA-4d)")
    return EXIT_OK


def user_list(args, settings: Settings) -> int:
    import json

    doc = directory.user_rows(settings)
    if args.format == "json":
        print(json.dumps(doc, indent=1))
        return EXIT_OK
    print(f"{'ID':<7} {'ROLE':<13} {'ORI':<10} {'STATUS':<9} {'LOCKED':<7} {'TOTP':<5} {'CERTIFIED':<11} {'LAST LOGON':<26} NAME")
    for r in doc["users"]:
        print(f"{r['id']:<7} {r['role']:<13} {r['ori']:<10} {r['status']:<9} {'yes' if r['locked'] else 'no':<7} "
              f"{'yes' if r['totp'] else 'no':<5} {r['certified_until'] or '-':<11} {r['last_logon'] or '-':<26} {r['name']}")
    for r in doc["removed"]:
        removed = dt.date.fromisoformat(r["removed"])
        print(f"{r['id']:<7} (removed {removed}; not reassignable until {removed + dt.timedelta(days=ID_REUSE_DAYS)})")
    return EXIT_OK


def station_status(args, settings: Settings) -> int:
    """``msc station disable|enable`` (PPP §1.9.1: a stolen or misplaced terminal, at once)."""
    mnemonic = args.mnemonic.upper()
    if mnemonic not in {s.mnemonic for s in settings.config.station}:
        print(f"error: no station {mnemonic} in {settings.config_path}", file=sys.stderr)
        return EXIT_USAGE
    disabled = args.action == "disable"
    actor = _admin(settings, args, f"station {args.action}")
    try:
        live = directory.set_station_status(settings, actor, mnemonic, disabled=disabled)
    except ActionRefused as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"station {mnemonic} {'disabled' if disabled else 'enabled'}" + (" in the running switch" if live else ""))
    return EXIT_OK
