"""An independent TLS scanner (sslscan, installed by `make test`) against a running msc serve."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.conftest import free_port, make_config
from tests.e2e.conftest import start_serve
from tests.tlsutil import PKI

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(shutil.which("sslscan") is None,
                                 reason="sslscan not installed (make test installs Debian's sslscan when it can)")]


def test_sslscan_finds_only_tls12_plus_and_strong_ciphers(tmp_path, procs):
    pki = PKI(tmp_path / "pki")
    pki.issue("server", "localhost", server=True)
    port = free_port()
    tls = f'tls = {{ cert = "{pki.dir}/server.crt", key = "{pki.dir}/server.key" }}'
    cfg = make_config(tmp_path, port=port, metrics_port=free_port(), listener_extra=tls)
    start_serve(procs, tmp_path, cfg)
    out = subprocess.run(["sslscan", "--no-colour", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=90).stdout
    protocols = dict(re.findall(r"^(SSLv[23]|TLSv1\.[0-3])\s+(enabled|disabled)", out, re.M))
    assert protocols.get("TLSv1.2") == "enabled" or protocols.get("TLSv1.3") == "enabled", out
    for old in ("SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1"):
        assert protocols.get(old, "disabled") == "disabled", f"{old} enabled:\n{out}"
    accepted = re.findall(r"^(?:Preferred|Accepted)\s+\S+\s+\d+ bits\s+(\S+)", out, re.M)
    assert accepted, out
    for cipher in accepted:
        assert not re.search(r"NULL|EXPORT|RC4|DES|MD5|anon", cipher), cipher
        assert "GCM" in cipher or "CHACHA20" in cipher, cipher  # AEAD only
