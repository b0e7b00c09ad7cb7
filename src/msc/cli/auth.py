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
import sys
from collections.abc import Callable, Iterable
from typing import NoReturn

from msc.actions.identity import (  # noqa: F401  (the roles and helpers the CLI modules use)
    ADMIN,
    INVESTIGATOR,
    JOURNAL_CHECK,
    authenticate,
    enabled_admins,
    journal_entries,
    locked,
    os_actor,
    service,
    service_account_problem,
)
from msc.config.load import Settings
from msc.journal.records import Entry, JournalError
from msc.mnemonics.auth import Attempt

EXIT_USAGE, EXIT_AUTH = 2, 3
#: The storage (the journal's or the run-time state's database) cannot be used now: the same status
#: as a usage or configuration error (OPERATIONS.md "Exit codes"), never 1 ("a problem was found").
EXIT_UNAVAILABLE = EXIT_USAGE


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
    problem = service_account_problem(settings)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def read_line(args, prompt: str) -> str | None:
    """The next secret: a line of stdin with ``--password-stdin``, else asked on the terminal
    without echo (None when there is no terminal to ask)."""
    if args.password_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n") if line else None
    if not sys.stdin.isatty():
        return None
    return getpass.getpass(prompt)


def read_otp(args, prompt: str) -> str | None:
    """The one-time password: stdin's next line with ``--password-stdin`` (as it is: a script's
    dialog is not second-guessed), else asked on the terminal **without echo**, like the
    password (CJIS IA-6) — whoever types the password there by mistake does not show it — and
    asked again until it is a code or empty (:func:`msc.cli.termrules.one_time_password`): an
    answer that is not a code is not used."""
    from msc.cli.termrules import NOT_A_CODE, one_time_password

    if args.password_stdin or not sys.stdin.isatty():
        return read_line(args, prompt)
    while True:
        typed = getpass.getpass(prompt)
        try:
            return one_time_password(typed) or ""
        except ValueError:
            print(f"{NOT_A_CODE} (if it was your password, it was neither shown nor used). Type the code your "
                  "authenticator shows.", file=sys.stderr)


def check(settings: Settings, args, *, roles: Iterable[str], op: str,
          audit: dict | None = None, first: Callable[[], None] | None = None) -> tuple[Attempt, list[Entry]]:
    """Authenticate ``--as`` for ``op`` with one of ``roles`` without journaling: the attempt and
    the journal records it needs (with ``audit``, also an AUDIT record of a refusal).

    ``first``: what the command must read and check before anyone is authenticated (``msc user
    passwd``'s new password) — it may exit, and then no one-time code was used up and no logon
    counted (newcomer9: a new password refused after the logon cost the administrator a code).
    On a terminal it is asked before the administrator's password and code (the code is then
    checked while fresh); with ``--password-stdin`` the lines keep their documented order — the
    administrator's two, then the command's — and it is read after them, before they are checked."""
    require_service_account(settings)
    uid = (args.as_user or "").upper()
    if first is not None and not args.password_stdin:
        first()
    password = read_line(args, f"Password for {uid}: ")
    otp = read_otp(args, f"One-time password for {uid} (empty if none): ")
    if first is not None and args.password_stdin:
        first()
    attempt, entries = authenticate(settings, uid, password, otp, roles=roles, op=op, peer="CLI", audit=audit)
    if not attempt.ok and password is None:
        print("error: no terminal to ask for the password: use --password-stdin", file=sys.stderr)
    return attempt, entries


def logon(settings: Settings, args, *, roles: Iterable[str], op: str, audit: dict | None = None,
          require_journal: bool = True, first: Callable[[], None] | None = None) -> str:
    """Authenticate ``--as`` for ``op`` with one of ``roles``; return the user ID, or exit 3.

    The attempt is journaled before anything else happens. An attempt that cannot be journaled
    — the journal's database away or not answering, the running switch refusing or not answering
    the record request — ends the command there, with one line and exit 2 (fail closed; the
    storage is unavailable: OPERATIONS.md "Exit codes"), whatever the attempt's outcome. The one
    exception, with ``require_journal`` False (``journal verify``): a journal whose start-up
    self-check refuses appends (:class:`msc.journal.selfcheck.JournalRefused`) must still be
    examined — that is what an administrator needs before ``journal accept`` — and the warning
    says its logon was not journaled. On a pair
    (``[node]``) a machine whose node is not the active one exits 1 for every command, before
    asking for a password: the records could only be committed by the active node, named in the
    one-line error.
    """
    from msc.actions.journaling import NotTheActiveNode, require_active_here
    from msc.cli.admin import record

    try:
        require_active_here(settings)  # on a pair, before a password or one-time password is used up
    except NotTheActiveNode as exc:
        not_here(exc)
    attempt, entries = check(settings, args, roles=roles, op=op, audit=audit, first=first)
    try:
        record(settings, entries)
    except NotTheActiveNode as exc:
        not_here(exc)
    except JournalError as exc:
        from msc.journal.selfcheck import JournalRefused

        if require_journal or not isinstance(exc, JournalRefused):
            print(f"error: the logon could not be journaled, so nothing was done: {exc}", file=sys.stderr)
            raise SystemExit(EXIT_UNAVAILABLE) from None
        print(f"warning: the logon could not be journaled (the journal refuses appends): {exc}", file=sys.stderr)
    if not attempt.ok:
        refused()
    return attempt.user_id


def not_here(exc: Exception) -> NoReturn:
    """Exit 1 with the one line that says where to run the command: on a pair its records could
    only be committed by the active node, so it does not run here, whatever it is (``journal
    verify`` included; OPERATIONS.md "Running two nodes")."""
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(1) from None


def refused():
    """Exit 3, whatever the reason (the journal has it)."""
    print("authentication refused", file=sys.stderr)
    raise SystemExit(EXIT_AUTH)
