"""A real PostgreSQL for tests and benchmarks: throw-away clusters on loopback.

    with PgCluster.create() as pg:                  # initdb in a new temporary directory, start
        pg.sql("CREATE TABLE t (x int)")            # psql over the cluster's own unix socket
        standby = pg.add_standby(synchronous=True)  # pg_basebackup + streaming, synchronous
        ...
        pg.kill()                                   # kill -9 of the postmaster
        standby.promote()                           # the standby becomes a read-write primary

Each cluster lives in its own directory made with :func:`tempfile.mkdtemp` (``msc-pg-*``): the
data directory, the unix socket directory, the server log and a libpq password file. It listens
on ``127.0.0.1`` and a free port, and on a unix socket in that directory, never on the machine's
default socket (``/var/run/postgresql``) or port 5432.

PostgreSQL refuses to run as root ("root" execution of the PostgreSQL server is not permitted).
CI runs ``make test`` as root, so when the effective user is root every server program (initdb,
postgres, pg_basebackup, pg_ctl) runs as an unprivileged account — Debian's ``postgres`` system
user, created by the ``postgresql`` package, else ``nobody`` — and the directory is chowned to
it. Otherwise everything runs as the current user. Clients (psql here, the tests' drivers) run
as the calling process and authenticate: the unix socket with ``trust`` (the directory is 0700,
so only its owner and root reach it), TCP with ``scram-sha-256`` and a random password that lives
only in the 0600 password file (``passfile=`` in :meth:`PgCluster.conninfo`), never in a URL.

The server binaries are Debian's, in ``/usr/lib/postgresql/<version>/bin`` (not on ``PATH``); the
newest version there is taken, ``MSC_PG_BINDIR`` overrides, and a ``postgres`` on ``PATH`` is
the last resort. :func:`find_bindir` returns ``None`` when there is none (the tests then skip and
say so; ``make system-deps`` installs the package).

Waiting is on conditions (``pg_isready``, ``pg_stat_replication``), polled every 20 ms up to a
deadline, never a fixed sleep. The module imports nothing from msc and no database driver, so
``bench/`` scripts use it as they are (``sys.path`` has the repository root).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

#: Where Debian puts each installed server version's programs.
DEBIAN_ROOT = Path("/usr/lib/postgresql")
#: The superuser initdb creates (its password is random, per cluster).
SUPERUSER = "postgres"
#: How long a start, a stop, a promotion or a replication state may take before we give up (s).
DEADLINE_S = 60.0
_POLL_S = 0.02

#: Settings of every test cluster (postgresql.conf). Small memory: several clusters share 2 cores.
#: ``wal_log_hints`` lets a failed primary be rewound (pg_rewind) and rejoin as a standby.
BASE_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "100",
    "shared_buffers": "32MB",
    "wal_level": "replica",
    "max_wal_senders": "10",
    "max_replication_slots": "10",
    "wal_keep_size": "128MB",
    "hot_standby": "on",
    "wal_log_hints": "on",
    "password_encryption": "'scram-sha-256'",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %a '",
    "logging_collector": "off",
}
#: Tests do not survive an OS crash anyway; ``kill -9`` of the server loses nothing with fsync
#: off (the page cache stays). Benchmarks pass ``durable=True`` to measure real commits.
FAST_SETTINGS = {"fsync": "off", "full_page_writes": "off"}
#: Benchmarks (``durable=True``) run with the WAL sizing docs/OPERATIONS.md recommends to an agency
#: ("Setting up a pair on PostgreSQL"): ``min_wal_size`` keeps that much WAL as recycled segments at each
#: checkpoint, so that a burst of traffic writes into a segment that exists instead of having a
#: commit create and zero-fill a new 16-MB file (and fsync it) on the primary and again on each
#: standby; ``max_wal_size`` spaces checkpoints by time (checkpoint_timeout) at 1,000 msg/s.
DURABLE_SETTINGS = {"min_wal_size": "1GB", "max_wal_size": "4GB"}
#: PostgreSQL's WAL segment size (initdb's default), bytes.
WAL_SEGMENT = 16 * 1024 * 1024


def find_bindir() -> Path | None:
    """The directory of ``initdb``/``postgres``/``pg_ctl``, or None when no server is installed."""
    env = os.environ.get("MSC_PG_BINDIR")
    if env:
        return Path(env) if (Path(env) / "postgres").exists() else None

    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", p.name)) or (0,)

    found = sorted((p for p in DEBIAN_ROOT.glob("*") if (p / "bin" / "postgres").exists()), key=version)
    if found:
        return found[-1] / "bin"
    on_path = shutil.which("postgres")
    return Path(on_path).resolve().parent if on_path else None


def missing_reason() -> str | None:
    """Why PostgreSQL tests cannot run here, or None when they can."""
    if find_bindir() is None:
        return ("PostgreSQL server not installed (no /usr/lib/postgresql/<version>/bin/postgres; "
                "`make system-deps` installs Debian's postgresql)")
    if os.geteuid() == 0 and _server_user() is None:
        return "running as root and no unprivileged account (postgres or nobody) to run PostgreSQL as"
    return None


@dataclass(frozen=True)
class _Account:
    name: str
    uid: int
    gid: int
    home: str


def _server_user() -> _Account | None:
    """The account the server programs run as: None means "this process's own user"."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        return _Account(name, pw.pw_uid, pw.pw_gid, pw.pw_dir)
    return None


def free_port() -> int:
    """A port for a cluster (tests/ports.py: never one the kernel or another test process hands out meanwhile)."""
    from tests.ports import free_port

    return free_port()


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """If the test process dies (kill -9 of pytest), the postmaster gets SIGQUIT (immediate stop)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGQUIT)


class PgError(RuntimeError):
    """A server program failed or a condition was not reached in time; carries the log's tail."""


class PgCluster:
    """One PostgreSQL server (primary or standby) in its own temporary directory.

    Construct with :meth:`create` (initdb) or :meth:`add_standby` (pg_basebackup); use as a
    context manager or call :meth:`destroy`. ``port`` is the TCP port on 127.0.0.1,
    ``socket_dir`` the unix socket's directory, ``pid`` the postmaster's pid while it runs.
    """

    def __init__(self, base: Path, *, name: str, bindir: Path, account: _Account | None, password: str,
                 durable: bool, port: int | None = None) -> None:
        self.base = base
        self.name = name
        self.bindir = bindir
        self.account = account
        self.password = password
        self.durable = durable
        self.port = port or free_port()
        self.data_dir = base / "data"
        self.socket_dir = base / "sock"
        self.log_path = base / "server.log"
        self.passfile = base / "pgpass"
        self.proc: subprocess.Popen[bytes] | None = None
        self.standbys: list[PgCluster] = []

    # --- creation -------------------------------------------------------------------------------

    @classmethod
    def create(cls, *, name: str = "primary", durable: bool = False, settings: dict[str, str] | None = None,
               start: bool = True, parent: Path | None = None) -> PgCluster:
        """initdb a new cluster (UTF8, C collation, data checksums off) and start it.

        ``durable`` keeps fsync on (benchmarks); ``settings`` are added to postgresql.conf.
        Raises :class:`PgError` when PostgreSQL is missing or a step fails.
        """
        reason = missing_reason()
        if reason:
            raise PgError(reason)
        bindir = find_bindir()
        assert bindir is not None
        account = _server_user()
        base = _make_base(name, account, parent)
        pg = cls(base, name=name, bindir=bindir, account=account, password=secrets.token_urlsafe(24), durable=durable)
        try:
            pwfile = base / "initdb.pw"
            pg._write_owned(pwfile, pg.password + "\n")
            pg._run([bindir / "initdb", "-D", str(pg.data_dir), "-U", SUPERUSER, "--pwfile", str(pwfile),
                     "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C",
                     "--no-sync", "--no-instructions"])
            pwfile.unlink()
            pg._write_owned(pg.passfile, f"*:*:*:{SUPERUSER}:{pg.password}\n")
            conf = {**BASE_SETTINGS, **(DURABLE_SETTINGS if durable else FAST_SETTINGS), **(settings or {})}
            with open(pg.data_dir / "postgresql.conf", "a") as f:
                f.write("\n# msc test cluster (tests/pg.py)\n")
                f.writelines(f"{k} = {v}\n" for k, v in conf.items())
            if start:
                pg.start()
        except BaseException:
            pg.destroy()
            raise
        return pg

    def add_standby(self, *, name: str | None = None, synchronous: bool = True, start: bool = True) -> PgCluster:
        """A streaming-replication standby of this (running) server, made with pg_basebackup.

        With ``synchronous`` this server's ``synchronous_standby_names`` becomes
        ``FIRST 1 (<standby names>)`` and the call returns once the standby is the sync standby
        (``pg_stat_replication.sync_state = 'sync'``): from then on every commit with
        ``synchronous_commit = on`` waits for the standby to flush it (``remote_apply``: to
        replay it). The standby has no sync standby of its own, so it can be promoted alone.
        """
        name = name or f"standby{len(self.standbys) + 1}"
        base = _make_base(name, self.account, self.base.parent)
        sb = PgCluster(base, name=name, bindir=self.bindir, account=self.account, password=self.password,
                       durable=self.durable)
        try:
            self._write_owned(sb.passfile, f"*:*:*:{SUPERUSER}:{self.password}\n")
            sb._run([self.bindir / "pg_basebackup", "-D", str(sb.data_dir), "-h", "127.0.0.1", "-p", str(self.port),
                     "-U", SUPERUSER, "-X", "stream", "-c", "fast", "--no-sync", "-w"],
                    env={"PGPASSFILE": str(sb.passfile)})
            sb._write_owned(sb.data_dir / "standby.signal", "")
            sb._write_owned(sb.data_dir / "postgresql.auto.conf",
                            "# written by tests/pg.py for a standby\n"
                            f"primary_conninfo = '{sb._primary_conninfo(self)}'\n"
                            "synchronous_standby_names = ''\n")
            self.standbys.append(sb)
            if start:
                sb.start()
                self.wait_replication(sb.name, "streaming")
                if synchronous:
                    self.set_synchronous([s.name for s in self.standbys if s.proc is not None])
                    self.wait_replication(sb.name, "streaming", sync_state="sync")
        except BaseException:
            if sb in self.standbys:
                self.standbys.remove(sb)
            sb.destroy()
            raise
        return sb

    def _primary_conninfo(self, primary: PgCluster) -> str:
        return (f"host=127.0.0.1 port={primary.port} user={SUPERUSER} passfile={self.passfile} "
                f"application_name={self.name} connect_timeout=2")

    def follow(self, primary: PgCluster) -> None:
        """Point this standby at another primary (after a promotion) and reload."""
        self.sql(f"ALTER SYSTEM SET primary_conninfo = '{self._primary_conninfo(primary)}'")
        self.sql("SELECT pg_reload_conf()")

    # --- life cycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the postmaster (a child of this process) and wait until it accepts connections."""
        if self.proc is not None and self.proc.poll() is None:
            return
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                 "-c", f"unix_socket_directories={self.socket_dir}", "-c", f"cluster_name={self.name}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                preexec_fn=_die_with_parent, **self._as_server_user())
        finally:
            log.close()
        self.wait_ready()

    def wait_ready(self, deadline_s: float = DEADLINE_S) -> None:
        """Poll ``pg_isready`` until the server accepts connections (standbys too)."""
        self._wait(lambda: subprocess.run(
            [str(self.bindir / "pg_isready"), "-q", "-h", str(self.socket_dir), "-p", str(self.port), "-t", "1"],
            stdin=subprocess.DEVNULL).returncode == 0, "accepting connections", deadline_s)

    def stop(self, mode: str = "fast") -> None:
        """Stop: ``smart``/``fast``/``immediate`` (SIGTERM / SIGINT / SIGQUIT) and wait for the exit."""
        sig = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode]
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """``kill -9`` of the postmaster, as a crash would; its backends notice and exit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        # The orphaned backends exit once they see the postmaster gone; a restart needs them gone.
        self._wait(lambda: not _pids_with_cwd(self.data_dir), "its backends to exit after kill -9", DEADLINE_S)

    def pause(self) -> None:
        """SIGSTOP the postmaster (a frozen host, not a dead one)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def promote(self) -> None:
        """Promote this standby (``pg_promote``) and wait until it takes writes."""
        out = self.sql("SELECT pg_promote(true, 60)")
        if out != "t":
            raise PgError(f"{self.name}: pg_promote returned {out!r}\n{self.log_tail()}")
        self._wait(lambda: self.sql("SELECT pg_is_in_recovery()") == "f", "the end of recovery", DEADLINE_S)

    def destroy(self) -> None:
        """Stop the server (immediate) and its standbys, and remove every file."""
        for sb in list(self.standbys):
            sb.destroy()
        self.standbys.clear()
        with contextlib.suppress(Exception):
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGCONT)
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # --- replication ----------------------------------------------------------------------------

    def set_synchronous(self, names: list[str], *, first: int = 1) -> None:
        """``synchronous_standby_names = 'FIRST n (names)'`` ('' when names is empty), reloaded."""
        value = f"FIRST {first} ({', '.join(names)})" if names else ""
        self.sql(f"ALTER SYSTEM SET synchronous_standby_names = '{value}'")
        self.sql("SELECT pg_reload_conf()")

    def wait_replication(self, application_name: str, state: str = "streaming", *, sync_state: str | None = None,
                         deadline_s: float = DEADLINE_S) -> None:
        """Wait until ``pg_stat_replication`` on this server shows the standby in ``state``."""
        cond = f"application_name = '{application_name}' AND state = '{state}'"
        if sync_state:
            cond += f" AND sync_state = '{sync_state}'"
        self._wait(lambda: self.sql(f"SELECT count(*) FROM pg_stat_replication WHERE {cond}") == "1",
                   f"replication of {application_name} {state} {sync_state or ''}".strip(), deadline_s)

    def recycle_wal(self, megabytes: int = 1024) -> int:
        """Bring this primary and its standbys to the WAL state of a server that has run a while.

        A new cluster has no WAL segment to recycle: until its first checkpoints each 16 MB of
        WAL makes a commit create and zero-fill the next segment file and fsync it — on the
        primary, then on every standby before it acknowledges — a stall of 10-50 ms every few
        seconds at 1,000 msg/s that a server in service does not have (its checkpoints rename
        old segments for reuse, up to ``min_wal_size``; PERFORMANCE.md "Where the tail came
        from"). So: ``megabytes`` of segments are written (a row and ``pg_switch_wal()`` each) on
        top of the ``wal_keep_size`` that checkpoints keep as it is for the standbys, then a
        checkpoint on the primary and a restartpoint on each standby once it has replayed them
        turn them into recycled segments (up to ``min_wal_size``). Returns the number of
        segments written.
        """
        keep_mb = int(self.sql("SELECT setting FROM pg_settings WHERE name = 'wal_keep_size'") or 0)  # unit: MB
        n = -(-(megabytes + keep_mb) * 1024 * 1024 // WAL_SEGMENT) + 1
        self.sql("CREATE TABLE IF NOT EXISTS msc_wal_warmup (x int)")
        for _ in range(n):
            self.sql("INSERT INTO msc_wal_warmup VALUES (1)")
            self.sql("SELECT pg_switch_wal()")
        self.sql("DROP TABLE msc_wal_warmup")
        self.sql("CHECKPOINT")
        lsn = self.sql("SELECT pg_current_wal_lsn()")
        for sb in self.standbys:
            if sb.proc is None:
                continue
            self._wait(lambda sb=sb: self.sql(f"SELECT count(*) FROM pg_stat_replication WHERE application_name = "
                                              f"'{sb.name}' AND replay_lsn >= '{lsn}'") == "1",
                       f"{sb.name} to replay up to {lsn}", DEADLINE_S)
            sb.sql("CHECKPOINT")
        return n

    # --- clients --------------------------------------------------------------------------------

    def conninfo(self, dbname: str = "postgres", *, user: str = SUPERUSER, **extra: object) -> str:
        """A libpq connection string over TCP (127.0.0.1) with the password file; no password in it."""
        parts = {"host": "127.0.0.1", "port": self.port, "dbname": dbname, "user": user,
                 "passfile": str(self.passfile), **extra}
        return " ".join(f"{k}={v}" for k, v in parts.items())

    def sql(self, statement: str, dbname: str = "postgres") -> str:
        """Run one statement with psql over the unix socket as the superuser; unaligned output.

        Rows are newline-separated, columns ``|``-separated, trailing whitespace removed.
        Raises :class:`PgError` with psql's message when the statement fails.
        """
        r = subprocess.run([str(self.bindir / "psql"), "-X", "-w", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                            "-h", str(self.socket_dir), "-p", str(self.port), "-U", SUPERUSER, "-d", dbname,
                            "-c", statement], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                           timeout=DEADLINE_S)
        if r.returncode != 0:
            raise PgError(f"{self.name}: {statement!r}: {r.stderr.strip()}")
        return r.stdout.rstrip()

    def create_database(self, dbname: str) -> str:
        """CREATE DATABASE (a fresh one per test keeps a module-scoped server clean); its conninfo."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", dbname):
            raise ValueError(f"database name {dbname!r}: lower-case letters, digits and _ only")
        self.sql(f"CREATE DATABASE {dbname}")
        return self.conninfo(dbname)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    # --- internals ------------------------------------------------------------------------------

    def _as_server_user(self) -> dict[str, object]:
        if self.account is None:
            return {}
        return {"user": self.account.uid, "group": self.account.gid, "extra_groups": []}

    def _env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update({"LC_ALL": "C", "TZ": "UTC"})
        if self.account is not None:
            env.update({"HOME": str(self.base), "USER": self.account.name, "LOGNAME": self.account.name})
        env.update(extra or {})
        return env

    def _run(self, argv: list[Path | str], env: dict[str, str] | None = None) -> None:
        r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                           env=self._env(env), cwd=self.base, timeout=DEADLINE_S * 2, **self._as_server_user())
        if r.returncode != 0:
            raise PgError(f"{self.name}: {Path(argv[0]).name} exited {r.returncode}: {r.stderr.strip()}")

    def _write_owned(self, path: Path, text: str) -> None:
        """Write a 0600 file the server's account owns (libpq refuses a group-readable passfile)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        if self.account is not None:
            os.chown(path, self.account.uid, self.account.gid)

    def _wait(self, cond: Callable[[], bool], what: str, deadline_s: float) -> None:
        end = time.monotonic() + deadline_s
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise PgError(f"{self.name}: the server exited ({self.proc.returncode}) while waiting for "
                              f"{what}\n{self.log_tail()}")
            try:
                if cond():
                    return
            except (PgError, subprocess.TimeoutExpired):
                pass
            if time.monotonic() > end:
                raise PgError(f"{self.name}: no {what} within {deadline_s:.0f} s\n{self.log_tail()}")
            time.sleep(_POLL_S)


def _make_base(name: str, account: _Account | None, parent: Path | None) -> Path:
    """A new 0700 directory (with sock/) owned by the server's account, under a world-traversable parent."""
    base = Path(tempfile.mkdtemp(prefix=f"msc-pg-{name}-", dir=parent))
    (base / "sock").mkdir(mode=0o700)
    if account is not None:
        for p in (base, base / "sock"):
            os.chown(p, account.uid, account.gid)
    return base


def _pids_with_cwd(data_dir: Path) -> list[int]:
    """Processes whose working directory is the data directory (postgres backends chdir there)."""
    pids = []
    target = str(data_dir.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.readlink(entry / "cwd") == target:
                pids.append(int(entry.name))
    return pids


@contextlib.contextmanager
def primary_with_standby(*, durable: bool = False, synchronous: bool = True) -> Iterator[tuple[PgCluster, PgCluster]]:
    """A primary and one streaming standby (synchronous by default); both removed on exit."""
    with PgCluster.create(durable=durable) as primary:
        standby = primary.add_standby(synchronous=synchronous)
        yield primary, standby
