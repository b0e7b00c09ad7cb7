"""The node lease in PostgreSQL (asyncpg), and the fence every commit of the active node runs.

One row per lease in ``msc_lease(name, holder, epoch, expires_at, acquired_at)``. Every
statement is one atomic statement on its own (autocommit); every time is the database's
``statement_timestamp()`` — the nodes' clocks never decide an expiry:

- **acquire**: ``INSERT … ON CONFLICT (name) DO UPDATE … WHERE expires_at <= now`` — the row
  is taken only when it is free (released) or expired, ``epoch = epoch + 1`` in the same
  statement. Two nodes racing: the second waits for the first's row lock, re-checks the
  condition against the new row (READ COMMITTED's rule for ``ON CONFLICT DO UPDATE``) and gets
  nothing. A refusal returns who holds it and how long it has left.
  With ``defer_within_s`` (a node restarted less than a ttl ago: :class:`msc.ha.keeper.LeaseKeeper`)
  an expired lease still under the caller's own name — its previous process's, killed — is left
  alone while another node of this lease announced itself (``msc_node_seen``) within that many
  seconds: that node was waiting for it and takes it (newcomer9 F5). The refusal says the lease
  is the caller's, expired (``remaining <= 0``). Decided in the same statement: no window.
  The new row records the tenure it followed (``prev_holder``, ``prev_ended``) and is not yet
  ``heard``: its node says it knows of the grant at once (**confirm**; a renewal and a release say
  it too). A take whose answer never reached its node (the database frozen, the connection cut,
  while it committed: OPERATIONS.md "Epochs may skip a number") stays unheard, and the next take
  follows the tenure before it — so a node's retry that finds its own name on an epoch it never
  knew reports what its take really was: ``Granted.taken`` and ``previous``.
- **renew**: ``UPDATE … SET expires_at = now + ttl WHERE holder AND epoch match AND not expired``.
- **release** (clean stop): ``expires_at = now`` if still ours — a standby takes over at once —
  and ``released_at = now``, so that the row says it was given up, not that it ran out (``msc
  status``; the next acquisition clears it, and says whose lease it took and how: :class:`Granted`).
- **fence** (inside each commit transaction, before its inserts): ``msc_fence(name, holder,
  epoch)`` locks the row ``FOR SHARE`` and raises SQLSTATE ``MSC01`` unless holder and epoch are
  still this node's and the lease has not expired. The share lock is held until the commit: an
  acquisition (which must lock the row exclusively) waits for every commit already fenced, and
  every commit fenced after it sees the new epoch and fails. So each commit is ordered entirely
  before or entirely after a takeover; a paused node's late commit is refused by the database.
  Share locks do not block one another: concurrent commits of the active node do not serialise
  on the lease (measured: notes/pgprep.md, "fence as a row share lock").

Connection strings are libpq URIs (``postgresql://user@h1:5432,h2:5432/db?target_session_attrs=
read-write``: several hosts find the primary after a PostgreSQL failover); the password comes
from a file or ``passfile=``, never from the string (CONFIG.md ``[node]``).
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from msc.aio import bounded
from msc.protocol.codes import MscError
from msc.reasons import explain

#: SQLSTATE of a fenced commit (class "MS": msc's own; PostgreSQL leaves 5-character codes
#: outside its classes to applications).
FENCED_SQLSTATE = "MSC01"
#: The lease every node of one switch competes for (one switch per database).
DEFAULT_LEASE = "msc"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS msc_lease (
    name        text PRIMARY KEY,
    holder      text NOT NULL,
    epoch       bigint NOT NULL CHECK (epoch > 0),
    expires_at  timestamptz NOT NULL,
    acquired_at timestamptz NOT NULL
);
DO $$ DECLARE
    col text[];
BEGIN
    -- Columns added since the table's first version (an older msc_lease gets them at the next start;
    -- looked up first: ALTER TABLE locks the table even when the column is there already).
    -- heard: the holder has said it knows it holds this epoch (confirm, renew, release) — false from
    -- the take until then, NULL on a row written before this column (taken as heard). prev_holder,
    -- prev_ended: the tenure this take followed (its holder, and "released" or "expired"); a take
    -- never heard is skipped over, so a retry of a take whose answer was lost says what it followed.
    FOREACH col SLICE 1 IN ARRAY ARRAY[['released_at', 'timestamptz'], ['heard', 'boolean'],
                                       ['prev_holder', 'text'], ['prev_ended', 'text']] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'msc_lease'::regclass
                       AND attname = col[1] AND NOT attisdropped) THEN
            EXECUTE format('ALTER TABLE msc_lease ADD COLUMN %I %s', col[1], col[2]);
        END IF;
    END LOOP;
END $$;
CREATE TABLE IF NOT EXISTS msc_node_seen (
    name        text PRIMARY KEY,
    instance    text NOT NULL,
    host        text NOT NULL,
    pid         integer NOT NULL,
    seen_at     timestamptz NOT NULL
);
CREATE OR REPLACE FUNCTION msc_fence(p_name text, p_holder text, p_epoch bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    cur record;
BEGIN
    SELECT holder, epoch, expires_at INTO cur FROM msc_lease WHERE name = p_name FOR SHARE;
    IF NOT FOUND OR cur.holder <> p_holder OR cur.epoch <> p_epoch OR cur.expires_at <= statement_timestamp() THEN
        RAISE EXCEPTION 'fenced: node % no longer holds lease % at epoch % (holder %, epoch %, expires %)',
            p_holder, p_name, p_epoch, cur.holder, cur.epoch, cur.expires_at
            USING ERRCODE = '{FENCED_SQLSTATE}';
    END IF;
    RETURN true;
END $$;
"""

ACQUIRE = """
WITH won AS (
    INSERT INTO msc_lease AS l (name, holder, epoch, expires_at, acquired_at, released_at, heard,
                                prev_holder, prev_ended)
    VALUES ($1, $2, 1, statement_timestamp() + make_interval(secs => $3), statement_timestamp(), NULL, false,
            NULL, NULL)
    ON CONFLICT (name) DO UPDATE
        SET holder = EXCLUDED.holder, epoch = l.epoch + 1,
            expires_at = EXCLUDED.expires_at, acquired_at = EXCLUDED.acquired_at, released_at = NULL,
            heard = false,
            -- the tenure taken over: the row's own — or, when its holder never heard it held it
            -- (its answer lost), the one that take followed (the row as locked: no snapshot's view)
            prev_holder = CASE WHEN l.heard IS FALSE THEN l.prev_holder ELSE l.holder END,
            prev_ended = CASE WHEN l.heard IS FALSE THEN l.prev_ended
                              WHEN l.released_at IS NOT NULL THEN 'released' ELSE 'expired' END
        WHERE l.expires_at <= statement_timestamp()
          AND NOT (l.holder = EXCLUDED.holder AND $4::float8 IS NOT NULL AND EXISTS (
              SELECT 1 FROM msc_node_seen s
              WHERE starts_with(s.name, $1 || '/') AND s.name <> $1 || '/' || $2
                AND s.seen_at > statement_timestamp() - make_interval(secs => $4::float8)))
    RETURNING l.epoch, l.prev_holder, l.prev_ended
)
SELECT (SELECT epoch FROM won) AS won,
       (SELECT prev_holder FROM won) AS prev_holder,
       (SELECT prev_ended FROM won) AS prev_ended,
       (SELECT holder FROM msc_lease WHERE name = $1) AS holder,
       (SELECT epoch FROM msc_lease WHERE name = $1) AS epoch,
       (SELECT extract(epoch FROM expires_at - statement_timestamp())::float8 FROM msc_lease WHERE name = $1)
           AS remaining,
       (SELECT heard IS NOT FALSE FROM msc_lease WHERE name = $1) AS heard
"""

RENEW = """
UPDATE msc_lease SET expires_at = statement_timestamp() + make_interval(secs => $4), heard = true
WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > statement_timestamp()
RETURNING epoch
"""

RELEASE = """
UPDATE msc_lease SET expires_at = statement_timestamp(), released_at = statement_timestamp(),
    heard = true
WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > statement_timestamp()
RETURNING epoch
"""

#: The holder heard of its grant (LeaseKeeper, at once): a later take follows this tenure, not the one before.
CONFIRM = """
UPDATE msc_lease SET heard = true
WHERE name = $1 AND holder = $2 AND epoch = $3 AND heard IS FALSE
RETURNING epoch
"""

#: A node's "I am alive under this name": taken when it is this process's already, or the last
#: process's that was seen more than ``$5`` seconds ago (by the database's clock).
ANNOUNCE = """
INSERT INTO msc_node_seen AS s (name, instance, host, pid, seen_at)
VALUES ($1, $2, $3, $4, statement_timestamp())
ON CONFLICT (name) DO UPDATE
    SET instance = EXCLUDED.instance, host = EXCLUDED.host, pid = EXCLUDED.pid, seen_at = EXCLUDED.seen_at
    WHERE s.instance = EXCLUDED.instance OR s.instance = $6
          OR s.seen_at <= statement_timestamp() - make_interval(secs => $5)
RETURNING instance
"""

SEEN = """
SELECT instance, host, pid, extract(epoch FROM statement_timestamp() - seen_at)::float8 AS ago
FROM msc_node_seen WHERE name = $1
"""

#: The nodes of a lease that said they were alive (announce) within ``$2`` seconds: ``msc status``.
SEEN_ALIVE = """
SELECT substr(name, length($1) + 2) AS node, host, pid,
       extract(epoch FROM statement_timestamp() - seen_at)::float8 AS ago
FROM msc_node_seen
WHERE starts_with(name, $1 || '/') AND seen_at > statement_timestamp() - make_interval(secs => $2::float8)
ORDER BY name
"""

#: A process that stops cleanly takes back its "alive" (its own row only: not a successor's).
DEPART = "DELETE FROM msc_node_seen WHERE name = $1 AND instance = $2 RETURNING instance"

CURRENT = """
SELECT holder, epoch, expires_at > statement_timestamp() AS live,
       extract(epoch FROM expires_at - statement_timestamp())::float8 AS remaining, acquired_at,
       released_at IS NOT NULL AND expires_at <= statement_timestamp() AS released,
       heard IS NOT FALSE AS heard
FROM msc_lease WHERE name = $1
"""


class Fenced(MscError):
    """A commit (or a renewal) found that this node no longer holds the lease at its epoch:
    another node took over, or the lease expired. Nothing of the transaction was committed."""


class LeaseUnavailable(MscError):
    """The lease's database could not be reached or answered an error (the outcome is unknown)."""


class LeaseMisconfigured(LeaseUnavailable):
    """The lease's database refused msc for a reason no waiting cures: the login (a wrong password,
    no such role, pg_hba), a database that does not exist, a permission msc lacks, a connection
    string libpq cannot use. A standby that meets it does not wait for ever: ``msc serve`` stops
    (exit 2, OPERATIONS.md)."""


#: SQLSTATEs (and their classes) of a configuration the administrator must correct, as opposed
#: to an outage (connection refused, a timeout, "the database system is starting up" 57P03, a
#: server shutting down 57P01 …), which a standby waits out. PostgreSQL Appendix A:
#: 28 invalid authorization specification (28P01 invalid password, 28000 no pg_hba entry or no
#: such role), 3D000 invalid catalog name (no such database), 42501 insufficient privilege.
CONFIGURATION_SQLSTATES = frozenset(("3D000", "42501"))
CONFIGURATION_CLASSES = frozenset(("28",))


def is_configuration_error(exc: BaseException) -> bool:
    """Does ``exc`` say the configuration is wrong (not that the database is away)?"""
    if isinstance(exc, LeaseMisconfigured):
        return True
    if isinstance(exc, asyncpg.exceptions.ClientConfigurationError):
        return True
    state = getattr(exc, "sqlstate", None)
    return isinstance(state, str) and (state in CONFIGURATION_SQLSTATES or state[:2] in CONFIGURATION_CLASSES)


#: How a granted lease was taken (:attr:`Granted.taken`): nobody had held it, its holder had
#: released it, it was this node's own (a restart), or another node's that ran out — a failover.
FREE, RELEASED, OWN, FAILOVER = "free", "released", "own", "failover"


@dataclass(frozen=True)
class Granted:
    """The lease is this node's at ``epoch``; ``taken``: how (FREE, RELEASED, OWN, FAILOVER), and
    ``previous``: the node that held it before (None when nobody had)."""

    epoch: int
    taken: str = field(default=FREE, compare=False)
    previous: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Held:
    """The lease is another's (or ours from before — not yet expired): who, and for how long."""

    holder: str | None
    epoch: int | None
    remaining_s: float | None
    #: False: the holder has not said it knows of this epoch (its take's answer may have been lost:
    #: a frozen database, a cut connection — OPERATIONS.md "Epochs may skip a number").
    heard: bool = field(default=True, compare=False)


@dataclass(frozen=True)
class LeaseRow:
    holder: str
    epoch: int
    live: bool
    remaining_s: float
    #: Given up by its holder (a clean stop), not run out; False while it is live.
    released: bool = False
    #: False: its holder has not said it knows it holds this epoch (see :attr:`Held.heard`).
    heard: bool = True


@dataclass(frozen=True)
class SeenNode:
    """A node that announced itself (``msc_node_seen``): its name, host, PID, and how long ago."""

    node: str
    host: str
    pid: int
    ago_s: float


def is_fenced(exc: BaseException) -> bool:
    """Is ``exc`` the database's refusal of a fenced commit (SQLSTATE ``MSC01``)?"""
    return isinstance(exc, Fenced) or getattr(exc, "sqlstate", None) == FENCED_SQLSTATE


Fence = Callable[[asyncpg.Connection], Awaitable[None]]
Connect = Callable[[], Awaitable[asyncpg.Connection]]


def connector(dsn: str, *, password: str | None = None, timeout_s: float = 5.0) -> Connect:
    """A function that opens one connection to the lease's database (a libpq URI; ``password``
    from the configured file, else ``passfile=``/PGPASSFILE as libpq does)."""
    async def connect() -> asyncpg.Connection:
        kw: dict[str, Any] = {"timeout": timeout_s}
        if password is not None:
            kw["password"] = password
        return await asyncpg.connect(dsn, **kw)
    return connect


class PgLease:
    """This node's handle on the lease ``name`` as ``holder`` (the ``[node] name``).

    Holds one connection of its own (not the journal's), opened on first use and again after it
    broke. Every call is bounded by ``timeout_s``; a call that fails or times out raises
    :class:`LeaseUnavailable` — its outcome at the database is unknown, which the decision logic
    (:class:`msc.ha.lease.LeaseMachine`) treats as "not renewed".
    """

    def __init__(self, connect: Connect, *, holder: str, ttl_s: float, name: str = DEFAULT_LEASE,
                 timeout_s: float = 5.0) -> None:
        if not holder:
            raise ValueError("a lease holder needs a name ([node] name)")
        self._connect = connect
        self.name = name
        self.holder = holder
        self.ttl_s = float(ttl_s)
        self.timeout_s = timeout_s
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._schema_ready = False
        #: This process's identity beside its name (announce): another process is another instance.
        self.instance = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.pid = os.getpid()

    # -- connection ----------------------------------------------------------------------------

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        conn = await self._connect()
        try:
            if not self._schema_ready:
                await ensure_schema(conn)
                self._schema_ready = True
        except BaseException:  # (cancelled too: a connection whose schema step was cut is not kept)
            conn.terminate()
            raise
        self._conn = conn
        return conn

    async def _call(self, sql: str, *args: object) -> list[asyncpg.Record]:
        async with self._lock:
            doing = "while connecting"
            try:
                # (in this task, not wait_for's own: msc.aio — a cancelled call leaves no task behind)
                conn = await bounded(self._connection(), self.timeout_s)
                doing = "during the lease query"
                rows: list[asyncpg.Record] = await conn.fetch(sql, *args, timeout=self.timeout_s)
                return rows
            except Exception as exc:  # any failure: the outcome is unknown, the connection suspect
                # (OSError, TimeoutError, PostgresError, InterfaceError; and InternalClientError,
                # which asyncpg raises on a connection its server died under: seen at a failover)
                await self._drop()
                # One line (a DETAIL's too); a timeout has no message: "no answer within 5 s … (TimeoutError)"
                why = f"lease database: {explain(exc, bound_s=self.timeout_s, doing=doing)}"
                if is_configuration_error(exc):
                    raise LeaseMisconfigured(f"{why} — check [storage] dsn and password_file (or [node] lease_dsn)") \
                        from None
                raise LeaseUnavailable(why) from None

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def close(self) -> None:
        async with self._lock:
            await self._drop()

    # -- this node's name ------------------------------------------------------------------------

    async def announce(self, live_s: float) -> str | None:
        """Say in the database that this process is alive as ``holder`` (a row per name, with a
        random instance ID per process, its host and PID, the database's time). None when the name
        is this process's — or free: never announced, not seen for ``live_s`` seconds, or last
        announced by a process of this host that no longer runs (a restart after a crash, a
        ``kill -9``). Otherwise why: another live node runs under this name — whether it or this
        one is active (OPERATIONS.md "Running two nodes": each node needs its own [node] name).
        Raises :class:`LeaseUnavailable` as the other calls."""
        args = (self.name_key, self.instance, self.host, self.pid, live_s)
        if await self._call(ANNOUNCE, *args, ""):
            return None
        rows = await self._call(SEEN, self.name_key)
        if not rows:  # gone in between: ours at the next announce
            return None
        r = rows[0]
        if r["host"] == self.host and (r["pid"] == self.pid or not pid_alive(r["pid"])):
            # This host's earlier process of this name (dead; or this very PID: a container restarted)
            if await self._call(ANNOUNCE, *args, r["instance"]):
                return None
        return (f"another live node is running as {self.holder!r} (host {r['host']}, process {r['pid']}, seen "
                f"{max(r['ago'], 0.0):.1f} s ago) — each node of a pair needs its own [node] name")

    @property
    def name_key(self) -> str:
        """The node's row in ``msc_node_seen``: its name within this lease."""
        return f"{self.name}/{self.holder}"

    # -- the lease -----------------------------------------------------------------------------

    async def acquire(self, *, defer_within_s: float | None = None) -> Granted | Held:
        """Take the lease if it is free or expired (a new epoch), else say who holds it. With
        ``defer_within_s``, an expired lease of this node's own name is not taken while another
        node of this lease was seen (announced) within that many seconds: ``Held(own name, epoch,
        remaining <= 0)``."""
        row = (await self._call(ACQUIRE, self.name, self.holder, self.ttl_s, defer_within_s))[0]
        if row["won"] is not None:
            return Granted(int(row["won"]), *taken_from(row["prev_holder"], row["prev_ended"], self.holder))
        return Held(row["holder"], row["epoch"], row["remaining"], heard=row["heard"] is not False)

    async def confirm(self, epoch: int) -> bool:
        """Say in the lease row that this node knows it holds ``epoch`` (right after the grant):
        a take whose answer never reached its node — the database frozen or the connection cut
        while it committed — stays unheard, and the next take, the same node's retry included,
        reports the tenure before it (:func:`taken_from`), not that phantom. False: not ours."""
        return bool(await self._call(CONFIRM, self.name, self.holder, epoch))

    async def renew(self, epoch: int) -> bool:
        """Extend the lease by ``ttl`` from the database's now; False: it is no longer ours."""
        return bool(await self._call(RENEW, self.name, self.holder, epoch, self.ttl_s))

    async def release(self, epoch: int) -> bool:
        """Give the lease up (clean stop): it expires now, a standby takes it at its next poll."""
        return bool(await self._call(RELEASE, self.name, self.holder, epoch))

    async def depart(self) -> bool:
        """This process stops (cleanly): its "alive" row goes, so that ``msc status`` no longer
        counts it as running (a row of a newer process of this name is left). Bounded as every call."""
        return bool(await self._call(DEPART, self.name_key, self.instance))

    async def seen_alive(self, within_s: float) -> list[SeenNode]:
        """The nodes of this lease (any name) that announced themselves within ``within_s``
        seconds by the database's clock — every running node does, every ``ttl / 3``."""
        return [SeenNode(r["node"], r["host"], int(r["pid"]), max(float(r["ago"]), 0.0))
                for r in await self._call(SEEN_ALIVE, self.name, within_s)]

    async def current(self) -> LeaseRow | None:
        """The lease row as the database sees it now (for /readyz and operators), or None."""
        rows = await self._call(CURRENT, self.name)
        if not rows:
            return None
        r = rows[0]
        return LeaseRow(r["holder"], int(r["epoch"]), bool(r["live"]), float(r["remaining"]), bool(r["released"]),
                        bool(r["heard"]))

    def fence_for(self, epoch: int, *, before: Callable[[], None] | None = None,
                  on_fenced: Callable[[str], None] | None = None) -> Fence:
        """The fence the journal writer runs inside each commit transaction, before inserting.

        It raises :class:`Fenced` when this node no longer holds the lease at ``epoch`` (the
        transaction must then be rolled back: nothing of it is committed). ``before()`` runs
        first and may raise :class:`Fenced` itself (the local belief has already lapsed: no
        round trip); ``on_fenced(reason)`` is told of every refusal (the node steps down).
        """
        name, holder = self.name, self.holder

        async def fence(conn: asyncpg.Connection) -> None:
            try:
                if before is not None:
                    before()
                await conn.execute("SELECT msc_fence($1, $2, $3)", name, holder, epoch)
            except Fenced as exc:
                if on_fenced is not None:
                    on_fenced(str(exc))
                raise
            except asyncpg.PostgresError as exc:
                if not is_fenced(exc):
                    raise
                if on_fenced is not None:
                    on_fenced(str(exc))
                raise Fenced(str(exc)) from None

        return fence


def taken_from(holder: str | None, ended: str | None, me: str) -> tuple[str, str | None]:
    """(how, previous holder) of a granted lease, from the tenure it followed as the acquisition
    recorded it (``prev_holder``, ``prev_ended``: "released" or "expired"). A take its holder never
    heard of (its answer lost) is not a tenure: the database skips it, so a node that finds its
    own name on an epoch it never knew — its own lost take, retried — reports the tenure that take
    followed (a failover stays a failover), and "own" means the node held it and knew (a restart)."""
    if holder is None:
        return FREE, None
    if holder == me:
        return OWN, holder
    if ended == "released":
        return RELEASED, holder
    return FAILOVER, holder


def pid_alive(pid: int) -> bool:
    """Does a process ``pid`` run on this host? (``kill(pid, 0)``: a process of another user counts.)"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return pid > 0


async def ensure_schema(conn: asyncpg.Connection) -> None:
    """Create the lease table and the fence function if missing (idempotent; two nodes starting
    at once are serialised by a transaction-scoped advisory lock)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('msc_lease'))")
        await conn.execute(SCHEMA)
