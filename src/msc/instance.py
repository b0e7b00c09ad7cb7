"""What one ``msc serve`` owns on its machine, and how a second one of the same node is kept off
it (OPERATIONS.md "The ``msc`` command", ``msc serve``).

- **The node's files** — everything under ``[switch] data_dir`` (state.db, the journal, the
  control socket, the key ring): :func:`claim_node` takes ``data_dir/serve.lock`` before anything
  else is opened. A second ``msc serve`` of the same configuration is refused there (exit 2),
  having read, written, bound and logged nothing.
- **The ready file** (``--ready-file``): :class:`ReadyFile` writes it only while it holds an
  exclusive ``flock`` on the file itself, and removes it only if the name still leads to the file
  it locked. A second process given the same path — another configuration, or another
  ``data_dir`` of the same node — is refused at its start while the file is held, and never
  overwrites or removes it.

Why a lock and not a PID written in a file: the kernel drops a ``flock`` when its process ends,
``kill -9`` included, so nothing stale is ever mistaken for a running node (a restart under
systemd after a crash starts at once), and two processes starting together cannot both win.
Before this, a second ``msc serve`` of a pair's node with a free metrics endpoint wrote
``standby`` over the running node's ``ready`` and then removed the file as it was refused; a
single node opened state.db and the key ring lock before the journal's writer lock refused it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from msc.config.files import PRIVATE_FILE, private_dir
from msc.protocol.codes import MscError

#: In ``data_dir``: held by the ``msc serve`` of that directory for its life (its PID inside).
NODE_LOCK = "serve.lock"


class NodeInUse(MscError):
    """Another live process holds what this ``msc serve`` would own (the node's ``data_dir``, or
    its ready file): ``msc serve`` refuses to start (exit 2, as a
    :class:`msc.server.parts.StartupError`). Here, not in :mod:`msc.server`, because the ``msc``
    command and the web console (:mod:`msc.actions.journaling`) use the same lock and may not import
    the switch (ARCHITECTURE.md's walls)."""


def claim_node(data_dir: Path) -> int:
    """Take ``data_dir/serve.lock`` for this process's life (an exclusive ``flock``, not waited
    for) and write this PID in it; the descriptor (close it, or exit, to give the node up).

    Raises :class:`NodeInUse` naming the process that holds it — another ``msc serve`` of
    this node — and the lock file. Creates ``data_dir`` (0700) if missing; touches nothing else."""
    private_dir(data_dir)
    path = data_dir / NODE_LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        if not _claim_past_commands(fd):
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"  # (written just after its lock)
            os.close(fd)
            raise NodeInUse(f"another msc serve of this node is running (process {holder}, holding {path}): it "
                               "is left as it is — stop it first")
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


#: How long a starting ``msc serve`` waits for ``msc`` commands that write the journal directly
#: (each holds ``serve.lock`` shared for that moment: :func:`no_daemon_here`) to finish (s).
COMMANDS_WAIT_S = 60.0


def _claim_past_commands(fd: int) -> bool:
    """The exclusive ``flock`` on ``serve.lock``; False when another ``msc serve`` holds it.
    While only commands hold it (shared: each is writing the journal directly, no daemon
    running), wait for them — up to :data:`COMMANDS_WAIT_S` — rather than being refused as if
    another ``msc serve`` ran (or starting, and then being refused by the journal's writer lock)."""
    import time

    deadline = time.monotonic() + COMMANDS_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        try:  # a shared lock granted: no msc serve holds it, only commands (or nobody, by now)
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # held exclusively: another msc serve
        fcntl.flock(fd, fcntl.LOCK_UN)
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


class DaemonHere(Exception):
    """An ``msc serve`` of this node holds ``data_dir/serve.lock`` (starting, running or stopping)."""


@contextlib.contextmanager
def no_daemon_here(data_dir: Path) -> Iterator[None]:
    """For a command about to write the journal *directly* (no daemon answered on the control
    socket): hold ``data_dir/serve.lock`` shared while it does, or raise :class:`DaemonHere` when
    an ``msc serve`` of this node holds it — one that is starting (its journal open, its control
    socket not yet), stopping (its socket gone, its last records still being written) or stuck
    must not get a second writer beside it, whatever the journal's writer lock says at that
    moment (on PostgreSQL that lock is lost with the daemon's connection). A ``msc serve``
    starting meanwhile waits for the shared holders (:func:`claim_node`).

    The file is opened read-only and never created (a command run as root must not leave a
    root-owned ``serve.lock`` the service account cannot open); no file: no daemon ever ran here."""
    try:
        fd = os.open(data_dir / NODE_LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            raise DaemonHere(f"msc serve of this node is running (process {holder}) but did not answer on its "
                             "control socket (starting, stopping or stuck): nothing was written — try again "
                             "once it answers") from None
        yield
    finally:
        os.close(fd)


class ReadyFile:
    """``--ready-file``, owned by this process: ``standby`` or ``ready`` written in it while this
    process holds its ``flock``, removed when it stops serving (:meth:`clear`). ``path`` None: no
    ready file (every method does nothing)."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path else None
        self._fd: int | None = None  # the file this process locked and wrote (None: none now)
        #: Why the last :meth:`write` wrote nothing (another process holds the file), for the log.
        self.taken: str | None = None

    def check(self) -> None:
        """At the start, before anything else: refuse (:class:`NodeInUse`) when another live
        process holds the file. A file nobody holds (``kill -9`` left it) is left as it is until
        this process writes it."""
        if self.path is None:
            return
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise NodeInUse(self._taken(fd)) from None
        finally:
            os.close(fd)

    def write(self, what: str) -> bool:
        """Say ``what`` (``standby``, ``ready``) in the file; False, and nothing written, when
        another process took the file since :meth:`check` (two processes given the same path,
        started together: the first to write keeps it)."""
        if self.path is None:
            return True
        if self._fd is None and not self._claim():
            return False
        assert self._fd is not None
        data = f"{what}\n".encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        return True

    def clear(self) -> None:
        """This process serves no more: remove the file if the name still leads to the file it
        locked (never one another process made since), then let it go."""
        fd, self._fd = self._fd, None
        if fd is None or self.path is None:
            return
        try:
            if _same_file(fd, self.path):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
        finally:
            os.close(fd)  # (after the unlink: nobody can lock the name's file while it is still ours)

    def _claim(self) -> bool:
        assert self.path is not None
        while True:
            # (0o666: the umask decides, as open(path, "w") did before the lock)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            if not _lock_soon(fd):
                self.taken = self._taken(fd)
                os.close(fd)
                return False
            if _same_file(fd, self.path):
                self._fd = fd
                return True
            os.close(fd)  # its holder removed it between our open and our lock: the name's file now

    def _taken(self, fd: int) -> str:
        """Why the file is not this process's: the one line ``msc serve`` exits 2 with."""
        holder = _flock_holder(fd)
        return (f"the ready file {self.path} is another running process's (process {holder or '?'}, which holds "
                "its lock): it is left as it is — give each msc serve its own --ready-file")


#: How long a claim of the ready file waits for a lock held by someone else (s): another
#: process's :meth:`ReadyFile.check` holds it for an instant; a running owner for ever.
CLAIM_WAIT_S = 0.25


def _lock_soon(fd: int) -> bool:
    """An exclusive ``flock`` on ``fd`` within :data:`CLAIM_WAIT_S`; False if it stays held."""
    import time

    deadline = time.monotonic() + CLAIM_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)


def _same_file(fd: int, path: Path) -> bool:
    """Does ``path`` still name the file open as ``fd``?"""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _flock_holder(fd: int) -> int | None:
    """The process holding a ``flock`` on the file open as ``fd``, from ``/proc/locks`` (Linux;
    None when it cannot be told). A line: ``1: FLOCK  ADVISORY  WRITE 4242 08:01:1837 0 EOF`` —
    the PID, then the device (major:minor, hex) and the inode."""
    st = os.fstat(fd)
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == want and parts[4].isdigit():
            return int(parts[4])
    return None
