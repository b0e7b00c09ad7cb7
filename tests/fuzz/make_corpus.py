#!/usr/bin/env python3
"""Write the seed corpus for fuzz_protocol.py: every message shape, as a payload and as a stream.

The first byte of a seed selects the harness mode (0 payload, 1 stream). Fuzz runs write what
they discover to a separate working directory; the seeds here stay small and reviewed.
"""

import struct
from pathlib import Path

MESSAGES = [
    b"ICS1.LOGON.JD1234.-.correct horse", b"ICS1A1.LOGON.JD1234.123456.pa.ss word", b"ICS1.LOGOFF", b"ECP1.BIND",
    b"ICS1.PWD.old pass.new.pass", b"ICS1.QW.CA0130000.NAM/SMITH, JOHN.DOB/19800101",
    b"ECC2X1.*EC0001.#C0A8010A.QW.CA0130100.NAM/DOE, JOHN", b"ICS1.#C0A8010A.DQ.CA0130000.OLN/D1234567",
    b"ICS1.QH.CA0130000.NAM/X.PUR/C.ATN/DET HOLMES.REL/DA", b"ICS1.AM.CA0130000.APB,ICS2,CA0190000.TXT BOLO.\r\nARMED.",
    b"ICS1.AM.CA0130000.ICS2.TXT/HELLO", b"ICS1A1.QW.CA0130000.NO NCIC WANT.NAM/SMITH, JOHN\r\nLINE 2",
    b"MNE/ICS1.USR/JD1234", b"E204 MNEMONIC NOT AUTHORIZED FOR CORI", b"SYS.BANNER.NOTICE", b"CA0130000.YQ.CA0130000.NAM/X",
]


def frame(t: str, xid: int, p: bytes = b"") -> bytes:
    return struct.pack(">IBI", len(p) + 5, ord(t), xid) + p


def main() -> None:
    d = Path(__file__).with_name("corpus")
    d.mkdir(exist_ok=True)
    for i, p in enumerate(MESSAGES):
        (d / f"payload-{i:02d}").write_bytes(b"\x00" + p)
        (d / f"stream-{i:02d}").write_bytes(b"\x01" + frame("M", i + 1, p) + frame("A", 0) + frame("H", 7)
                                            + frame("N", 3, b"E101 X"))


if __name__ == "__main__":
    main()
