"""Background verification of the journal (JOURNAL.md "Background verification").

The start-up self-check reads the newest records; everything older is re-verified here, all the
time, while the switch runs: a child process (``python -m msc.journal.watch``) at the lowest CPU
priority walks the journal with :class:`msc.journal.verify.Verifier` — every record, tag, leaf,
signed checkpoint and purge proof, exactly what ``msc journal verify`` checks — a slice at a time,
then keeps following the records the switch appends, and starts a new pass from record 1 every
``verify_interval_s`` seconds (if the previous pass has finished).

Bounded cost: slices of :data:`SLICE` records; after each, it sleeps so that it uses at most
:data:`CPU_SHARE` of one core (and, at nice 19, only CPU nobody else wants). It only reads: the
records through read-only connections that hold no transaction between slices, the key ring
(it reads the master key file, as the switch does).

It reports to the switch one JSON object per line on stdout::

    {"event": "progress", "pass": 1, "verified": 120000}
    {"event": "pass_ok", "pass": 1, "records": 1000000, "seconds": 41.2}
    {"event": "failed", "pass": 2, "first_bad": 1234, "reason": "…"}

and the switch raises ``msc_journal_verify_failures_total``, logs and journals each failure.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from msc.journal.verify import Verifier
from msc.keyring import KeyError_, KeyRing

if TYPE_CHECKING:
    from msc.journal.interfaces import JournalReader

SLICE = 2000  # records per slice (~20 ms of CPU)
CPU_SHARE = 0.25  # of one core, at most, while a pass runs
TAIL_POLL_S = 2.0  # at the end of the journal: look for new records this often
PROGRESS_S = 5.0  # report progress at most this often


def run(directory: Path | Callable[[], JournalReader], keyring: KeyRing, *, name: str, interval_s: float,
        out: TextIO = sys.stdout, cpu_share: float = CPU_SHARE, passes: int | None = None,
        stop: Callable[[], bool] = lambda: False) -> None:
    """Verify pass after pass until ``stop()`` (or ``passes`` passes). Reports to ``out``.
    ``directory``: the SQLite journal directory, or a function that opens a reader of another
    backend (PostgreSQL: ``python -m msc.storage.watch``), one per pass, closed after it."""

    def say(**event: object) -> None:
        out.write(json.dumps(event) + "\n")
        out.flush()

    n = 0
    while not stop() and (passes is None or n < passes):
        n += 1
        started = time.monotonic()
        source = directory if isinstance(directory, Path) else directory()
        v = Verifier(source, keyring, name=name)
        reported_end = False
        last_progress = 0.0
        try:
            while not stop():
                t0 = time.perf_counter()
                done = v.step(SLICE)
                spent = time.perf_counter() - t0
                if not v.res.ok:
                    say(event="failed", **{"pass": n}, first_bad=v.res.first_bad, reason=v.res.reason)
                    break
                now = time.monotonic()
                if now - last_progress >= PROGRESS_S:
                    last_progress = now
                    say(event="progress", **{"pass": n}, verified=v.frontier.size)
                if v.at_end:
                    if not reported_end:
                        v.check_end()
                        if not v.res.ok:
                            say(event="failed", **{"pass": n}, first_bad=v.res.first_bad, reason=v.res.reason)
                            break
                        reported_end = True
                        say(event="pass_ok", **{"pass": n}, records=v.frontier.size,
                            seconds=round(time.perf_counter() - v.t0, 3))
                    if passes is not None or now - started >= interval_s:
                        break
                    v.at_end = False  # follow the records appended since
                    _sleep(TAIL_POLL_S, stop)
                elif done:
                    _sleep(spent * (1 / cpu_share - 1), stop)
        finally:
            v.close()
            if not isinstance(directory, Path):
                source.close()  # type: ignore[union-attr]
        # The next pass no sooner than interval_s after this one started.
        while passes is None and not stop() and time.monotonic() - started < interval_s:
            _sleep(min(TAIL_POLL_S, interval_s), stop)


def _sleep(seconds: float, stop: Callable[[], bool]) -> None:
    end = time.monotonic() + seconds
    while not stop() and (left := end - time.monotonic()) > 0:
        time.sleep(min(left, 0.5))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m msc.journal.watch", description=__doc__.splitlines()[0])
    ap.add_argument("--journal", required=True, type=Path)
    ap.add_argument("--keys", required=True, type=Path, help="the key ring directory")
    ap.add_argument("--key-file", required=True, type=Path, help="the master key file")
    ap.add_argument("--name", required=True, help="the switch name (checkpoints are signed with it)")
    ap.add_argument("--interval", type=float, default=3600.0, help="seconds between the starts of passes")
    args = ap.parse_args(argv)
    return serve(args.journal, KeyRing(args.keys, args.key_file), name=args.name, interval_s=args.interval)


def serve(source: Path | Callable[[], JournalReader], keyring: KeyRing, *, name: str, interval_s: float) -> int:
    """The child process's life: signals, priority, :func:`run` until the switch is gone."""
    parent = os.getppid()
    stopping = []
    # Ctrl-C or a SIGTERM to the whole process group is for the switch: it stops this process
    # when it stops (or this process notices within half a second that the switch is gone).
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True) if os.getppid() != parent else None)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 19)  # only the CPU nobody else wants
    except (AttributeError, OSError):
        pass

    def stop() -> bool:
        return bool(stopping) or os.getppid() != parent  # the switch is gone: so are we

    try:
        run(source, keyring, name=name, interval_s=interval_s, stop=stop)
    except (BrokenPipeError, KeyboardInterrupt):
        pass
    except KeyError_ as exc:
        print(json.dumps({"event": "error", "reason": str(exc)}), flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
