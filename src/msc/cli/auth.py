"""Who runs an ``msc`` command (issue 13: "every action has a name").

Every command that changes state or reads the journal logs a person on first, through the same
authentication service as a terminal (:class:`msc.mnemonics.auth.AuthService`: one lockout count,
one "each TOTP step once" rule, one answer for every refusal), and its journal record names them:

* ``--as USER_ID`` names the person; their role must allow the command (:data:`ADMIN`,
  :data:`INVESTIGATOR`, :data:`JOURNAL_CHECK`);
* the password and then the one-time password are asked on the terminal, or read from stdin with
  ``--password-stdin`` (scripts): the password on the first line, the one-time password on the
  second (empty when the account has no TOTP). Commands that take a new password
  (``user add``/``passwd``) read it after those, from the third line;
* every attempt is a ``SESSION`` journal record (``LOGON OK CLI …`` / ``LOGON FAILED … CLI …``)
  committed before the command does anything; a refusal exits 3 (``authentication refused``),
  whatever the reason;
* the command runs as the **service account** only (:func:`require_service_account`): the master
  key file decrypts the whole journal without an AUDIT record, so it is readable by that account
  alone and the CLI refuses to run as anyone else (root included).
"""

from __future__ import annotations

import getpass
import os
import stat
import sys
from collections.abc import Iterable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from msc.config.load import Settings
from msc.journal.records import Entry, JournalError, Kind
from msc.mnemonics.auth import Attempt, AuthService, users_file_rehash
from msc.protocol.codes import Reject

EXIT_USAGE, EXIT_AUTH = 2, 3

#: Administration: users, stations, keys, purge, ``report users --apply``.
ADMIN = ("admin",)
#: Reading what the journal says: search and export (they decrypt CJI).
INVESTIGATOR = ("investigator",)
#: Checking the journal without reading its messages: ``journal verify`` and ``report misuse``
#: (integrity and metadata; an administrator runs them for AU-9/PPP §1.10, an investigator
#: before relying on a record).
JOURNAL_CHECK = ("admin", "investigator")


def add_arguments(sp, *, required: bool = True, roles: Iterable[str] = ADMIN) -> None:
    who = " or ".join(roles)
    from msc.cli.options import user_id

    sp.add_argument("--as", dest="as_user", type=user_id, required=required, metavar="USER_ID",
                    help=f"the {who} running this command (asked for their password and one-time password)")
    sp.add_argument("--password-stdin", action="store_true",
                    help="read your password from stdin's first line and your one-time password from its second")


def require_service_account(settings: Settings) -> None:
    """Refuse to go on (exit 2) unless this process runs as the account that owns the master key
    file, and that file is readable by that account alone (docs/SECURITY.md "The master key")."""
    key = settings.key_file

    def refuse(message: str):
        print(f"error: {message}", file=sys.stderr)
        return SystemExit(EXIT_USAGE)

    try:
        st = os.stat(key)
    except FileNotFoundError:
        raise refuse(f"no master key at {key}: run `msc keys init --config {settings.config_path}`") from None
    if st.st_uid != os.geteuid():
        raise refuse(
            f"{key} belongs to uid {st.st_uid}, not to this process (uid {os.geteuid()}): run msc as the service "
            "account that owns it (e.g. `sudo -u msc msc …`). Whoever reads the master key can decrypt the journal "
            "without an AUDIT record, so no other account may (docs/SECURITY.md)")
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise refuse(f"{key} is readable by other accounts (mode {stat.S_IMODE(st.st_mode):04o}): "
                     f"`chmod 600 {key}` (docs/SECURITY.md)")


def read_line(args, prompt: str, *, echo: bool = False) -> str | None:
    """The next secret: a line of stdin with ``--password-stdin``, else asked on the terminal
    (None when there is no terminal to ask)."""
    if args.password_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n") if line else None
    if not sys.stdin.isatty():
        return None
    return input(prompt) if echo else getpass.getpass(prompt)


def service(settings: Settings) -> AuthService:
    """The authentication service of this command: state.db shared with the daemon."""
    from msc.keyring import KeyRing
    from msc.mnemonics import totp
    from msc.mnemonics.directory import Directory
    from msc.mnemonics.state import StateStore

    users = Directory(settings).users
    ring = KeyRing(settings.data_dir / "keys", settings.key_file)
    aead: list[AESGCM] = []

    def open_totp(acct) -> bytes:
        if not aead:
            aead.append(ring.users_aead())
        return totp.open_secret(aead[0], acct.id, acct.totp)

    return AuthService(accounts=users.get, store=StateStore(settings.state_db), open_totp=open_totp,
                       cost=settings.config.switch.password_cost, rehash=users_file_rehash(settings.users_path),
                       via="cli")


def check(settings: Settings, args, *, roles: Iterable[str], op: str,
          audit: dict | None = None) -> tuple[Attempt, list[Entry]]:
    """Authenticate ``--as`` for ``op`` with one of ``roles`` without journaling: the attempt and
    the journal records it needs (with ``audit``, also an AUDIT record of a refusal)."""
    require_service_account(settings)
    uid = (args.as_user or "").upper()
    password = read_line(args, f"Password for {uid}: ")
    otp = read_line(args, f"One-time password for {uid} (empty if none): ", echo=True)
    svc = service(settings)
    try:
        attempt = svc.authenticate(uid, password or "", (otp or "").strip() or None, roles=roles)
    finally:
        svc.store.close()  # type: ignore[attr-defined]
    entries = journal_entries(attempt, op)
    if audit is not None and not attempt.ok:
        import json

        entries.append(Entry(kind=Kind.AUDIT, user=uid,
                             text=json.dumps({**audit, "outcome": "refused", "reason": "authentication refused"},
                                             sort_keys=True)))
    _tell_daemon(settings, attempt)
    if not attempt.ok and password is None:
        print("error: no terminal to ask for the password: use --password-stdin", file=sys.stderr)
    return attempt, entries


def logon(settings: Settings, args, *, roles: Iterable[str], op: str, audit: dict | None = None,
          require_journal: bool = True) -> str:
    """Authenticate ``--as`` for ``op`` with one of ``roles``; return the user ID, or exit 3.

    The attempt is journaled before anything else happens. A successful logon that cannot be
    journaled exits 1 (fail closed) — unless ``require_journal`` is False: ``journal verify``
    must be able to examine a journal that cannot be written to, and says so.
    """
    from msc.cli.admin import record

    attempt, entries = check(settings, args, roles=roles, op=op, audit=audit)
    try:
        record(settings, entries)
    except JournalError as exc:
        print(f"{'error' if require_journal else 'warning'}: the logon could not be journaled: {exc}",
              file=sys.stderr)
        if attempt.ok and require_journal:
            raise SystemExit(1) from None
    if not attempt.ok:
        refused()
    return attempt.user_id


def refused():
    """Exit 3, whatever the reason (the journal has it)."""
    print("authentication refused", file=sys.stderr)
    raise SystemExit(EXIT_AUTH)


def _tell_daemon(settings: Settings, attempt: Attempt) -> None:
    """A running switch re-reads at once what this process changed (a lockout, a re-hash)."""
    from msc.cli.admin import DaemonUnavailable, control

    for op_, cond in (("auth_changed", attempt.locked_now), ("users_changed", attempt.rehashed)):
        if cond:
            try:
                control(settings, {"op": op_})
            except DaemonUnavailable:
                pass  # no daemon: it reads state.db and users.toml when it starts


def journal_entries(attempt: Attempt, op: str) -> list[Entry]:
    """The SESSION records of one CLI logon attempt (peer ``CLI``)."""
    if attempt.ok:
        return [Entry(kind=Kind.SESSION, peer="CLI", user=attempt.user_id, text=f"LOGON OK CLI {op.upper()}")]
    why = attempt.refusal.value if attempt.refusal is not None else "REFUSED"
    out = [Entry(kind=Kind.SESSION, peer="CLI", user=attempt.user_id, code=Reject.E202.code,
                 text=f"LOGON FAILED {why} CLI {op.upper()}")]
    if attempt.locked_now:
        out.append(Entry(kind=Kind.SESSION, peer="CLI", user=attempt.user_id, code=Reject.E203.code, text="LOCKOUT"))
    return out


def enabled_admins(settings: Settings) -> list[str]:
    """The administrator accounts that exist and are enabled (``status = "active"``), locked or
    not: a locked account still exists — another administrator unlocks it, or, when every one is
    locked, the service account does (:func:`os_actor`, docs/OPERATIONS.md "The first
    administrator")."""
    from msc.mnemonics import userfile

    return [u.id for u in userfile.read(settings.users_path).user if u.role == "admin" and u.status == "active"]


def locked(settings: Settings) -> set[str]:
    from msc.mnemonics.state import StateStore

    store = StateStore(settings.state_db)
    try:
        return store.locked_users()
    finally:
        store.close()


def os_actor() -> str:
    """The journal ``user`` of an act done with no logon (the bootstrap, an unlock when every
    administrator is locked): ``OS:<account>``, the operating-system account that ran msc
    (JOURNAL.md "Record kinds") — never the account the act created or changed."""
    import getpass

    return f"OS:{getpass.getuser()}"
