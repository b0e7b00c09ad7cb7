"""Every option of every ``msc`` command is checked before anything else happens (issue 12/13
newcomer trial): a bad value is a usage error — exit 2, one line on stderr naming the option —
before a configuration is read, a password asked or a logon attempted, so it never counts toward a
lockout and never reaches the journal."""

from __future__ import annotations

import pytest

from msc.config.load import load
from msc.journal.search import Query, search
from msc.keyring import KeyRing
from tests.conftest import PASSWORD, make_config
from tests.e2e.conftest import run

pytestmark = pytest.mark.timeout(240)

NOCFG = "/nonexistent/msc.toml"  # never read: the option is refused first
SEARCH = ("journal", "search", "--config", NOCFG, "--as", "IN0001", "--case", "C1")

# (command line, the option named in the one-line message)
BAD = [
    (SEARCH + ("--token", "NAM"), "--token"),
    (SEARCH + ("--token", "XYZ:1"), "--token"),
    (SEARCH + ("--token", "NAM:"), "--token"),
    (SEARCH + ("--from", "garbage"), "--from"),
    (SEARCH + ("--from", "2026-13-01"), "--from"),
    (SEARCH + ("--to", "yesterday"), "--to"),
    (SEARCH + ("--kind", "FOO"), "--kind"),
    (SEARCH + ("--kind", ""), "--kind"),
    (SEARCH + ("--limit", "0"), "--limit"),
    (SEARCH + ("--limit", "-5"), "--limit"),
    (SEARCH + ("--limit", "ten"), "--limit"),
    (SEARCH + ("--user", "JD12"), "--user"),
    (SEARCH + ("--user", "OS:"), "--user"),
    (SEARCH + ("--ori", "CA013"), "--ori"),
    (SEARCH + ("--mke", "Q"), "--mke"),
    (SEARCH + ("--mnemonic", "I"), "--mnemonic"),
    (SEARCH + ("--taf", "ABC"), "--taf"),
    (SEARCH + ("--txn", "a b"), "--txn"),
    (SEARCH + ("--format", "xml"), "--format"),
    (("journal", "search", "--config", NOCFG, "--as", "X", "--case", "C1"), "--as"),
    (("journal", "export", "--config", NOCFG, "--as", "IN0001", "--case", "C1", "--out", "b.zip", "--limit", "0"),
     "--limit"),
    (("journal", "verify", "--config", NOCFG, "--as", "AD0001", "--min-tree-size", "-1"), "--min-tree-size"),
    (("journal", "verify", "--config", NOCFG, "--as", "AD0001", "--min-tree-size", "many"), "--min-tree-size"),
    (("report", "misuse", "--config", NOCFG, "--as", "AD0001", "--from", "garbage"), "--from"),
    (("report", "nonsense", "--config", NOCFG), "kind"),
    (("user", "add", "--config", NOCFG, "--id", "AB", "--name", "X, Y", "--ori", "CA0130000", "--role", "full"), "--id"),
    (("user", "add", "--config", NOCFG, "--id", "AB1234", "--name", "X, Y", "--ori", "CA01", "--role", "full"), "--ori"),
    (("user", "add", "--config", NOCFG, "--id", "AB1234", "--name", "X, Y", "--ori", "CA0130000", "--role", "boss"),
     "--role"),
    (("user", "add", "--config", NOCFG, "--id", "AB1234", "--name", "X, Y", "--ori", "CA0130000", "--role", "full",
      "--dob", "1990-02-30"), "--dob"),
    (("user", "add", "--config", NOCFG, "--id", "AB1234", "--name", "X, Y", "--ori", "CA0130000", "--role", "full",
      "--certified-until", "soon"), "--certified-until"),
    (("user", "unlock", "--config", NOCFG, "--as", "AD0001", "JD12345"), "id"),
    (("user", "disable", "--config", NOCFG, "--as", "AD-001", "JD1234"), "--as"),
    (("station", "disable", "--config", NOCFG, "--as", "AD0001", "IC"), "mnemonic"),
    (("keys", "rotate", "--config", NOCFG, "--as", "A"), "--as"),
    (("keys", "show", "--config", NOCFG, "--format", "xml"), "--format"),
    (("stub", "--role", "clets", "--listen", "127.0.0.1:99999"), "--listen"),
    (("stub", "--role", "clets", "--listen", "127.0.0.1:1", "--fail-rate", "1.5"), "--fail-rate"),
    (("stub", "--role", "clets", "--listen", "127.0.0.1:1", "--latency-ms", "-1"), "--latency-ms"),
    (("stub", "--role", "clets", "--listen", "127.0.0.1:1", "--heartbeat-s", "0"), "--heartbeat-s"),
    (("stub", "--role", "clets", "--listen", "127.0.0.1:1", "--resend-max", "-2"), "--resend-max"),
    (("stub", "--role", "clets", "--listen", "127.0.0.1:1", "--seed", "x"), "--seed"),
    (("terminal", "--connect", "127.0.0.1:1", "--header", "i"), "--header"),
    (("terminal", "--connect", "127.0.0.1:1", "--header", "ICS1", "--expect", "-1"), "--expect"),
    (("terminal", "--connect", "127.0.0.1:1", "--header", "ICS1", "--timeout", "0"), "--timeout"),
    (("terminal", "--connect", "127.0.0.1:1", "--header", "ICS1", "--timeout", "inf"), "--timeout"),
    (("terminal", "--connect", "127.0.0.1:1", "--header", "ICS1", "--user", "TS0001", "--otp", "12ab56"), "--otp"),
    (("serve", "--config", NOCFG, "--log-level", "loud"), "--log-level"),
    (("demo", "--dir", "x", "--port-offset", "-3"), "--port-offset"),
    (("demo", "--dir", "x", "--port-offset", "99999"), "--port-offset"),
]


@pytest.mark.parametrize("argv,option", BAD, ids=[" ".join(a[:2]) + " " + o for a, o in BAD])
def test_a_bad_option_is_a_one_line_usage_error(argv, option, tmp_path, capsys, monkeypatch):
    """The table through the command's entry point in this process (the parse is the same; a
    process per row would cost a second each); a few rows as real processes below."""
    from msc.cli.main import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out, err = capsys.readouterr()
    assert exc.value.code == 2, (out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and option in lines[0], err
    assert out == ""
    assert not (tmp_path / "x").exists()  # the demo made nothing


@pytest.mark.parametrize("row", [0, 3, 6, 8, 9])
def test_the_command_exits_2_with_one_line(row, tmp_path):
    argv, option = BAD[row]
    r = run(*argv, cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert len(r.stderr.splitlines()) == 1 and option in r.stderr and "Traceback" not in r.stderr


def test_bad_options_never_reach_a_logon_or_the_journal(tmp_path):
    """With a real configuration and a WRONG password, a bad option still exits 2: the password is
    never checked, so five of them do not lock the account and no logon is journaled."""
    cfg = str(make_config(tmp_path))
    base = ("journal", "search", "--config", cfg, "--as", "IN0001", "--case", "C1", "--password-stdin")
    for bad in (("--kind", "FOO"), ("--token", "NAM"), ("--from", "garbage"), ("--limit", "0"), ("--limit", "-5"),
                ("--from", "2026-02-01", "--to", "2026-01-01")):
        r = run(*base, *bad, input="a wrong password\n\n")
        assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, (bad, r.stderr)
    # The right password still works (not locked), and the good options do what they say.
    r = run(*base, "--kind", "session", "--format", "jsonl", input=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    r = run(*base, "--kind", "SESSION", "--limit", "1", "--format", "jsonl", input=PASSWORD + "\n")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 1, r.stderr
    s = load(cfg)
    texts = [r.text for r in search(s.journal_dir, KeyRing(s.data_dir / "keys", s.key_file), Query(kind="SESSION"))]
    assert texts == ["LOGON OK CLI JOURNAL SEARCH"] * 2  # nothing of the six refused command lines


def test_the_verifier_journal_md_names_exists_and_runs():
    """JOURNAL.md tells a court to use the repository's verifier by its path: that file exists and
    runs with the standard library alone (no msc import), as a copy outside the repository would."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs" / "JOURNAL.md").read_text()
    path = re.search(r"`python3 (src/msc/journal/\S+\.py) --fingerprint HEX bundle\.zip`", doc).group(1)
    r = subprocess.run([sys.executable, "-I", "-S", str(root / path), "--help"], capture_output=True, text=True,
                       cwd="/")
    assert r.returncode == 0 and "--fingerprint" in r.stdout, r.stderr
