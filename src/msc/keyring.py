"""Envelope encryption keys (JOURNAL.md "Encryption", CJIS SC-28): the key ring.

Its own module because two packages use it and neither owns it: :mod:`msc.journal` (period keys,
blind indexes, checkpoint signing) and :mod:`msc.mnemonics` (the users key that seals TOTP
secrets). It imports only ``msc.config.files`` and ``msc.protocol.codes``.

* The **master key** (key-encryption key, 256 bits) lives in ``journal.key_file`` (mode 0600).
* The **key ring** holds, each wrapped by the master key with AES-256-GCM (its *store*: the file
  ``data_dir/keys/keyring.json`` with SQLite — :class:`FileKeyStore` — or, with PostgreSQL, tables
  in ``[storage]``'s database shared by every node of a pair — :class:`msc.storage.pgkeyring.PgKeyStore`;
  the master key is always a file on each machine and never enters the database):
  - one secret per calendar month ("period"); from it HKDF derives the month's AES-256 data key
    and its blind-index HMAC key. Destroying a period's entry crypto-shreds that month;
  - the users key, which encrypts TOTP secrets in ``users.toml``;
  - the Ed25519 checkpoint signing key (its public half is also in ``signing.pub``).
* ``msc keys rotate`` creates a new master key and re-wraps every entry; no record is
  re-encrypted.

The blind-index key is derived from the *period* secret rather than straight from the master
key so that rotating the master key does not make old tokens unsearchable, and so that shredding
a month also shreds its index.

A store keeps the key ring document (the shape of ``keyring.json``: ``version``, ``master`` — the
id of the master key every entry is wrapped by —, ``periods``, ``users``, ``signing``,
``journals``) and does its few changes atomically (:class:`KeyStore`); the crypto stays here.

Why one module of ~560 lines (issue 15: none over ~500 without a reason): the wrapping, the file
store and the merge of a node's old file into the database's key ring (:func:`merge_key_rings`)
all decide on the same wrapped entries with the same private helpers; split, the helpers would
become a public API of secrets handling.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

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


class KeyStore(Protocol):
    """Where a key ring's document lives (:class:`FileKeyStore`, or PostgreSQL's
    :class:`msc.storage.pgkeyring.PgKeyStore`). Every change is atomic and safe against another
    process (another node) changing the same key ring at the same time."""

    def describe(self) -> str:
        """Where the key ring is, for an operator's message ("data_dir/keys/keyring.json", "PostgreSQL (…)")."""
        ...

    def exists(self) -> bool: ...

    def read(self, *, consistent: bool = False) -> dict[str, Any]:
        """The whole document. Raises :class:`KeyError_` when there is no key ring.
        ``consistent``: not while a rotation is half done (an entry is unwrapped right after)."""
        ...

    def create(self, doc: dict[str, Any]) -> None:
        """Store a new key ring. Raises :class:`KeyError_` if one exists (never clobbers)."""
        ...

    def period_entry(self, period: str, make: Callable[[str], dict[str, str]] | None) -> dict[str, Any] | None:
        """The month's entry; if it has none and ``make`` is given, ``make(master_id)`` (the id of
        the master key the key ring is wrapped by) makes one and it is stored unless another
        process stored one first — the entry returned is always the one stored."""
        ...

    def destroy_period(self, period: str, tombstone: dict[str, str]) -> None:
        """Replace the month's entry by ``tombstone`` (its wrapped secret is gone)."""
        ...

    def register_journal(self, journal_id: str, when: str) -> None:
        """Add a journal the key ring served, unless it is there."""
        ...

    def rewrite(self, change: Callable[[dict[str, Any] | None], dict[str, Any]],
                then: Callable[[], None] | None = None) -> None:
        """``change(doc)`` (None: no key ring yet) → the new document, stored atomically; nothing
        else changes the key ring meanwhile. Raising in ``change`` leaves it as it was. ``then``
        runs once the new document is stored, before other writers (and, for the file, consistent
        readers) may go on."""
        ...

    def close(self) -> None: ...


class FileKeyStore:
    """The key ring file (``data_dir/keys/keyring.json``), guarded by an advisory lock for
    writers (the daemon and the ``msc`` command on one machine)."""

    def __init__(self, keys_dir: Path) -> None:
        self.dir = keys_dir
        self.path = keys_dir / "keyring.json"

    def describe(self) -> str:
        return str(self.path)

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

    def exists(self) -> bool:
        return self.path.exists()

    def read(self, *, consistent: bool = False) -> dict[str, Any]:
        if not consistent:  # the file is replaced atomically: a reader never sees half of it
            return self._read()
        with self._locked():
            return self._read()

    def create(self, doc: dict[str, Any]) -> None:
        with self._locked():
            if self.path.exists():
                raise KeyError_(f"{self.path} already exists")
            self._write(doc)

    def period_entry(self, period: str, make: Callable[[str], dict[str, str]] | None) -> dict[str, Any] | None:
        with self._locked():
            doc = self._read()
            entry: dict[str, Any] | None = doc["periods"].get(period)
            if entry is None and make is not None:
                entry = doc["periods"][period] = make(doc["master"])
                self._write(doc)
            return entry

    def destroy_period(self, period: str, tombstone: dict[str, str]) -> None:
        with self._locked():
            doc = self._read()
            doc["periods"][period] = tombstone
            self._write(doc)

    def register_journal(self, journal_id: str, when: str) -> None:
        with self._locked():
            doc = self._read()
            journals = doc.setdefault("journals", {})
            if journal_id not in journals:
                journals[journal_id] = when
                self._write(doc)

    def rewrite(self, change: Callable[[dict[str, Any] | None], dict[str, Any]],
                then: Callable[[], None] | None = None) -> None:
        with self._locked():
            self._write(change(self._read() if self.path.exists() else None))
            if then is not None:
                then()

    def close(self) -> None:
        pass


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class KeyRing:
    """The key ring: its entries in a :class:`KeyStore` (default: the file in ``keys_dir``), the
    master key that unwraps them in ``master_path``. ``keys_dir`` also holds ``signing.pub``."""

    def __init__(self, keys_dir: Path, master_path: Path, store: KeyStore | None = None) -> None:
        self.dir = keys_dir
        self.path = keys_dir / "keyring.json"
        self.master_path = master_path
        self.store: KeyStore = store if store is not None else FileKeyStore(keys_dir)
        self._periods: dict[str, PeriodKeys] = {}
        self._master: MasterKey | None = None
        self._public: bytes | None = None
        #: What :meth:`import_file` took into the store, for the caller to log (None: nothing).
        self.imported: str | None = None

    def describe(self) -> str:
        return self.store.describe()

    def close(self) -> None:
        self.store.close()

    def master(self) -> MasterKey:
        if self._master is None:
            self._master = load_master_key(self.master_path)
        return self._master

    @property
    def exists(self) -> bool:
        return self.store.exists()

    def _master_for(self, master_id: str) -> MasterKey:
        """This machine's master key, which must be the one (``master_id``) the key ring is wrapped by."""
        mk = self.master()
        if mk.id != master_id:
            # The key was rotated by `msc keys rotate` while we ran: read the new one.
            self._master = None
            mk = self.master()
        if mk.id != master_id:
            raise KeyError_(
                f"the key ring ({self.describe()}) is wrapped by master key {master_id}, but this machine's master key "
                f"file {self.master_path} holds {mk.id}: copy the master key file of the machine where the key ring "
                "was made or last rotated (`msc keys rotate`)")
        return mk

    def _unwrap(self, label: str, entry: dict[str, str]) -> bytes:
        return _unwrap(self._master_for(entry.get("master", "?")), label, entry)

    # -- lifecycle ------------------------------------------------------------------------

    def init(self) -> MasterKey:
        """``msc keys init``: master key, key ring, users key, signing key. Refuses to clobber."""
        if self.store.exists():
            raise KeyError_(f"{self.describe()} already holds a key ring"
                            + ("" if isinstance(self.store, FileKeyStore) else
                               ": on a second node copy only the master key file (journal.key_file) and users.toml"))
        mk = load_master_key(self.master_path) if self.master_path.exists() else create_master_key(self.master_path)
        self._master = mk
        signing = Ed25519PrivateKey.generate()
        seed = signing.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        public = signing.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.store.create({
            "version": KEYRING_VERSION,
            "master": mk.id,
            "periods": {},
            "users": _wrap(mk, "users", secrets.token_bytes(32)),
            "signing": {**_wrap(mk, "signing", seed), "public": _b64(public)},
        })
        self.write_public_file(public)
        return mk

    def write_public_file(self, public: bytes | None = None) -> None:
        """``signing.pub`` beside the key ring: the public half, for publication."""
        private_dir(self.dir)
        atomic_write(self.dir / "signing.pub", (_b64(public or self.public_key_bytes()) + "\n").encode(), 0o644)

    def rotate(self) -> tuple[str, str]:
        """``msc keys rotate``: new master key; every entry re-wrapped. Returns (old id, new id)."""
        old = load_master_key(self.master_path)
        new = MasterKey(secrets.token_hex(4), AESGCM.generate_key(bit_length=256))
        tmp_master = self.master_path.with_name(self.master_path.name + ".new")

        def rewrap(doc: dict[str, Any] | None) -> dict[str, Any]:
            if doc is None:
                raise KeyError_(f"no key ring in {self.describe()}: run `msc keys init`")
            if doc["master"] != old.id:
                raise KeyError_(f"the key ring is wrapped by master key {doc['master']}, but {self.master_path} holds "
                                f"{old.id}: rotate on the machine whose master key file is current")
            for period, entry in doc["periods"].items():
                if "wrapped" in entry:
                    doc["periods"][period] = {**entry, **_wrap(new, f"period:{period}", _unwrap(old, f"period:{period}", entry))}
            doc["users"] = _wrap(new, "users", _unwrap(old, "users", doc["users"]))
            doc["signing"] = {**_wrap(new, "signing", _unwrap(old, "signing", doc["signing"])), "public": doc["signing"]["public"]}
            doc["master"] = new.id
            # Write the new master key beside the old, re-wrap, then swap: a crash in between
            # leaves the old key file and the old ring, which still match.
            with contextlib.suppress(FileNotFoundError):
                tmp_master.unlink()
            fd = os.open(tmp_master, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, (json.dumps({"version": 1, "id": new.id, "key": _b64(new.key)}) + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            return doc

        # The new master key file replaces the old once the re-wrapped ring is stored (under the
        # file's lock: a reader never pairs the new ring with the old key on this machine).
        self.store.rewrite(rewrap, then=lambda: os.replace(tmp_master, self.master_path))
        self._master = new
        return old.id, new.id

    def import_file(self) -> str | None:
        """Take the entries of this machine's key ring file (``keyring.json``, from before the key
        ring moved into the database) into the store, once; the file is then renamed
        ``keyring.json.imported``. Returns (and keeps in :attr:`imported`) what was taken, or None.

        Fail closed: the same month with different secrets in the file and the store, another
        users or signing key, or a file wrapped by another master key raises :class:`KeyError_`
        and changes nothing. A month destroyed (retention) in either stays destroyed."""
        if isinstance(self.store, FileKeyStore):
            return None
        file = FileKeyStore(self.dir)
        try:
            theirs = json.loads(file.path.read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise KeyError_(f"{file.path} is not a key ring file ({exc}): move it away") from None
        report: list[str] = []

        def merge(ours: dict[str, Any] | None) -> dict[str, Any]:
            report.clear()
            report.extend(merge_key_rings(ours, theirs, self.master(), file.path, self.describe()))
            return theirs if ours is None else ours

        self.store.rewrite(merge)
        os.replace(file.path, file.path.with_name("keyring.json.imported"))
        self._periods.clear()
        self.imported = f"{file.path} imported into {self.describe()}: " + ("; ".join(report) or "nothing new")
        return self.imported

    # -- keys -----------------------------------------------------------------------------

    def period(self, period: str, *, create: bool = True) -> PeriodKeys | None:
        """The keys of a month, creating them if ``create`` and missing (race-free: when two
        processes — two nodes — create the same month at once, both get the one stored).

        Returns None for a month whose keys were destroyed by the retention purge, or that the
        key ring has no key for (``create=False``).
        """
        pk = self._periods.get(period)
        if pk is not None:
            return pk

        def make(master_id: str) -> dict[str, str]:
            return {**_wrap(self._master_for(master_id), f"period:{period}", secrets.token_bytes(32)), "created": _now_iso()}

        entry = self.store.period_entry(period, make if create else None)
        if entry is None or "wrapped" not in entry:
            return None
        secret = self._unwrap(f"period:{period}", entry)
        pk = PeriodKeys(period, AESGCM(_hkdf(secret, b"msc journal data key")), _hkdf(secret, b"msc journal index key"))
        self._periods[period] = pk
        return pk

    def periods(self) -> dict[str, dict[str, Any]]:
        return dict(self.store.read()["periods"])

    def missing_key(self, period: str) -> str:
        """Why the key ring gives no key for ``period`` whose records are present (for a problem
        report): destroyed by retention, or never in this key ring."""
        entry = self.store.read()["periods"].get(period)
        if entry is not None and "destroyed" in entry:
            return (f"the key of {period} was destroyed (retention purge, {entry['destroyed']}) "
                    "but its records are present")
        return (f"the key ring ({self.describe()}) has no key for {period}, whose records are present: the key was "
                "lost, or this key ring is not the one the journal was written with")

    def destroy_period(self, period: str) -> None:
        """Crypto-shred a month: its wrapped secret is deleted from the ring (retention purge)."""
        self.store.destroy_period(period, {"destroyed": _now_iso()})
        self._periods.pop(period, None)

    def journals(self) -> dict[str, str]:
        """The journals this key ring has served: journal id → when it was first opened (ISO UTC).
        Evidence, for the start-up self-check, that a journal existed (its files may be gone)."""
        return dict(self.store.read().get("journals", {}))

    def register_journal(self, journal_id: str) -> None:
        """Remember a journal the first time it is opened with this key ring."""
        self.store.register_journal(journal_id, _now_iso())

    def check_usable(self) -> None:
        """Whether this machine's master key file still opens the key ring: the users and signing
        entries are unwrapped (one read of the store) and thrown away. Raises :class:`KeyError_`
        naming the fix when it does not — another machine rotated the master key (``msc keys
        rotate``) and this one's file is the old one, a wrong copy, an entry that does not
        authenticate — or :class:`msc.storage.pgkeyring.KeyRingUnavailable` (a ``KeyError_``) when
        the key ring's database cannot be asked."""
        doc = self.store.read(consistent=True)
        self._unwrap("users", doc["users"])
        self._unwrap("signing", doc["signing"])

    def users_aead(self) -> AESGCM:
        return AESGCM(self._unwrap("users", self.store.read(consistent=True)["users"]))

    def signing_key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self._unwrap("signing", self.store.read(consistent=True)["signing"]))

    def public_key_bytes(self) -> bytes:
        if self._public is None:  # never changes (a rotation re-wraps only the private half)
            self._public = _unb64(self.store.read()["signing"]["public"])
        return self._public

    def public_key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.public_key_bytes())

    def signing_identity(self) -> SigningIdentity:
        """What an agency publishes so that a court can pin its checkpoint key (``msc keys show``).

        Read from the key ring (no master key needed: the public half is stored in clear). The
        copy in ``signing.pub`` is compared with it: a replaced file is reported, never trusted.
        """
        public = self.public_key_bytes()
        pub_file = self.dir / "signing.pub"
        if not isinstance(self.store, FileKeyStore) and not pub_file.exists():
            # A node of a pair that did not run `msc keys init` gets its copy from the shared key ring.
            self.write_public_file(public)
        try:
            file_matches = _unb64(pub_file.read_text().strip()) == public
        except (OSError, ValueError):
            file_matches = False
        # SHA-256 of the raw key, as the auditors' stand-alone verifier computes it
        # (msc.journal.bundle_verifier.fingerprint; not imported: the key ring is below the journal).
        return SigningIdentity(public=public, fingerprint=hashlib.sha256(public).hexdigest(), pub_file=pub_file,
                               pub_file_matches=file_matches)


def merge_key_rings(ours: dict[str, Any] | None, theirs: dict[str, Any], mk: MasterKey, their_name: object,
                    our_name: str) -> list[str]:
    """Merge key ring document ``theirs`` (a node's file) into ``ours`` (the shared store's; None:
    empty), in place; returns what was taken. Raises :class:`KeyError_` — and nothing may be
    stored — when the two disagree: a month with two different secrets (two nodes made it
    apart: records of it are sealed with one or the other), another users or signing key, or
    entries this machine's master key ``mk`` cannot open. A destroyed month stays destroyed."""
    def refuse(why: str) -> KeyError_:
        return KeyError_(f"the key ring file {their_name} and the key ring in {our_name} disagree: {why}; nothing was "
                         "imported — keep both, find which one the journal's records open with (`msc journal verify` "
                         "with each), and move the other away (JOURNAL.md \"Encryption\")")

    def secret(label: str, entry: dict[str, str]) -> bytes:
        if entry.get("master") != mk.id:
            raise refuse(f"{label} is wrapped by master key {entry.get('master')}, not this machine's {mk.id}")
        return _unwrap(mk, label, entry)

    taken: list[str] = []
    if ours is None:
        for label in ("users", "signing"):
            secret(label, theirs[label])
        for period, entry in theirs["periods"].items():
            if "wrapped" in entry:
                secret(f"period:{period}", entry)
        ours = theirs
        months = sorted(theirs["periods"])
        return [f"the whole key ring ({len(months)} month(s){': ' + months[0] + ' … ' + months[-1] if months else ''})"]
    if theirs["signing"]["public"] != ours["signing"]["public"]:
        raise refuse("they hold different checkpoint signing keys (two key rings made by `msc keys init` apart)")
    if secret("users", theirs["users"]) != secret("users", ours["users"]):
        raise refuse("they hold different users keys (TOTP secrets in users.toml open with only one)")
    new_months, destroyed = [], []
    for period, entry in sorted(theirs["periods"].items()):
        have = ours["periods"].get(period)
        if have is None:
            if "wrapped" in entry:
                secret(f"period:{period}", entry)
            ours["periods"][period] = entry
            new_months.append(period)
        elif "destroyed" in have:
            continue
        elif "destroyed" in entry:
            ours["periods"][period] = entry
            destroyed.append(period)
        elif secret(f"period:{period}", entry) != secret(f"period:{period}", have):
            raise refuse(f"{period} has a different secret in each")
    journals = ours.setdefault("journals", {})
    for jid, when in theirs.get("journals", {}).items():
        journals.setdefault(jid, when)
    if new_months:
        taken.append(f"month(s) {', '.join(new_months)}")
    if destroyed:
        taken.append(f"the destruction (retention) of {', '.join(destroyed)}")
    return taken


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
