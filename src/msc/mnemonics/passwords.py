"""Password hashing and the password policy (CJIS IA-5(1)(a)).

Hashes are salted scrypt in PHC string form: ``$scrypt$ln=15,r=8,p=1$<salt b64>$<hash b64>`` —
16-byte random salt, 32-byte hash, the cost stored with the hash. Hashing uses the standard
library's OpenSSL-backed :func:`hashlib.scrypt` (no hand-written KDF). The *current* cost is
``[switch] password_cost`` (log2 of scrypt's N, default :data:`LN`); a hash made at another cost
is replaced at the user's next successful logon (:func:`needs_rehash`), so that every stored hash
costs what the dummy hash for unknown users costs (no user enumeration by timing).

The policy (:func:`password_problem`): 8 to :data:`MAX_PASSWORD` printable ASCII characters
(spaces allowed, never truncated), not containing the user's ID or a part of their name, and
not guessable: scored by zxcvbn (Dropbox's estimator, which ships the most common passwords of
public breaches, English words, names and keyboard patterns, and finds repeats, sequences,
dates and l33t substitutions) and refused below :data:`MIN_SCORE`.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import re

LN = 15  # N = 2**15: ~0.1 s and 32 MiB on the reference machine (docs/SECURITY.md)
R = 8
P = 1
MIN_LN, MAX_LN = 4, 20
SALT_BYTES = 16
HASH_BYTES = 32
_MAXMEM = 1100 * 1024 * 1024  # enough for MAX_LN at r = 8

MIN_PASSWORD = 8  # CJIS IA-5(1)(a)
MAX_PASSWORD = 256  # long passphrases are welcome; a bound keeps the checks bounded
#: zxcvbn score 3 = "safely unguessable: moderate protection from an offline slow-hash
#: attack" (at least 10^8 guesses). 0–2 are common passwords, their variants and patterns.
MIN_SCORE = 3
_ZXCVBN_MAX = 72  # zxcvbn's own input limit; a longer password is at least as strong as its prefix


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode().rstrip("=")


def _unb64(s: str) -> bytes:
    return base64.b64decode(s + "=" * (-len(s) % 4))


def hash_password(password: str, *, ln: int = LN) -> str:
    """A new salted scrypt hash of ``password`` at cost ``2**ln`` (PHC string)."""
    salt = os.urandom(SALT_BYTES)
    dk = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=1 << ln, r=R, p=P, maxmem=_MAXMEM, dklen=HASH_BYTES)
    return f"$scrypt$ln={ln},r={R},p={P}${_b64(salt)}${_b64(dk)}"


def params_of(encoded: str) -> tuple[int, int, int] | None:
    """``(ln, r, p)`` of a stored hash, or None if it is not a well-formed scrypt hash."""
    try:
        _, scheme, params, _salt, _hash = encoded.split("$")
        if scheme != "scrypt":
            return None
        kv = dict(item.split("=") for item in params.split(","))
        return int(kv["ln"]), int(kv["r"]), int(kv["p"])
    except (ValueError, KeyError, TypeError):
        return None


def needs_rehash(encoded: str, ln: int = LN) -> bool:
    """Is this hash at other parameters than the current ones (``ln``, :data:`R`, :data:`P`)?"""
    return params_of(encoded) != (ln, R, P)


def verify_password(password: str, encoded: str) -> bool:
    """Constant-time check of ``password`` against a stored hash. Malformed hashes never match."""
    try:
        _, _scheme, _params, salt_s, hash_s = encoded.split("$")
        params = params_of(encoded)
        if params is None:
            return False
        ln, r, p = params
        if not (1 <= ln <= MAX_LN and 1 <= r <= 32 and 1 <= p <= 16):
            return False
        salt, expected = _unb64(salt_s), _unb64(hash_s)
        dk = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=1 << ln, r=r, p=p,
                            maxmem=_MAXMEM, dklen=len(expected))
    except (ValueError, KeyError, TypeError, MemoryError):
        return False
    return hmac.compare_digest(dk, expected)


@functools.cache
def dummy_hash(ln: int = LN) -> str:
    """A hash of a random password at cost ``ln``: verified against when there is no real hash
    to check (unknown user, locked account), so every refusal costs one KDF at the current cost."""
    return hash_password(os.urandom(16).hex(), ln=ln)


# -- the policy -----------------------------------------------------------------------------------

_NAME_SPLIT = re.compile(r"[^A-Za-z0-9]+")


def password_problem(pw: str, user_id: str, name: str = "", *, context: tuple[str, ...] = ()) -> str | None:
    """Why ``pw`` may not be the password of ``user_id`` (named ``name``), or None if it may.

    CJIS IA-5(1)(a): at least 8 characters, every printable character and spaces allowed, never
    truncated, "checked against a list of commonly used, expected, or compromised passwords".
    ``context``: further words an attacker would try first (the agency, the switch's name).
    """
    if len(pw) < MIN_PASSWORD:
        return f"a password has at least {MIN_PASSWORD} characters"
    if len(pw) > MAX_PASSWORD:
        return f"a password has at most {MAX_PASSWORD} characters"
    if not pw.isascii() or not pw.isprintable():
        return "a password is printable ASCII (spaces allowed)"
    low = pw.lower()
    parts = [p for p in _NAME_SPLIT.split(name) if len(p) > 2]
    if user_id and user_id.lower() in low:
        return "a password may not contain the user ID"
    if any(p.lower() in low for p in parts):
        return "a password may not contain a part of the user's name"
    from zxcvbn import zxcvbn

    result = zxcvbn(pw[:_ZXCVBN_MAX], user_inputs=[user_id, *parts, *context])
    if result["score"] < MIN_SCORE:
        why = result["feedback"].get("warning") or "it follows a common pattern"
        return f"that password is too easy to guess ({why.rstrip('.').lower()})"
    return None


def context_words(settings, ori: str | None = None) -> tuple[str, ...]:
    """Words an attacker of this switch tries first: its name, the agency's ORI and name."""
    words = [settings.config.switch.name]
    for a in settings.config.agency:
        if a.ori == ori:
            words += [a.ori, *(_NAME_SPLIT.split(a.name))]
    return tuple(w for w in words if len(w) > 2)


def problem_for(settings, pw: str, user_id: str, name: str = "", ori: str | None = None) -> str | None:
    """:func:`password_problem` with this switch's :func:`context_words` for the user's agency:
    the one check ``msc user add|passwd`` and a terminal's ``PWD`` make (CJIS IA-5(1)(a))."""
    return password_problem(pw, user_id, name, context=context_words(settings, ori) if settings is not None else ())
