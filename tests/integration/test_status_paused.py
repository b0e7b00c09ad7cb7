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


# newcomer9 F2: the one-machine pair recipe gives both nodes the same port numbers on different
# loopback addresses (msc-a 127.0.0.1:P, msc-b 127.0.0.2:P). With msc-a stopped, `msc status` on
# a said "not answering (process <msc-b's PID> exists; paused or hung?)": it matched the port
# alone, and named the serving node as the one to look at (or kill).
LISTENER = """
import socket, sys
s = socket.socket()
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(8)  # never accepted: a node that does not answer
print("listening", flush=True)
sys.stdin.read()  # until the test closes our stdin (or kills us)
"""


def _listen_in_process(host: str, port: int) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", LISTENER, host, str(port)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "listening"
    return p


def _loopback_2_works() -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.2", 0))
        except OSError:
            return False
    return True


def test_a_node_is_told_from_another_on_the_same_port_of_another_address(monkeypatch):
    if not _loopback_2_works():
        pytest.skip("127.0.0.2 is not a loopback address here (Linux's is 127.0.0.0/8)")
    from tests.ports import free_port

    port = free_port()
    monkeypatch.setattr(st, "READYZ_TIMEOUT_S", 0.5)  # the probe's bound, not a speed
    a = _listen_in_process("127.0.0.1", port)
    b = _listen_in_process("127.0.0.2", port)
    try:
        assert st.silent_listener(f"127.0.0.1:{port}") == (True, a.pid)
        assert st.silent_listener(f"127.0.0.2:{port}") == (True, b.pid)
        a.kill()
        a.wait(HANG_S)
        # Nothing listens where msc-a's /readyz is asked: not running — never msc-b's process.
        assert st.silent_listener(f"127.0.0.1:{port}") == (False, None)
        assert here(f"127.0.0.1:{port}") == ("single node (no [node] table) on this machine: not running "
                                             "(nothing answers at its [metrics] bind)")
        assert st.silent_listener(f"127.0.0.2:{port}") == (True, b.pid)
        # A bind on every address is asked at 127.0.0.1 (readyz): what listens there, not b.
        assert st.silent_listener(f"0.0.0.0:{port}") == (False, None)
    finally:
        for p in (a, b):
            p.kill()
            p.wait(HANG_S)


def test_a_listener_on_every_address_answers_for_the_loopback_bind(monkeypatch):
    """A process bound to 0.0.0.0:P is the one a probe of 127.0.0.1:P reaches: it is named."""
    from tests.ports import free_port

    port = free_port()
    p = _listen_in_process("0.0.0.0", port)
    try:
        assert st.silent_listener(f"127.0.0.1:{port}") == (True, p.pid)
        assert st.silent_listener(f"0.0.0.0:{port}") == (True, p.pid)
        assert st.silent_listener(f"localhost:{port}")[0] in (True, False)  # a name: resolved, no traceback
    finally:
        p.kill()
        p.wait(HANG_S)
