"""``msc user …``: the user directory lifecycle (OPERATIONS.md, CJIS IA-4/IA-5, AC-2)."""

from __future__ import annotations

import datetime as dt
import getpass
import sys

import msgspec

from msc.config.load import ConfigError, Settings
from msc.config.model import UserEntry, UsersFile
from msc.mnemonics import userfile
from msc.mnemonics.passwords import hash_password
from msc.protocol import grammar

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2
MIN_PASSWORD = 8  # CJIS IA-5(1)(a)
ID_REUSE_DAYS = 365  # CJIS IA-4d (PPP §1.6.7 B says six months; the stricter applies)


def _date(value: str | None, what: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise SystemExit(f"error: {what} must be YYYY-MM-DD") from None


def read_new_password(args) -> str:
    if args.password_stdin:
        pw = sys.stdin.readline().rstrip("\r\n")
    else:
        pw = getpass.getpass("New password: ")
        if getpass.getpass("Repeat it: ") != pw:
            raise SystemExit("error: the passwords differ")
    return pw


def password_problem(pw: str, user_id: str, name: str) -> str | None:
    """CJIS IA-5(1)(a): length, banned list, not the user's own ID or name."""
    from msc.mnemonics.banned import is_banned

    if len(pw) < MIN_PASSWORD:
        return f"a password has at least {MIN_PASSWORD} characters"
    if not pw.isprintable() or not pw.isascii():
        return "a password is printable ASCII (spaces allowed)"
    if is_banned(pw) or user_id.lower() in pw.lower() or any(
            part and len(part) > 2 and part.lower() in pw.lower() for part in name.replace(",", " ").split()):
        return "that password is on the banned list or contains the user ID or name"
    return None


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
    pw = read_new_password(args)
    problem = password_problem(pw, uid, args.name)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    totp_secret = uri = None
    if args.totp:
        from msc.mnemonics.totp import enrol

        totp_secret, uri = enrol(settings, uid)
    entry = UserEntry(id=uid, name=args.name, ori=args.ori, role=args.role, password=hash_password(pw),
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

    notify_users_changed(settings, f"USER ADD {uid} ROLE/{args.role} ORI/{args.ori}" + (" TOTP" if args.totp else ""))
    print(f"added {uid} ({args.role}, {args.ori}) to {settings.users_path}")
    if uri:
        print("TOTP provisioning URI (shown once; enrol it in the user's authenticator now):")
        print(uri)
    return EXIT_OK
