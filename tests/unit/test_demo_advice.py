"""What `msc demo` tells the user to run (newcomer trial F5), and a file argument that cannot be
read (F4): the commands are runnable from any directory — plain `msc` when that is on PATH and is
the running one, else its absolute path — with the config's absolute path; a web console moved
off 8443 because another program listens there is said; a missing --template, --ca … is one line
naming the file and exit 2, never a traceback."""

from __future__ import annotations

import os
import sys
import tomllib
from importlib import resources

import pytest

from msc.cli import demo
from msc.cli.main import main

PACKAGED = resources.files("msc").joinpath("data/msc.toml").read_text()


def test_msc_on_path_and_the_running_one_is_said_as_msc(tmp_path, monkeypatch):
    exe = tmp_path / "bin" / "msc"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(exe.parent))
    monkeypatch.chdir(tmp_path)
    assert demo.msc_command("bin/msc") == "msc"


def test_a_relative_msc_not_on_path_is_said_by_its_absolute_path(tmp_path, monkeypatch):
    exe = tmp_path / "venv" / "bin" / "msc"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.chdir(tmp_path)
    assert demo.msc_command("venv/bin/msc") == str(exe)


def test_another_msc_on_path_is_not_taken_for_the_running_one(tmp_path, monkeypatch):
    other = tmp_path / "other" / "msc"
    other.parent.mkdir()
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    mine = tmp_path / "mine" / "msc"
    mine.parent.mkdir()
    mine.write_text("#!/bin/sh\n")
    monkeypatch.setenv("PATH", str(other.parent))
    assert demo.msc_command(str(mine)) == str(mine)


def test_python_dash_m_msc_is_said_with_the_interpreters_absolute_path():
    assert demo.msc_command(os.path.join(os.path.dirname(demo.__file__), "..", "__main__.py")) == (
        f"{os.path.abspath(sys.executable)} -m msc")


def test_init_only_prints_absolute_runnable_commands(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo, "msc_command", lambda: "/opt/msc/bin/msc")
    monkeypatch.setattr(demo, "port_in_use", lambda host, port: False)
    demo.init(demo.Path("rel"), None)  # a relative --dir: the paths printed are absolute all the same
    out = capsys.readouterr().out
    cfg = tmp_path / "rel" / "msc.toml"
    assert f"  /opt/msc/bin/msc user list --config {cfg}\n" in out, out
    assert f"  /opt/msc/bin/msc journal verify --config {cfg} --as ADM001\n" in out, out
    assert f"([web] bind in {cfg})." in out, out
    assert ".venv/bin/msc" not in out
    assert "is in use" not in out


def _template(tmp_path) -> str:
    path = tmp_path / "pair.toml"
    path.write_text(PACKAGED.replace('"127.0.0.1:7400"', '"127.0.0.1:8000"', 1))  # 8443 inside its span
    return str(path)


@pytest.mark.parametrize("offset", [0, 1000])
def test_a_web_console_moved_off_8443_because_it_is_busy_is_said(tmp_path, monkeypatch, offset):
    busy = 8443 + offset
    monkeypatch.setattr(demo, "port_in_use", lambda host, port: port == busy)
    text = demo.config_text(_template(tmp_path), offset)
    bind = tomllib.loads(text)["web"]["bind"]
    assert bind != f"127.0.0.1:{busy}"
    assert demo.web_port_moved(text, offset) == (
        f"note: port {busy} is in use on 127.0.0.1 (another program listens there): the web console's "
        f"[web] bind is {bind} instead.")


def test_nothing_is_said_when_8443_is_free_or_the_web_table_is_the_templates(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "port_in_use", lambda host, port: False)
    assert demo.web_port_moved(demo.config_text(_template(tmp_path))) is None
    monkeypatch.setattr(demo, "port_in_use", lambda host, port: True)
    own = '[web]\nbind = "127.0.0.1:9000"\n'
    assert demo.web_port_moved(own) is None


@pytest.fixture
def logging_untouched(monkeypatch):
    """``msc`` configures the process's logging for a command (warnings as JSON on stderr): not
    this test process's, which later tests read."""
    monkeypatch.setattr("msc.ops.logging.configure", lambda **kw: None)


@pytest.mark.parametrize("argv", [
    ["demo", "--init-only", "--dir", "{tmp}/d", "--template", "/no/such/file.toml"],
    ["terminal", "--connect", "127.0.0.1:9", "--header", "ICS1", "--tls", "--ca", "/no/such/file.toml"],
    ["terminal", "--connect", "127.0.0.1:9", "--header", "ICS1", "--tls", "--cert", "/no/such/file.toml",
     "--key", "/no/such/file.toml"],
], ids=["demo-template", "terminal-ca", "terminal-cert"])
@pytest.mark.usefixtures("logging_untouched")
def test_a_file_argument_that_cannot_be_read_is_one_line_and_exit_2(tmp_path, capsys, argv):
    status = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err == "error: /no/such/file.toml: No such file or directory\n"
    assert not (tmp_path / "d").exists()  # the demo made nothing


@pytest.mark.usefixtures("logging_untouched")
def test_an_unreadable_template_is_named_too(tmp_path, capsys):
    status = main(["demo", "--init-only", "--dir", str(tmp_path / "d"), "--template", str(tmp_path)])
    assert status == 2
    assert capsys.readouterr().err == f"error: {tmp_path}: Is a directory\n"
