"""``msc journal search|export|verify|purge`` — the investigator's and auditor's tools.

Access to the journal "must be highly controlled" (PPP §1.7.1 A): every command logs a person on
(:mod:`msc.cli.auth`): search and export an ``investigator``, verify an ``investigator`` or an
``admin``, purge an ``admin``. Every search, export and verify, and every refusal, is an ``AUDIT``
record naming them, with the case reference and the searched values (sealed with the record's
text, like message text). Results are printed only after that record is committed (fail closed):
an unrecorded look at the journal does not happen.
"""

from __future__ import annotations

import contextlib
import csv
import json
import sys

from msc.actions import investigate
from msc.actions.investigate import CASE_RE, CASE_RULE  # noqa: F401
from msc.cli.admin import DaemonNoAnswer, DaemonUnavailable, control
from msc.config.load import Settings
from msc.journal.export import JSON_KEYS
from msc.journal.records import JournalError, JournalUnavailable, Record
from msc.journal.search import Query, iso
from msc.keyring import KeyError_, KeyRing
from msc.protocol.message import output_bytes

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, EXIT_AUTH = 0, 1, 2, 3
JSONL_KEYS = JSON_KEYS


def add_arguments(sub) -> None:
    j = sub.add_parser("journal", help="search, export, verify and purge the journal").add_subparsers(
        dest="action", required=True)

    from msc.cli import auth as auth_cli
    from msc.cli import options as opt

    def common(sp, *, roles=auth_cli.INVESTIGATOR, case: bool = True, filters: bool = True):
        sp.add_argument("--config", required=True)
        auth_cli.add_arguments(sp, roles=roles)
        if case:
            sp.add_argument("--case", required=True, type=case_ref, metavar="CASE_REF",
                            help="the case or audit reference (1-32 printable characters)")
        if filters:
            sp.add_argument("--from", dest="start", type=opt.time_value, metavar="TIME",
                            help="YYYY-MM-DD[THH:MM[:SS]] (UTC unless an offset is given), inclusive")
            sp.add_argument("--to", dest="end", type=opt.time_value, metavar="TIME", help="exclusive")
            for f, typ in (("mnemonic", opt.mnemonic), ("user", opt.actor), ("ori", opt.ori), ("mke", opt.mke),
                           ("kind", opt.journal_kind), ("taf", opt.taf), ("txn", opt.txn),
                           ("code", opt.code)):
                sp.add_argument(f"--{f}", type=typ)
            sp.add_argument("--token", type=opt.token, action="append", default=[], metavar="TAG:VALUE")
            sp.add_argument("--limit", type=opt.positive_int, metavar="N", help="at most N records (N >= 1)")
        return sp

    sp = common(j.add_parser("search", help="search and print records"))
    sp.add_argument("--format", choices=("text", "jsonl", "csv"), default="text")
    sp.set_defaults(func=cmd_search)
    sp = common(j.add_parser("export", help="write a verifiable bundle of the matching records"))
    sp.add_argument("--out", required=True)
    sp.set_defaults(func=cmd_export)
    sp = common(j.add_parser("verify", help="check every record, tag, checkpoint and signature"),
                roles=auth_cli.JOURNAL_CHECK, case=False, filters=False)
    sp.add_argument("--min-tree-size", type=opt.count, default=0,
                    help="fail if the journal is shorter: the highest msc_journal_committed_size seen off the box")
    sp.set_defaults(func=cmd_verify)
    sp = common(j.add_parser("purge", help="delete months older than retention_days and destroy their keys"),
                roles=auth_cli.ADMIN, case=False, filters=False)
    sp.add_argument("--dry-run", action="store_true")
    sp.set_defaults(func=cmd_purge)
    sp = common(j.add_parser("accept", help="accept what the journal's start-up self-check refuses (journaled)",
                             description="Records lost after the last checkpoint, or a journal that is gone: "
                                         "continue (or start anew) with an ADMIN record naming you and your reason. "
                                         "An altered journal is set aside as evidence with --new-journal."),
                roles=auth_cli.ADMIN, case=False, filters=False)
    sp.add_argument("--reason", required=True, help="why (recorded in the journal)")
    sp.add_argument("--new-journal", action="store_true",
                    help="set an altered journal aside (renamed, kept) and start a new one")
    sp.set_defaults(func=cmd_accept)


def _settings(args) -> Settings:
    from msc.cli.settings import load_settings

    return load_settings(args)


def _ring(s: Settings) -> KeyRing:
    """The configured storage's key ring (SQLite: the file; PostgreSQL: the database's)."""
    from msc.storage.backends import Backends

    ring = Backends(s).keyring()
    if ring.imported:
        print(f"note: {ring.imported}", file=sys.stderr)
    return ring


def case_ref(value: str) -> str:
    """argparse type of ``--case``."""
    import argparse

    if CASE_RE.fullmatch(value) is None:
        raise argparse.ArgumentTypeError(CASE_RULE)
    return value


def authenticate(s: Settings, args, op: str, roles=None, *, require_journal: bool = True) -> str:
    """Log the ``--as`` person on for ``op``; a refusal is also an AUDIT record (exit 3)."""
    from msc.cli.auth import INVESTIGATOR, logon

    audit = {"op": op, "case": args.case} if getattr(args, "case", None) is not None else {"op": op}
    return logon(s, args, roles=roles or INVESTIGATOR, op=f"journal {op}", audit=audit,
                 require_journal=require_journal)


def build_query(args) -> Query:
    """The search the options describe (each already checked by its argparse type,
    :mod:`msc.cli.options`); a ``--from`` not before ``--to`` is a usage error (exit 2)."""
    if args.start is not None and args.end is not None and args.start >= args.end:
        print(f"msc journal {args.action}: error: --from must be before --to (--to is exclusive)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
    return Query(start=args.start, end=args.end, mnemonic=args.mnemonic, user=args.user, ori=args.ori, mke=args.mke,
                 kind=args.kind, taf=args.taf, txn=args.txn, code=args.code, tokens=list(args.token),
                 limit=args.limit)


def cmd_search(args) -> int:
    q = build_query(args)
    s = _settings(args)
    who = authenticate(s, args, "search")
    try:
        records = investigate.search_records(s, who, args.case, q, fmt=args.format)
    except (JournalError, KeyError_) as exc:
        return failed(exc)
    seqs = [r.seq for r in records]
    out = sys.stdout
    if args.format == "jsonl":
        from msc.journal.export import record_json

        for r in records:
            out.write(json.dumps(record_json(r)) + "\n")
    elif args.format == "csv":
        from msc.journal.export import record_json

        w = csv.writer(out, lineterminator="\n")
        w.writerow(JSONL_KEYS)
        for r in records:
            d = record_json(r)
            w.writerow(["" if d[k] is None else d[k] for k in JSONL_KEYS])
    else:
        out.write(report_header(s, args, q, len(seqs)))
        for r in records:
            out.write(text_block(r))
        out.write(f"=== end of report: {len(seqs)} record(s) ===\n")
    return EXIT_OK


def failed(exc: Exception) -> int:
    """One line for an error of the journal or the key ring, and the exit status: 2 when the
    storage is unavailable (its database away or not answering: nothing is known, nothing was
    shown — OPERATIONS.md "Exit codes"), else 1 (the operation found a problem)."""
    print(f"error: {exc}", file=sys.stderr)
    return EXIT_USAGE if isinstance(exc, JournalUnavailable) else EXIT_PROBLEM


def report_header(s: Settings, args, q: Query, n: int) -> str:
    return investigate.report_header(s, args.case, args.as_user, q, n)


def text_block(r: Record) -> str:
    def v(x):
        return "-" if x is None else str(x)

    return (f"{'=' * 78}\n"
            f"SEQ {r.seq}  {iso(r.ts)}  {r.kind}  {r.direction}  TXN {v(r.txn)}\n"
            f"PEER {v(r.peer)}  MNEMONIC {v(r.mnemonic)}  USER {v(r.user)}  TAF {v(r.taf)}  ORI {v(r.ori)}\n"
            f"MKE {v(r.mke)}  CODE {v(r.code)}  PURPOSE {v(r.purpose)}  REQUESTER {v(r.requester)}  RECIPIENT {v(r.recipient)}\n"
            f"{'-' * 78}\n{printable(r.text)}\n\n")


def printable(text: str) -> str:
    """A record's text for a printed report: CR dropped, and bytes the byte policy does not
    deliver (ESC, BEL, NUL, bytes >= 0x80 …, journaled as received) written as ``<HH>`` as the
    operator saw them (PROTOCOL.md §1) — never sent raw to the investigator's terminal."""
    return output_bytes(text).decode("ascii").replace("\r", "")


def cmd_export(args) -> int:
    from pathlib import Path

    q = build_query(args)
    s = _settings(args)
    who = authenticate(s, args, "export")
    try:
        done = investigate.export_bundle(s, who, args.case, q, Path(args.out))
    except (JournalError, KeyError_, ValueError) as exc:
        return failed(exc)
    print(f"exported {done.records} record(s) to {args.out} (checkpoint tree_size {done.tree_size}); "
          f"check it with: python3 verify_bundle.py --fingerprint {done.fingerprint} {args.out}")
    return EXIT_OK


def cmd_verify(args) -> int:
    from msc.cli.auth import JOURNAL_CHECK

    s = _settings(args)
    # A journal whose self-check refuses appends must still be verifiable (msc.cli.auth.logon);
    # one that cannot be reached is refused like any other command, before anything is read.
    who = authenticate(s, args, "verify", JOURNAL_CHECK, require_journal=False)
    try:
        res, audited = investigate.verify_journal(s, who, min_tree_size=args.min_tree_size)
    except KeyError_ as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except JournalError as exc:  # (its database away while it read: not a failed verification)
        print(f"error: the journal could not be verified: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not audited:
        print("warning: the verification could not be journaled", file=sys.stderr)
    if not res.ok:
        print(f"FAILED at sequence {res.first_bad}: {res.reason}")
        return EXIT_PROBLEM
    rate = res.records / res.seconds if res.seconds else 0
    print(f"OK: {res.records} records, {res.purged_records} purged (leaf hashes kept), {res.checkpoints} signed "
          f"checkpoints, tree size {res.tree_size}; {res.seconds:.2f} s ({rate:,.0f} records/s)")
    return EXIT_OK


def cmd_purge(args) -> int:
    """Retention (JOURNAL.md): what the clock *and* the journal's own timeline agree is older
    than retention_days. A refusal (they disagree) is journaled and exits 1."""
    import asyncio
    import time

    from msc.cli.auth import ADMIN
    from msc.journal.retention import load_timeline, plan

    s = _settings(args)
    who = authenticate(s, args, "purge", ADMIN)
    days = s.config.journal.retention_days
    if args.dry_run:
        from msc.storage.backends import Backends

        with Backends(s).journal_source() as src:
            p = plan(load_timeline(src), days, time.time())
        if p.refused:
            print(f"retention {days} days: a purge would be REFUSED: {p.refused}")
            return EXIT_PROBLEM
        print(f"retention {days} days: " + (", ".join(m for m, _f, _l in p.due) or "no month is old enough to purge"))
        for month, why in p.waiting:
            print(f"  {month} waits: {why}")
        return EXIT_OK
    try:
        try:
            reply = control(s, {"op": "purge", "actor": who})
            if not reply.get("ok"):
                print(f"error: {reply.get('error')}", file=sys.stderr)
                return EXIT_PROBLEM
            purged = reply["purged"]
        except DaemonNoAnswer as exc:
            print(f"error: the running switch did not answer the purge request ({exc}): it may still be purging "
                  "— see its log", file=sys.stderr)
            return EXIT_PROBLEM
        except DaemonUnavailable:  # no daemon answers: the journal opened here
            from msc.cli.admin import direct_journal

            async def go():
                async with direct_journal(s) as j:
                    return await j.purge(days, actor=who)

            purged = asyncio.run(go())
    except JournalError as exc:
        return failed(exc)
    if not purged:
        print(f"retention {days} days: no month is old enough to purge")
    for period, first, last in purged:
        print(f"purged {period}: records {first}-{last}; its key is destroyed")
    return EXIT_OK


def cmd_accept(args) -> int:
    """``msc journal accept``: an administrator accepts what the journal's start-up self-check
    refuses (JOURNAL.md "Start-up self-check"), in a record that names them and says why."""
    from msc.cli.admin import record
    from msc.cli.auth import ADMIN, check, refused
    from msc.journal.acceptance import accept

    s = _settings(args)
    # The journal refuses appends until it is accepted, and the acceptance is its first record:
    # the administrator is authenticated first, and the logon journaled right after.
    attempt, entries = check(s, args, roles=ADMIN, op="journal accept")
    if not attempt.ok:
        try:
            record(s, entries)
        except JournalError as exc:
            print(f"warning: the refused logon could not be journaled: {exc}", file=sys.stderr)
        refused()
    try:
        from msc.storage.backends import Backends

        outcome = accept(s.journal_dir, _ring(s), name=s.config.switch.name, reason=args.reason,
                         actor=attempt.user_id, new_journal=args.new_journal,
                         synchronous=s.config.journal.synchronous, storage=Backends(s).journal_storage())
    except JournalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        with contextlib.suppress(JournalError):
            record(s, entries)  # the journal may take it (nothing to accept), or not
        return EXIT_PROBLEM
    try:
        record(s, entries)
    except JournalError as exc:
        print(f"warning: the logon could not be journaled after the acceptance: {exc}", file=sys.stderr)
    print(outcome)
    return EXIT_OK
