#!/usr/bin/env python3
"""Verify an msc journal export bundle with nothing but the Python standard library.

Usage:  python3 verify_bundle.py [BUNDLE.zip | BUNDLE_DIR]     (default: the script's directory)

What it proves, for every record in records.jsonl:
  1. the sealed record bytes hash (RFC 6962 leaf, SHA-256) into the Merkle tree whose root the
     checkpoint states, by the record's inclusion proof (RFC 9162 §2.1.3.2 algorithm);
  2. the checkpoint is signed by the switch's Ed25519 key (public_key.txt);
  3. the record's metadata (time, user, mnemonic, ORI, key, …) is exactly the sealed metadata;
  4. the record's text, requester and recipient are exactly what was sealed: SHA-256 of the
     revealed salt and those fields equals the commitment inside the sealed metadata.

Exit status 0 when everything verifies, 1 otherwise (each failure is printed).

The Ed25519 verification below is the reference code of RFC 8032 §6 (verification only; it
handles only public data). It is included so that a court or the state can check a bundle on
any machine without installing anything.
"""

import base64
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
    return ("msc-checkpoint/v1\n%s\n%d\n%s\n%d\n" % (name, tree_size, root.hex(), ts)).encode()


def commitment(salt, text, requester, recipient):
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


def _open(location):
    if os.path.isdir(location):
        return lambda name: open(os.path.join(location, name), "rb").read()
    z = zipfile.ZipFile(location)
    return lambda name: z.read(name)


def _iso(ts_us):
    import datetime

    d = datetime.datetime.fromtimestamp(ts_us / 1e6, datetime.timezone.utc)
    return d.isoformat(timespec="microseconds").replace("+00:00", "Z")


def verify_bundle(location, out=sys.stdout):
    read = _open(location)
    problems = []
    checkpoint = json.loads(read("checkpoint.json"))
    public = base64.b64decode(read("public_key.txt").strip())
    root = bytes.fromhex(checkpoint["root"])
    size = checkpoint["tree_size"]
    if not ed25519_verify(public, checkpoint_message(checkpoint["name"], size, root, checkpoint["ts"]),
                          base64.b64decode(checkpoint["signature"])):
        problems.append("the checkpoint signature does not verify with public_key.txt")
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
        blob = base64.b64decode(p["record"])
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
        salt = base64.b64decode(p["salt"])
        if commitment(salt, rec["text"], rec["requester"], rec["recipient"]) != base64.b64decode(meta["commit"]):
            problems.append("record %d: text, requester or recipient differ from what was journaled" % seq)
    for msg in problems:
        print("FAIL " + msg, file=out)
    if problems:
        print("bundle does NOT verify: %d problem(s)" % len(problems), file=out)
        return 1
    print("OK: %d record(s) verified against checkpoint tree_size=%d root=%s signed by key %s"
          % (count, size, root.hex(), hashlib.sha256(public).hexdigest()[:16]), file=out)
    return 0


if __name__ == "__main__":
    where = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    sys.exit(verify_bundle(where))
