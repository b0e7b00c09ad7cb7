#!/usr/bin/env python3
"""Which PostgreSQL client for the journal's hot path: psycopg 3 or asyncpg, measured.

    .venv/bin/python bench/pg_client_bench.py [--seconds 3] [--rounds 2]

The workload is the journal's group commit (issue 16): one transaction carries a batch of
records, each with the 14 metadata columns of today's SQLite journal (seq, ts, kind, direction,
peer, mnemonic, user, taf, ori, mke, txn, code, purpose, osn), a sealed BYTEA of 200–2,000 bytes
(uniform), its 32-byte Merkle leaf and 3 blind-index token rows (16 bytes each) in a second
table; both tables are partitioned by month as the backend will be. Every transaction is
fenced: ``msc_fence(epoch)`` fails the transaction (an error, SQLSTATE MSC01) when the epoch is
no longer the lease's — an error and not a row count, so that it also aborts a pipelined
transaction whose COMMIT the client has already sent.

Each client is measured in the ways it can do that transaction:

* ``psycopg-pipeline``: fence + ``executemany`` (records) + ``executemany`` (tokens) + COMMIT in
  one pipeline: one network round trip per transaction.
* ``psycopg-copy``: fence, binary ``COPY`` of records and of tokens, COMMIT.
* ``psycopg-unnest`` / ``asyncpg-unnest``: one statement (arrays → ``unnest``, tokens in a
  data-modifying CTE, the fence in an InitPlan), autocommit: one round trip for either client.
* ``asyncpg-executemany``: ``transaction()``: fence, ``executemany`` ×2.
* ``asyncpg-copy``: ``transaction()``: fence, ``copy_records_to_table`` ×2.

Cells: every method × batch size (1, 16, 128 records) × durability (commit flushed locally;
synchronous standby, ``synchronous_commit = on``), one writer connection in closed loop (as the
journal has one batch in flight); then 4 writer connections with the fence as a row share lock
(``FOR SHARE``, concurrent commits) and as an ``UPDATE`` of the lease row (commits serialised).
Reported per cell: records/s, commits/s, commit latency p50/p99, the client's CPU per record and
the servers' CPU per record (primary and standby processes from /proc). Each cell runs
``--seconds`` per round, the cells interleaved round by round; the median round is reported.
After each method's cells a stale epoch must be refused and leave no row (checked, not timed).

Both servers run with fsync on (``durable``) in temporary directories (tests/pg.py). Writes
bench/results/pg-client-<stamp>.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.pg import PgCluster  # noqa: E402

COLS = ("seq", "ts", "kind", "direction", "peer", "mnemonic", "usr", "taf", "ori", "mke", "txn", "code",
        "purpose", "osn", "blob", "leaf")
ARRAY_TYPES = ("bigint", "bigint", "text", "text", "text", "text", "text", "text", "text", "text", "text", "text",
               "text", "integer", "bytea", "bytea")
TOKENS_PER_RECORD = 3
PERIOD = 202612
TS0 = 1_796_000_000_000_000  # µs, inside the bench month's partition

SCHEMA = f"""
DROP TABLE IF EXISTS journal, journal_tokens, msc_lease CASCADE;
CREATE TABLE journal (
    seq bigint NOT NULL, ts bigint NOT NULL, kind text NOT NULL, direction text NOT NULL,
    peer text, mnemonic text, usr text, taf text, ori text, mke text, txn text, code text,
    purpose text, osn integer, blob bytea NOT NULL, leaf bytea NOT NULL,
    PRIMARY KEY (ts, seq)
) PARTITION BY RANGE (ts);
CREATE TABLE journal_{PERIOD} PARTITION OF journal FOR VALUES FROM ({TS0 - 10**13}) TO ({TS0 + 10**13});
CREATE TABLE journal_tokens (period integer NOT NULL, token bytea NOT NULL, seq bigint NOT NULL)
    PARTITION BY LIST (period);
CREATE TABLE journal_tokens_{PERIOD} PARTITION OF journal_tokens FOR VALUES IN ({PERIOD});
CREATE INDEX ON journal_tokens (token);
CREATE TABLE msc_lease (name text PRIMARY KEY, holder text NOT NULL, epoch bigint NOT NULL,
                        renewed timestamptz NOT NULL DEFAULT now());
INSERT INTO msc_lease VALUES ('active', 'bench', 1);
CREATE OR REPLACE FUNCTION msc_fence(p_epoch bigint) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM msc_lease WHERE name = 'active' AND epoch = p_epoch FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'fenced: epoch % is not the lease''s', p_epoch USING ERRCODE = 'MSC01';
    END IF;
    RETURN true;
END $$;
CREATE OR REPLACE FUNCTION msc_fence_update(p_epoch bigint) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    UPDATE msc_lease SET renewed = now() WHERE name = 'active' AND epoch = p_epoch;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'fenced: epoch % is not the lease''s', p_epoch USING ERRCODE = 'MSC01';
    END IF;
    RETURN true;
END $$;
"""

INSERT_PS = f"INSERT INTO journal ({', '.join(COLS)}) VALUES ({', '.join(['%s'] * len(COLS))})"
TOKEN_PS = "INSERT INTO journal_tokens (period, token, seq) VALUES (%s, %s, %s)"
INSERT_AP = f"INSERT INTO journal ({', '.join(COLS)}) VALUES ({', '.join(f'${i + 1}' for i in range(len(COLS)))})"
TOKEN_AP = "INSERT INTO journal_tokens (period, token, seq) VALUES ($1, $2, $3)"


def unnest_sql(ph: list[str], fence: str) -> str:
    """One statement: the fence (a materialised CTE, evaluated once), the records, the tokens."""
    rec = ", ".join(f"{p}::{t}[]" for p, t in zip(ph[:16], ARRAY_TYPES, strict=True))
    return (f"WITH f AS MATERIALIZED (SELECT {fence}({ph[16]}) AS ok), "
            f"r AS (INSERT INTO journal ({', '.join(COLS)}) SELECT u.* FROM f, unnest({rec}) AS u WHERE f.ok), "
            f"t AS (INSERT INTO journal_tokens (period, token, seq) "
            f"SELECT {PERIOD}, u.tk, u.sq FROM f, unnest({ph[17]}::bytea[], {ph[18]}::bigint[]) AS u(tk, sq) "
            f"WHERE f.ok) SELECT 1")


UNNEST_PS = {f: unnest_sql([f"%(c{i})s" for i in range(16)] + ["%(epoch)s", "%(tk)s", "%(sq)s"], f)
             for f in ("msc_fence", "msc_fence_update")}
UNNEST_AP = {f: unnest_sql([f"${i + 1}" for i in range(19)], f) for f in ("msc_fence", "msc_fence_update")}


@dataclass
class Batch:
    rows: list[tuple]
    tokens: list[tuple]  # (period, token, seq)

    def columns(self) -> list[list]:
        return [list(c) for c in zip(*self.rows, strict=True)]


class Workload:
    """Pre-generated record bodies; each batch gets fresh sequence numbers."""

    def __init__(self, seed: int = 16) -> None:
        rnd = random.Random(seed)
        kinds = ("RECEIVED", "FORWARDED", "DELIVERED", "RECEIVED")
        self.bodies = []
        for i in range(4096):
            size = rnd.randint(200, 2000)
            self.bodies.append((kinds[i % 4], "IN" if i % 2 == 0 else "OUT", f"X{i % 64:03d}", f"T{i % 64:03d}",
                                f"TS{i % 99:04d}", "QW", "CA0130000", "QW", f"TXN{i:06d}", None, "C", i % 65535,
                                rnd.randbytes(size), rnd.randbytes(32)))
        self.seq = 0

    def batch(self, n: int) -> Batch:
        rows, tokens = [], []
        for _ in range(n):
            self.seq += 1
            b = self.bodies[self.seq % len(self.bodies)]
            rows.append((self.seq, TS0 + self.seq, *b))
            for k in range(TOKENS_PER_RECORD):
                tokens.append((PERIOD, self.seq.to_bytes(8, "big") + k.to_bytes(8, "big"), self.seq))
        return Batch(rows, tokens)


class Fenced(Exception):
    """The database refused the commit: the epoch is no longer the lease's."""


# --- the methods ------------------------------------------------------------------------------


class PsycopgMethod:
    family = "psycopg"

    def __init__(self, conninfo: str, fence: str) -> None:
        self.conninfo, self.fence = conninfo, fence

    async def connect(self) -> None:
        import psycopg

        self.psycopg = psycopg
        self.conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=self.autocommit)

    async def close(self) -> None:
        await self.conn.close()

    async def guarded(self, coro) -> None:
        try:
            await coro
        except self.psycopg.errors.RaiseException as e:
            if e.sqlstate == "MSC01":
                raise Fenced(str(e)) from e
            raise
        except self.psycopg.Error as e:
            if getattr(e, "sqlstate", None) == "MSC01":
                raise Fenced(str(e)) from e
            raise


class PsycopgPipeline(PsycopgMethod):
    name = "psycopg-pipeline"
    autocommit = False

    async def _commit(self, b: Batch, epoch: int) -> None:
        try:
            async with self.conn.pipeline():
                async with self.conn.cursor() as cur:
                    await cur.execute(f"SELECT {self.fence}(%s)", (epoch,))
                    await cur.executemany(INSERT_PS, b.rows)
                    await cur.executemany(TOKEN_PS, b.tokens)
                await self.conn.commit()
        except BaseException:
            await self.conn.rollback()
            raise

    async def commit(self, b: Batch, epoch: int) -> None:
        await self.guarded(self._commit(b, epoch))


class PsycopgCopy(PsycopgMethod):
    name = "psycopg-copy"
    autocommit = False

    async def _commit(self, b: Batch, epoch: int) -> None:
        try:
            async with self.conn.cursor() as cur:
                await cur.execute(f"SELECT {self.fence}(%s)", (epoch,))
                async with cur.copy(f"COPY journal ({', '.join(COLS)}) FROM STDIN (FORMAT BINARY)") as cp:
                    cp.set_types(list(ARRAY_TYPES))
                    for r in b.rows:
                        await cp.write_row(r)
                async with cur.copy("COPY journal_tokens (period, token, seq) FROM STDIN (FORMAT BINARY)") as cp:
                    cp.set_types(["integer", "bytea", "bigint"])
                    for t in b.tokens:
                        await cp.write_row(t)
            await self.conn.commit()
        except BaseException:
            await self.conn.rollback()
            raise

    async def commit(self, b: Batch, epoch: int) -> None:
        await self.guarded(self._commit(b, epoch))


class PsycopgUnnest(PsycopgMethod):
    name = "psycopg-unnest"
    autocommit = True

    async def commit(self, b: Batch, epoch: int) -> None:
        cols = b.columns()
        params = {f"c{i}": c for i, c in enumerate(cols)}
        params.update(epoch=epoch, tk=[t[1] for t in b.tokens], sq=[t[2] for t in b.tokens])
        await self.guarded(self.conn.execute(UNNEST_PS[self.fence], params))


class AsyncpgMethod:
    family = "asyncpg"

    def __init__(self, conninfo: str, fence: str, *, port: int, passfile: str) -> None:
        self.fence, self.port, self.passfile = fence, port, passfile

    async def connect(self) -> None:
        import asyncpg

        self.asyncpg = asyncpg
        self.conn = await asyncpg.connect(host="127.0.0.1", port=self.port, user="postgres", database="postgres",
                                          passfile=self.passfile)

    async def close(self) -> None:
        await self.conn.close()

    async def guarded(self, coro) -> None:
        try:
            await coro
        except self.asyncpg.PostgresError as e:
            if e.sqlstate == "MSC01":
                raise Fenced(str(e)) from e
            raise


class AsyncpgExecutemany(AsyncpgMethod):
    name = "asyncpg-executemany"

    async def _commit(self, b: Batch, epoch: int) -> None:
        async with self.conn.transaction():
            await self.conn.execute(f"SELECT {self.fence}($1)", epoch)
            await self.conn.executemany(INSERT_AP, b.rows)
            await self.conn.executemany(TOKEN_AP, b.tokens)

    async def commit(self, b: Batch, epoch: int) -> None:
        await self.guarded(self._commit(b, epoch))


class AsyncpgCopy(AsyncpgMethod):
    name = "asyncpg-copy"

    async def _commit(self, b: Batch, epoch: int) -> None:
        async with self.conn.transaction():
            await self.conn.execute(f"SELECT {self.fence}($1)", epoch)
            await self.conn.copy_records_to_table("journal", records=b.rows, columns=list(COLS))
            await self.conn.copy_records_to_table("journal_tokens", records=b.tokens,
                                                  columns=["period", "token", "seq"])

    async def commit(self, b: Batch, epoch: int) -> None:
        await self.guarded(self._commit(b, epoch))


class AsyncpgUnnest(AsyncpgMethod):
    name = "asyncpg-unnest"

    async def commit(self, b: Batch, epoch: int) -> None:
        cols = b.columns()
        await self.guarded(self.conn.execute(UNNEST_AP[self.fence], *cols, epoch,
                                             [t[1] for t in b.tokens], [t[2] for t in b.tokens]))


METHODS = {m.name: m for m in (PsycopgPipeline, PsycopgCopy, PsycopgUnnest, AsyncpgExecutemany, AsyncpgCopy,
                               AsyncpgUnnest)}


def make(name: str, pg: PgCluster, fence: str):
    cls = METHODS[name]
    if issubclass(cls, AsyncpgMethod):
        return cls(pg.conninfo(), fence, port=pg.port, passfile=str(pg.passfile))
    return cls(pg.conninfo(), fence)


# --- measuring --------------------------------------------------------------------------------


def servers_cpu(clusters: list[PgCluster]) -> float:
    """CPU seconds (user + system) of every process of these clusters (postmaster and children)."""
    from tests.pg import _pids_with_cwd

    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pg in clusters:
        for pid in _pids_with_cwd(pg.data_dir):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


async def run_cell(method: str, pg: PgCluster, clusters: list[PgCluster], work: Workload, *, batch: int,
                   seconds: float, writers: int, fence: str) -> dict:
    conns = [make(method, pg, fence) for _ in range(writers)]
    for c in conns:
        await c.connect()
    lat: list[float] = []
    records = 0
    stop_at = 0.0

    async def writer(c) -> None:
        nonlocal records
        while time.monotonic() < stop_at:
            b = work.batch(batch)
            t0 = time.perf_counter()
            await c.commit(b, 1)
            lat.append(time.perf_counter() - t0)
            records += batch

    # warm-up: statements prepared, caches filled
    for c in conns:
        for _ in range(5):
            await c.commit(work.batch(batch), 1)
    s0, cpu0, t0 = servers_cpu(clusters), time.process_time(), time.monotonic()
    stop_at = t0 + seconds
    await asyncio.gather(*(writer(c) for c in conns))
    wall = time.monotonic() - t0
    cpu, scpu = time.process_time() - cpu0, servers_cpu(clusters) - s0
    for c in conns:
        await c.close()
    lat.sort()
    return {"records_per_s": records / wall, "commits_per_s": len(lat) / wall,
            "p50_ms": 1000 * lat[len(lat) // 2], "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
            "client_cpu_us_per_record": 1e6 * cpu / max(records, 1),
            "server_cpu_us_per_record": 1e6 * scpu / max(records, 1), "commits": len(lat), "records": records}


async def check_fence(method: str, pg: PgCluster, work: Workload) -> bool:
    """A stale epoch must be refused and leave nothing behind."""
    c = make(method, pg, "msc_fence")
    await c.connect()
    before = pg.sql("SELECT count(*) FROM journal")
    pg.sql("UPDATE msc_lease SET epoch = epoch + 1")
    refused = False
    try:
        await c.commit(work.batch(16), 1)
    except Fenced:
        refused = True
    after = pg.sql("SELECT count(*) FROM journal")
    pg.sql("UPDATE msc_lease SET epoch = 1")
    # the connection must still be usable after the refusal
    await c.commit(work.batch(1), 1)
    await c.close()
    return refused and before == after


def reset(pg: PgCluster) -> None:
    pg.sql(f"TRUNCATE journal_{PERIOD}, journal_tokens_{PERIOD}")
    pg.sql("VACUUM msc_lease")
    pg.sql("CHECKPOINT")


async def bench(args) -> dict:
    import asyncpg
    import psycopg

    work = Workload()
    cells: list[dict] = []
    fence_ok: dict[str, bool] = {}
    methods = args.methods.split(",") if args.methods else list(METHODS)
    with PgCluster.create(durable=True, settings={"max_wal_size": "2GB", "checkpoint_timeout": "15min"}) as pg:
        pg.sql(SCHEMA)
        setups = [("local", lambda: None), ("sync-standby", lambda: pg.add_standby(synchronous=True))]
        for durability, setup in setups:
            setup()
            clusters = [pg, *pg.standbys]
            plan = [(m, b, 1, "msc_fence") for b in args.batches for m in methods]
            plan += [(m, args.concurrent_batch, args.concurrent_writers, f)
                     for f in ("msc_fence", "msc_fence_update") for m in methods if m in args.concurrent_methods]
            results: dict[tuple, list[dict]] = {p: [] for p in plan}
            for rnd in range(args.rounds):
                for p in (plan if rnd % 2 == 0 else list(reversed(plan))):
                    reset(pg)
                    m, b, w, f = p
                    r = await run_cell(m, pg, clusters, work, batch=b, seconds=args.seconds, writers=w, fence=f)
                    results[p].append(r)
                    print(f"{durability:12} {m:20} batch {b:4} writers {w} {f:16} "
                          f"{r['records_per_s']:9.0f} rec/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  "
                          f"client {r['client_cpu_us_per_record']:6.1f} µs/rec  server "
                          f"{r['server_cpu_us_per_record']:6.1f} µs/rec", flush=True)
            for (m, b, w, f), rs in results.items():
                med = sorted(rs, key=lambda r: r["records_per_s"])[len(rs) // 2]
                cells.append({"durability": durability, "method": m, "batch": b, "writers": w,
                              "fence": "share" if f == "msc_fence" else "update",
                              **{k: round(v, 3) if isinstance(v, float) else v for k, v in med.items()},
                              "rounds_records_per_s": [round(r["records_per_s"]) for r in rs]})
            if durability == "local":
                for m in methods:
                    reset(pg)
                    fence_ok[m] = await check_fence(m, pg, work)
        fsync = pg.sql("SHOW fsync")
    return {"bench": "pg-client", "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(args.t_start)),
            "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "cpu": platform.processor()},
            "postgresql": pg_version(), "fsync": fsync,
            "psycopg": f"{psycopg.__version__} ({psycopg.pq.__impl__}, libpq {psycopg.pq.version()})",
            "asyncpg": asyncpg.__version__, "loop": "uvloop", "seconds_per_cell": args.seconds,
            "rounds": args.rounds, "record_bytes": "200-2000 sealed + 32 leaf + 14 metadata columns",
            "tokens_per_record": TOKENS_PER_RECORD, "fence_refuses_stale_epoch": fence_ok, "cells": cells}


def pg_version() -> str:
    import subprocess

    from tests.pg import find_bindir

    bindir = find_bindir()
    return subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True).stdout.strip()


def render(doc: dict) -> str:
    lines = [f"# PostgreSQL client benchmark {doc['started']}", "",
             f"{doc['postgresql']}, fsync={doc['fsync']}; psycopg {doc['psycopg']}; asyncpg {doc['asyncpg']}; "
             f"{doc['loop']}; {doc['machine']['cores']} cores, Python {doc['machine']['python']}. "
             f"Records: {doc['record_bytes']}, {doc['tokens_per_record']} token rows each; every transaction fenced. "
             f"{doc['seconds_per_cell']} s per cell per round, {doc['rounds']} rounds interleaved, median round shown.",
             "", "Stale epoch refused, nothing written: "
             + ", ".join(f"{m} {'yes' if ok else '**NO**'}" for m, ok in doc["fence_refuses_stale_epoch"].items()),
             ""]
    for durability in ("local", "sync-standby"):
        lines += [f"## {durability}", "",
                  "| method | batch | writers | fence | records/s | commits/s | p50 ms | p99 ms | client µs/rec | server µs/rec | rounds |",
                  "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|"]
        for c in doc["cells"]:
            if c["durability"] != durability:
                continue
            lines.append(f"| {c['method']} | {c['batch']} | {c['writers']} | {c['fence']} | {c['records_per_s']:,.0f} | "
                         f"{c['commits_per_s']:,.0f} | {c['p50_ms']:.2f} | {c['p99_ms']:.2f} | "
                         f"{c['client_cpu_us_per_record']:.1f} | {c['server_cpu_us_per_record']:.1f} | "
                         f"{', '.join(f'{x:,}' for x in c['rounds_records_per_s'])} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16, 128])
    ap.add_argument("--methods", help=f"comma-separated subset of {', '.join(METHODS)}")
    ap.add_argument("--concurrent-writers", type=int, default=4)
    ap.add_argument("--concurrent-batch", type=int, default=16)
    ap.add_argument("--concurrent-methods", type=lambda s: s.split(","),
                    default=["psycopg-pipeline", "psycopg-unnest", "asyncpg-executemany", "asyncpg-unnest"])
    args = ap.parse_args()
    args.t_start = time.time()
    import uvloop

    doc = uvloop.run(bench(args))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"pg-client-{stamp}.json").write_text(json.dumps(doc, indent=1) + "\n")
    md = render(doc)
    (out / f"pg-client-{stamp}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
