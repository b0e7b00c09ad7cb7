"""A station disabled or enabled outside the switch (:func:`msc.actions.directory.set_station_status`,
PPP §1.9.1: a stolen terminal, at once). Through the running switch when it answers; written to the
run-time state directly only when nobody is at the control socket *and* no ``msc serve`` of the
node holds ``data_dir/serve.lock``. Before (newcomer trial nc20 #1): a switch that took the request
and did not answer in time (``state.db`` locked) was taken for no switch at all — the change was
written to ``state.db`` behind it, reported done, journaled, and never enforced: the "disabled"
station logged on again."""

from __future__ import annotations

import os

import pytest

from msc.actions import directory
from msc.actions.directory import ActionUnavailable
from msc.actions.journaling import DaemonNoAnswer, DaemonUnavailable
from msc.config.load import load
from msc.instance import claim_node
from msc.storage.backends import Backends
from tests.conftest import make_config


@pytest.fixture
def settings(tmp_path):
    return load(make_config(tmp_path))


@pytest.fixture
def recorded(monkeypatch):
    texts: list[str] = []
    monkeypatch.setattr(directory, "record_admin", lambda settings, text, user=None: texts.append(text) or [1])
    return texts


def control_raising(monkeypatch, exc):
    def control(settings, request, timeout=10.0):
        raise exc

    monkeypatch.setattr(directory, "control", control)


def disabled(settings) -> set[str]:
    store = Backends(settings).runtime_state()
    try:
        return store.disabled_stations()
    finally:
        store.close()


def test_a_switch_that_took_the_request_and_did_not_answer_is_not_written_behind(settings, monkeypatch, recorded):
    control_raising(monkeypatch, DaemonNoAnswer("timed out"))
    with pytest.raises(ActionUnavailable, match="may or may not be disabled"):
        directory.set_station_status(settings, "AD0001", "ICS1", disabled=True)
    assert "ICS1" not in disabled(settings)
    assert recorded == []  # nothing journaled as done


def test_with_nobody_at_the_socket_but_a_serve_holding_the_node_nothing_is_written(settings, monkeypatch,
                                                                                      recorded):
    control_raising(monkeypatch, DaemonUnavailable("connection refused"))
    fd = claim_node(settings.data_dir)  # an msc serve starting or stopping
    try:
        with pytest.raises(ActionUnavailable, match="nothing was changed"):
            directory.set_station_status(settings, "AD0001", "ICS1", disabled=True)
    finally:
        os.close(fd)
    assert "ICS1" not in disabled(settings)
    assert recorded == []


def test_with_no_switch_at_all_it_is_written_where_the_next_start_reads_it(settings, monkeypatch, recorded):
    control_raising(monkeypatch, DaemonUnavailable("connection refused"))
    assert directory.set_station_status(settings, "AD0001", "ICS1", disabled=True) is False
    assert "ICS1" in disabled(settings)
    assert recorded == ["STATION DISABLE ICS1"]


def test_a_locked_state_db_is_one_line_from_the_msc_command_not_a_traceback(tmp_path, monkeypatch, capsys):
    """Newcomer trial nc20 #2: ``msc station disable … --as`` with ``state.db`` locked printed a
    Python traceback (``sqlite3.OperationalError: database is locked`` from the logon's attempt
    counter); the docs promise one ``error:`` line."""
    import sqlite3

    from msc.cli import main as cli

    # ``msc`` configures the process's logging for a command: not this test process's, which later
    # tests read (test_demo_advice.py's logging_untouched).
    monkeypatch.setattr("msc.ops.logging.configure", lambda **kw: None)

    def locked(args):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(cli, "cmd_config_check", locked)
    assert cli.main(["config", "check", "--config", str(make_config(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: run-time state (state.db) unavailable") and "database is locked" in err
    assert "Traceback" not in err and err.count("\n") == 1
