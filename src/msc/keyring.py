"""Envelope encryption keys (JOURNAL.md "Encryption", CJIS SC-28): the key ring.

Its own module because two packages use it and neither owns it: :mod:`msc.journal` (period keys,
blind indexes, checkpoint signing) and :mod:`msc.mnemonics` (the users key that seals TOTP
secrets). It imports only ``msc.config.files`` and ``msc.protocol.codes``.

* The **master key** (key-encryption key, 256 bits) lives in ``journal.key_file`` (mode 0600).
* The **key ring** (``data_dir/keys/keyring.json``) holds, each wrapped by the master key with
  AES-256-GCM:
  - one secret per calendar month ("period"); from it HKDF derives the month's AES-256 data key
    and its blind-index HMAC key. Destroying a period's entry crypto-shreds that month;
  - the users key, which encrypts TOTP secrets in ``users.toml``;
  - the Ed25519 checkpoint signing key (its public half is also in ``signing.pub``).
* ``msc keys rotate`` creates a new master key and re-wraps every entry; no record is
  re-encrypted.

The blind-index key is derived from the *period* secret rather than straight from the master
key so that rotating the master key does not make old tokens unsearchable, and so that shredding
a month also shreds its index.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from msc.config.files import atomic_write, file_lock, private_dir
from msc.protocol.codes import MscError

KEYRING_VERSION = 1


class KeyError_(MscError):
    """A key is missing, unreadable or does not match (named so it does not shadow KeyError)."""


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _unb64(s: str) -> bytes:
    return base64.b64decode(s.encode("ascii"), validate=True)


@dataclass(frozen=True)
class MasterKey:
    id: str
    key: bytes

    def __repr__(self) -> str:
        return f"MasterKey(id={self.id!r})"

    def aead(self) -> AESGCM:
        return AESGCM(self.key)


def create_master_key(path: Path) -> MasterKey:
    """Create a new master key file (0600). Refuses to overwrite an existing one."""
    private_dir(path.parent)
    mk = MasterKey(secrets.token_hex(4), AESGCM.generate_key(bit_length=256))
    doc = {"version": 1, "id": mk.id, "key": _b64(mk.key)}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (json.dumps(doc) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return mk


def load_master_key(path: Path) -> MasterKey:
    try:
        st = path.stat()
        doc = json.loads(path.read_text())
        key = _unb64(doc["key"])
        if len(key) != 32:
            raise ValueError("master key must be 256 bits")
        if st.st_mode & 0o077:
            raise KeyError_(f"{path} must not be readable by group or others (chmod 600)")
        return MasterKey(str(doc["id"]), key)
    except FileNotFoundError:
        raise KeyError_(f"no master key at {path}: run `msc keys init`") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyError_(f"{path} is not a master key file: {exc}") from None


def _wrap(mk: MasterKey, label: str, secret: bytes) -> dict[str, str]:
    nonce = os.urandom(12)
    ct = mk.aead().encrypt(nonce, secret, f"msc-keyring:{label}".encode())
    return {"master": mk.id, "wrapped": _b64(nonce + ct)}


def _unwrap(mk: MasterKey, label: str, entry: dict[str, str]) -> bytes:
    if entry.get("master") != mk.id:
        raise KeyError_(f"{label} is wrapped by master key {entry.get('master')}, not {mk.id}")
    raw = _unb64(entry["wrapped"])
    try:
        return mk.aead().decrypt(raw[:12], raw[12:], f"msc-keyring:{label}".encode())
    except InvalidTag:
        raise KeyError_(f"{label}: key ring entry does not authenticate under the master key") from None


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


@dataclass(frozen=True)
class PeriodKeys:
    """The keys of one month: AES-256-GCM for records, HMAC-SHA-256 for blind-index tokens."""

    period: str
    aead: AESGCM
    index_key: bytes

    def __repr__(self) -> str:
        return f"PeriodKeys({self.period})"


def period_of(ts_us: int) -> str:
    d = dt.datetime.fromtimestamp(ts_us / 1e6, dt.UTC)
    return f"{d.year:04d}-{d.month:02d}"


def next_period(period: str) -> str:
    y, m = map(int, period.split("-"))
    y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return f"{y:04d}-{m:02d}"


class KeyRing:
    """The key ring file, guarded by an advisory lock for writers (daemon and CLI)."""

    def __init__(self, keys_dir: Path, master_path: Path) -> None:
        self.dir = keys_dir
        self.path = keys_dir / "keyring.json"
        self.master_path = master_path
        self._periods: dict[str, PeriodKeys] = {}
        self._master: MasterKey | None = None

    # -- file handling --------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with file_lock(self.dir / ".keyring.lock"):
            yield

    def _read(self) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = json.loads(self.path.read_text())
            return doc
        except FileNotFoundError:
            raise KeyError_(f"no key ring at {self.path}: run `msc keys init`") from None

    def _write(self, doc: dict[str, Any]) -> None:
        atomic_write(self.path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())

    def master(self) -> MasterKey:
        if self._master is None:
            self._master = load_master_key(self.master_path)
        return self._master

    @property
    def exists(self) -> bool:
        return self.path.exists()

    # -- lifecycle ------------------------------------------------------------------------

    def init(self) -> MasterKey:
        """``msc keys init``: master key, key ring, users key, signing key. Refuses to clobber."""
        if self.path.exists():
            raise KeyError_(f"{self.path} already exists")
        mk = load_master_key(self.master_path) if self.master_path.exists() else create_master_key(self.master_path)
        self._master = mk
        signing = Ed25519PrivateKey.generate()
        seed = signing.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        public = signing.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        with self._locked():
            doc = {
                "version": KEYRING_VERSION,
                "master": mk.id,
                "periods": {},
                "users": _wrap(mk, "users", secrets.token_bytes(32)),
                "signing": {**_wrap(mk, "signing", seed), "public": _b64(public)},
            }
            self._write(doc)
        atomic_write(self.dir / "signing.pub", (_b64(public) + "\n").encode(), 0o644)
        return mk

    def rotate(self) -> tuple[str, str]:
        """``msc keys rotate``: new master key; every entry re-wrapped. Returns (old id, new id)."""
        with self._locked():
            old = load_master_key(self.master_path)
            doc = self._read()
            new = MasterKey(secrets.token_hex(4), AESGCM.generate_key(bit_length=256))
            for period, entry in doc["periods"].items():
                if "wrapped" in entry:
                    doc["periods"][period] = {**entry, **_wrap(new, f"period:{period}", _unwrap(old, f"period:{period}", entry))}
            doc["users"] = _wrap(new, "users", _unwrap(old, "users", doc["users"]))
            doc["signing"] = {**_wrap(new, "signing", _unwrap(old, "signing", doc["signing"])), "public": doc["signing"]["public"]}
            doc["master"] = new.id
            # Write the new master key beside the old, re-wrap, then swap: a crash in between
            # leaves the old key file and the old ring, which still match.
            tmp_master = self.master_path.with_name(self.master_path.name + ".new")
            with contextlib.suppress(FileNotFoundError):
                tmp_master.unlink()
            fd = os.open(tmp_master, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, (json.dumps({"version": 1, "id": new.id, "key": _b64(new.key)}) + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            self._write(doc)
            os.replace(tmp_master, self.master_path)
            self._master = new
            return old.id, new.id

    # -- keys -----------------------------------------------------------------------------

    def period(self, period: str, *, create: bool = True) -> PeriodKeys | None:
        """The keys of a month, creating them (under the lock) if ``create`` and missing.

        Returns None for a month whose keys were destroyed by the retention purge.
        """
        pk = self._periods.get(period)
        if pk is not None:
            return pk
        # Everything under the lock: `msc keys rotate` may be swapping the master key meanwhile.
        with self._locked():
            doc = self._read()
            entry = doc["periods"].get(period)
            if entry is None and create:
                mk = self._refresh_master(doc)
                entry = {**_wrap(mk, f"period:{period}", secrets.token_bytes(32)),
                         "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
                doc["periods"][period] = entry
                self._write(doc)
            if entry is None or "wrapped" not in entry:
                return None
            secret = _unwrap(self._refresh_master(doc), f"period:{period}", entry)
        pk = PeriodKeys(period, AESGCM(_hkdf(secret, b"msc journal data key")), _hkdf(secret, b"msc journal index key"))
        self._periods[period] = pk
        return pk

    def _refresh_master(self, doc: dict[str, Any]) -> MasterKey:
        mk = self.master()
        if mk.id != doc.get("master"):
            # The key was rotated by `msc keys rotate` while we ran: read the new one.
            self._master = None
            mk = self.master()
        return mk

    def periods(self) -> dict[str, dict[str, Any]]:
        return dict(self._read()["periods"])

    def destroy_period(self, period: str) -> None:
        """Crypto-shred a month: its wrapped secret is deleted from the ring (retention purge)."""
        with self._locked():
            doc = self._read()
            doc["periods"][period] = {"destroyed": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
            self._write(doc)
        self._periods.pop(period, None)

    def journals(self) -> dict[str, str]:
        """The journals this key ring has served: journal id → when it was first opened (ISO UTC).
        Evidence, for the start-up self-check, that a journal existed (its files may be gone)."""
        return dict(self._read().get("journals", {}))

    def register_journal(self, journal_id: str) -> None:
        """Remember a journal the first time it is opened with this key ring."""
        with self._locked():
            doc = self._read()
            journals = doc.setdefault("journals", {})
            if journal_id in journals:
                return
            journals[journal_id] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            self._write(doc)

    def users_aead(self) -> AESGCM:
        with self._locked():
            doc = self._read()
            return AESGCM(_unwrap(self._refresh_master(doc), "users", doc["users"]))

    def signing_key(self) -> Ed25519PrivateKey:
        with self._locked():
            doc = self._read()
            seed = _unwrap(self._refresh_master(doc), "signing", doc["signing"])
        return Ed25519PrivateKey.from_private_bytes(seed)

    def public_key_bytes(self) -> bytes:
        return _unb64(self._read()["signing"]["public"])

    def public_key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.public_key_bytes())

    def signing_identity(self) -> SigningIdentity:
        """What an agency publishes so that a court can pin its checkpoint key (``msc keys show``).

        Read from the key ring (no master key needed: the public half is stored in clear). The
        copy in ``signing.pub`` is compared with it: a replaced file is reported, never trusted.
        """
        public = self.public_key_bytes()
        pub_file = self.dir / "signing.pub"
        try:
            file_matches = _unb64(pub_file.read_text().strip()) == public
        except (OSError, ValueError):
            file_matches = False
        # SHA-256 of the raw key, as the auditors' stand-alone verifier computes it
        # (msc.journal.bundle_verifier.fingerprint; not imported: the key ring is below the journal).
        return SigningIdentity(public=public, fingerprint=hashlib.sha256(public).hexdigest(), pub_file=pub_file,
                               pub_file_matches=file_matches)


@dataclass(frozen=True)
class SigningIdentity:
    """The checkpoint signing key's public half: raw bytes, SHA-256 fingerprint (64 hex), file."""

    public: bytes
    fingerprint: str
    pub_file: Path
    pub_file_matches: bool

    @property
    def public_b64(self) -> str:
        return _b64(self.public)
