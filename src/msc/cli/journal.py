"""``msc journal search|export|verify|purge`` — the investigator's and auditor's tools.

Access to the journal "must be highly controlled" (PPP §1.7.1 A): search and export require an
``investigator`` user's password (and one-time password when enrolled); every search, export and
verify, and every refusal, is an ``AUDIT`` record. Results are printed only after that record is
committed (fail closed): an unrecorded look at the journal does not happen.
"""

from __future__ import annotations

import csv
import datetime as dt
import getpass
import json
import sys

from msc.cli.admin import DaemonUnavailable, control, record
from msc.config.load import Settings
from msc.journal.keys import KeyError_, KeyRing
from msc.journal.records import Entry, JournalError, Kind, Record
from msc.journal.search import Query, iso, parse_time, read, search
from msc.journal.tokens import parse_query

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, EXIT_AUTH = 0, 1, 2, 3
JSONL_KEYS = ("seq", "ts", "kind", "direction", "peer", "mnemonic", "user", "taf", "ori", "mke", "txn", "code",
              "purpose", "requester", "recipient", "text")


def add_arguments(sub) -> None:
    j = sub.add_parser("journal", help="search, export, verify and purge the journal").add_subparsers(
        dest="action", required=True)

    def common(sp, *, auth: bool = True, filters: bool = True):
        sp.add_argument("--config", required=True)
        if auth:
            sp.add_argument("--as", dest="as_user", required=True, metavar="INVESTIGATOR_ID")
            sp.add_argument("--case", required=True, metavar="CASE_REF")
            sp.add_argument("--password-stdin", action="store_true",
                            help="read the password (and, on a second line, the OTP) from stdin")
        if filters:
            sp.add_argument("--from", dest="start", metavar="TIME")
            sp.add_argument("--to", dest="end", metavar="TIME")
            for f in ("mnemonic", "user", "ori", "mke", "kind", "taf", "txn"):
                sp.add_argument(f"--{f}")
            sp.add_argument("--token", action="append", default=[], metavar="TAG:VALUE")
            sp.add_argument("--limit", type=int)
        return sp

    sp = common(j.add_parser("search", help="search and print records"))
    sp.add_argument("--format", choices=("text", "jsonl", "csv"), default="text")
    sp.set_defaults(func=cmd_search)
    sp = common(j.add_parser("export", help="write a verifiable bundle of the matching records"))
    sp.add_argument("--out", required=True)
    sp.set_defaults(func=cmd_export)
    sp = common(j.add_parser("verify", help="check every record, tag, checkpoint and signature"), auth=False, filters=False)
    sp.add_argument("--as", dest="as_user", help="who runs it (for the AUDIT record)")
    sp.add_argument("--min-tree-size", type=int, default=0,
                    help="fail if the journal is shorter (e.g. the last msc_journal_tree_size seen off-box)")
    sp.set_defaults(func=cmd_verify)
    sp = common(j.add_parser("purge", help="delete months older than retention_days and destroy their keys"),
                auth=False, filters=False)
    sp.add_argument("--dry-run", action="store_true")
    sp.set_defaults(func=cmd_purge)
    sp = common(j.add_parser("accept", help="accept what the journal's start-up self-check refuses (journaled)",
                             description="Records lost after the last checkpoint, or a journal that is gone: "
                                         "continue (or start anew) with an ADMIN record naming you and your reason. "
                                         "An altered journal is set aside as evidence with --new-journal."),
                auth=False, filters=False)
    sp.add_argument("--as", dest="as_user", required=True, metavar="ADMIN_ID")
    sp.add_argument("--reason", required=True, help="why (recorded in the journal)")
    sp.add_argument("--new-journal", action="store_true",
                    help="set an altered journal aside (renamed, kept) and start a new one")
    sp.set_defaults(func=cmd_accept)


def _settings(args) -> Settings:
    from msc.cli.main import _load

    return _load(args)


def _ring(s: Settings) -> KeyRing:
    return KeyRing(s.data_dir / "keys", s.key_file)


def _audit(s: Settings, user: str | None, payload: dict) -> None:
    record(s, [Entry(kind=Kind.AUDIT, user=user, text=json.dumps(payload, sort_keys=True))])


def _read_secret(args, prompt: str, line: int) -> str | None:
    if args.password_stdin:
        value = sys.stdin.readline()
        return value.rstrip("\r\n") if value else None
    if not sys.stdin.isatty():
        return None
    return getpass.getpass(prompt)


def authenticate(s: Settings, args, op: str) -> bool:
    """An active investigator with the right password (and OTP). Refusals are audited."""
    from msc.mnemonics.passwords import dummy_hash, verify_password
    from msc.mnemonics.totp import matching_step, open_secret

    uid = args.as_user.upper()
    user = next((u for u in s.users.user if u.id == uid), None)
    password = _read_secret(args, f"Password for {uid}: ", 0)
    ok = password is not None and verify_password(password, user.password if user else dummy_hash())
    if ok and user.totp:
        otp = _read_secret(args, "One-time password: ", 1)
        try:
            secret = open_secret(_ring(s).users_aead(), uid, user.totp)
        except Exception:
            secret = None
        ok = bool(otp and secret and matching_step(secret, otp.strip(), dt.datetime.now().timestamp()) is not None)
    reason = None
    if not ok or user is None:
        reason = "bad credentials"
    elif user.status != "active":
        reason = "account disabled"
    elif user.role != "investigator":
        reason = f"role {user.role} may not search the journal"
    if reason is None:
        return True
    try:
        _audit(s, uid, {"op": op, "case": args.case, "outcome": "refused", "reason": reason})
    except JournalError as exc:
        print(f"error: the refusal could not be journaled: {exc}", file=sys.stderr)
    print("authentication refused", file=sys.stderr)
    return False


def build_query(args) -> Query:
    try:
        tokens = [parse_query(t) for t in args.token]
        return Query(start=parse_time(args.start) if args.start else None, end=parse_time(args.end) if args.end else None,
                     mnemonic=args.mnemonic, user=args.user, ori=args.ori, mke=args.mke, kind=args.kind, taf=args.taf,
                     txn=args.txn, tokens=tokens, limit=args.limit)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None


def _matches(s: Settings, q: Query) -> list[int]:
    return [r.seq for r in search(s.journal_dir, _ring(s), q)]


def cmd_search(args) -> int:
    s = _settings(args)
    q = build_query(args)
    if not authenticate(s, args, "search"):
        return EXIT_AUTH
    try:
        seqs = _matches(s, q)
        _audit(s, args.as_user.upper(), {"op": "search", "case": args.case, "filters": q.describe(),
                                         "records": len(seqs), "format": args.format})
    except (JournalError, KeyError_) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    out = sys.stdout
    records = read(s.journal_dir, _ring(s), seqs)
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


def report_header(s: Settings, args, q: Query, n: int) -> str:
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    filters = ", ".join(f"{k}={v}" for k, v in q.describe().items()) or "none"
    tokens = ", ".join(f"{t}:{v}" for t, v in q.tokens)
    return (f"MSC JOURNAL SEARCH — {s.config.switch.name}\n"
            f"Case: {args.case}    Investigator: {args.as_user.upper()}    Printed: {now}\n"
            f"Filters: {filters}{'    Tokens: ' + tokens if tokens else ''}\n"
            f"Records: {n} (in sequence order; times are UTC)\n\n")


def text_block(r: Record) -> str:
    def v(x):
        return "-" if x is None else str(x)

    return (f"{'=' * 78}\n"
            f"SEQ {r.seq}  {iso(r.ts)}  {r.kind}  {r.direction}  TXN {v(r.txn)}\n"
            f"PEER {v(r.peer)}  MNEMONIC {v(r.mnemonic)}  USER {v(r.user)}  TAF {v(r.taf)}  ORI {v(r.ori)}\n"
            f"MKE {v(r.mke)}  CODE {v(r.code)}  PURPOSE {v(r.purpose)}  REQUESTER {v(r.requester)}  RECIPIENT {v(r.recipient)}\n"
            f"{'-' * 78}\n{r.text.replace(chr(13), '')}\n\n")


def _ensure_checkpoint(s: Settings, seq: int):
    from msc.journal.export import covering_checkpoint

    cp = covering_checkpoint(s.journal_dir, seq)
    if cp is not None:
        return cp
    try:
        reply = control(s, {"op": "checkpoint"})
        if not reply.get("ok"):
            raise JournalError(reply.get("error"))
    except DaemonUnavailable:
        import asyncio

        from msc.cli.admin import _direct_journal

        async def go():
            j = await _direct_journal(s)
            await j.close()  # closing writes a final checkpoint

        asyncio.run(go())
    return covering_checkpoint(s.journal_dir, seq)


def cmd_export(args) -> int:
    from pathlib import Path

    from msc.journal.export import write_bundle

    s = _settings(args)
    q = build_query(args)
    if not authenticate(s, args, "export"):
        return EXIT_AUTH
    try:
        seqs = _matches(s, q)
        cp = _ensure_checkpoint(s, max(seqs)) if seqs else None
        _audit(s, args.as_user.upper(), {"op": "export", "case": args.case, "filters": q.describe(),
                                         "records": len(seqs), "out": str(Path(args.out).resolve())})
        if cp is None:
            from msc.journal.export import covering_checkpoint

            cp = covering_checkpoint(s.journal_dir, 1) or _ensure_checkpoint(s, 1)
        manifest = {"switch": s.config.switch.name, "case": args.case, "investigator": args.as_user.upper(),
                    "exported": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "filters": json.dumps(q.describe(), sort_keys=True), "checkpoint tree_size": cp.tree_size}
        n = write_bundle(s.journal_dir, _ring(s), seqs, Path(args.out), name=s.config.switch.name, checkpoint=cp,
                         manifest=manifest)
    except (JournalError, KeyError_, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    fp = _ring(s).signing_identity().fingerprint
    print(f"exported {n} record(s) to {args.out} (checkpoint tree_size {cp.tree_size}); "
          f"check it with: python3 verify_bundle.py --fingerprint {fp} {args.out}")
    return EXIT_OK


def cmd_verify(args) -> int:
    from msc.journal.verify import verify

    s = _settings(args)
    try:
        res = verify(s.journal_dir, _ring(s), name=s.config.switch.name, min_tree_size=args.min_tree_size)
    except KeyError_ as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    who = (args.as_user or getpass.getuser()).upper()
    try:
        _audit(s, args.as_user.upper() if args.as_user else None,
               {"op": "verify", "by": who, "outcome": "ok" if res.ok else "failed", "records": res.records,
                "first_bad": res.first_bad, "reason": res.reason, "tree_size": res.tree_size})
    except JournalError as exc:
        print(f"warning: the verification could not be journaled: {exc}", file=sys.stderr)
    if not res.ok:
        try:
            control(s, {"op": "verify_failed", "first_bad": res.first_bad})
        except DaemonUnavailable:
            pass
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

    from msc.journal.retention import load_timeline, plan

    s = _settings(args)
    days = s.config.journal.retention_days
    if args.dry_run:
        p = plan(load_timeline(s.journal_dir), days, time.time())
        if p.refused:
            print(f"retention {days} days: a purge would be REFUSED: {p.refused}")
            return EXIT_PROBLEM
        print(f"retention {days} days: " + (", ".join(m for m, _f, _l in p.due) or "no month is old enough to purge"))
        for month, why in p.waiting:
            print(f"  {month} waits: {why}")
        return EXIT_OK
    try:
        try:
            reply = control(s, {"op": "purge"})
            if not reply.get("ok"):
                print(f"error: {reply.get('error')}", file=sys.stderr)
                return EXIT_PROBLEM
            purged = reply["purged"]
        except DaemonUnavailable:
            from msc.cli.admin import _direct_journal

            async def go():
                j = await _direct_journal(s)
                try:
                    return await j.purge(days, actor=None)
                finally:
                    await j.close()

            purged = asyncio.run(go())
    except JournalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    if not purged:
        print(f"retention {days} days: no month is old enough to purge")
    for period, first, last in purged:
        print(f"purged {period}: records {first}-{last}; its key is destroyed")
    return EXIT_OK


def cmd_accept(args) -> int:
    """``msc journal accept``: an administrator accepts what the journal's start-up self-check
    refuses (JOURNAL.md "Start-up self-check"), in a record that names them and says why."""
    from msc.journal.acceptance import accept

    s = _settings(args)
    try:
        outcome = accept(s.journal_dir, _ring(s), name=s.config.switch.name, reason=args.reason,
                         actor=args.as_user.upper(), new_journal=args.new_journal,
                         synchronous=s.config.journal.synchronous)
    except JournalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    print(outcome)
    return EXIT_OK
