"""Password hashing (CJIS IA-5(1)(a)): salted scrypt, PHC string format.

``$scrypt$ln=15,r=8,p=1$<salt b64>$<hash b64>`` — 16-byte random salt, 32-byte hash, the cost
parameters stored with the hash so they can be raised later without breaking old hashes.
Hashing uses the standard library's OpenSSL-backed :func:`hashlib.scrypt` (no hand-written KDF).
It takes tens of milliseconds on purpose: the switch calls it in a worker thread.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

LN = 15  # N = 2**15
R = 8
P = 1
SALT_BYTES = 16
HASH_BYTES = 32
_MAXMEM = 128 * 1024 * 1024


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode().rstrip("=")


def _unb64(s: str) -> bytes:
    return base64.b64decode(s + "=" * (-len(s) % 4))


def hash_password(password: str, *, ln: int = LN) -> str:
    salt = os.urandom(SALT_BYTES)
    dk = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=1 << ln, r=R, p=P, maxmem=_MAXMEM, dklen=HASH_BYTES)
    return f"$scrypt$ln={ln},r={R},p={P}${_b64(salt)}${_b64(dk)}"


def verify_password(password: str, encoded: str) -> bool:
    """Constant-time check of ``password`` against a stored hash. Malformed hashes never match."""
    try:
        _, scheme, params, salt_s, hash_s = encoded.split("$")
        if scheme != "scrypt":
            return False
        kv = dict(item.split("=") for item in params.split(","))
        ln, r, p = int(kv["ln"]), int(kv["r"]), int(kv["p"])
        if not (1 <= ln <= 20 and 1 <= r <= 32 and 1 <= p <= 16):
            return False
        salt, expected = _unb64(salt_s), _unb64(hash_s)
        dk = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=1 << ln, r=r, p=p, maxmem=_MAXMEM, dklen=len(expected))
    except (ValueError, KeyError, TypeError):
        return False
    return hmac.compare_digest(dk, expected)


# A hash of a random password, verified against when the user ID is unknown, so that a
# logon for a missing user takes as long as one with a wrong password (no user enumeration).
_DUMMY: str | None = None


def dummy_hash() -> str:
    global _DUMMY
    if _DUMMY is None:
        _DUMMY = hash_password(os.urandom(16).hex())
    return _DUMMY
