"""What ``msc terminal`` decides and says, without I/O: which logon refusals are "not decided,
try again" (and how long to wait before trying again), and what an operator is told about a
request msc accepted whose answer had not come when the session ended.

Pure functions and plain data: :mod:`msc.cli.termclient` (the connection) and
:mod:`msc.cli.terminal` (the command) do the talking and the waiting.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from msc.protocol import grammar
from msc.protocol.grammar import ONE_WAY_KEYS
from msc.protocol.message import parse_notice
from msc.protocol.redact import redact

#: ``msc terminal``'s exit statuses (its module docstring and OPERATIONS.md "msc terminal" say when).
EXIT_OK, EXIT_PROBLEM, EXIT_AUTH, EXIT_ENDED = 0, 1, 3, 4
#: A script's ``--expect`` outputs came, but one or more of them is msc's notice of a request's
#: fate (``HEADER.MSC.Exxx …``, :data:`FATE_NOTICE`: a refusal upstream, no answer in time, the
#: answer or its rest lost with the link or to a restart or a failover, no room for it, an answer the
#: journal could not record) rather than its answer: an answer is missing or incomplete. Not 0
#: (a wrapper checking only the status would take the answer as complete), not 1 (nothing timed
#: out: msc said what happened), not 2 (the command line's usage errors).
EXIT_NOTICE = 5
#: The notices of msc's own that can end an accepted request in place of (the rest of) its answer —
#: PROTOCOL.md §4 "Every accepted request learns its fate" and §6: E302 (the link lost before the
#: answer, or a restart or failover before it or its rest), E303 (no answer within the route's
#: timeout_s), E307 (the upstream at max_in_flight, or an answer refused for a full output queue
#: and not sent again), E501 (an answer the journal could not record and that was not sent again);
#: and an upstream's ``N`` passes on its own code, whatever it is.
FATE_CODES = ("E302", "E303", "E307", "E501")
#: How the client's lines name such a notice.
FATE_NOTICE = f"an MSC.Exxx notice ({', '.join(FATE_CODES)}, or the upstream's own code)"
#: sysexits.h ``EX_TEMPFAIL``: msc could not decide the logon now (its database away, logon
#: checks busy, the address throttled, the pool exhausted): try again later. Never the
#: authentication-refused status (3), which a wrapper reads as "wrong credentials, do not retry".
EXIT_UNAVAILABLE = 75

# Logon refusals that decided nothing about the credentials (PROTOCOL.md §6):
#  E503 STORAGE UNAVAILABLE, TRY AGAIN — the run-time state (lockout count, TOTP step) could not
#       be read or written: the logon was not decided;
#  E307 LOGON BUSY, TRY AGAIN / TOO MANY LOGON ATTEMPTS FROM THIS ADDRESS, TRY LATER — not
#       checked at all (no attempt of the account, SECURITY.md "Bounded under abuse");
#  E501 JOURNAL UNAVAILABLE — the password was right but the logon's record could not be
#       committed, so no one was logged on (fail closed);
#  E305 MNEMONIC POOL EXHAUSTED — the password was right, every pooled mnemonic is lent now.
# Every other refusal is final: E202 (one code for every wrong credential, SECURITY.md
# "Authentication"), E204/E206/E210 (this station or address may not log on), E502 (a bug).
TRANSIENT_LOGON_CODES = frozenset(("E503", "E307", "E501", "E305"))
# Of those, the ones that are answered before any one-time password is looked at: the same code
# may be sent again. After E503, E501 and E305 the code may have been used (each is good once,
# SECURITY.md): trying it again could be refused E202 — a failed attempt of the account.
UNCHECKED_LOGON_CODES = frozenset(("E307",))

#: Said after a failover (a new connection, a new logon) when the session that ended was logged
#: on with a one-time password: that code is used — each is good once, on every node (the TOTP
#: step is in the shared database, SECURITY.md) — and typing it again is refused E202, an attempt
#: that counts toward the account's lockout (newcomer8).
OTP_USED_AFTER_FAILOVER = ("The one-time password you logged on with has been used (each code is good once, on "
                           "every msc node): if your authenticator still shows it, wait for the next code before "
                           "logging on again.")
#: A script's ``--otp`` after a failover: the same code would be refused E202 (and count against the account).
OTP_USED_SCRIPT = ("Not logging on again: the one-time password given (--otp) was used by the session that "
                   "ended, and each code is good once; run again with a new one.")

# Keys msc answers itself (A/N is the whole answer) and keys that await no answer upstream
# (PROTOCOL.md §4 "Keys that await no answer": a route may name others, ``one_way``).
LOCAL_KEYS = frozenset(("LOGON", "LOGOFF", "BIND", "PWD"))

# Back-off between logon tries: doubling from FIRST_S up to MAX_S, each wait drawn from its upper
# half ("equal jitter"), so that the scripts of a whole agency, refused together while the
# database was away, do not all come back in the same instant.
BACKOFF_FIRST_S, BACKOFF_MAX_S = 1.0, 15.0


@dataclass(frozen=True)
class LogonRefusal:
    """msc's ``N`` to a LOGON: ``code`` (``E503``) and ``reason`` (``STORAGE UNAVAILABLE, TRY AGAIN``)."""

    code: str
    reason: str

    @classmethod
    def parse(cls, payload: str) -> LogonRefusal:
        """From an ``N`` payload ``CODE REASON`` (PROTOCOL.md §1); an unknown shape is final."""
        code, _, reason = payload.strip().partition(" ")
        return cls(code.upper(), reason.strip())

    @property
    def transient(self) -> bool:
        """Nothing was decided about the credentials: trying again later may log on."""
        return self.code in TRANSIENT_LOGON_CODES

    @property
    def otp_unused(self) -> bool:
        """The one-time password given was certainly not used (the logon was not checked)."""
        return self.code in UNCHECKED_LOGON_CODES

    def __str__(self) -> str:
        return f"{self.code} {self.reason}".strip()


def explain(refusal: LogonRefusal) -> str:
    """One line for the operator after a transient refusal: what happened, and that it was not a
    wrong password (the line "Logon refused." under "TRY AGAIN" read as one)."""
    what = {
        "E503": "msc could not reach its database to check the logon",
        "E307": "msc did not check the logon (too busy, or too many logons from this address just now)",
        "E501": "msc could not record the logon in its journal, so no one was logged on",
        "E305": "every mnemonic of the pool is in use",
    }.get(refusal.code, "msc could not decide the logon now")
    return f"Logon not decided: {what} ({refusal}). This is not a wrong password."


def backoff(rng: Callable[[], float] = random.random, *, first: float = BACKOFF_FIRST_S,
            most: float = BACKOFF_MAX_S) -> Iterator[float]:
    """Seconds to wait before each further logon try: ``first``, doubling, at most ``most``;
    each drawn from the upper half of its step (``rng`` gives [0, 1))."""
    step = first
    while True:
        yield step / 2 + rng() * step / 2
        step = min(step * 2, most)


def retry_wait(refusal: LogonRefusal, *, first_refused: float, now: float, wait: float,
               budget: float | None, otp_given: bool) -> float | None:
    """Whether a script tries its logon again after ``refusal``, and after how long: ``wait``
    (the next back-off step), cut to what is left of ``budget`` seconds counted from the
    first transient refusal (``first_refused``, same clock as ``now``); ``None``: give up now —
    the refusal was final, the budget is spent, or the one-time password given on the command
    line may have been used (another try with it could count as a failed attempt)."""
    if not refusal.transient:
        return None
    if otp_given and not refusal.otp_unused:
        return None
    if budget is None:
        return wait
    left = first_refused + budget - now
    if left <= 0:
        return None
    return min(wait, left)


# -- the one-time password typed at its prompt --------------------------------------------------

#: Said when an answer at a one-time password prompt is not a code (it is not sent).
NOT_A_CODE = "That is not a one-time password (6 digits; Enter if none): it was not sent"


def one_time_password(typed: str) -> str | None:
    """What was typed at a one-time password prompt, as LOGON's OTP field (PROTOCOL.md §2: six
    digits, or ``-`` for an account without TOTP): ``None`` for no code (nothing typed, or
    ``-``); the six digits, without the spaces an authenticator app groups them by
    (``123 456``). ``ValueError`` for anything else: it is not sent — most often it is the
    password typed at the wrong prompt (many systems ask for the password first), and a
    password must not travel in a field msc does not treat as one, nor be shown (CJIS IA-6)."""
    try:
        return grammar.typed_otp(typed)
    except ValueError:
        raise ValueError(NOT_A_CODE) from None


# -- the user ID typed at its prompt --------------------------------------------------------------

#: Said when an answer at the ``User ID:`` prompt is not a user ID (it is not sent, nor repeated).
NOT_A_USER_ID = "That is not a user ID (6 letters A-Z or digits 0-9, e.g. JD1234): it was not sent"


def user_id(typed: str) -> str:
    """What was typed at the ``User ID:`` prompt, as LOGON's user ID (upper case): the grammar's
    (:data:`msc.protocol.grammar.USER_ID`, six letters and digits) — the switch's own check.
    ``ValueError`` for anything else: it is not sent. A user ID with a ``.`` in it would split the
    LOGON's fields (``LOGON.PASS.WORD-123.-.…``), and what is typed there by mistake is most often
    the password: it must not travel in a field msc does not treat as one."""
    v = typed.strip().upper()
    if grammar.USER_ID_RE.fullmatch(v) is None:
        raise ValueError(NOT_A_USER_ID)
    return v


#: Said when something other than Enter is typed at a prompt only Enter answers (the banner's,
#: "connect again"): it is not taken — the next prompt would otherwise get the line meant for this
#: one, and every later answer would go to the wrong prompt (a password typed at ``User ID:``).
NOT_ENTER = ("Only Enter answers this prompt: what was typed was not taken (and not shown). Press Enter, "
             "then answer each prompt as it comes")


# -- accepted requests whose answer had not come ------------------------------------------------

def message_key(text: str) -> str:
    """The message key of a full input text ``HEADER[.*OIF][.#TAF].MKE…`` (PROTOCOL.md §2)."""
    for part in text.split(".")[1:]:
        if not part.startswith(("*", "#")):
            return part
    return ""


def awaits_answer(key: str) -> bool:
    """Whether a request with message key ``key`` is answered by outputs (not by its A alone)."""
    return bool(key) and key not in LOCAL_KEYS and key not in ONE_WAY_KEYS


@dataclass(frozen=True)
class Unanswered:
    """An own request msc acknowledged (``A xid``) with no output of its header yet when the
    session that sent it ended. ``mnemonic``: the session's; ``pooled``: lent by a pool."""

    text: str
    xid: int
    mnemonic: str
    pooled: bool

    @property
    def header(self) -> str:
        return self.text.split(".", 1)[0]


def unanswered_notice(u: Unanswered, ended: str) -> str:
    """What the operator is told about ``u`` once the session ended (``ended``: "the connection
    was lost", "the session ended") — where its answer goes, per PROTOCOL.md §4:

    - a static station: every part and every ``MSC.Exxx`` notice of its fate (after a restart or
      failover, ``E302 … BEFORE THE ANSWER CAME``) goes to the station's mnemonic — delivered
      here after the logon, or queued for the station's next session;
    - a pooled mnemonic: the loan ended with the session, so they go to the pool's
      ``unsolicited_to`` station (its printer), never to this session nor to the next operator
      lent the mnemonic.
    """
    head = (f"{redact(u.text)}: accepted by msc (A {u.xid}) but not answered before {ended}. Its answer, or "
            "msc's notice of its fate (MSC.E302 if msc restarted or failed over meanwhile), ")
    if u.pooled:
        return (head + f"goes to the pool's printer (a pool without one: only to the journal), not to this "
                f"session: the loan of {u.mnemonic} ended with the session. Look there for header {u.header} "
                "before sending it again.")
    return head + (f"will be delivered to station {u.mnemonic} with header {u.header} (here once logged on, "
                   "else at the station's next logon).")


# -- what --expect waited for -------------------------------------------------------------------

def notices(counted: Sequence[str]) -> list[str]:
    """The outputs among ``counted`` (``HEADER.TEXT``, as they came) that are msc's notice of a
    request's fate — ``HEADER.MSC.<code> <reason>``, any code (PROTOCOL.md §4) — not an answer."""
    return [text for text in counted if parse_notice(text) is not None]


def expect_status(counted: Sequence[str], expected: int) -> int:
    """A script's exit status from the outputs that counted towards its ``--expect expected``
    (its own requests' outputs, in the order they came): fewer than expected — the wait timed out,
    or the rest cannot come — :data:`EXIT_PROBLEM`; all came and one or more is msc's notice of a
    request's fate instead of its answer (an ``MSC.E302`` after a failover counts as an output, and
    can complete the count while an answer lacks parts) :data:`EXIT_NOTICE`; else :data:`EXIT_OK`."""
    if len(counted) < expected:
        return EXIT_PROBLEM
    return EXIT_NOTICE if notices(counted) else EXIT_OK


def _among(found: Sequence[str]) -> str:
    """``; among them msc's notice(s) …`` naming every notice in ``found`` by its text, or ``""``."""
    if not found:
        return ""
    return "; among them " + ("msc's notice " if len(found) == 1 else "msc's notices ") + " | ".join(found)


def expect_said(counted: Sequence[str], expected: int) -> str | None:
    """The stderr line of a script whose ``--expect`` wait ended (:func:`expect_status`), naming
    every notice that counted by its text — code and reason, with the header that ties it to its
    request (``ICS1K3QZ1.MSC.E302 SWITCH RESTARTED …``); None when there is nothing to say (every
    expected output came, and none is a notice)."""
    found = notices(counted)
    named = ("msc's notice " if len(found) == 1 else "msc's notices ") + " | ".join(found)
    if len(counted) < expected:
        return f"timed out: {len(counted)} of {expected} outputs" + _among(found)
    if not found:
        return None
    return (f"{len(counted)} of {expected} outputs came, but not all are answers: {named}. "
            f"Exit {EXIT_NOTICE}: an answer is missing or incomplete.")


def expect_cut_short(counted: Sequence[str], expected: int) -> str:
    """The stderr line of a script in a pooled session whose every request was sent in an earlier
    pooled session (a loan that ended with its connection): the rest of its ``--expect expected``
    outputs goes to the pool's printer, never here — exit :data:`EXIT_PROBLEM` at once. Like
    :func:`expect_said`'s ``timed out`` line it names every notice that counted, by its text."""
    return (f"{len(counted)} of {expected} outputs: the rest cannot come to this session (their requests were "
            "sent in an earlier pooled session: see above)" + _among(notices(counted)))


# -- a session, or its connection, that ended: what the client does next ----------------------

#: :func:`after_end`'s answers. ``NOT_AGAIN``: a dialog piped in, whose next lines were written for
#: the session that ended, ends rather than connect or log on again (exit 4); ``RETRY_LOGON``: a
#: script that kept trying its logon connects to the same node again; ``ASK``: an operator left at
#: a logon prompt (E201) is asked before connecting again; ``END``: the client ends (exit 4);
#: ``NEXT``: the next ``--connect`` address.
NOT_AGAIN, RETRY_LOGON, ASK, END, NEXT = "not again", "retry logon", "ask", "end", "next"
#: The answers that end the client, with :data:`EXIT_ENDED`.
ENDS = frozenset((NOT_AGAIN, END))


def after_end(*, closed: bool, fails_over: bool, logon_timeout: bool, for_retrying: bool, interactive: bool,
              piped: bool, retrying_logon: bool) -> str:
    """What ``msc terminal`` does when msc ended the session or the connection went (a
    ``SessionEnded`` that reached the command, :func:`msc.cli.terminal._connected`): ``closed``
    the connection too; ``fails_over`` there is another address to go to and the reason lets it
    (``Terminal.fails_over``); ``logon_timeout`` msc closed it for want of a logon (E201);
    ``for_retrying`` for how the client kept trying to log on (E201, E307 TOO MANY REFUSED);
    ``interactive`` the logon dialog (no ``--user``, ``--send``, ``--bind``); ``piped`` its input
    is not a terminal; ``retrying_logon`` a script's logon was refused "try again" meanwhile.

    A dialog piped in always ends (:data:`ENDS`, exit 4) — whatever ended it: a shutdown, a
    step-down, a lost or reset connection, E201, or a logoff that kept the connection
    (OPERATIONS.md "msc terminal": "a lost connection, a shutdown or E201 exits 4")."""
    if interactive and piped:
        return NOT_AGAIN if fails_over or logon_timeout else END
    if closed and not interactive and retrying_logon and for_retrying:
        return RETRY_LOGON
    if closed and interactive and logon_timeout:
        return ASK
    return NEXT if fails_over else END
