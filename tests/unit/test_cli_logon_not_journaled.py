"""An ``--as`` command whose logon cannot be journaled does nothing (OPERATIONS.md "Who runs an msc
command": every attempt is a SESSION record "committed before the command does anything").

Before (probe hB, finding 2): ``msc journal verify --as`` on a PostgreSQL journal that did not answer
printed ``warning: the logon could not be journaled``, went on reading the journal anyway, and
ended in a traceback (``JournalError: journal database: TimeoutError …``) with exit 1 — the status
that means "verification failed". ``journal search`` refused, but with exit 1 too. Now every
``--as`` command refuses in one line with exit 2 (the storage unavailable, OPERATIONS.md "Exit
codes") before it does anything; only a journal whose start-up self-check refuses appends is still
verified (that is what verify is for), with a warning.
"""

from __future__ import annotations

import io
import types

import pytest

from msc.journal.records import JournalUnavailable
from msc.journal.selfcheck import JournalRefused
from tests.conftest import PASSWORD, make_config

AWAY = JournalUnavailable("journal database: no answer from the database within 40 s (TimeoutError)")


@pytest.fixture
def msc(tmp_path, monkeypatch, capsys):
    """``msc ARGS… --config … --as AD0001 --password-stdin`` in this process: (status, stderr, stdout)."""
    from msc.cli import main as cli

    monkeypatch.setattr("msc.ops.logging.configure", lambda **kw: None)
    cfg = make_config(tmp_path)

    def run(*argv: str, user: str = "AD0001", password: str = PASSWORD) -> tuple[int, str, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n\n"))
        try:
            status = cli.main([*argv, "--config", str(cfg), "--as", user, "--password-stdin"])
        except SystemExit as exc:  # (what the process would exit with)
            status = exc.code if isinstance(exc.code, int) else 1
        out = capsys.readouterr()
        return status, out.err, out.out

    return run


@pytest.fixture
def did(monkeypatch):
    """What the commands would do after their logon: each call noted, nothing done."""
    done: list[str] = []

    def note(name):
        def f(*a, **kw):
            done.append(name)
            raise AssertionError(f"{name} ran although the logon was not journaled")
        return f

    from msc.actions import directory, investigate

    for name in ("verify_journal", "search_records", "export_bundle", "misuse_report"):
        monkeypatch.setattr(investigate, name, note(name))
    for name in ("set_station_status", "set_user_status"):
        monkeypatch.setattr(directory, name, note(name))
    monkeypatch.setattr("msc.journal.verify.verify", note("verify"))
    return done


def journal_raising(monkeypatch, exc: Exception) -> list[int]:
    """The journal refuses every record (the logon's first) with ``exc``."""
    tried: list[int] = []

    def record(settings, entries):
        tried.append(len(entries))
        raise exc

    monkeypatch.setattr("msc.cli.admin.record", record)
    return tried


COMMANDS = [
    ("journal", "verify"),
    ("journal", "search", "--case", "C-1"),
    ("journal", "export", "--case", "C-1", "--out", "/nonexistent/b.zip"),
    ("journal", "purge"),
    ("station", "disable", "ICS1"),
    ("user", "disable", "TS0001"),
    ("report", "misuse"),
]


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a[:2]) for a in COMMANDS])
def test_a_logon_that_cannot_be_journaled_ends_the_command_in_one_line_with_exit_2(msc, did, monkeypatch, argv):
    tried = journal_raising(monkeypatch, AWAY)
    user = "IN0001" if argv[1] in ("search", "export") else "AD0001"
    status, err, out = msc(*argv, user=user)
    assert tried, "the logon was not even attempted"
    assert did == []
    assert status == 2, (status, err)
    assert err.startswith("error: the logon could not be journaled, so nothing was done: journal database: no answer")
    assert err.count("\n") == 1 and "Traceback" not in err and out == ""


def test_a_refused_logon_that_cannot_be_journaled_is_the_same_exit_2(msc, did, monkeypatch):
    """No oracle while the journal is away: a wrong password gives what the right one gives."""
    journal_raising(monkeypatch, AWAY)
    status, err, _ = msc("journal", "verify", password="not the password at all")
    assert status == 2 and err.startswith("error: the logon could not be journaled"), (status, err)
    assert did == []


def test_verify_still_examines_a_journal_whose_self_check_refuses_appends(msc, monkeypatch):
    """The one exception: records lost after the last checkpoint make the journal refuse appends
    (JOURNAL.md "Start-up self-check"); verify is what shows what is wrong, before `journal accept`."""
    refused = JournalRefused(types.SimpleNamespace(problems=[], summary=lambda: "records 5..9 are missing"),
                             "PostgreSQL (db)")
    journal_raising(monkeypatch, refused)
    status, err, out = msc("journal", "verify")
    assert status == 0 and out.startswith("OK: "), (status, err, out)
    assert err.startswith("warning: the logon could not be journaled (the journal refuses appends): ")
    # ... and only verify: a search of that journal is refused like any other command
    status, err, _ = msc("journal", "search", "--case", "C-1", user="IN0001")
    assert status == 2 and err.startswith("error: the logon could not be journaled")


def test_a_journal_that_stops_answering_while_verify_reads_it_is_one_line_and_exit_2(msc, monkeypatch):
    """After the logon: the journal's database away in the middle of the walk is not a failed
    verification (exit 1) and not a traceback."""
    def verify(*a, **kw):
        raise AWAY

    monkeypatch.setattr("msc.journal.verify.verify", verify)
    status, err, out = msc("journal", "verify")
    assert status == 2, (status, err, out)
    assert err == f"error: the journal could not be verified: {AWAY}\n" and "FAILED" not in out
