"""A listener with ``proxy_protocol = true`` through the real Switch and stub: the client a trusted
relay names is the session's peer (TAF, station and pool binding); anyone else, and any header
that is not exactly right, is closed before the banner."""

from __future__ import annotations

import asyncio

import pytest

from msc.journal.search import Query, search
from msc.protocol.proxy import format_v1, format_v2
from tests.conftest import PASSWORD, eventually
from tests.wire import WireClient

PROXY_LISTENER = """
[[listener]]
name = "relay"
bind = "127.0.0.1:0"
read_timeout_s = {timeout}
proxy_protocol = true
trusted_proxies = [{trusted}]
"""

CERT_STATION = """
[[station]]
mnemonic = "ICS7"
kind = "terminal"
ori = "CA0130000"
serves = ["CA0130000"]
client_cert_cn = "DESK7"
authorizations = ["cjis"]
"""


async def start(harness, trusted='"127.0.0.1"', timeout=1.0, extra=""):
    await harness.start_stub()
    sw = await harness.start_switch(extra=PROXY_LISTENER.format(trusted=trusted, timeout=timeout) + extra)
    await harness.wait_upstream()
    return sw, sw.listener_ports()["relay"]


async def relay_client(port: int, header: bytes) -> WireClient:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(header)
    return WireClient(r, w)


def refused(sw, reason: str) -> float:
    return sw.metrics.registry.get_sample_value("msc_proxy_refused_total", {"reason": reason}) or 0.0


async def test_named_client_is_the_peer_for_taf_and_station_binding(harness):
    sw, port = await start(harness)
    # ICS9 admits only 10.9.9.9: the relay's own address (127.0.0.1) could not claim it.
    c = await relay_client(port, format_v1(("10.9.9.9", 51000), ("127.0.0.1", port)))
    await c.banner()
    f = await c.logon("ICS9", "TS0001", PASSWORD)
    assert f.type == "A", f.text
    a = await c.send("ICS9A1.QW.CA0130000.NAM/SMITH, JOHN.DOB/19800101")
    assert a.type == "A", a.text
    await c.output()
    await eventually(lambda: any("#0A090909." in line for line in harness.stub_log()))
    await sw.journal.flush()
    recs = list(search(sw.settings.journal_dir, sw.journal.keyring, Query(mnemonic="ICS9", kind="FORWARDED")))
    assert recs and recs[0].taf == "0A090909"
    c.close()


async def test_named_client_cannot_claim_a_station_of_the_relays_address(harness):
    sw, port = await start(harness)
    c = await relay_client(port, format_v1(("10.9.9.9", 51000), ("127.0.0.1", port)))
    await c.banner()
    f = await c.logon("ICS1", "TS0001", PASSWORD)  # ICS1 admits 127.0.0.1 only
    assert f.type == "N" and f.code == "E210"
    c.close()


async def test_v2_header_with_a_verified_certificate_cn_binds_a_certificate_station(harness):
    sw, port = await start(harness, extra=CERT_STATION)
    c = await relay_client(port, format_v2(("192.0.2.44", 40000), ("127.0.0.1", port), ssl_cn="DESK7", crc=True))
    await c.banner()
    assert (await c.logon("ICS7", "TS0001", PASSWORD)).type == "A"
    c.close()
    c = await relay_client(port, format_v2(("192.0.2.44", 40000), ("127.0.0.1", port), ssl_cn="OTHER"))
    await c.banner()
    assert (await c.logon("ICS7", "TS0001", PASSWORD)).code == "E210"
    c.close()


async def test_header_and_first_frames_in_one_segment(harness):
    sw, port = await start(harness)
    from tests.wire import frame

    # The banner's acknowledgement may come in the same write as the header.
    c = await relay_client(port, format_v1(("10.9.9.9", 1), ("127.0.0.1", port)) + frame("A", 0))
    await c.banner(ack=False)
    assert (await c.logon("ICS9", "TS0001", PASSWORD)).type == "A"
    c.close()


async def test_local_header_uses_the_relays_own_address(harness):
    sw, port = await start(harness)
    c = await relay_client(port, format_v2(None, None))
    await c.banner()
    assert (await c.logon("ICS1", "TS0001", PASSWORD)).type == "A"  # 127.0.0.1, the relay itself
    c.close()


async def test_untrusted_peer_closed_before_the_banner(harness):
    sw, port = await start(harness, trusted='"10.0.0.0/8", "::2"')
    c = await relay_client(port, format_v1(("127.0.0.1", 1), ("127.0.0.1", port)))
    await c.wait_closed()
    assert c.received == []  # not even the banner
    assert refused(sw, "untrusted") == 1


MALFORMED = [
    b"PROXY TCP4 10.9.9.9 127.0.0.1 1\r\n",
    b"PROXY TCP4 10.9.9.09 127.0.0.1 1 2\r\n",
    b"PROXY TCP6 10.9.9.9 127.0.0.1 1 2\r\n",
    b"PROXY TCP4 10.9.9.9 127.0.0.1 1 2\n",
    b"PROXY TCP4 " + b"9" * 120,
    b"\x00\x00\x00\x0dM\x00\x00\x00\x01ICS1.LOGOFF",  # a client that skipped the header
    b"\r\n\r\n\x00\r\nQUIT\n\x21\x12\x00\x0c" + b"\x00" * 12,  # v2 over UDP
    b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0b" + b"\x00" * 11,  # v2 address block short
]


@pytest.mark.parametrize("header", MALFORMED)
async def test_malformed_header_closed_before_the_banner(harness, header):
    sw, port = await start(harness)
    c = await relay_client(port, header)
    await c.wait_closed()
    assert c.received == []
    assert refused(sw, "header") == 1


async def test_incomplete_header_times_out(harness):
    sw, port = await start(harness, timeout=0.3)
    c = await relay_client(port, b"PROXY TCP4 10.9")
    await c.wait_closed()
    assert c.received == []
    assert refused(sw, "timeout") == 1


async def test_plain_listener_takes_no_header(harness):
    # The ordinary listener never reads a PROXY header: one is a framing error there.
    sw, _port = await start(harness)
    c = await relay_client(harness.port, format_v1(("10.9.9.9", 1), ("127.0.0.1", 1)))
    await c.wait_closed()
    assert c.received[0].text.startswith("SYS.BANNER")
    assert any(f.type == "N" and f.code == "E101" for f in c.received)
