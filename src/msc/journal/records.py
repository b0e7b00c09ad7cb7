"""Journal record types and their canonical, sealed byte form (JOURNAL.md "What is recorded").

An :class:`Entry` is what callers append. The journal stamps it with a sequence number and a
UTC time, seals its private part (message text, requester, recipient) with AES-256-GCM, and
stores the canonical bytes of the whole record (:func:`seal`). Those bytes are the Merkle leaf
input, so any change to metadata or ciphertext is detected by ``msc journal verify``.

The canonical form is compact JSON (``[meta, nonce, ciphertext]``, bytes in base64) so that the
stand-alone verifier shipped in export bundles can read it with the Python standard library.
The metadata also carries ``commit`` = SHA-256(salt ‖ private fields), with the 16-byte salt
inside the ciphertext: an export reveals one record's salt and text, and anyone can check that
they are exactly what was sealed — without the month's data key, which would open every record.
"""

from __future__ import annotations

import enum
import operator
import os
from typing import Any

import msgspec
from msgspec import Struct

from msc.protocol.codes import MscError

FORMAT_VERSION = 1


class Kind(enum.StrEnum):
    RECEIVED = "RECEIVED"
    REJECTED = "REJECTED"
    FORWARDED = "FORWARDED"
    QUEUED = "QUEUED"
    DELIVERED = "DELIVERED"
    UNDELIVERED = "UNDELIVERED"
    SESSION = "SESSION"
    ADMIN = "ADMIN"
    AUDIT = "AUDIT"


KINDS = frozenset(k.value for k in Kind)


class JournalError(MscError):
    """The journal could not durably record something: the caller must fail closed (E501).

    ``landed``: when the failed commit nevertheless reached the file (a failed fsync after the
    WAL write), the sequence numbers the caller's entries got there, in order; else None.
    """

    landed: list[int] | None = None


class JournalUnavailable(JournalError):
    """The journal's storage cannot be used now — its database does not answer, refuses the
    connection, or a call ran out of its bound (``[storage] backend = "postgresql"``): an outage,
    not something wrong with the journal. A reader that meets it says the journal is
    *unavailable*, never that a record is bad (``msc journal verify`` does not fail on it), and
    the ``msc`` command exits 2 with one line, as for :class:`msc.storage.errors.StorageUnavailable`."""


class JournalFenced(JournalError):
    """A write refused because this node no longer holds the pair's lease (OPERATIONS.md
    "Running two nodes"): nothing of it was committed, and the node steps down on purpose —
    the journal is the next active node's now. Not a fault of the journal: callers that log
    failures log this one below error (the step-down itself is logged once by its cause)."""


class Entry(Struct, kw_only=True, array_like=False):
    """A record as a caller appends it; ``seq`` and ``ts`` are added by the journal.

    Field meanings follow JOURNAL.md: ``direction`` is ``in``/``out``/``-``; ``peer`` the station
    or upstream name; ``user`` the OIF; ``code`` the disposition/reject code; ``purpose``,
    ``requester`` and ``recipient`` the CORI ``PUR/``, ``ATN/`` and ``REL/`` (PPP §1.7.1 A);
    ``osn`` the output sequence number of an output to a mnemonic.
    """

    kind: str
    direction: str = "-"
    peer: str | None = None
    mnemonic: str | None = None
    user: str | None = None
    taf: str | None = None
    ori: str | None = None
    mke: str | None = None
    txn: str | None = None
    code: str | None = None
    purpose: str | None = None
    requester: str | None = None
    recipient: str | None = None
    osn: int | None = None
    text: str = ""
    #: The blind-index fields are those of the previous entry of the same append (a FORWARDED
    #: record carries the same fields as the RECEIVED record before it): skip re-tokenizing.
    same_fields_as_previous: bool = False

    def __repr__(self) -> str:  # never print message text in a traceback or log
        return f"Entry(kind={self.kind!r}, mnemonic={self.mnemonic!r}, txn={self.txn!r})"


class Meta(Struct, array_like=True, frozen=True):
    """The plaintext metadata of a stored record: searchable, and bound into the GCM tag."""

    v: int
    seq: int
    ts: int  # microseconds since the Unix epoch, UTC
    kind: str
    direction: str
    peer: str | None
    mnemonic: str | None
    user: str | None
    taf: str | None
    ori: str | None
    mke: str | None
    txn: str | None
    code: str | None
    purpose: str | None
    osn: int | None
    period: str  # "YYYY-MM": the data key that sealed it
    commit: bytes  # SHA-256(salt || private fields), see commitment()


#: The journal's metadata fields, in stored order: the one definition (JOURNAL.md "What is
#: recorded"). The columns of ``records`` (msc.journal.schema), the writer's rows and the sealed
#: metadata all follow it; ``seq`` and ``ts`` are the journal's, the rest an :class:`Entry`'s.
META_COLUMNS: tuple[str, ...] = Meta.__struct_fields__[1:-2]
ENTRY_COLUMNS = META_COLUMNS[2:]
#: An :class:`Entry`'s metadata values in :data:`ENTRY_COLUMNS` order (one C call per record).
entry_columns = operator.attrgetter(*ENTRY_COLUMNS)
assert Meta.__struct_fields__ == ("v", *META_COLUMNS, "period", "commit")
assert len(META_COLUMNS) == 14 and set(ENTRY_COLUMNS) <= set(Entry.__struct_fields__)


class Private(Struct, array_like=True):
    """The encrypted part of a record."""

    text: str
    requester: str | None = None
    recipient: str | None = None
    salt: bytes = b""


# One implementation, shared with the export bundle's stdlib-only verifier.
from msc.journal.bundle_verifier import commitment  # noqa: E402, F401  (re-exported)


class Sealed(Struct, array_like=True, frozen=True):
    """The canonical stored form: metadata, nonce and ciphertext. Its encoding is the leaf."""

    meta: Meta
    nonce: bytes
    ciphertext: bytes


class Record(Struct, kw_only=True, frozen=True):
    """A decrypted record, as search and export return it (JOURNAL.md jsonl keys)."""

    seq: int
    ts: int
    kind: str
    direction: str
    peer: str | None
    mnemonic: str | None
    user: str | None
    taf: str | None
    ori: str | None
    mke: str | None
    txn: str | None
    code: str | None
    purpose: str | None
    requester: str | None
    recipient: str | None
    text: str
    osn: int | None = None

    def __repr__(self) -> str:
        return f"Record(seq={self.seq}, kind={self.kind!r}, mnemonic={self.mnemonic!r})"


_meta_columns = operator.attrgetter(*META_COLUMNS)
_meta_encoder = msgspec.json.Encoder()
_sealed_encoder = msgspec.json.Encoder()
_sealed_decoder = msgspec.json.Decoder(Sealed)
_private_encoder = msgspec.msgpack.Encoder()
_private_decoder = msgspec.msgpack.Decoder(Private)


def make_meta(entry: Entry, seq: int, ts: int, period: str, commit: bytes) -> Meta:
    return Meta(FORMAT_VERSION, seq, ts, *entry_columns(entry), period, commit)  # type: ignore[call-arg]  # the 12 fields by one getter


def seal(aead: Any, entry: Entry, seq: int, ts: int, period: str) -> tuple[Meta, bytes]:
    """Seal one entry with ``aead`` (an ``AESGCM`` for ``period``); return (meta, canonical bytes).

    The associated data is the encoded metadata, so a ciphertext cannot be moved to another
    sequence number or relabelled (JOURNAL.md "Encryption").
    """
    rnd = os.urandom(28)
    nonce, salt = rnd[:12], rnd[12:]
    meta = make_meta(entry, seq, ts, period, commitment(salt, entry.text, entry.requester, entry.recipient))
    ad = _meta_encoder.encode(meta)
    plain = _private_encoder.encode(Private(entry.text, entry.requester, entry.recipient, salt))
    ct = aead.encrypt(nonce, plain, ad)
    return meta, _sealed_encoder.encode(Sealed(meta, nonce, ct))


def unseal_meta(blob: bytes) -> Sealed:
    """Decode the canonical bytes (no decryption). Raises ``msgspec.DecodeError`` if mangled."""
    return _sealed_decoder.decode(blob)


def open_sealed(aead: Any, sealed: Sealed) -> Private:
    """Decrypt and authenticate. Raises ``cryptography.exceptions.InvalidTag`` on tampering."""
    plain = aead.decrypt(sealed.nonce, sealed.ciphertext, _meta_encoder.encode(sealed.meta))
    return _private_decoder.decode(plain)


def to_record(meta: Meta, private: Private) -> Record:
    return Record(**dict(zip(META_COLUMNS, _meta_columns(meta), strict=True)), requester=private.requester,
                  recipient=private.recipient, text=private.text)
