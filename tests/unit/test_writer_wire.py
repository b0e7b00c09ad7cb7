"""The journal writer process's wire protocol: typed requests and replies (msgspec tagged unions).

Every request gets exactly one reply; a frame that is not a request (an unknown type, a field of
the wrong type, not msgpack at all, the untyped arrays of older versions) gets ``Failed`` and the
child goes on serving — it never guesses, and never dies of a bad frame.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from msc.journal import writerproc as wp
from msc.journal.schema import Checkpoint, Row

ROW = Row("2026-11", (1, 1_700_000_000_000_000, "RECEIVED", "in", "T1", "T1", "TS0001", None, "CA0130000", "QW",
                      "X1", None, None, 7), b"sealed", [b"t" * 16])
CP = Checkpoint(3, b"r" * 32, 5, b"s" * 64, b"f" * 64)

REQUESTS = [wp.Open("/j", "full", b"k" * 32, "/j.hwm"), wp.Commit([ROW, ROW], True), wp.Commit([]),
            wp.CheckpointRequest("MSC", 12), wp.PurgePeriod("2023-10", 99), wp.DeletePartition("2023-10"),
            wp.Close()]
REPLIES = [wp.Opened(10, 11, 9, "abcd"), wp.Opened(0, 0, 0, None), wp.Committed(12, 13), wp.Signed(CP),
           wp.Signed(None), wp.Purged((1, 5)), wp.Purged(None), wp.Done(), wp.Failed("disk", 3, 4), wp.Busy("held")]


@pytest.mark.parametrize("msg", REQUESTS, ids=lambda m: type(m).__name__)
def test_every_request_survives_the_wire_as_itself(msg):
    assert wp.request_decoder.decode(msgspec.msgpack.encode(msg)) == msg


@pytest.mark.parametrize("msg", REPLIES, ids=lambda m: type(m).__name__)
def test_every_reply_survives_the_wire_as_itself(msg):
    assert wp.reply_decoder.decode(msgspec.msgpack.encode(msg)) == msg


BAD_FRAMES = {
    "unknown type": msgspec.msgpack.encode(["format_disk", "/"]),
    "row without its tokens": msgspec.msgpack.encode(["commit", [["2026-11", [1, 2], b"x"]], False]),
    "a reply sent as a request": msgspec.msgpack.encode(wp.Done()),
    "field of the wrong type": msgspec.msgpack.encode(["checkpoint", "MSC", "twelve"]),
    "missing field": msgspec.msgpack.encode(["purge_period", "2023-10"]),
    "row with a float in its values": msgspec.msgpack.encode(["commit", [["2026-11", [1.5], b"x", []]], False]),
    "not msgpack": b"\xc1\xc1\xc1",
    "empty": b"",
    "a map": msgspec.msgpack.encode({"op": "close"}),
}


@pytest.mark.parametrize("frame", list(BAD_FRAMES.values()), ids=list(BAD_FRAMES))
def test_a_frame_that_is_not_a_request_does_not_decode(frame):
    with pytest.raises((msgspec.ValidationError, msgspec.DecodeError)):
        wp.request_decoder.decode(frame)


class Child:
    """``python -m msc.journal.writerproc FD`` as the switch starts it, spoken to frame by frame."""

    def __init__(self) -> None:
        self.sock, child = socket.socketpair()
        self.proc = subprocess.Popen([sys.executable, "-m", "msc.journal.writerproc", str(child.fileno())],
                                     pass_fds=(child.fileno(),), start_new_session=True)
        child.close()
        self.sock.settimeout(30)
        self.f = self.sock.makefile("rb")

    def ask(self, frame: bytes):
        self.sock.sendall(struct.pack(">I", len(frame)) + frame)
        (size,) = struct.unpack(">I", self.f.read(4))
        return wp.reply_decoder.decode(self.f.read(size))


def test_the_writer_process_answers_every_bad_frame_and_goes_on_serving(tmp_path):
    seed = Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                                      serialization.NoEncryption())
    child = Child()
    try:
        assert isinstance(child.ask(msgspec.msgpack.encode(wp.Commit([ROW]))), wp.Failed)  # not open yet
        opened = child.ask(msgspec.msgpack.encode(wp.Open(str(tmp_path / "j"), "full", seed, str(tmp_path / "j.hwm"))))
        assert isinstance(opened, wp.Opened) and opened.last_seq == 0
        for name, frame in BAD_FRAMES.items():
            reply = child.ask(frame)
            assert isinstance(reply, wp.Failed), (name, reply)
            assert reply.last_seq == 0
        assert child.ask(msgspec.msgpack.encode(wp.Commit([ROW]))) == wp.Committed(1, ROW.values[1])
        failed = child.ask(msgspec.msgpack.encode(wp.Commit([ROW])))  # seq 1 again: refused, says where it ends
        assert isinstance(failed, wp.Failed) and (failed.last_seq, failed.last_ts) == (1, ROW.values[1])
        signed = child.ask(msgspec.msgpack.encode(wp.CheckpointRequest("MSC", 5)))
        assert isinstance(signed, wp.Signed) and signed.checkpoint.tree_size == 1
        assert child.ask(msgspec.msgpack.encode(wp.Close())) == wp.Done()
        assert child.proc.wait(30) == 0
    finally:
        child.sock.close()
        if child.proc.poll() is None:
            child.proc.kill()
            child.proc.wait()
