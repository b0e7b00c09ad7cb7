"""``msc report availability|mnemonics|users|misuse`` — what the state asks an MSC for."""

from __future__ import annotations

import json
import sys
import time

from msc.actions import directory, investigate
from msc.cli.admin import daemon_running
from msc.journal.records import JournalError, JournalUnavailable
from msc.ops import reports

EXIT_OK, EXIT_PROBLEM = 0, 1


def add_arguments(sub) -> None:
    r = sub.add_parser("report", help="compliance reports (availability, inactive mnemonics and users, misuse)")
    r.add_argument("kind", choices=("availability", "mnemonics", "users", "misuse"))
    r.add_argument("--config", required=True)
    r.add_argument("--format", choices=("text", "json"), default="text")
    r.add_argument("--apply", action="store_true", help="users: disable the inactive accounts (CJIS AC-2)")
    from msc.cli.options import time_value

    r.add_argument("--from", dest="start", type=time_value, help="misuse: start (default: 30 days ago)")
    r.add_argument("--to", dest="end", type=time_value, help="misuse: end (default: now)")
    from msc.cli import auth as auth_cli

    auth_cli.add_arguments(r, required=False, roles=("admin (users --apply)", "investigator (misuse)"))
    r.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from msc.cli.auth import ADMIN, JOURNAL_CHECK, logon
    from msc.cli.settings import load_settings

    s = load_settings(args)
    now = time.time()
    who = None
    # Administration (--apply) and reading the journal (misuse) need a person; the other reports
    # read only state.db and the configuration.
    if (args.kind == "users" and args.apply) or args.kind == "misuse":
        if not args.as_user:
            print(f"error: msc report {args.kind}{' --apply' if args.apply else ''} needs --as USER_ID",
                  file=sys.stderr)
            return 2
        who = logon(s, args, roles=ADMIN if args.kind == "users" else JOURNAL_CHECK, op=f"report {args.kind}")
    from msc.storage.backends import Backends

    sources = Backends(s)  # state.db and the journal directory, or PostgreSQL ([storage])
    if args.kind == "availability":
        doc = reports.availability(s, now, running=daemon_running(s), sources=sources)
    elif args.kind == "mnemonics":
        doc = reports.mnemonics(s, now, sources=sources)
    elif args.kind == "users":
        doc = reports.users(s, now, sources=sources)
        if args.apply:
            assert who is not None  # --apply logged its administrator on above
            doc["disabled"] = _disable(s, [r["id"] for r in doc["inactive"]], who)
    else:
        start = args.start / 1e6 if args.start is not None else now - 30 * 86400
        end = args.end / 1e6 if args.end is not None else now
        if start >= end:
            print("msc report: error: --from must be before --to", file=sys.stderr)
            return 2
        assert who is not None  # the misuse report logged its administrator on above
        try:  # it reads the journal: audited like a search
            doc = investigate.misuse_report(s, who, start, end)
        except JournalError as exc:
            print(f"error: the report could not be audited: {exc}", file=sys.stderr)
            return 2 if isinstance(exc, JournalUnavailable) else EXIT_PROBLEM
    if args.format == "json":
        print(json.dumps(doc, indent=1))
    else:
        sys.stdout.write(reports.render(args.kind, doc))
    if args.kind == "availability":
        return EXIT_OK if doc["windows"]["365d"]["meets_target"] else EXIT_PROBLEM
    return EXIT_OK


def _disable(s, ids: list[str], actor: str) -> list[str]:
    try:
        return directory.disable_inactive(s, actor, ids)
    except directory.ActionRefused as exc:  # (PostgreSQL: the user directory's database refused it)
        raise SystemExit(f"error: {exc}") from None
