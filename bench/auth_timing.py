#!/usr/bin/env python3
"""How long each kind of LOGON refusal takes, through the real ``msc serve`` (issue 13 item 2).

The issue found that a wrong password for a ``msc demo`` user took 48 ms and an unknown user
106 ms — user IDs could be found by timing. This creates a fresh demo (``msc demo --init-only``),
serves it on free loopback ports, and times, round-robin so that drift hits every kind alike:

* ``ok``        — the right password (for reference; a success may cost a re-hash once);
* ``wrong``     — a known user, a wrong password (the same user's right logon in each round keeps it
  unlocked);
* ``unknown``   — a user ID that does not exist;
* ``disabled``  — a disabled user with the right password;
* ``locked``    — a locked user (five wrong first) with the right password.

It speaks the wire protocol itself (PROTOCOL.md §1), so it runs against any version of msc on
``PYTHONPATH`` — that is how the "before" figures were taken. Writes
``bench/results/auth-timing-<stamp>.json`` and prints a table.

    python bench/auth_timing.py [--rounds 40] [--direct]
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAD = struct.Struct(">IBI")
RESULTS = Path(__file__).resolve().parent / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Wire:
    def __init__(self, port: int) -> None:
        self.s = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""
        t, xid, payload = self.frame()
        assert t == "M" and payload.startswith(b"SYS.BANNER."), payload
        self.send("A", xid)

    def send(self, t: str, xid: int, payload: bytes = b"") -> None:
        self.s.sendall(HEAD.pack(len(payload) + 5, ord(t), xid) + payload)

    def frame(self) -> tuple[str, int, bytes]:
        while True:
            if len(self.buf) >= 9:
                length, t, xid = HEAD.unpack_from(self.buf)
                if len(self.buf) >= 4 + length:
                    f = chr(t), xid, self.buf[9:4 + length]
                    self.buf = self.buf[4 + length:]
                    return f
            data = self.s.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.buf += data

    def logon(self, user: str, password: str) -> tuple[float, bytes]:
        payload = f"ICS1.LOGON.{user}.-.{password}".encode()
        t0 = time.perf_counter()
        self.send("M", 1, payload)
        while True:
            t, xid, p = self.frame()
            if t in "AN" and xid == 1:
                return time.perf_counter() - t0, (t.encode() + b" " + p)
            if t == "H":
                self.send("H", xid)

    def close(self) -> None:
        self.s.close()


def direct(rounds: int) -> int:
    """The service alone (no sockets, no journal): AuthService.authenticate per kind, real scrypt
    at the production cost, the real state store — the refusal paths' own cost."""
    from msc.mnemonics import passwords
    from msc.mnemonics.auth import AuthService
    from msc.mnemonics.state import StateStore

    class Acct:
        def __init__(self, uid, active=True):
            self.id, self.role, self.totp, self.active = uid, "full", None, active
            self.password_hash = passwords.hash_password("the right passphrase")

    accounts = {"OK0001": Acct("OK0001"), "WR0001": Acct("WR0001"), "DS0001": Acct("DS0001", active=False),
                "LK0001": Acct("LK0001")}
    with tempfile.TemporaryDirectory() as tmp:
        store = StateStore(Path(tmp) / "state.db")
        svc = AuthService(accounts=accounts.get, store=store, open_totp=lambda a: b"", cost=passwords.LN)
        for _ in range(5):
            svc.authenticate("LK0001", "wrong", None)
        cases = {"ok": ("OK0001", "the right passphrase"), "wrong": ("WR0001", "wrong"),
                 "unknown": ("ZZ9999", "wrong"), "disabled": ("DS0001", "the right passphrase"),
                 "locked": ("LK0001", "the right passphrase")}
        times: dict[str, list[float]] = {k: [] for k in cases}
        for r in range(rounds):
            for kind, (uid, pw) in cases.items():
                t0 = time.perf_counter()
                svc.authenticate(uid, pw, None)
                if r:
                    times[kind].append((time.perf_counter() - t0) * 1000)
            svc.authenticate("WR0001", "the right passphrase", None)  # keep "wrong" unlocked
        store.close()
    print(f"AuthService.authenticate, scrypt ln={passwords.LN}, {rounds - 1} rounds")
    rows = {}
    for k, v in times.items():
        q = statistics.quantiles(v, n=10)
        rows[k] = {"median_ms": round(statistics.median(v), 1), "p10_ms": round(q[0], 1), "p90_ms": round(q[-1], 1)}
        print(f"{k:<10} {rows[k]['median_ms']:>6.1f}ms {rows[k]['p10_ms']:>6.1f}ms {rows[k]['p90_ms']:>6.1f}ms")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"auth-timing-direct-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"rounds": rounds, "cases": rows, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
                               indent=1) + "\n")
    print(f"written to {path}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--direct", action="store_true", help="time the authentication service alone, in process")
    args = ap.parse_args()
    if args.direct:
        return direct(args.rounds)
    exe = [sys.executable, "-m", "msc"]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "var"
        out = subprocess.run([*exe, "demo", "--dir", str(d), "--init-only"], capture_output=True, text=True, check=True)
        pw = dict(re.findall(r"^\s+([A-Z0-9]{6})\s.*password: (\S+)", out.stdout, re.M))
        cfg = d / "msc.toml"
        port, mport = free_port(), free_port()
        cfg.write_text(cfg.read_text().replace("127.0.0.1:7400", f"127.0.0.1:{port}")
                       .replace("127.0.0.1:9400", f"127.0.0.1:{mport}"))
        users = (d / "users.toml")
        # RS5678 disabled by hand (the same in every msc version).
        text = users.read_text()
        i = text.index('id = "RS5678"')
        j = text.find("[[user]]", i)
        j = len(text) if j < 0 else j
        users.write_text(text[:i] + text[i:j].replace('status = "active"', "") .rstrip() + '\nstatus = "disabled"\n\n'
                         + text[j:])
        costs = sorted(set(re.findall(r"\$scrypt\$ln=(\d+)", users.read_text())))
        ready = d / ".ready"
        log = open(d / "serve.err", "w")
        serve = subprocess.Popen([*exe, "serve", "--config", str(cfg), "--ready-file", str(ready)], stderr=log)
        try:
            deadline = time.monotonic() + 30
            while not ready.exists():
                if serve.poll() is not None or time.monotonic() > deadline:
                    print((d / "serve.err").read_text(), file=sys.stderr)
                    return 1
                time.sleep(0.05)
            for _ in range(5):  # lock EC0002
                w = Wire(port)
                w.logon("EC0002", "not the password at all")
                w.close()
            cases = {
                "ok": ("JD1234", pw["JD1234"]),
                "wrong": ("JD1234", "not the password at all"),  # the "ok" of each round resets its count
                "unknown": None,
                "disabled": ("RS5678", pw["RS5678"]),
                "locked": ("EC0002", pw["EC0002"]),
            }
            times: dict[str, list[float]] = {k: [] for k in cases}
            answers: dict[str, set[bytes]] = {k: set() for k in cases}
            for r in range(args.rounds):
                for kind, who in cases.items():
                    user, password = who if who else (f"ZZ{r:04d}", "not the password at all")
                    w = Wire(port)
                    dt, answer = w.logon(user, password)
                    w.close()
                    if r:  # the first round warms up (and re-hashes, for "ok")
                        times[kind].append(dt * 1000)
                    answers[kind].add(answer)

        finally:
            serve.terminate()
            serve.wait(30)
    rows = {k: {"median_ms": round(statistics.median(v), 1), "p10_ms": round(statistics.quantiles(v, n=10)[0], 1),
                "p90_ms": round(statistics.quantiles(v, n=10)[-1], 1), "n": len(v),
                "answers": sorted(a.decode() for a in answers[k])} for k, v in times.items()}
    import msc

    doc = {"msc": str(Path(msc.__file__).parent), "demo_hash_costs": costs, "rounds": args.rounds, "cases": rows,
           "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"auth-timing-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"msc from {doc['msc']}; demo hashes at scrypt ln={','.join(costs)}; {args.rounds - 1} rounds")
    print(f"{'case':<10} {'median':>8} {'p10':>8} {'p90':>8}  answers")
    for k, r in rows.items():
        print(f"{k:<10} {r['median_ms']:>6.1f}ms {r['p10_ms']:>6.1f}ms {r['p90_ms']:>6.1f}ms  {' | '.join(r['answers'])}")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
