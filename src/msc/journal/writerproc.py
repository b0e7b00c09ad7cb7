"""The journal writer in its own process (PERFORMANCE.md: "writer thread or process").

In a thread, the writer must take the GIL back after every SQLite statement, and behind a busy
event loop each re-take waits — several times per commit, on every transaction's critical path.
In a child process it never waits: the event loop seals batches and sends them; the child
inserts, fsyncs, maintains the Merkle frontier and the search index, and signs checkpoints.

Protocol over a socketpair: each message is a 4-byte big-endian length and a msgpack array, a
tagged msgspec struct (``Request`` one way, ``Reply`` the other, decoded by type); every request
gets exactly one reply — its own kind, or ``Failed`` (with what is really on disk) or ``Busy``.
Requests are handled one at a time, in order.

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
from collections.abc import Sequence
from pathlib import Path

import msgspec

from msc.aio import bounded
from msc.journal.records import JournalError
from msc.journal.schema import Checkpoint, Row

_LEN = struct.Struct(">I")


# -- the wire: one typed request, one typed reply -------------------------------------------------
# Tagged msgspec structs (msgpack arrays whose first element names the type): a message of an
# unknown type or with a field of the wrong type fails to decode (msgspec.ValidationError), never
# a guess. A fencing epoch for a second node (issue 16) is one more field of Commit and
# CheckpointRequest, checked by the backend inside the same transaction.

class Open(msgspec.Struct, tag="open", array_like=True):
    directory: str
    synchronous: str
    seed: bytes  # the Ed25519 signing key's raw 32 bytes: the child signs checkpoints
    mark_path: str


class Commit(msgspec.Struct, tag="commit", array_like=True):
    rows: list[Row]
    poke_indexer: bool = False


class CheckpointRequest(msgspec.Struct, tag="checkpoint", array_like=True):
    name: str
    ts: int


class PurgePeriod(msgspec.Struct, tag="purge_period", array_like=True):
    period: str
    purge_seq: int


class DeletePartition(msgspec.Struct, tag="delete_partition", array_like=True):
    period: str


class Leaves(msgspec.Struct, tag="leaves", array_like=True):
    first: int
    last: int


class Close(msgspec.Struct, tag="close", array_like=True):
    pass


Request = Open | Commit | CheckpointRequest | PurgePeriod | DeletePartition | Leaves | Close


class Opened(msgspec.Struct, tag="opened", array_like=True):
    last_seq: int
    last_ts: int
    checkpoint_size: int
    journal_id: str | None


class Committed(msgspec.Struct, tag="committed", array_like=True):
    last_seq: int
    last_ts: int


class Signed(msgspec.Struct, tag="signed", array_like=True):
    checkpoint: Checkpoint | None


class Purged(msgspec.Struct, tag="purged", array_like=True):
    span: tuple[int, int] | None


class Done(msgspec.Struct, tag="done", array_like=True):
    pass


class Failed(msgspec.Struct, tag="failed", array_like=True):
    """The request failed; ``last_seq``/``last_ts`` are what is really on disk (re-read)."""

    error: str
    last_seq: int
    last_ts: int


class Busy(msgspec.Struct, tag="busy", array_like=True):
    """Another process holds the journal's writer lock."""

    error: str


class LeafHashes(msgspec.Struct, tag="leaf_hashes", array_like=True):
    leaves: dict[int, bytes]


Reply = Opened | Committed | Signed | Purged | Done | LeafHashes | Failed | Busy

_encoder = msgspec.msgpack.Encoder()
request_decoder = msgspec.msgpack.Decoder(Request)
reply_decoder = msgspec.msgpack.Decoder(Reply)


# -- the child ---------------------------------------------------------------------------------

def handle(state: dict, req: Request) -> Reply:
    """Perform one request (not ``Close``) on the child's writer. ``state`` holds the writer, the
    search indexer and the signing key once ``Open`` made them."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from msc.journal.indexer import Indexer
    from msc.journal.writer import Writer

    writer = state.get("writer")
    if isinstance(req, Open):
        writer = state["writer"] = Writer(Path(req.directory), synchronous=req.synchronous,
                                          mark_path=Path(req.mark_path))
        writer.open()
        state["signing"] = Ed25519PrivateKey.from_private_bytes(req.seed)
        state["indexer"] = Indexer(Path(req.directory))
        state["indexer"].start()
        cp = writer.last_checkpoint
        return Opened(writer.last_seq, writer.last_ts, cp.tree_size if cp else 0, writer.journal_id)
    if writer is None:
        raise JournalError("the journal writer is not open")
    if isinstance(req, Commit):
        writer.commit(req.rows)
        if req.poke_indexer:
            state["indexer"].poke()
        return Committed(writer.last_seq, writer.last_ts)
    if isinstance(req, CheckpointRequest):
        return Signed(writer.checkpoint(req.name, state["signing"].sign, req.ts))
    if isinstance(req, PurgePeriod):
        return Purged(writer.purge_period(req.period, req.purge_seq))
    if isinstance(req, DeletePartition):
        writer.delete_partition(req.period)
        return Done()
    if isinstance(req, Leaves):
        return LeafHashes(writer.leaves(req.first, req.last))
    raise ValueError(f"unexpected request {type(req).__name__}")


def _serve(sock: socket.socket) -> None:
    from msc.journal.writer import JournalBusy

    state: dict = {}
    f = sock.makefile("rb", buffering=1 << 20)

    def reply(msg: Reply) -> None:
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
            _switch_gone(state.get("writer"))
        try:
            req = request_decoder.decode(body)
            if isinstance(req, Close):
                if state.get("indexer") is not None:
                    state["indexer"].stop()
                if state.get("writer") is not None:
                    state["writer"].close()
                with contextlib.suppress(OSError):
                    reply(Done())
                break
            msg = handle(state, req)
        except JournalBusy as exc:
            msg = Busy(str(exc))
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the parent
            writer = state.get("writer")
            text = str(exc) if isinstance(exc, JournalError) else f"{type(exc).__name__}: {exc}"
            msg = Failed(text, writer.last_seq if writer else 0, writer.last_ts if writer else 0)
        try:
            reply(msg)
        except OSError:
            _switch_gone(state.get("writer"))


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


#: How often the child looks whether a burst left freed memory to give back (msc.memory.Trimmer).
TRIM_CHECK_S = 2.0


def _give_back_memory(stop=None) -> None:
    """In the child, as ``msc serve`` does for itself (msc.memory): glibc's allocator settled for
    bursts, and a thread that gives freed C-heap memory back when the resident size grew well above
    its lowest — a burst of large records (probe14 case 7: 30 kB texts) left the writer at 353 MB
    for good. The thread only reads /proc/self/statm between trims; a trim holds an arena's lock
    for milliseconds. ``stop``: a threading.Event that ends it (tests)."""
    import threading

    from msc.memory import Trimmer, tune_allocator

    tune_allocator()
    trimmer = Trimmer()
    if not trimmer.available:
        return

    def run() -> None:
        import structlog

        log = structlog.get_logger("msc.journal.writerproc")
        while not (stop.wait(TRIM_CHECK_S) if stop is not None else _sleep(TRIM_CHECK_S)):
            trimmed = trimmer.check()
            if trimmed is not None:
                log.info("journal.memory_trimmed", before_mb=round(trimmed[0] / 2**20, 1),
                         after_mb=round(trimmed[1] / 2**20, 1), ms=round(trimmed[2] * 1000, 2))

    threading.Thread(target=run, name="msc-journal-trim", daemon=True).start()


def _sleep(s: float) -> bool:
    import time

    time.sleep(s)
    return False


def main() -> None:
    ignore_group_signals()
    os.umask(0o077)  # owner-only files, also when the switch runs inside another program
    _configure_logging()
    _give_back_memory()
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
    """Asynchronous client of the child. Same operations as :class:`msc.journal.writer.Writer`."""

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
        opened = await self._call(Open(str(self.dir), self.synchronous, self._seed, str(self._mark_path)), Opened)
        self.last_seq, self.last_ts = opened.last_seq, opened.last_ts
        self.checkpoint_size, self.journal_id = opened.checkpoint_size, opened.journal_id

    async def _call(self, req: Request, expect: type) -> Reply:
        data = _encoder.encode(req)
        try:
            self._writer.write(_LEN.pack(len(data)) + data)
            head = await self._reader.readexactly(4)
            msg = reply_decoder.decode(await self._reader.readexactly(_LEN.unpack(head)[0]))
        except (OSError, asyncio.IncompleteReadError, AttributeError, msgspec.DecodeError) as exc:
            await self._restart()
            raise JournalError(f"journal writer process failed: {exc}") from exc
        if isinstance(msg, expect):
            return msg
        if isinstance(msg, Busy):
            from msc.journal.writer import JournalBusy

            raise JournalBusy(msg.error)
        if isinstance(msg, Failed):
            self.last_seq, self.last_ts = msg.last_seq, msg.last_ts
            raise JournalError(msg.error)
        await self._restart()  # out of step with the child: start over from the files
        raise JournalError(f"journal writer process answered {type(msg).__name__} to {type(req).__name__}")

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

    async def call(self, req: Request, expect: type) -> Reply:
        async with self._lock:
            if self._writer is None:
                await self._restart()
            return await self._call(req, expect)

    async def commit(self, rows: Sequence[Row], poke_indexer: bool = False) -> None:
        done = await self.call(Commit(list(rows), poke_indexer), Committed)
        self.last_seq, self.last_ts = done.last_seq, done.last_ts

    async def checkpoint(self, name: str, ts: int) -> Checkpoint | None:
        cp = (await self.call(CheckpointRequest(name, ts), Signed)).checkpoint
        if cp is not None:
            self.checkpoint_size = cp.tree_size
        return cp

    async def purge_period(self, period: str, purge_seq: int) -> tuple[int, int] | None:
        return (await self.call(PurgePeriod(period, purge_seq), Purged)).span

    async def delete_partition(self, period: str) -> None:
        await self.call(DeletePartition(period), Done)

    async def leaves(self, first: int, last: int) -> dict[int, bytes]:
        return (await self.call(Leaves(first, last), LeafHashes)).leaves

    async def close(self) -> None:
        if self._writer is None:
            return
        try:
            await bounded(self.call(Close(), Done), 60)
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
