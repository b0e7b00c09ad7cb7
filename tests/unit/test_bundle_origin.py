"""Export bundles prove their origin only against the agency's key given from outside the bundle.

The verifier is run as a court runs it: ``python3 -I -S verify_bundle.py`` (standard library
only). A bundle re-signed with any other key is refused when the agency's key is pinned; without a
pinned key the verifier says that origin was not checked and exits 3.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from msc.journal import Entry, Journal, KeyRing
from msc.journal.bundle_verifier import checkpoint_message
from msc.journal.export import covering_checkpoint, write_bundle

VERIFIER = Path(__file__).resolve().parents[2] / "src" / "msc" / "journal" / "bundle_verifier.py"


@pytest.fixture(scope="module")
def agency(tmp_path_factory):
    """A journal with a few records and an exported bundle of records 2 and 3."""
    d = tmp_path_factory.mktemp("agency")
    ring = KeyRing(d / "keys", d / "keys" / "master.key")
    ring.init()

    async def build():
        j = Journal(d / "journal", ring, name="TEST-MSC")
        await j.open()
        for i in range(5):
            await j.append(Entry(kind="RECEIVED", user="TS0001", mnemonic="ICS1", text=f"ICS1.QW.CA0130000.NAM/DOE, J{i}"))
        await j.checkpoint()
        await j.close()

    asyncio.run(build())
    bundle = d / "bundle.zip"
    write_bundle(d / "journal", ring, [2, 3], bundle, name="TEST-MSC", checkpoint=covering_checkpoint(d / "journal", 3),
                 manifest={"case": "C1"})
    return d, ring, bundle


def run_verifier(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-I", "-S", str(VERIFIER), *map(str, args)], capture_output=True,
                          text=True, timeout=60, cwd=cwd)


def unpack(bundle: Path, dst: Path) -> Path:
    zipfile.ZipFile(bundle).extractall(dst)
    return dst


def resign(directory: Path, key: Ed25519PrivateKey, *, replace_public: bool = True, **changes) -> None:
    """What a forger does: change the checkpoint (optionally) and sign it with their own key."""
    cp = json.loads((directory / "checkpoint.json").read_text())
    cp.update(changes)
    msg = checkpoint_message(cp["name"], cp["tree_size"], bytes.fromhex(cp["root"]), cp["ts"])
    cp["signature"] = base64.b64encode(key.sign(msg)).decode()
    (directory / "checkpoint.json").write_text(json.dumps(cp))
    if replace_public:
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        (directory / "public_key.txt").write_text(base64.b64encode(raw).decode() + "\n")


def test_help_works_without_a_bundle():
    r = run_verifier("--help")
    assert r.returncode == 0 and "--fingerprint" in r.stdout and "--key" in r.stdout and "origin" in r.stdout.lower()


def test_pinned_key_file_and_fingerprint_verify_the_genuine_bundle(agency):
    d, ring, bundle = agency
    fp = ring.signing_identity().fingerprint
    assert fp == hashlib.sha256(ring.public_key_bytes()).hexdigest()
    r = run_verifier("--key", d / "keys" / "signing.pub", bundle)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("OK: 2 record(s)") and fp in r.stdout
    for form in (fp, fp.upper(), " ".join(fp[i:i + 4] for i in range(0, 64, 4)), ":".join(fp[i:i + 2] for i in range(0, 64, 2)),
                 "SHA256:" + fp):
        r = run_verifier("--fingerprint", form, bundle)
        assert r.returncode == 0, (form, r.stdout, r.stderr)
    # The other key file forms: 64 hex digits, and PEM.
    (d / "key.hex").write_text(ring.public_key_bytes().hex() + "\n")
    pem = ring.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (d / "key.pem").write_bytes(pem)
    for f in ("key.hex", "key.pem"):
        assert run_verifier("--key", d / f, bundle).returncode == 0


def test_without_a_pinned_key_origin_is_not_checked_and_says_so(agency):
    _d, _ring, bundle = agency
    r = run_verifier(bundle)
    assert r.returncode == 3, r.stdout
    assert r.stdout.startswith("ORIGIN NOT CHECKED") and "--fingerprint" in r.stdout


def test_a_bundle_resigned_with_a_fresh_key_is_refused(agency, tmp_path):
    d, ring, bundle = agency
    fp = ring.signing_identity().fingerprint
    forged = unpack(bundle, tmp_path / "forged")
    records = (forged / "records.jsonl").read_text()
    resign(forged, Ed25519PrivateKey.generate())
    for pin in (("--key", d / "keys" / "signing.pub"), ("--fingerprint", fp)):
        r = run_verifier(*pin, forged)
        assert r.returncode == 1, (pin, r.stdout)
        assert "not the pinned key" in r.stdout or "not by the pinned key" in r.stdout
    # Unpinned, the forgery is self-consistent: exit 3, never 0.
    assert run_verifier(forged).returncode == 3
    (forged / "records.jsonl").write_text(records)


# Further forgeries of origin, each with the agency's key pinned: every one exits 1.
def _fresh_key_only(directory, agency_key):
    resign(directory, Ed25519PrivateKey.generate())


def _fresh_signature_agency_public_kept(directory, agency_key):
    resign(directory, Ed25519PrivateKey.generate(), replace_public=False)


def _other_switch_name(directory, agency_key):
    cp = json.loads((directory / "checkpoint.json").read_text())
    cp["name"] = "OTHER-MSC"
    (directory / "checkpoint.json").write_text(json.dumps(cp))


def _larger_tree_size(directory, agency_key):
    cp = json.loads((directory / "checkpoint.json").read_text())
    cp["tree_size"] += 1
    (directory / "checkpoint.json").write_text(json.dumps(cp))


def _other_timestamp(directory, agency_key):
    cp = json.loads((directory / "checkpoint.json").read_text())
    cp["ts"] -= 1
    (directory / "checkpoint.json").write_text(json.dumps(cp))


def _doctored_record_resigned(directory, agency_key):
    """Change a record, rebuild a consistent tree of one leaf, and sign it with a fresh key."""
    rec = json.loads((directory / "records.jsonl").read_text().splitlines()[0])
    proof = json.loads((directory / "proofs.jsonl").read_text().splitlines()[0])
    blob = base64.b64decode(proof["record"])
    leaf = hashlib.sha256(b"\x00" + blob).digest()
    rec["seq"] = proof["seq"] = 1
    (directory / "records.jsonl").write_text(json.dumps(rec) + "\n")
    (directory / "proofs.jsonl").write_text(json.dumps({**proof, "proof": []}) + "\n")
    resign(directory, Ed25519PrivateKey.generate(), root=leaf.hex(), tree_size=1)


def _signature_garbage(directory, agency_key):
    cp = json.loads((directory / "checkpoint.json").read_text())
    cp["signature"] = base64.b64encode(b"\x00" * 64).decode()
    (directory / "checkpoint.json").write_text(json.dumps(cp))


def _public_key_malformed(directory, agency_key):
    (directory / "public_key.txt").write_text("not base64!\n")


@pytest.mark.parametrize("forge", [_fresh_key_only, _fresh_signature_agency_public_kept, _other_switch_name,
                                   _larger_tree_size, _other_timestamp, _doctored_record_resigned, _signature_garbage,
                                   _public_key_malformed])
def test_forgeries_of_origin_are_refused_with_the_key_pinned(agency, tmp_path, forge):
    d, ring, bundle = agency
    forged = unpack(bundle, tmp_path / "forged")
    forge(forged, ring)
    for pin in (("--key", d / "keys" / "signing.pub"), ("--fingerprint", ring.signing_identity().fingerprint)):
        r = run_verifier(*pin, forged)
        assert r.returncode == 1, (forge.__name__, pin[0], r.stdout, r.stderr)
        assert "Traceback" not in r.stderr and "does NOT verify" in r.stdout


@pytest.mark.parametrize("args, message", [
    (("--fingerprint", "abcd"), "64 hex digits"),
    (("--fingerprint", "g" * 64), "64 hex digits"),
    (("--key", "/nonexistent/signing.pub"), "cannot read the key file"),
    (("--key", "{garbage_key}"), "neither base64"),
    (("--key", "{short_key}"), "32 bytes"),
    (("--key", "{pem_rsa}"), "not an Ed25519"),
])
def test_unusable_pins_are_usage_errors(agency, tmp_path, args, message):
    d, _ring, bundle = agency
    files = {"{garbage_key}": "%%% not a key %%%\n", "{short_key}": base64.b64encode(b"x" * 16).decode() + "\n",
             "{pem_rsa}": "-----BEGIN PUBLIC KEY-----\n" + base64.b64encode(b"\x30" * 60).decode() + "\n-----END PUBLIC KEY-----\n"}
    resolved = []
    for a in args:
        if a in files:
            (tmp_path / "k").write_text(files[a])
            a = str(tmp_path / "k")
        resolved.append(a)
    r = run_verifier(*resolved, bundle)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_unreadable_bundles_are_refused_without_a_traceback(agency, tmp_path):
    d, ring, bundle = agency
    assert run_verifier("--key", d / "keys" / "signing.pub", tmp_path / "missing.zip").returncode == 2
    (tmp_path / "junk.zip").write_bytes(b"PK\x03\x04 not really a zip")
    r = run_verifier("--key", d / "keys" / "signing.pub", tmp_path / "junk.zip")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    broken = unpack(bundle, tmp_path / "broken")
    (broken / "proofs.jsonl").write_text("{not json\n")
    r = run_verifier("--key", d / "keys" / "signing.pub", broken)
    assert r.returncode == 1 and "malformed" in r.stdout and "Traceback" not in r.stderr


def test_keys_show_prints_the_fingerprint_and_flags_a_replaced_public_key_file(tmp_path):
    from tests.conftest import make_config
    from tests.e2e.conftest import run

    cfg = make_config(tmp_path)
    r = run("keys", "show", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    ring = KeyRing(tmp_path / "data" / "keys", tmp_path / "data" / "keys" / "master.key")
    fp = ring.signing_identity().fingerprint
    assert f"fingerprint_sha256:  {fp}" in r.stdout and f"--fingerprint {fp}" in r.stdout
    doc = json.loads(run("keys", "show", "--config", str(cfg), "--format", "json").stdout)
    assert doc["fingerprint_sha256"] == fp and base64.b64decode(doc["public_key"]) == ring.public_key_bytes()
    # The text names each value as the JSON does (newcomer9: "fingerprint:" there, "fingerprint_sha256" here).
    labelled = dict(re.findall(r"^  ([a-z_0-9]+):\s+(\S+)", r.stdout, re.MULTILINE))
    assert labelled == {k: str(doc[k]) for k in ("public_key", "fingerprint_sha256", "public_key_file")}
    # Someone replaces signing.pub on the box: show still prints the key ring's key, and says so.
    other = Ed25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    (tmp_path / "data" / "keys" / "signing.pub").write_text(base64.b64encode(other).decode() + "\n")
    r = run("keys", "show", "--config", str(cfg))
    assert r.returncode == 1 and fp in r.stdout and "does not hold the key ring's public key" in r.stderr


def test_keys_init_prints_the_fingerprint(tmp_path):
    from tests.conftest import make_config
    from tests.e2e.conftest import run

    cfg = make_config(tmp_path)
    keys = tmp_path / "data" / "keys"
    for f in keys.iterdir():
        f.unlink()
    r = run("keys", "init", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    fp = KeyRing(keys, keys / "master.key").signing_identity().fingerprint
    assert f"fingerprint_sha256:  {fp}" in r.stdout
