"""What one ``msc serve`` owns (msc.instance): its node's ``data_dir/serve.lock`` and its
ready file, each by a ``flock`` the kernel drops when the process ends. A second open file
description in this process stands for a second process here (``flock`` locks belong to the open
file, not the process); tests/e2e/test_duplicate_serve.py runs real processes."""

from __future__ import annotations

import fcntl
import os

import pytest

from msc.instance import NODE_LOCK, NodeInUse, ReadyFile, claim_node


def held(path) -> int:
    """Another holder of ``path``'s lock (the running node)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def test_a_node_is_claimed_once_and_free_again_when_its_holder_lets_go(tmp_path):
    data = tmp_path / "data"
    fd = claim_node(data)  # (made 0700 if missing, as the switch would)
    assert (data / NODE_LOCK).read_text() == f"{os.getpid()}\n" and oct(data.stat().st_mode & 0o777) == "0o700"
    with pytest.raises(NodeInUse) as refused:
        claim_node(data)
    assert str(refused.value) == (f"another msc serve of this node is running (process {os.getpid()}, holding "
                                  f"{data / NODE_LOCK}): it is left as it is — stop it first")
    os.close(fd)
    os.close(claim_node(data))  # its holder gone (exit, kill -9): the next start takes it


def test_a_ready_file_another_process_holds_is_refused_at_the_start_and_never_written_or_removed(tmp_path):
    path = tmp_path / "ready"
    path.write_text("ready\n")
    other = held(path)
    with pytest.raises(NodeInUse) as refused:
        ReadyFile(path).check()
    assert str(refused.value) == (f"the ready file {path} is another running process's (process {os.getpid()}, "
                                  "which holds its lock): it is left as it is — give each msc serve its own --ready-file")
    late = ReadyFile(path)  # it took the file after this one's check: the first to write keeps it
    assert late.write("standby") is False and late.taken is not None
    late.clear()
    assert path.read_text() == "ready\n"
    os.close(other)


def test_a_ready_file_nobody_holds_is_written_over_and_removed_by_its_new_owner(tmp_path):
    path = tmp_path / "ready"
    path.write_text("ready\n")  # what a kill -9 left
    ready = ReadyFile(path)
    ready.check()
    assert ready.write("standby") and path.read_text() == "standby\n"
    assert ready.write("ready") and path.read_text() == "ready\n"
    with pytest.raises(NodeInUse):
        ReadyFile(path).check()  # held while its owner runs
    ready.clear()
    assert not path.exists()
    ReadyFile(path).check()


def test_a_ready_file_replaced_under_its_owner_is_left_to_whoever_made_the_new_one(tmp_path):
    path = tmp_path / "ready"
    ready = ReadyFile(path)
    assert ready.write("ready")
    os.unlink(path)  # removed by hand, and another process then wrote its own
    path.write_text("standby\n")
    ready.clear()
    assert path.read_text() == "standby\n"


def test_no_ready_file_is_nothing_to_do(tmp_path):
    ready = ReadyFile(None)
    ready.check()
    assert ready.write("ready")
    ready.clear()
    assert list(tmp_path.iterdir()) == []
