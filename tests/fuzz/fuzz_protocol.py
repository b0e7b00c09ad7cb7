#!/usr/bin/env python3
"""Coverage-guided fuzzing of msc.protocol with atheris (libFuzzer for Python).

    python tests/fuzz/fuzz_protocol.py tests/fuzz/corpus -max_total_time=600   # make fuzz
    python tests/fuzz/fuzz_protocol.py tests/fuzz/corpus -runs=20000           # the short run in make test

Each input is split by the fuzzer into a byte stream and its chunking; the stream goes through
the Framer chunk by chunk, every frame's payload through every parser. The only exception
allowed out is our own ProtocolError carrying a code of PROTOCOL.md §6; anything else — a
stray ValueError, IndexError, UnicodeError, an unbounded buffer — is a crash the fuzzer reports.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from msc.protocol import ALL_CODES, Framer, ProtocolError
    from msc.protocol import message as m

PARSERS = (m.parse_input, m.parse_upstream, m.parse_pairs, m.parse_nak)
MAX_FRAME = 4096


def _check(exc: ProtocolError) -> None:
    if exc.code not in ALL_CODES:
        raise AssertionError(f"reject code {exc.code!r} is not in PROTOCOL.md §6")


def test_one(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 2)
    if mode == 0:
        # The bytes are a message payload: every parser, plus redaction of its text.
        payload = fdp.ConsumeBytes(fdp.remaining_bytes())
        for parse in PARSERS:
            try:
                inp = parse(payload)
            except ProtocolError as exc:
                _check(exc)
                continue
            if parse is m.parse_input:
                inp.journal_text()
                inp.normalized("ABC123", "C0A8010A")
                if isinstance(inp.body, m.PasswordChange):
                    inp.body.candidates()
        m.redact(payload.decode("ascii", "replace"))
        return
    # The bytes are a stream: feed it in fuzzer-chosen chunks, parse every frame it yields.
    framer = Framer(max_frame=MAX_FRAME)
    while fdp.remaining_bytes():
        chunk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 512))
        try:
            frames = framer.feed(chunk)
        except ProtocolError as exc:
            _check(exc)
            return
        if framer.buffered > MAX_FRAME + 9:
            raise AssertionError(f"framer holds {framer.buffered} bytes for one frame")
        for f in frames:
            for parse in PARSERS:
                try:
                    parse(f.payload)
                except ProtocolError as exc:
                    _check(exc)
        if framer.failed is not None:
            _check(framer.failed)
            return


def main() -> None:
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
