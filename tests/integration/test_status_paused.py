"""``msc status`` tells a node that is not running from one that runs but does not answer (newcomer7:
a SIGSTOPped node was called "not running" — its process, its listeners and its lease are all
still there). Real sockets on 127.0.0.1; the paused node is a real process stopped with SIGSTOP."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys

import pytest

from msc.cli import status as st
from tests.waiting import HANG_S

pytestmark = pytest.mark.timeout(120)

# A /readyz server that answers, as a node's metrics endpoint does; its port on stdout.
SERVER = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"status": "standby"}'
        self.send_response(503); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""


@pytest.fixture
def node():
    p = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(p.stdout.readline())
        yield p, f"127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGCONT)
        p.kill()
        p.wait(HANG_S)


def here(bind: str) -> str:
    """The first line of ``msc status`` for a single node at ``bind``, as render() prints it."""
    code, body = st.readyz(bind)
    doc: dict = {"status": code, "role": body.get("status") if code else None}
    if not code:
        listening, pid = st.silent_listener(bind)
        doc.update(process="not answering" if listening else "not running", pid=pid)
    return st.render({"node": None, "this_node": doc})[0]


def test_a_paused_node_is_not_answering_and_named_by_its_process(node, monkeypatch):
    p, bind = node
    assert here(bind) == "single node (no [node] table) on this machine: standby (/readyz 503)"
    monkeypatch.setattr(st, "READYZ_TIMEOUT_S", 0.5)  # the probe's bound, not a speed
    os.kill(p.pid, signal.SIGSTOP)
    assert here(bind) == (f"single node (no [node] table) on this machine: not answering (process {p.pid} exists; "
                          "paused or hung?)")
    os.kill(p.pid, signal.SIGCONT)
    assert here(bind).endswith("standby (/readyz 503)")  # answering again
    p.kill()
    p.wait(HANG_S)
    assert here(bind) == "single node (no [node] table) on this machine: not running (nothing answers at its [metrics] bind)"


# Further inputs of the kind: what listens at the bind and how it fails to answer.
def _silent(family: int, host: str) -> tuple[socket.socket, str]:
    s = socket.socket(family, socket.SOCK_STREAM)
    s.bind((host, 0))
    s.listen(8)  # never accepted: the kernel completes connections, nobody reads them
    port = s.getsockname()[1]
    return s, f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")], ids=["ipv4", "ipv6"])
def test_a_listener_that_never_answers_is_this_process(family, host, monkeypatch):
    if family == socket.AF_INET6 and not socket.has_ipv6:
        pytest.skip("no IPv6 loopback")
    try:
        s, bind = _silent(family, host)
    except OSError:
        pytest.skip("no IPv6 loopback")
    monkeypatch.setattr(st, "READYZ_TIMEOUT_S", 0.5)
    with s:
        assert st.readyz(bind) == (0, {})
        assert st.silent_listener(bind) == (True, os.getpid())
        assert f"not answering (process {os.getpid()} exists; paused or hung?)" in here(bind)
    assert st.silent_listener(bind) == (False, None)


@pytest.mark.parametrize("bind", ["127.0.0.1:notaport", "127.0.0.1:", "nohost"])
def test_a_bind_without_a_port_is_not_running(bind):
    assert st.silent_listener(bind) == (False, None)
