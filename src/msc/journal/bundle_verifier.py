#!/usr/bin/env python3
"""Verify an msc journal export bundle with nothing but the Python standard library.

Usage:  python3 verify_bundle.py --key signing.pub BUNDLE.zip
        python3 verify_bundle.py --fingerprint 3f0c…(64 hex digits) BUNDLE.zip
        python3 verify_bundle.py BUNDLE.zip          (origin NOT checked, see below)

What it proves, for every record in records.jsonl:
  1. the sealed record bytes hash (RFC 6962 leaf, SHA-256) into the Merkle tree whose root the
     checkpoint states, by the record's inclusion proof (RFC 9162 §2.1.3.2 algorithm);
  2. the checkpoint is signed with Ed25519 by the agency's switch: by the key given with --key
     or the key whose fingerprint is given with --fingerprint — obtained from the agency
     separately (its published `msc keys show` output), never from the bundle itself;
  3. the record's metadata (time, user, mnemonic, ORI, key, …) is exactly the sealed metadata;
  4. the record's text, requester and recipient are exactly what was sealed: SHA-256 of the
     revealed salt and those fields equals the commitment inside the sealed metadata.

The bundle carries a copy of the public key (public_key.txt) for convenience, but anyone can
re-sign a doctored bundle with a key of their own and put that key beside it: only a key pinned
from outside the bundle proves where the records come from. Without --key or --fingerprint the
records are checked against the bundle's own key and the verifier says that origin was not checked.

Exit status:
  0  every record verifies and the checkpoint is signed by the pinned key;
  1  something does not verify (each failure is printed), or it is signed by another key;
  2  usage error, or the bundle or the key file cannot be read;
  3  the bundle is internally consistent, but no key was pinned, so its ORIGIN WAS NOT CHECKED.
     Not 0, so that a script testing for success cannot take an unpinned bundle for a proven one;
     not 1, so that it can tell "consistent but unattributed" from "altered".

The Ed25519 verification below is the reference code of RFC 8032 §6 (verification only; it
handles only public data). It is included so that a court or the state can check a bundle on
any machine without installing anything. Use a copy of this script from a source you trust (the
msc repository or the agency's published copy): the one inside a bundle travels with the bundle.
"""

import argparse
import base64
import binascii
import hashlib
import io
import json
import os
import sys
import zipfile

# --- RFC 8032 §6 reference Ed25519 verification -------------------------------------------

_p = 2**255 - 19
_q = 2**252 + 27742317777372353535851937790883648493


def _inv(x):
    return pow(x, _p - 2, _p)


_d = -121665 * _inv(121666) % _p
_sqrt_m1 = pow(2, (_p - 1) // 4, _p)


def _add(P, Q):
    A, B = (P[1] - P[0]) * (Q[1] - Q[0]) % _p, (P[1] + P[0]) * (Q[1] + Q[0]) % _p
    C, D = 2 * P[3] * Q[3] * _d % _p, 2 * P[2] * Q[2] % _p
    E, F, G, H = B - A, D - C, D + C, B + A
    return (E * F, G * H, F * G, E * H)


def _mul(s, P):
    Q = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            Q = _add(Q, P)
        P = _add(P, P)
        s >>= 1
    return Q


def _equal(P, Q):
    if (P[0] * Q[2] - Q[0] * P[2]) % _p != 0:
        return False
    return (P[1] * Q[2] - Q[1] * P[2]) % _p == 0


def _recover_x(y, sign):
    if y >= _p:
        return None
    x2 = (y * y - 1) * _inv(_d * y * y + 1)
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (_p + 3) // 8, _p)
    if (x * x - x2) % _p != 0:
        x = x * _sqrt_m1 % _p
    if (x * x - x2) % _p != 0:
        return None
    if (x & 1) != sign:
        x = _p - x
    return x


_gy = 4 * _inv(5) % _p
_gx = _recover_x(_gy, 0)
_G = (_gx, _gy, 1, _gx * _gy % _p)


def _decompress(s):
    if len(s) != 32:
        return None
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    return None if x is None else (x, y, 1, x * y % _p)


def ed25519_verify(public, msg, signature):
    if len(public) != 32 or len(signature) != 64:
        return False
    A = _decompress(public)
    if not A:
        return False
    R = _decompress(signature[:32])
    if not R:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= _q:
        return False
    h = int.from_bytes(hashlib.sha512(signature[:32] + public + msg).digest(), "little") % _q
    return _equal(_mul(s, _G), _add(R, _mul(h, A)))


# --- RFC 6962 / RFC 9162 ---------------------------------------------------------------------


def leaf_hash(data):
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(leaf, index, size, proof, root):
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while (fn & 1) == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def checkpoint_message(name, tree_size, root, ts):
    # type: (str, int, bytes, int) -> bytes
    return ("msc-checkpoint/v1\n%s\n%d\n%s\n%d\n" % (name, tree_size, root.hex(), ts)).encode()


def commitment(salt, text, requester, recipient):
    # type: (bytes, str, str | None, str | None) -> bytes
    h = hashlib.sha256(salt)
    for field in (text, requester, recipient):
        if field is None:
            h.update(b"\x00")
        else:
            b = field.encode("utf-8")
            h.update(b"\x01" + len(b).to_bytes(4, "big") + b)
    return h.digest()


# The order of the metadata array inside a sealed record (msc.journal.records.Meta).
META_FIELDS = ("v", "seq", "ts", "kind", "direction", "peer", "mnemonic", "user", "taf", "ori", "mke",
               "txn", "code", "purpose", "osn", "period", "commit")
COMPARED = ("seq", "kind", "direction", "peer", "mnemonic", "user", "taf", "ori", "mke", "txn", "code", "purpose")


EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ORIGIN_NOT_CHECKED = 0, 1, 2, 3

# DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410 §4): the raw key follows it.
_SPKI_ED25519 = bytes.fromhex("302a300506032b6570032100")


class UsageError(Exception):
    """A pinned key or the bundle cannot be read (exit status 2)."""


def fingerprint(public):
    # type: (bytes) -> str
    """The key's fingerprint: SHA-256 of the raw 32-byte Ed25519 public key, 64 hex digits."""
    return hashlib.sha256(public).hexdigest()


def parse_public_key(text):
    """A raw Ed25519 public key (32 bytes) from the text of a key file.

    Accepted: `signing.pub` (base64 of the 32 bytes, as `msc keys init` writes it), 64 hex
    digits, or a PEM "PUBLIC KEY" (SubjectPublicKeyInfo, RFC 8410).
    """
    text = text.strip()
    if text.startswith("-----BEGIN PUBLIC KEY-----"):
        body = "".join(line for line in text.splitlines() if not line.startswith("-----"))
        try:
            der = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise UsageError("the PEM key is not valid base64") from None
        if len(der) != 44 or not der.startswith(_SPKI_ED25519):
            raise UsageError("the PEM key is not an Ed25519 public key")
        return der[12:]
    if len(text) == 64:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise UsageError("the key is neither base64 (signing.pub), 64 hex digits nor a PEM public key") from None
    if len(raw) != 32:
        raise UsageError("an Ed25519 public key is 32 bytes, this one is %d" % len(raw))
    return raw


def parse_fingerprint(text):
    """64 hex digits, in any case, with optional spaces or colons between groups."""
    digits = "".join(c for c in text.strip().lower() if c not in " :")
    if digits.startswith("sha256"):
        digits = digits[6:]
    if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
        raise UsageError("a fingerprint is the 64 hex digits of SHA-256 (as `msc keys show` prints it)")
    return digits


def _open(location):
    if os.path.isdir(location):
        return lambda name: open(os.path.join(location, name), "rb").read()
    try:
        z = zipfile.ZipFile(location)
    except (OSError, zipfile.BadZipFile) as exc:
        raise UsageError("cannot read the bundle %s: %s" % (location, exc)) from None
    return lambda name: z.read(name)


def _iso(ts_us):
    import datetime

    d = datetime.datetime.fromtimestamp(ts_us / 1e6, datetime.timezone.utc)
    return d.isoformat(timespec="microseconds").replace("+00:00", "Z")


def verify_bundle(location, out=sys.stdout, *, key=None, fingerprint_hex=None):
    """Check the bundle at ``location`` (a zip file or a directory); print the outcome to ``out``.

    ``key`` (32 raw bytes) or ``fingerprint_hex`` (64 hex digits) pins the agency's signing key.
    Returns the exit status (EXIT_* above).
    """
    read = _open(location)
    problems = []
    try:
        checkpoint = json.loads(read("checkpoint.json"))
        bundled = base64.b64decode(read("public_key.txt").strip(), validate=True)
        root = bytes.fromhex(checkpoint["root"])
        size = int(checkpoint["tree_size"])
        signature = base64.b64decode(checkpoint["signature"], validate=True)
        message = checkpoint_message(str(checkpoint["name"]), size, root, int(checkpoint["ts"]))
    except (KeyError, ValueError, TypeError, binascii.Error) as exc:
        print("FAIL the bundle is malformed (checkpoint.json or public_key.txt): %s" % (exc,), file=out)
        print("bundle does NOT verify", file=out)
        return EXIT_FAILED
    if key is not None:
        signer, pinned = key, True
    elif fingerprint_hex is not None:
        if fingerprint(bundled) != fingerprint_hex:
            problems.append("the bundle is signed by key %s, not by the pinned key %s"
                            % (fingerprint(bundled), fingerprint_hex))
        signer, pinned = bundled, True
    else:
        signer, pinned = bundled, False
    if key is not None and bundled != key:
        problems.append("the bundle carries key %s, not the pinned key %s" % (fingerprint(bundled), fingerprint(key)))
    if not ed25519_verify(signer, message, signature):
        problems.append("the checkpoint signature does not verify with %s"
                        % ("the pinned key" if pinned else "public_key.txt"))
    try:
        count = _check_records(read, problems, root, size)
    except (KeyError, ValueError, TypeError, IndexError, binascii.Error) as exc:
        problems.append("the bundle is malformed (records.jsonl or proofs.jsonl): %s" % (exc,))
        count = 0
    for msg in problems:
        print("FAIL " + msg, file=out)
    if problems:
        print("bundle does NOT verify: %d problem(s)" % len(problems), file=out)
        return EXIT_FAILED
    what = ("%d record(s) verified against checkpoint tree_size=%d root=%s of switch %s"
            % (count, size, root.hex(), checkpoint["name"]))
    if pinned:
        print("OK: %s, signed by the pinned key %s" % (what, fingerprint(signer)), file=out)
        return EXIT_OK
    print("ORIGIN NOT CHECKED: %s, signed by the key inside the bundle (%s). Anyone can re-sign a bundle "
          "with a key of their own: pin the agency's key with --key signing.pub or --fingerprint HEX "
          "(from the agency's published `msc keys show`) to prove where these records come from."
          % (what, fingerprint(signer)), file=out)
    return EXIT_ORIGIN_NOT_CHECKED


def _check_records(read, problems, root, size):
    proofs = {}
    for line in io.BytesIO(read("proofs.jsonl")):
        if line.strip():
            p = json.loads(line)
            proofs[p["seq"]] = p
    count = 0
    for line in io.BytesIO(read("records.jsonl")):
        if not line.strip():
            continue
        rec = json.loads(line)
        seq = rec["seq"]
        count += 1
        p = proofs.get(seq)
        if p is None:
            problems.append("record %d: no inclusion proof" % seq)
            continue
        blob = base64.b64decode(p["record"], validate=True)
        proof = [bytes.fromhex(h) for h in p["proof"]]
        if not verify_inclusion(leaf_hash(blob), seq - 1, size, proof, root):
            problems.append("record %d: not included in the checkpointed tree (altered or not from this journal)" % seq)
            continue
        sealed = json.loads(blob)
        meta = dict(zip(META_FIELDS, sealed[0]))
        for k in COMPARED:
            if meta[k] != rec[k]:
                problems.append("record %d: %s is %r in the bundle but %r in the journal" % (seq, k, rec[k], meta[k]))
        if _iso(meta["ts"]) != rec["ts"]:
            problems.append("record %d: time differs from the journal" % seq)
        salt = base64.b64decode(p["salt"], validate=True)
        if commitment(salt, rec["text"], rec["requester"], rec["recipient"]) != base64.b64decode(meta["commit"]):
            problems.append("record %d: text, requester or recipient differ from what was journaled" % seq)
    return count


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="verify_bundle.py",
        description="Verify an msc journal export bundle (Python standard library only). Pin the agency's "
                    "checkpoint key, obtained from the agency and not from the bundle, with --key or --fingerprint.",
        epilog="Exit status: 0 verified and signed by the pinned key; 1 does not verify or signed by another key; "
               "2 usage error or unreadable input; 3 consistent, but no key pinned: origin NOT checked.")
    ap.add_argument("bundle", nargs="?", help="the bundle (.zip) or its unpacked directory "
                                               "(default: the directory this script is in)")
    pin = ap.add_mutually_exclusive_group()
    pin.add_argument("--key", metavar="FILE", help="the agency's public key file (signing.pub, 64 hex digits, or PEM)")
    pin.add_argument("--fingerprint", metavar="HEX", help="the SHA-256 fingerprint of the agency's public key "
                                                          "(64 hex digits, as `msc keys show` prints it)")
    args = ap.parse_args(argv)
    where = args.bundle or os.path.dirname(os.path.abspath(__file__))
    try:
        key = None
        if args.key:
            try:
                with open(args.key, encoding="ascii", errors="replace") as fh:
                    key = parse_public_key(fh.read(10000))
            except OSError as exc:
                raise UsageError("cannot read the key file %s: %s" % (args.key, exc)) from None
        fp = parse_fingerprint(args.fingerprint) if args.fingerprint else None
        return verify_bundle(where, key=key, fingerprint_hex=fp)
    except UsageError as exc:
        print("verify_bundle.py: error: %s" % exc, file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
