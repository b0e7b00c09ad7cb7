"""`msc demo`'s run lock, DIR/.demo.lock (newcomer8: `msc demo --init-only --dir a` left it, and
the pair recipe's `cp -a a b` copied it): held while a demo runs, gone when it ends, and never
held by two demos at once — also when one opens it just as the holder removes it."""

from __future__ import annotations

import builtins
import os

import pytest

from msc.cli import demo


def test_the_lock_is_held_while_a_demo_runs_and_gone_after_it(tmp_path, capsys):
    held = demo._lock(tmp_path)
    assert held is not None
    assert (tmp_path / demo.LOCK_NAME).read_text() == f"{os.getpid()}\n"
    assert demo._lock(tmp_path) is None  # a second demo on the directory
    assert f"a demo is already running in {tmp_path} (pid {os.getpid()})" in capsys.readouterr().err
    demo._unlock(tmp_path, held)
    assert not (tmp_path / demo.LOCK_NAME).exists()
    again = demo._lock(tmp_path)  # the next demo on the directory
    assert again is not None
    demo._unlock(tmp_path, again)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("left", ["", "12345\n"], ids=["empty", "pid-of-a-killed-demo"])
def test_a_lock_file_left_by_a_killed_demo_or_an_older_msc_is_taken_and_removed(tmp_path, left):
    (tmp_path / demo.LOCK_NAME).write_text(left)  # kill -9: nobody holds it any more
    held = demo._lock(tmp_path)
    assert held is not None and (tmp_path / demo.LOCK_NAME).read_text() == f"{os.getpid()}\n"
    demo._unlock(tmp_path, held)
    assert not (tmp_path / demo.LOCK_NAME).exists()


@pytest.mark.parametrize("when", ["removed", "removed-and-taken"])
def test_a_demo_that_opened_the_lock_as_its_holder_removed_it_does_not_hold_a_removed_file(tmp_path, monkeypatch,
                                                                                          when):
    path = tmp_path / demo.LOCK_NAME
    first = demo._lock(tmp_path)
    assert first is not None
    stale = open(path, "a+")  # the next demo opened the name just before the first removed it
    demo._unlock(tmp_path, first)
    other = demo._lock(tmp_path) if when == "removed-and-taken" else None  # a third demo took the name
    handed = []

    def opening(*a, **kw):
        if not handed:
            handed.append(stale)
            return stale
        return builtins.open(*a, **kw)

    monkeypatch.setattr(demo, "open", opening, raising=False)
    mine = demo._lock(tmp_path)
    assert handed == [stale] and stale.closed  # the removed file was let go
    if other is not None:
        assert mine is None  # the third demo holds the directory: one holder, not two
        demo._unlock(tmp_path, other)
    else:
        assert mine is not None and os.path.samestat(os.fstat(mine.fileno()), os.stat(path))
        demo._unlock(tmp_path, mine)
    assert not path.exists()
