"""The investigator's actions on the journal (PPP §1.7.1 A: access "must be highly controlled"):
search, export, verify and the misuse report — each an ``AUDIT`` record naming the person, with the
case reference and the searched values (sealed with the record's text), committed **before** any
record is shown or written out (fail closed: an unrecorded look at the journal does not happen).

The ``msc journal`` command and the web console's investigator page both call these functions.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from msc.actions.journaling import DaemonNoAnswer, DaemonUnavailable, control, record
from msc.config.load import Settings
from msc.journal.records import Entry, JournalError, Kind, Record
from msc.journal.search import Query, parse_time, read, search
from msc.journal.tokens import parse_query
from msc.keyring import KeyRing

#: A case reference (issue 13 item 3): 1–32 printable ASCII characters, not starting or ending
#: with a space — what an agency's case or audit numbers look like (``IA-2026-17``,
#: ``2026/CR 00123``), and nothing that could smuggle a line break or a control character into a
#: printed report.
CASE_RE = re.compile(r"[!-~](?:[ -~]{0,30}[!-~])?")
CASE_RULE = "a case reference is 1-32 printable ASCII characters, with no leading or trailing space"

#: The filters of ``msc journal search|export`` (JOURNAL.md "Search"), in the order they are shown.
FILTERS = ("mnemonic", "user", "ori", "mke", "kind", "taf", "txn", "code")


def valid_case(value: str | None) -> bool:
    return value is not None and CASE_RE.fullmatch(value) is not None


@contextlib.contextmanager
def keyring(s: Settings) -> Iterator[KeyRing]:
    """The configured storage's key ring (:meth:`msc.storage.backends.Backends.keyring`), closed
    when the block ends (on PostgreSQL it holds a connection)."""
    from msc.storage.backends import Backends

    ring = Backends(s).keyring()
    try:
        yield ring
    finally:
        ring.close()


def audit(s: Settings, user: str | None, payload: dict) -> None:
    """One AUDIT record (raises JournalError: the caller shows nothing then)."""
    record(s, [Entry(kind=Kind.AUDIT, user=user, text=json.dumps(payload, sort_keys=True))])


def build_query(*, start: str | None = None, end: str | None = None, tokens: Iterable[str] = (),
                limit: int | None = None, **filters: str | None) -> Query:
    """A journal query from the CLI's filter texts (``--from``/``--to`` times, ``--token
    TAG:VALUE`` …); raises ValueError naming what is wrong."""
    unknown = set(filters) - set(FILTERS)
    if unknown:
        raise ValueError(f"unknown filter(s): {', '.join(sorted(unknown))}")
    if limit is not None and limit < 1:
        raise ValueError("limit must be >= 1")
    clean = {k: (v.strip() or None) if isinstance(v, str) else v for k, v in filters.items()}
    return Query(start=parse_time(start) if start else None, end=parse_time(end) if end else None,
                 tokens=[parse_query(t) for t in tokens], limit=limit, **clean)


def journal_source(s: Settings):
    """The journal to read (a context manager): its SQLite directory or a PostgreSQL reader."""
    from msc.storage.backends import Backends

    return Backends(s).journal_source()


def matches(s: Settings, q: Query) -> list[int]:
    with journal_source(s) as src, keyring(s) as ring:
        return [r.seq for r in search(src, ring, q)]


def search_records(s: Settings, who: str, case: str, q: Query, *, fmt: str) -> list[Record]:
    """``journal search``: the matching records, after their AUDIT record is committed."""
    seqs = matches(s, q)
    audit(s, who, {"op": "search", "case": case, "filters": q.describe(), "records": len(seqs), "format": fmt})
    with journal_source(s) as src, keyring(s) as ring:
        return list(read(src, ring, seqs))


def report_header(s: Settings, case: str, who: str, q: Query, n: int) -> str:
    """The head of the printed search report (the CLI's text format and the web's print view)."""
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    filters = ", ".join(f"{k}={v}" for k, v in q.describe().items()) or "none"
    tokens = ", ".join(f"{t}:{v}" for t, v in q.tokens)
    return (f"MSC JOURNAL SEARCH — {s.config.switch.name}\n"
            f"Case: {case}    Investigator: {who.upper()}    Printed: {now}\n"
            f"Filters: {filters}{'    Tokens: ' + tokens if tokens else ''}\n"
            f"Records: {n} (in sequence order; times are UTC)\n\n")


def ensure_checkpoint(s: Settings, seq: int):
    """A signed checkpoint covering ``seq`` (asks the running switch for one, or opens the
    journal to write one)."""
    from msc.journal.export import covering_checkpoint

    with journal_source(s) as src:
        cp = covering_checkpoint(src, seq)
    if cp is not None:
        return cp
    try:
        reply = control(s, {"op": "checkpoint"})
        if not reply.get("ok"):
            raise JournalError(reply.get("error"))
    except DaemonNoAnswer as exc:
        raise JournalError(f"the running switch did not answer the checkpoint request: {exc}") from None
    except DaemonUnavailable:  # no daemon answers: the journal opened here, and closed
        import asyncio

        from msc.actions.journaling import direct_journal

        async def go():
            async with direct_journal(s):
                pass  # closing writes a final checkpoint

        asyncio.run(go())
    with journal_source(s) as src:
        return covering_checkpoint(src, seq)


@dataclass(frozen=True)
class Exported:
    records: int
    tree_size: int
    fingerprint: str  # of the agency's signing key, for verify_bundle.py --fingerprint


def export_bundle(s: Settings, who: str, case: str, q: Query, out: Path, *, audited_out: str | None = None) -> Exported:
    """``journal export``: a bundle the offline ``verify_bundle.py`` checks, written to ``out``
    (created 0600) after the AUDIT record naming where it went (``audited_out``, default the
    path) is committed. Raises JournalError, KeyError_, ValueError."""
    from msc.journal.export import covering_checkpoint, write_bundle

    seqs = matches(s, q)
    cp = ensure_checkpoint(s, max(seqs)) if seqs else None
    audit(s, who, {"op": "export", "case": case, "filters": q.describe(), "records": len(seqs),
                   "out": audited_out or str(Path(out).resolve())})
    if cp is None:
        with journal_source(s) as src:
            cp = covering_checkpoint(src, 1)
        cp = cp or ensure_checkpoint(s, 1)
    manifest = {"switch": s.config.switch.name, "case": case, "investigator": who,
                "exported": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "filters": json.dumps(q.describe(), sort_keys=True), "checkpoint tree_size": cp.tree_size}
    with journal_source(s) as src, keyring(s) as ring:
        n = write_bundle(src, ring, seqs, Path(out), name=s.config.switch.name, checkpoint=cp,
                         manifest=manifest)
        fingerprint = ring.signing_identity().fingerprint
    return Exported(n, cp.tree_size, fingerprint)


def verify_journal(s: Settings, who: str, *, min_tree_size: int = 0):
    """``journal verify``: the Verifier's result, AUDIT-recorded (a journal that refuses appends
    is still verified: the record is then only attempted — ``audited`` says whether it was). A
    failure is reported to a running switch's metrics. Raises KeyError_."""
    from msc.journal.verify import verify

    with journal_source(s) as src, keyring(s) as ring:
        res = verify(src, ring, name=s.config.switch.name, min_tree_size=min_tree_size)
    audited = True
    try:
        audit(s, who, {"op": "verify", "by": who, "outcome": "ok" if res.ok else "failed", "records": res.records,
                       "first_bad": res.first_bad, "reason": res.reason, "tree_size": res.tree_size})
    except JournalError:
        audited = False
    if not res.ok:
        try:
            control(s, {"op": "verify_failed", "first_bad": res.first_bad})
        except DaemonUnavailable:
            pass
    return res, audited


def misuse_report(s: Settings, who: str, start: float, end: float) -> dict:
    """``report misuse`` (PPP §1.10): read from the journal's metadata, audited like a search.
    Raises JournalError when the AUDIT record cannot be committed (nothing is shown then)."""
    from msc.ops import reports
    from msc.storage.backends import Backends

    doc = reports.misuse(s, start, end, sources=Backends(s))
    record(s, [Entry(kind=Kind.AUDIT, user=who,
                     text=json.dumps({"op": "report misuse", "by": who, "from": doc["from"], "to": doc["to"]}))])
    return doc


def printable(text: str) -> str:
    """Record text for a person's screen or paper (the CLI's report and the web console's): CR
    dropped, and bytes the byte policy does not deliver (ESC, BEL, NUL, bytes >= 0x80 …, journaled
    as received) written ``<HH>`` as the operator saw them (PROTOCOL.md §1) — never sent raw."""
    from msc.protocol.message import output_bytes

    return output_bytes(text).decode("ascii").replace("\r", "")
