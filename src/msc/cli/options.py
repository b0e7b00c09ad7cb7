"""argparse types of the ``msc`` command's options (OPERATIONS.md "The msc command").

Every option is checked while the command line is parsed — before a configuration is read, a
password asked or a logon attempted — so a mistyped option never counts toward a lockout and
never reaches the journal. A bad value is a usage error: exit 2 with one line naming the option
and what it wants (:class:`Parser`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr and exit 2.

    argparse prints the whole usage block first; for a script's log and an operator's terminal
    the one line naming the option is what matters, with where to find the rest.
    """

    def error(self, message: str):  # noqa: D401 - argparse's hook
        message = " ".join(message.split())
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(EXIT_USAGE)


def _fail(message: str):
    return argparse.ArgumentTypeError(message)


def time_value(value: str) -> int:
    """``--from``/``--to``: ``2026-01-01`` or ``2026-01-01T08:30[:SS][+HH:MM|Z]`` → µs since the epoch (UTC
    unless an offset is given)."""
    from msc.journal.search import parse_time

    try:
        return parse_time(value.strip())
    except (ValueError, OverflowError):
        raise _fail(f"{value!r} is not a time: use YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS] (UTC unless an offset "
                    "such as +02:00 is given)") from None


def date_value(value: str) -> dt.date:
    """A calendar date, ``YYYY-MM-DD``."""
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise ValueError
        return dt.date.fromisoformat(value)
    except ValueError:
        raise _fail(f"{value!r} is not a date: use YYYY-MM-DD") from None


def date_text(value: str) -> str:
    """A ``YYYY-MM-DD`` date, kept as the text given (checked like :func:`date_value`)."""
    date_value(value)
    return value


def token(value: str) -> tuple[str, str]:
    """``--token TAG:VALUE`` → (TAG, normalized value) (:func:`msc.journal.tokens.parse_query`)."""
    from msc.journal.tokens import parse_query

    try:
        return parse_query(value)
    except ValueError as exc:
        raise _fail(f"{value!r}: {str(exc).removeprefix('--token ')}") from None


def journal_kind(value: str) -> str:
    """``--kind``: one of the journal's record kinds (JOURNAL.md), any case."""
    from msc.journal.records import KINDS

    v = value.strip().upper()
    if v not in KINDS:
        raise _fail(f"{value!r} is not a record kind: one of {', '.join(sorted(KINDS))}")
    return v


def _pattern(what: str, regex: re.Pattern[str], shape: str):
    def parse(value: str) -> str:
        v = value.strip().upper()
        if regex.fullmatch(v) is None:
            raise _fail(f"{value!r} is not {what}: {shape}")
        return v

    parse.__name__ = what.replace(" ", "_")
    return parse


def _grammar():
    from msc.protocol import grammar

    return grammar


#: ``--user`` of a search: a user ID, or ``OS:<account>`` (a bootstrap's actor, JOURNAL.md).
OS_ACTOR_RE = re.compile(r"OS:[A-Za-z0-9._-]{1,32}")


def user_id(value: str) -> str:
    v = value.strip().upper()
    if _grammar().USER_ID_RE.fullmatch(v) is None:
        # (the value is not repeated: it may be a password given in the wrong place)
        raise _fail("that is not a user ID: 6 characters A-Z 0-9 (PPP §1.6.7)")
    return v


def actor(value: str) -> str:
    """A record's user field to search for: a user ID, or ``OS:<account>`` (a bootstrap)."""
    v = value.strip()
    if v[:3].upper() == "OS:" and OS_ACTOR_RE.fullmatch("OS:" + v[3:]):
        return "OS:" + v[3:]
    try:
        return user_id(v)
    except argparse.ArgumentTypeError:
        raise _fail(f"{value!r} is not a user ID (6 characters A-Z 0-9) or OS:<account> (a bootstrap)") from None


def header(value: str) -> str:
    """``msc terminal --header``: a mnemonic (+ reference) or a pool name."""
    v = value.strip().upper()
    if _grammar().HEADER_RE.fullmatch(v) is None:
        raise _fail(f"{value!r} is not a header: a mnemonic or pool name, 4-10 characters A-Z 0-9 (PPP §1.6.6)")
    return v


def mnemonic(value: str) -> str:
    """``--mnemonic`` of a search: a station's mnemonic, a pool or a group name."""
    v = value.strip().upper()
    if _grammar().DESTINATION_RE.fullmatch(v) is None:
        raise _fail(f"{value!r} is not a mnemonic or pool name: 2-10 characters A-Z 0-9 (PPP §1.6.2)")
    return v


def station(value: str) -> str:
    v = value.strip().upper()
    if _grammar().MNEMONIC_RE.fullmatch(v) is None:
        raise _fail(f"{value!r} is not a station mnemonic: 4 characters A-Z 0-9 (PPP §1.6.2)")
    return v


def ori(value: str) -> str:
    v = value.strip().upper()
    if _grammar().ORI_RE.fullmatch(v) is None:
        raise _fail(f"{value!r} is not an ORI: 2 letters then 7 characters A-Z 0-9")
    return v


def mke(value: str) -> str:
    v = value.strip().upper()
    g = _grammar()
    if g.MKE_RE.fullmatch(v) is None and re.fullmatch(g.NCIC_NOTIFICATION, v) is None:
        raise _fail(f"{value!r} is not a message key: 2-6 characters A-Z 0-9, or an NCIC notification such as $.L.")
    return v


def taf(value: str) -> str:
    v = value.strip().upper()
    if _grammar().TAF_VALUE_RE.fullmatch(v) is None:
        raise _fail(f"{value!r} is not a TAF: 6-18 characters A-Z 0-9 : - (PPP §1.6.8)")
    return v


TXN_RE = re.compile(r"[!-~]{1,64}")


def txn(value: str) -> str:
    if TXN_RE.fullmatch(value) is None:
        raise _fail(f"{value!r} is not a transaction ID: 1-64 printable characters, no space")
    return value


CODE_RE = re.compile(r"[A-Z0-9]{1,12}")


def code(value: str) -> str:
    """A disposition or reject code (``E201``, ``SUMMARY``: JOURNAL.md "Refused traffic")."""
    v = value.upper()
    if CODE_RE.fullmatch(v) is None:
        raise _fail(f"{value!r} is not a code: 1-12 letters and digits (E201, SUMMARY)")
    return v


def int_range(lo: int | None = None, hi: int | None = None, what: str = "a whole number"):
    """An argparse type: an integer within [lo, hi]."""

    def parse(value: str) -> int:
        try:
            n = int(value.strip())
        except ValueError:
            raise _fail(f"{value!r} is not {what}") from None
        if (lo is not None and n < lo) or (hi is not None and n > hi):
            bounds = (f"from {lo} to {hi}" if hi is not None else f"at least {lo}") if lo is not None else f"at most {hi}"
            raise _fail(f"{n} is out of range: {what} {bounds}")
        return n

    return parse


def float_range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, what: str = "a number"):
    """An argparse type: a finite number within [lo, hi] (``lo_open``: greater than lo)."""
    import math

    def parse(value: str) -> float:
        try:
            x = float(value.strip())
        except ValueError:
            raise _fail(f"{value!r} is not {what}") from None
        bad = (not math.isfinite(x) or (lo is not None and (x <= lo if lo_open else x < lo))
               or (hi is not None and x > hi))
        if bad:
            low = "" if lo is None else (f"greater than {lo:g}" if lo_open else f"at least {lo:g}")
            high = "" if hi is None else f"at most {hi:g}"
            raise _fail(f"{value} is out of range: {what} {' and '.join(p for p in (low, high) if p)}")
        return x

    return parse


positive_int = int_range(1, what="a whole number")
count = int_range(0, what="a whole number")
fraction = float_range(0.0, 1.0, what="a fraction")
seconds = float_range(0.0, lo_open=True, what="seconds")
non_negative = float_range(0.0, what="a number")
#: ``msc demo --port-offset``: the demo's highest port (the metrics/console port) plus N stays a port.
port_offset = int_range(0, 50000, what="a port offset")


def otp(value: str) -> str:
    """``--otp``: six digits, or ``-`` for an account without TOTP (PROTOCOL.md §2 LOGON)."""
    v = value.strip()
    if _grammar().OTP_RE.fullmatch(v) is None:
        raise _fail("that is not a one-time password: 6 digits")  # (not repeated: it may be a password)
    return v


def message_text(value: str) -> str:
    """``msc terminal --send``: a message text that carries no secret. A ``LOGON`` or ``PWD`` (in
    any spelling msc's journal would redact, PROTOCOL.md §7) would put a password on the command
    line — in ``ps``, the shell's history, the client's own lines — so it is refused; a script
    logs on with ``--user ID --password-stdin``. The text is not repeated."""
    from msc.protocol.redact import redact

    if redact(value) != value:
        raise _fail("a LOGON or password change carries a secret and is not given on the command line "
                    "(log on with --user ID --password-stdin; change a password at an interactive terminal)")
    return value


def person_name(value: str) -> str:
    """``msc user add --name``: ``LAST, FIRST`` as NCIC writes names — 1-40 printable characters."""
    v = value.strip()
    if re.fullmatch(r"[ -~]{1,40}", v) is None:
        raise _fail(f"{value!r} is not a name: 1-40 printable characters (e.g. 'DOE, JANE')")
    return v
