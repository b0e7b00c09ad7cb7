"""The journal writer in its own process (PERFORMANCE.md: "writer thread or process").

In a thread, the writer must take the GIL back after every SQLite statement, and behind a busy
event loop each re-take waits — several times per commit, on every transaction's critical path.
In a child process it never waits: the event loop seals batches and sends them; the child
inserts, fsyncs, maintains the Merkle frontier and the search index, and signs checkpoints.

Protocol over a socketpair: each message is a 4-byte big-endian length and a msgpack array
``[op, args…]``; every request gets exactly one reply ``["ok", result]`` or ``["error", text,
last_seq, last_ts]``. Requests are handled one at a time, in order.

If the child dies, every request in flight fails with JournalError (fail closed) and the parent
starts a new child, which re-reads the truth from the files before accepting anything.

Stopping (OPERATIONS.md "Stopping"): the child follows the switch, never a signal. It runs in its
own session (Ctrl-C on a terminal reaches the terminal's foreground process group only) and
ignores SIGINT, SIGTERM and SIGHUP (systemd's ``KillMode=control-group`` signals every process
of the unit at once), so it is still there when the stopping switch flushes its last batches and
the clean-stop record, and leaves after the ``close`` request. When the switch is gone without
``close`` (``kill -9``, a crash), its end of the socketpair is closed by the kernel: the child
reads end-of-file and exits at once — after the statement it is in, so SQLite is closed cleanly
and a restarted switch can take the journal's lock. End-of-file was chosen over Linux's
``PR_SET_PDEATHSIG``: that fires when the *thread* that started the child ends (not the
process), needs ctypes and Linux, and kills the writer mid-statement; the socketpair is already
the one link between the two and closes exactly when the switch process does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import msgspec

from msc.journal.records import JournalError

_LEN = struct.Struct(">I")
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


# -- the child ---------------------------------------------------------------------------------

def _serve(sock: socket.socket) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from msc.journal.indexer import Indexer
    from msc.journal.store import JournalBusy, Row, Writer

    writer: Writer | None = None
    indexer: Indexer | None = None
    signing: Ed25519PrivateKey | None = None
    f = sock.makefile("rb", buffering=1 << 20)

    def reply(msg) -> None:
        data = _encoder.encode(msg)
        sock.sendall(_LEN.pack(len(data)) + data)

    while True:
        try:
            head = f.read(4)
            size = _LEN.unpack(head)[0] if len(head) == 4 else -1
            body = f.read(size) if size >= 0 else b""
        except OSError:
            size, body = -1, b""
        if size < 0 or len(body) < size:
            _switch_gone(writer)
        req = _decoder.decode(body)
        op, args = req[0], req[1:]
        try:
            if op == "open":
                directory, synchronous, seed, mark_path = args
                writer = Writer(Path(directory), synchronous=synchronous, mark_path=Path(mark_path))
                writer.open()
                signing = Ed25519PrivateKey.from_private_bytes(seed)
                indexer = Indexer(Path(directory))
                indexer.start()
                cp = writer.last_checkpoint
                msg = ["ok", [writer.last_seq, writer.last_ts, cp.tree_size if cp else 0, writer.journal_id]]
            elif op == "commit":
                writer.commit([Row(p, tuple(v), b, t) for p, v, b, t in args[0]])
                msg = ["ok", [writer.last_seq, writer.last_ts]]
                if args[1]:
                    indexer.poke()
            elif op == "checkpoint":
                cp = writer.checkpoint(args[0], signing.sign, args[1])
                msg = ["ok", None if cp is None else [cp.tree_size, cp.root, cp.ts, cp.signature, cp.frontier]]
            elif op == "purge_period":
                msg = ["ok", writer.purge_period(args[0], args[1])]
            elif op == "delete_partition":
                writer.delete_partition(args[0])
                msg = ["ok", None]
            elif op == "close":
                if indexer is not None:
                    indexer.stop()
                if writer is not None:
                    writer.close()
                with contextlib.suppress(OSError):
                    reply(["ok", None])
                break
            else:
                raise ValueError(f"unknown op {op!r}")
        except JournalBusy as exc:
            msg = ["busy", str(exc), 0, 0]
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the parent
            text = str(exc) if isinstance(exc, JournalError) else f"{type(exc).__name__}: {exc}"
            msg = ["error", text, writer.last_seq if writer else 0, writer.last_ts if writer else 0]
        try:
            reply(msg)
        except OSError:
            _switch_gone(writer)


def _switch_gone(writer) -> None:
    """The switch closed its end without ``close``: it is gone. What was committed is on disk;
    nothing more can be asked or acknowledged. Close SQLite and leave now — without the
    indexer's final pass (the next writer catches the index up) or interpreter clean-up."""
    with contextlib.suppress(Exception):
        if writer is not None:
            writer.close()
    os._exit(0)


def ignore_group_signals() -> None:
    """The switch, not a signal to the whole group, decides when the journal closes."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def _configure_logging() -> None:
    """The child logs as the daemon does: one JSON object per line on stderr (which it shares with
    the daemon), never on stdout. (msc.ops.logging is the daemon's; the journal may not import it.)"""
    import structlog

    def tag(_logger, _name, event_dict):
        event_dict.setdefault("process", "journal-writer")
        return event_dict

    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
                    tag, structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def main() -> None:
    ignore_group_signals()
    os.umask(0o077)  # owner-only files, also when the switch runs inside another program
    _configure_logging()
    sock = socket.socket(fileno=int(sys.argv[1]))
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -5)  # the journal is on every transaction's path
    except (AttributeError, OSError):
        pass
    try:
        _serve(sock)
    finally:
        sock.close()


# -- the parent's side ---------------------------------------------------------------------------

class WriterProcess:
    """Asynchronous client of the child. Same operations as :class:`msc.journal.store.Writer`."""

    def __init__(self, directory: Path, synchronous: str, signing_seed: bytes, mark_path: Path) -> None:
        self.dir = directory
        self.synchronous = synchronous
        self._seed = signing_seed
        self._mark_path = mark_path
        self._proc: subprocess.Popen | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self.last_seq = 0
        self.last_ts = 0
        self.checkpoint_size = 0  # tree size of the newest signed checkpoint
        self.journal_id: str | None = None

    @property
    def pid(self) -> int | None:
        """The child's process ID (None while there is none): operators see it in ``ps``."""
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        parent, child = socket.socketpair()
        self._proc = subprocess.Popen([sys.executable, "-m", "msc.journal.writerproc", str(child.fileno())],
                                      pass_fds=(child.fileno(),), close_fds=True, start_new_session=True)
        child.close()
        self._reader, self._writer = await asyncio.open_connection(sock=parent, limit=1 << 24)
        result = await self._call("open", str(self.dir), self.synchronous, self._seed, str(self._mark_path))
        self.last_seq, self.last_ts, self.checkpoint_size, self.journal_id = result

    async def _call(self, *req):
        data = _encoder.encode(list(req))
        try:
            self._writer.write(_LEN.pack(len(data)) + data)
            head = await self._reader.readexactly(4)
            msg = _decoder.decode(await self._reader.readexactly(_LEN.unpack(head)[0]))
        except (OSError, asyncio.IncompleteReadError, AttributeError) as exc:
            await self._restart()
            raise JournalError(f"journal writer process failed: {exc}") from exc
        if msg[0] == "ok":
            return msg[1]
        if msg[0] == "busy":
            from msc.journal.store import JournalBusy

            raise JournalBusy(msg[1])
        self.last_seq, self.last_ts = msg[2], msg[3]
        raise JournalError(msg[1])

    async def _restart(self) -> None:
        """The child died: a new one re-reads the truth from disk before anything else."""
        self._kill()
        try:
            await self.start()
        except Exception as exc:  # noqa: BLE001 - the next request will try again
            self._proc = None
            self._writer = None
            raise JournalError(f"journal writer process cannot restart: {exc}") from exc

    def _kill(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    async def call(self, *req):
        async with self._lock:
            if self._writer is None:
                await self._restart()
            return await self._call(*req)

    async def commit(self, rows, poke_indexer: bool = False) -> None:
        wire = [(r.period, r.values, r.blob, r.tokens) for r in rows]
        self.last_seq, self.last_ts = await self.call("commit", wire, poke_indexer)

    async def checkpoint(self, name: str, ts: int):
        from msc.journal.store import Checkpoint

        r = await self.call("checkpoint", name, ts)
        if r is None:
            return None
        cp = Checkpoint(*r)
        self.checkpoint_size = cp.tree_size
        return cp

    async def purge_period(self, period: str, purge_seq: int):
        r = await self.call("purge_period", period, purge_seq)
        return None if r is None else tuple(r)

    async def delete_partition(self, period: str) -> None:
        await self.call("delete_partition", period)

    async def close(self) -> None:
        if self._writer is None:
            return
        try:
            await asyncio.wait_for(self.call("close"), 60)
        except (TimeoutError, JournalError):
            pass
        self._writer.close()
        if self._proc is not None:
            try:
                await asyncio.to_thread(self._proc.wait, 30)
            except subprocess.TimeoutExpired:
                self._proc.kill()


if __name__ == "__main__":
    main()
