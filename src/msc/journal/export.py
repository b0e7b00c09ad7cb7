"""Export bundles: records a court or the state can check without msc (JOURNAL.md).

A bundle is a zip file::

    records.jsonl      the matching records, decrypted (the jsonl search format)
    proofs.jsonl       per record: its sealed bytes, its salt, its RFC 6962 inclusion proof
    checkpoint.json    the signed checkpoint covering every exported record
    public_key.txt     the switch's Ed25519 checkpoint key (base64): a convenience copy only; origin
                       is proven against the key the agency publishes (``msc keys show``)
    verify_bundle.py   the verifier: Python standard library only (``--key`` / ``--fingerprint``)
    MANIFEST.txt       case, investigator, filters, time, counts
"""

from __future__ import annotations

import base64
import json
import os
import zipfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from msc.config.files import private_dir
from msc.journal.interfaces import JournalReader
from msc.journal.proofs import proofs
from msc.journal.reader import Reader
from msc.journal.records import META_COLUMNS, Record, open_sealed, unseal_meta
from msc.journal.schema import Checkpoint
from msc.keyring import KeyRing

#: The keys of an exported record (JOURNAL.md: jsonl and csv): the metadata columns but the
#: OSN, then the sealed private fields.
JSON_KEYS: tuple[str, ...] = (*(c for c in META_COLUMNS if c != "osn"), "requester", "recipient", "text")


def record_json(r: Record) -> dict[str, Any]:
    from msc.journal.search import iso

    d = {k: getattr(r, k) for k in JSON_KEYS}
    d["ts"] = iso(r.ts)
    return d


#: Leaf hashes read at a time from a purged month, records from a live one.
_SLICE = 65536


def _leaves(reader: JournalReader, purged: list[tuple[str, int, int]]) -> Iterator[bytes]:
    """Every leaf hash of the journal in sequence order: purged months' kept hashes, then the
    records' (a slice at a time: no month sits in memory, no statement stays open)."""
    for period, first, last in purged:
        for start in range(0, last - first + 1, _SLICE):
            data = reader.purged_leaves(period, start, min(_SLICE, last - first + 1 - start))
            for i in range(len(data) // 32):
                yield data[i * 32 : (i + 1) * 32]
    for period in reader.periods():
        nxt = 0
        while True:
            page = list(reader.records(period, nxt, _SLICE // 16))
            for rec in page:
                yield rec.leaf
            if len(page) < _SLICE // 16:
                break
            nxt = page[-1].seq + 1


def _open(source: Path | JournalReader) -> JournalReader:
    return Reader(source) if isinstance(source, Path) else source


def covering_checkpoint(source: Path | JournalReader, seq: int) -> Checkpoint | None:
    """The oldest signed checkpoint whose tree includes record ``seq``. ``source``: a SQLite
    journal directory or any backend's reader (the caller's to close)."""
    reader = _open(source)
    try:
        return reader.next_checkpoint(seq - 1)
    finally:
        if isinstance(source, Path):
            reader.close()


def write_bundle(source: Path | JournalReader, keyring: KeyRing, seqs: list[int], out: Path, *, name: str,
                 checkpoint: Checkpoint, manifest: dict[str, Any]) -> int:
    """Write the bundle for the given records (sorted sequence numbers). Returns the count.
    ``source``: a SQLite journal directory or any backend's reader (the caller's to close)."""
    reader = _open(source)
    purged = reader.purged()
    try:
        root, proof_map = proofs(_leaves(reader, purged), checkpoint.tree_size, [s - 1 for s in seqs])
        if root != checkpoint.root:
            raise ValueError("the journal does not match its checkpoint: run `msc journal verify`")
        records, proof_lines = [], []
        for seq in seqs:
            found = reader.blob(seq)
            if found is None:
                continue
            period, blob = found
            keys = keyring.period(period, create=False)
            if keys is None:
                raise ValueError(f"record {seq}: {keyring.missing_key(period)}")
            sealed = unseal_meta(blob)
            private = open_sealed(keys.aead, sealed)
            from msc.journal.records import to_record

            records.append(json.dumps(record_json(to_record(sealed.meta, private))))
            proof_lines.append(json.dumps({
                "seq": seq, "record": base64.b64encode(blob).decode(), "salt": base64.b64encode(private.salt).decode(),
                "proof": [h.hex() for h in proof_map[seq - 1]],
            }))
    finally:
        if isinstance(source, Path):
            reader.close()
    verifier = resources.files("msc.journal").joinpath("bundle_verifier.py").read_text()
    cp = {"name": name, "tree_size": checkpoint.tree_size, "root": checkpoint.root.hex(), "ts": checkpoint.ts,
          "signature": base64.b64encode(checkpoint.signature).decode()}
    # The bundle holds decrypted records (CJI): owner-only from its first byte, like every file
    # msc writes; the person who asked for it hands it on (SECURITY.md "File modes").
    private_dir(out.parent) if not out.parent.exists() else None
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("records.jsonl", "\n".join(records) + ("\n" if records else ""))
        z.writestr("proofs.jsonl", "\n".join(proof_lines) + ("\n" if proof_lines else ""))
        z.writestr("checkpoint.json", json.dumps(cp, indent=1) + "\n")
        z.writestr("public_key.txt", base64.b64encode(keyring.public_key_bytes()).decode() + "\n")
        z.writestr("verify_bundle.py", verifier)
        z.writestr("MANIFEST.txt", "".join(f"{k}: {v}\n" for k, v in manifest.items()) + f"records: {len(records)}\n"
                   "verify with: python3 verify_bundle.py --fingerprint <the agency's published key fingerprint> bundle.zip\n"
                   "(Python standard library only; the fingerprint comes from the agency, `msc keys show`, "
                   "never from this bundle)\n")
    out.chmod(0o600)
    return len(records)
