"""`msc demo --port-offset N`: every port of the demo's msc.toml moves by N, nothing else changes."""

from __future__ import annotations

import tomllib
from importlib import resources

import pytest

from msc.cli.demo import shift_ports


@pytest.mark.parametrize("text, offset, expected", [
    ('bind = "127.0.0.1:7400"', 1000, 'bind = "127.0.0.1:8400"'),
    ('endpoints = ["127.0.0.1:7501", "127.0.0.1:7511"]', 5, 'endpoints = ["127.0.0.1:7506", "127.0.0.1:7516"]'),
    ('bind = "[::1]:9400"', 1, 'bind = "[::1]:9401"'),
    ('bind = "localhost:9400"', -1, 'bind = "localhost:9399"'),
    ('bind = "0.0.0.0:7400"', 10, 'bind = "0.0.0.0:7410"'),
    ('bind = "127.0.0.1:0"', 1000, 'bind = "127.0.0.1:0"'),            # any free port stays so
    ('# see 127.0.0.1:7400 in the docs', 1000, '# see 127.0.0.1:7400 in the docs'),  # not a quoted address
    ('name = "ICS1:7400"', 1000, 'name = "ICS1:7400"'),                # not a host
    ('banner = "call 555:1234"', 1000, 'banner = "call 555:1234"'),
])
def test_shift_ports(text, offset, expected):
    assert shift_ports(text, offset) == expected


@pytest.mark.parametrize("text, offset", [
    ('bind = "127.0.0.1:65000"', 1000),       # past 65535 (and its control port +100)
    ('bind = "127.0.0.1:7400"', -7400),       # to port 0 or below
    ('bind = "127.0.0.1:65435"', 1),          # its control port would be 65536
])
def test_shift_ports_refuses_ports_out_of_range(text, offset):
    with pytest.raises(ValueError):
        shift_ports(text, offset)


def test_the_packaged_demo_config_moves_every_address():
    text = resources.files("msc").joinpath("data/msc.toml").read_text()
    before, after = tomllib.loads(text), tomllib.loads(shift_ports(text, 20000))

    def addresses(doc):
        return ([ln["bind"] for ln in doc["listener"]] + [doc["metrics"]["bind"]]
                + [e for u in doc["upstream"] for e in u["endpoints"]])

    moved = [(a, b) for a, b in zip(addresses(before), addresses(after), strict=True)]
    assert moved and all(int(b.rsplit(":", 1)[1]) == int(a.rsplit(":", 1)[1]) + 20000 for a, b in moved)
    # Nothing but the addresses changed.
    assert {k: v for k, v in before.items() if k not in ("listener", "metrics", "upstream")} == \
        {k: v for k, v in after.items() if k not in ("listener", "metrics", "upstream")}


def test_port_in_use_names_what_is_taken_and_nothing_else():
    """`msc demo` checks every port before it starts anything (a second `make run` beside a
    running one is told which port is taken and how to run beside it, not left with a log)."""
    import socket

    from msc.cli.demo import port_in_use

    with socket.socket() as taken, socket.socket() as free:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        free.bind(("127.0.0.1", 0))
        free_port = free.getsockname()[1]
        free.close()  # bound once, now free again
        port = taken.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
        assert not port_in_use("127.0.0.1", free_port)


@pytest.mark.parametrize("offset", [0, 1000])
def test_demo_ports_are_every_port_a_new_demo_listens_on(offset):
    from msc.cli.demo import config_text, demo_ports

    got = {what: port for what, _host, port in demo_ports(config_text(None, offset))}
    assert got == {"terminal listener 1": 7400 + offset, "terminal listener 2": 7410 + offset,
                   "metrics endpoint": 9400 + offset, "web console": 8443 + offset,
                   "primary CLETS stub": 7501 + offset, "primary CLETS stub's control port": 7601 + offset,
                   "secondary CLETS stub": 7511 + offset, "secondary CLETS stub's control port": 7611 + offset}


@pytest.mark.parametrize("text, expected", [
    ('[[listener]]\nname = "t"\nbind = "127.0.0.1:0"', []),              # port 0: any free one
    ('[metrics]\nbind = "[::1]:9401"\n[[upstream]]\nname = "u"\nendpoints = ["[::1]:7501"]',
     [("metrics endpoint", "::1", 9401), ("primary CLETS stub", "::1", 7501),
      ("primary CLETS stub's control port", "::1", 7601)]),
])
def test_demo_ports_of_odd_configs(text, expected):
    from msc.cli.demo import demo_ports

    assert demo_ports(text) == expected


@pytest.mark.parametrize("text", ["not toml = = =", '[metrics]\nbind = "nonsense"'])
def test_demo_ports_of_unreadable_configs_raise_what_the_demo_reports(text):
    """`msc demo` turns these into one line naming its msc.toml (exit 2)."""
    from msc.cli.demo import demo_ports

    with pytest.raises((ValueError, KeyError, TypeError)):
        demo_ports(text)


# newcomer9: `msc demo --init-only --template T` appended `[web] bind = "127.0.0.1:8443"` whatever T's
# ports: the pair recipe's user (ports moved to 26xxx) had to edit it by hand — and a template with
# its own (uncommented) [web] got a second one, which is not TOML at all.
PACKAGED = resources.files("msc").joinpath("data/msc.toml").read_text()


@pytest.fixture
def ports_free_here(monkeypatch):
    """The tests that pin which port the web console gets (8443, 26401 …) do not depend on what
    else this machine listens on: every port is free to the bind test (newcomer trial F6's own
    tests hold a real socket)."""
    monkeypatch.setattr("msc.cli.demo.port_in_use", lambda host, port: False)


def _template(tmp_path, text: str) -> str:
    path = tmp_path / "pair.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.usefixtures("ports_free_here")
def test_a_templates_own_web_table_is_kept(tmp_path):
    from msc.cli.demo import config_text

    own = PACKAGED.replace('# [web]  ', '[web]    ', 1).replace('# bind = "127.0.0.1:8443"', 'bind = "127.0.0.2:26443"', 1)
    for line in ('# tls = { cert = "tls/web.crt"', '# listener = "web"', '# header = "ICSWEB"'):
        own = own.replace(line, line[2:], 1)
    assert tomllib.loads(own)["web"]["bind"] == "127.0.0.2:26443"  # the template is what this test means
    doc = tomllib.loads(config_text(_template(tmp_path, own)))
    assert doc["web"] == tomllib.loads(own)["web"]
    assert tomllib.loads(config_text(_template(tmp_path, own), 1000))["web"]["bind"] == "127.0.0.2:27443"  # --port-offset


def _web(tmp_path, text: str, offset: int = 0) -> str:
    from msc.cli.demo import config_text

    return tomllib.loads(config_text(_template(tmp_path, text), offset))["web"]["bind"]


def test_the_packaged_demo_keeps_8443():
    from msc.cli.demo import config_text

    assert tomllib.loads(config_text(None))["web"]["bind"] == "127.0.0.1:8443"
    assert tomllib.loads(config_text(None, 1000))["web"]["bind"] == "127.0.0.1:9443"  # --port-offset


@pytest.mark.usefixtures("ports_free_here")
def test_a_templates_web_console_is_added_in_its_span_at_its_web_listeners_host(tmp_path):
    """No [web] in the template: the one added binds where the template's web listener does; 8443
    is outside this template's span (its lowest to its highest port: 26400-28400), so on the
    lowest port of the span that it does not use."""
    moved = shift_ports(PACKAGED, 19000).replace('"127.0.0.1:26410"', '"127.0.0.2:26410"')  # the web listener
    doc = tomllib.loads(config_text_of(tmp_path, moved))
    assert doc["web"]["bind"] == "127.0.0.2:26401"  # 26400 is the terminals' listener
    assert doc["web"]["listener"] == "web" and doc["web"]["tls"] == {"cert": "tls/web.crt", "key": "tls/web.key"}
    assert _web(tmp_path, moved, 1000) == "127.0.0.2:27401"  # then moved with every port by --port-offset


@pytest.mark.usefixtures("ports_free_here")
def test_the_packaged_file_as_a_template_gets_8443_as_the_docs_show(tmp_path):
    """The pair recipe copies config/msc.toml (no [web]; ports 7400-9400): 8443 is free and inside
    its span, so its console is where README and the docs show the demo's — 8443, + N with
    --port-offset N — not on 7401."""
    assert _web(tmp_path, PACKAGED) == "127.0.0.1:8443"
    assert _web(tmp_path, PACKAGED, 1000) == "127.0.0.1:9443"


def config_text_of(tmp_path, text: str) -> str:
    from msc.cli.demo import config_text

    return config_text(_template(tmp_path, text))


def _ports(listeners=(), metrics=None, upstream=(), extra="") -> str:
    text = "".join(f'[[listener]]\nname = "l{i}"\nbind = "127.0.0.1:{p}"\n' for i, p in enumerate(listeners))
    if metrics:
        text += f'[metrics]\nbind = "127.0.0.1:{metrics}"\n'
    if upstream:
        text += '[[upstream]]\nname = "clets"\nendpoints = [' + ", ".join(f'"127.0.0.1:{p}"' for p in upstream) + "]\n"
    return text + extra


# newcomer's trial (issue 16, N4): 8443 moved by the first listener's distance from 7400 fell
# outside the template's range, or on one of its ports. The rule: 8443 when the template does not
# use it and it is inside its span; else the lowest free port of the span; else the first above.
@pytest.mark.parametrize(("template", "port"), [
    # 8443 free and inside the span (8000-9000): 8443
    (_ports([8000, 8010], 9000), 8443),
    # 8443 inside the span but the template's: the lowest free port of the span
    (_ports([8400, 8443], 8500), 8401),
    (_ports([8400, 8401], 8500, [8443]), 8402),  # an upstream endpoint (a stub's port)
    (_ports([8300, 8301], 8500, [8343]), 8302),  # a stub's control port (8343 + 100)
    (_ports([8400, 8401], 8500, extra='[storage]\nbackend = "postgresql"\n'
                                       'dsn = "postgresql://msc@127.0.0.1:8443/msc"\n'), 8402),  # its database
    # 8443 outside the span: the lowest free port of the span
    # ports moved unevenly: 8443 + 10000 = 18443 is the metrics port
    (_ports([17400, 17410], 18443, [17501, 17511]), 17401),
    # a block 20000-20004 (the stubs' control ports 20103-20104): 8443 + 20000 - 7400 is outside it
    (_ports([20000, 20001], 20002, [20003, 20004]), 20005),
    # every port of the span taken: the first above it
    (_ports([30000, 30002], 30001), 30003),
    (_ports([8442, 8443], 8444), 8445),  # 8443 inside it, but taken
    # the lowest free one, not the first gap after the listeners
    (_ports([7400, 7402], 7401, [7403]), 7404),
    # a single listener: no span, the next port
    (_ports([5000]), 5001),
    # the database's port is avoided too
    (_ports([16430, 16433], extra='[storage]\nbackend = "postgresql"\n'
                                  'dsn = "postgresql://msc@127.0.0.1:16431,db2:16432/msc"\n'), 16434),
])
@pytest.mark.usefixtures("ports_free_here")
def test_the_web_console_added_to_a_template_avoids_its_ports(tmp_path, template, port):
    from msc.cli.demo import CONTROL_PORT_DISTANCE, demo_ports

    bind = _web(tmp_path, template)
    assert bind == f"127.0.0.1:{port}"
    doc = tomllib.loads(template)
    used = {int(a.rsplit(":", 1)[1]) for a in [*(ln["bind"] for ln in doc.get("listener", [])),
                                                   *([doc["metrics"]["bind"]] if "metrics" in doc else []),
                                                   *(e for u in doc.get("upstream", []) for e in u["endpoints"])]}
    used |= {p + CONTROL_PORT_DISTANCE for u in doc.get("upstream", []) for p in
             (int(e.rsplit(":", 1)[1]) for e in u["endpoints"])}
    assert port not in used
    ports = [p for what, _h, p in demo_ports(config_text_of(tmp_path, template)) if what == "web console"]
    assert ports == [port]


# -- newcomer trial F6: `msc demo --init-only --template T` printed a [web] port another program --
# -- held on this machine; the next start refused it, with advice that dropped T and the directory --

@pytest.fixture
def held():
    """A real listening socket on 127.0.0.1 (another program's), and its port."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("offset", [0, 1000])
def test_the_web_console_added_to_a_template_skips_a_port_this_machine_cannot_bind(tmp_path, held, offset):
    """The template's span P-1 … P+2 leaves P (the lowest port it does not use) to the web console,
    but another program listens on it (at its --port-offset place: P + N taken, the template's
    P - N): the console goes to a port the machine can bind now."""
    from msc.cli.demo import port_in_use

    p = held - offset
    template = _ports([p - 1, p + 1], p + 2)
    bind = _web(tmp_path, template, offset)
    host, port = bind.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) != held, bind
    assert int(port) - offset not in (p - 1, p + 1, p + 2)  # none of the template's own
    assert not port_in_use("127.0.0.1", int(port))


def test_the_pair_recipes_template_skips_8443_when_another_program_holds_it(tmp_path):
    """config/msc.toml as the template (OPERATIONS.md's pair recipe): 8443 when it is free; with
    8443 held on 127.0.0.1 by another program, the lowest port of the span this machine can bind."""
    import socket

    from msc.cli.demo import port_in_use

    with socket.socket() as sock:
        if not port_in_use("127.0.0.1", 8443):  # (held already by something else here: the same case)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 8443))
            sock.listen()
        bind = _web(tmp_path, PACKAGED)
        assert bind != "127.0.0.1:8443" and not port_in_use("127.0.0.1", int(bind.rsplit(":", 1)[1])), bind


@pytest.mark.parametrize(("dir_arg", "template", "beside", "says"), [
    # make run's own case: its DEMO_DIR, relative to the repository, no template
    ("var", None, False, "make run PORT_OFFSET=1000 (msc demo --dir var --port-offset 1000)"),
    ("var", None, True, "make run DEMO_DIR=var2 PORT_OFFSET=1000 (msc demo --dir var2 --port-offset 1000)"),
    ("demo/a", None, True, "make run DEMO_DIR=demo/a2 PORT_OFFSET=1000"),
    # an absolute directory or a template: the msc demo line, as the user ran it
    ("/srv/msc-try/a", "/srv/msc-try/pair.toml", False,
     "msc demo --dir /srv/msc-try/a --template /srv/msc-try/pair.toml --port-offset 1000"),
    ("/srv/msc-try/a", None, False, "msc demo --dir /srv/msc-try/a --port-offset 1000"),
    # beside an existing one: a new directory made from its own msc.toml (the template it came from)
    ("/srv/msc-try/a", None, True, "msc demo --dir /srv/msc-try/a2 --template /srv/msc-try/a/msc.toml --port-offset 1000"),
    ("/srv/msc-try/a", "/srv/msc-try/pair.toml", True,
     "msc demo --dir /srv/msc-try/a2 --template /srv/msc-try/a/msc.toml --port-offset 1000"),
])
def test_the_advice_to_move_keeps_the_users_directory_and_template(dir_arg, template, beside, says):
    from pathlib import Path

    from msc.cli.demo import move_command

    got = move_command(dir_arg, template, Path(dir_arg).resolve(), beside=beside)
    assert got == says if says.startswith("msc") or "(" in says else says in got, got
    if template is not None or dir_arg.startswith("/"):
        assert "make run" not in got
