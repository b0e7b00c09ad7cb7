"""TOTP second factor (RFC 6238; CJIS IA-2(1)(2)) with the cryptography library's implementation.

Secrets are 160 random bits, stored in ``users.toml`` as ``enc:`` + base64(nonce ‖ AES-256-GCM
ciphertext) under the key ring's users key (which the master key wraps), with the user ID as
associated data so a secret cannot be moved to another user. Codes are 6 digits over 30-second
steps; one step of clock drift either way is accepted, and each step's code is accepted once
(the caller keeps the last step used).
"""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor import InvalidToken
from cryptography.hazmat.primitives.twofactor.totp import TOTP

DIGITS = 6
STEP_S = 30
SECRET_BYTES = 20
ISSUER = "msc"
#: Roles that always get TOTP, whatever ``--totp`` says (CJIS IA-2(1): privileged accounts).
PRIVILEGED = frozenset(("admin", "investigator"))


def _totp(secret: bytes) -> TOTP:
    return TOTP(secret, DIGITS, SHA1(), STEP_S, enforce_key_length=True)


def seal_secret(aead, user_id: str, secret: bytes) -> str:
    nonce = os.urandom(12)
    return "enc:" + base64.b64encode(nonce + aead.encrypt(nonce, secret, f"totp:{user_id}".encode())).decode()


def open_secret(aead, user_id: str, sealed: str) -> bytes:
    raw = base64.b64decode(sealed.removeprefix("enc:"))
    return aead.decrypt(raw[:12], raw[12:], f"totp:{user_id}".encode())


def new_secret() -> bytes:
    return os.urandom(SECRET_BYTES)


def provisioning_uri(secret: bytes, user_id: str, issuer: str = ISSUER) -> str:
    return _totp(secret).get_provisioning_uri(user_id, issuer)


def code_at(secret: bytes, t: float) -> str:
    return _totp(secret).generate(int(t)).decode()


def matching_step(secret: bytes, otp: str, now: float, drift_steps: int = 1) -> int | None:
    """The time step whose code equals ``otp`` (within the drift), or None."""
    t = _totp(secret)
    step = int(now) // STEP_S
    for s in range(step - drift_steps, step + drift_steps + 1):
        try:
            t.verify(otp.encode(), s * STEP_S)
            return s
        except InvalidToken:
            continue
    return None


def enrol(settings, user_id: str, ring) -> tuple[str, str]:
    """A new sealed secret for ``users.toml`` and its provisioning URI (shown once); ``ring``:
    the configured storage's :class:`msc.keyring.KeyRing` (its users key seals the secret)."""
    secret = new_secret()
    return seal_secret(ring.users_aead(), user_id, secret), provisioning_uri(secret, user_id, settings.config.switch.name)
