"""A second ``msc serve`` of a node that runs (the same configuration, or the same ``[node] name``
and the same ``--ready-file``) is refused at its start — exit 2, one line naming the conflict — and
alters nothing of the running node: its ready file, its lease and "alive" rows, what ``msc status``
says, its listeners and metrics endpoint (msc.instance).

Before: a pair's node whose metrics endpoint was free for the second process (a port-0 bind, or a
copy of the node's directory) had its ``ready`` overwritten with ``standby`` and then removed by
the refused process; with a fixed metrics port the refusal said only ``address already in use``;
a single node's said the journal was being written, after state.db and the key ring's lock had
been opened.

Real processes on loopback, a real PostgreSQL (tests/pg.py) for the pair.
"""

from __future__ import annotations

import shutil
import socket
import threading
from pathlib import Path

import pytest

from tests import pg as pgmod
from tests.conftest import free_port, make_config, readyz
from tests.e2e.conftest import Proc, run, start_serve
from tests.waiting import HANG_S, START_S

pytestmark = [pytest.mark.timeout(240)]
needs_pg = pytest.mark.skipif(pgmod.missing_reason() is not None, reason=pgmod.missing_reason() or "")


class Watched:
    """Every content a file showed, polled every millisecond from a thread until :meth:`stop`
    (``<missing>`` when it did not exist): a write and a removal in between are both seen."""

    def __init__(self, path: Path) -> None:
        self.path, self.seen, self._stop = path, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _read(self) -> str:
        try:
            return self.path.read_text()
        except FileNotFoundError:
            return "<missing>"

    def _run(self) -> None:
        while not self._stop.is_set():
            now = self._read()
            if not self.seen or self.seen[-1] != now:
                self.seen.append(now)
            self._stop.wait(0.001)

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(HANG_S)
        return self.seen


def accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def refused(cfg: Path, ready: Path, log: Path) -> tuple[str, list[str]]:
    """Start ``msc serve`` of ``cfg`` with ``ready`` as its ready file and wait for it to exit 2
    (asserted); its one ``error:`` line, and what the ready file showed meanwhile."""
    watch = Watched(ready)
    second = Proc("serve", "--config", str(cfg), "--ready-file", str(ready), log=log)
    try:
        status = second.p.wait(START_S)
    finally:
        seen = watch.stop()
        second.stop()
    err = log.read_text()
    assert status == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: msc serve did not start: "), err  # nothing logged
    return lines[0], seen


def test_a_second_serve_of_a_single_node_is_refused_before_it_opens_anything(tmp_path, procs):
    port, metrics = free_port(), free_port()
    cfg = make_config(tmp_path, port=port, metrics_port=metrics)
    first = start_serve(procs, tmp_path, cfg)  # its ready file: tmp_path / "ready"
    ready = tmp_path / "ready"
    inode = ready.stat().st_ino
    line, seen = refused(cfg, ready, tmp_path / "second.err")
    assert line == (f"error: msc serve did not start: another msc serve of this node is running (process "
                    f"{first.p.pid}, holding {tmp_path / 'data' / 'serve.lock'}): it is left as it is — stop it first")
    assert seen == ["ready\n"] and ready.stat().st_ino == inode
    assert readyz(metrics)[0] == 200 and accepts(port) and first.p.poll() is None
    r = run("status", "--config", str(cfg))
    assert (r.returncode, r.stdout) == (0, "single node (no [node] table) on this machine: ready (/readyz 200)\n")
    assert first.stop() == 0 and not ready.exists()  # its own file, removed by it as ever


# -- a node of a pair ------------------------------------------------------------------------------


@pytest.fixture
def node_a(tmp_path, pg_server, procs):
    """Node A of a pair on PostgreSQL (tests/e2e/test_ha_nodes.py's Pair), active; B set up."""
    from tests.e2e.test_ha_nodes import Pair

    pair = Pair(tmp_path, pg_server, procs)
    pair.start("A", "ready")
    return pair


def rows(pair) -> tuple[str, str]:
    """What the database says of the nodes: the lease row, and the "alive" rows."""
    return (pair.pg.sql("SELECT holder, epoch, released_at IS NULL FROM msc_lease", pair.db),
            pair.pg.sql("SELECT name, instance, host, pid FROM msc_node_seen ORDER BY name", pair.db))


def status(pair, n: str) -> tuple[int, list[str]]:
    """``msc status`` on node n's machine, without the lease's remaining time (it changes)."""
    r = run("status", "--config", str(pair.cfg[n]))
    return r.returncode, [ln.split(", valid ")[0] for ln in r.stdout.splitlines()]


@needs_pg
@pytest.mark.parametrize("metrics", ["its own port", "port 0"])
def test_a_second_serve_of_a_pairs_node_leaves_the_running_node_as_it_was(node_a, tmp_path, metrics):
    """The same configuration started again — by hand beside the unit, or a second supervisor.
    With ``[metrics] bind`` on port 0 nothing else stood in its way before (the trial's case:
    ``standby`` written over ``ready``, then the file removed)."""
    pair = node_a
    cfg, ready = pair.cfg["A"], tmp_path / "A" / "ready"
    if metrics == "port 0":
        cfg.write_text(cfg.read_text().replace(f"127.0.0.1:{pair.metrics['A']}", "127.0.0.1:0"))
    before, said = rows(pair), status(pair, "A")
    line, seen = refused(cfg, ready, tmp_path / "A2.err")
    assert line.startswith("error: msc serve did not start: another msc serve of this node is running (process "
                           f"{pair.proc['A'].p.pid}, holding {tmp_path / 'A' / 'data' / 'serve.lock'})"), line
    assert seen == ["ready\n"]
    assert rows(pair) == before and status(pair, "A") == said
    assert pair.active("A") and pair.accepts("A")
    # The pair's other node, its own name and ready file, stands by as ever; msc status counts both.
    pair.start("B", "standby")
    assert status(pair, "B")[0] == 0 and status(pair, "B")[1][:2] == [
        "node node-b (this machine): standby (/readyz 503)", "active node: node-a (lease epoch 1"]


@needs_pg
def test_a_copy_of_a_pairs_node_given_its_ready_file_is_refused_before_it_writes_it(node_a, tmp_path):
    """A copy of node A's directory (same ``[node] name``, its own data_dir and ports) started with
    A's ready file: refused by the file's lock, naming A's process — not by the name's "alive" mark
    after it had written ``standby`` over A's ``ready`` and then removed the file."""
    pair = node_a
    copy = tmp_path / "A-copy"
    shutil.copytree(tmp_path / "A", copy, ignore=shutil.ignore_patterns("ready", "serve.err", "*.sock", "serve.lock"))
    text = (copy / "msc.toml").read_text()
    for old in (pair.ports["A"], pair.metrics["A"]):
        text = text.replace(f"127.0.0.1:{old}", f"127.0.0.1:{free_port()}")
    (copy / "msc.toml").write_text(text)
    ready = tmp_path / "A" / "ready"
    before, said = rows(pair), status(pair, "A")
    line, seen = refused(copy / "msc.toml", ready, tmp_path / "copy.err")
    assert line == (f"error: msc serve did not start: the ready file {ready} is another running process's (process "
                    f"{pair.proc['A'].p.pid}, which holds its lock): it is left as it is — give each msc serve its "
                    "own --ready-file"), line
    assert seen == ["ready\n"]
    assert rows(pair) == before and status(pair, "A") == said and pair.active("A")
    # Given its own ready file, the copy is refused by the name as before (exit 2) — and its file
    # never said "standby": it is written once the database has taken the name as the process's.
    own = copy / "ready"
    watch = Watched(own)
    p = Proc("serve", "--config", str(copy / "msc.toml"), "--ready-file", str(own), log=tmp_path / "copy2.err")
    try:
        assert p.p.wait(START_S) == 2
    finally:
        p.stop()
    assert watch.stop() == ["<missing>"]
    assert "another live node is running as 'node-a'" in (tmp_path / "copy2.err").read_text()
    assert rows(pair) == before and ready.read_text() == "ready\n"


@needs_pg
def test_a_second_serve_is_refused_while_the_running_node_stands_by(node_a, tmp_path):
    """The running node a standby (B active): the second start of B's configuration leaves its
    ``standby`` and its "alive" mark alone; B goes on standing by and takes over at A's stop."""
    from tests.e2e.test_ha_nodes import wait_until

    pair = node_a
    b = pair.start("B", "standby")
    ready = tmp_path / "B" / "ready"
    before = rows(pair)
    line, seen = refused(pair.cfg["B"], ready, tmp_path / "B2.err")
    assert f"another msc serve of this node is running (process {b.p.pid}, " in line, line
    assert seen == ["standby\n"] and rows(pair) == before
    assert pair.proc["A"].stop() == 0
    wait_until(lambda: pair.active("B"), "B active", timeout=60, proc=b)
    wait_until(lambda: ready.read_text() == "ready\n", "B's ready file", proc=b)
