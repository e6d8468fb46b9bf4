"""Where one feature worker's ingest time goes: the micro-batch handler (`Ingestor.on_txns`) run in process on its
own PostgreSQL and Redis (no NATS), over a seeded world, with the time of every stage and SQL statement, and
optionally a cProfile of the worker's Python.

    python -m bench.ingest_stages                         # 20,000 transactions in micro-batches of 500
    python -m bench.ingest_stages --batch 2000 --profile  # + the top functions by own time

Prints transactions/s of the handler alone (no stream), PostgreSQL time per statement kind (from the client
side: wall time of each awaited query) and the worker's CPU per transaction. A diagnostic, not a report.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import math
import os
import pstats
import resource
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry

from bench.ingest import _pid, server_cpu
from deploy.servers import start_postgres, start_redis, stop_postgres
from feature_svc.definitions import FEATURE_SET_VERSION
from feature_svc.graph import PostgresGraphStore
from feature_svc.ingest.check import check_consistency
from feature_svc.ingest.ingestor import Ingestor
from feature_svc.ingest.synthetic import synthetic_transactions
from feature_svc.online import OnlineStore
from feature_svc.world import WorldParams, generate_world
from shared.context import Delivered, Delivery
from tests.worlds import load_world_into

SUBJECT = "fraud.txns.ingest"


def _label(sql: str) -> str:
    text = " ".join(sql.split())
    return text[:50] + " … " + text[-70:]


class TimedPool:
    """The pool, with the wall time of every fetch/execute summed per statement (its first 90 characters)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.times: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    async def _timed(self, method: str, sql: str, *args: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await getattr(self._pool, method)(sql, *args, **kw)
        finally:
            key = _label(sql)
            self.times[key] += time.perf_counter() - t0
            self.counts[key] += 1

    async def fetch(self, sql: str, *args: Any, **kw: Any) -> Any:
        return await self._timed("fetch", sql, *args, **kw)

    async def execute(self, sql: str, *args: Any, **kw: Any) -> Any:
        return await self._timed("execute", sql, *args, **kw)


async def explain(pool: asyncpg.Pool, batch: list[Any]) -> None:
    """Server time of each feature query over the entities of one micro-batch (EXPLAIN ANALYZE, run alone)."""
    from feature_svc.compute import _graph_features, _sql_groups, group_sql
    from feature_svc.definitions import GROUPS
    from feature_svc.graph.batch import BATCH_SQL
    from feature_svc.ingest import touched
    from feature_svc.ingest.refresh import now_ms

    entities = touched.of_transactions(batch)
    as_of = now_ms()
    by_type: dict[str, list[str]] = defaultdict(list)
    for t, i in entities:
        by_type[t].append(i)
    rows: list[tuple[float, str]] = []
    for etype, ids in by_type.items():
        queries = {name: group_sql(GROUPS[name], feats) for name, feats in _sql_groups(etype).items()}
        for f in _graph_features(etype):
            sql = BATCH_SQL.get((f.graph_batch or "", etype))
            if sql is not None:
                queries[f.name] = sql
        for name, sql in queries.items():
            plan = await pool.fetch("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, ids, [as_of] * len(ids))
            doc = json.loads(plan[0][0])[0]
            rows.append((doc["Execution Time"] + doc.get("Planning Time", 0.0), f"{etype} {name} ({len(ids)} ids)"))
    total = sum(ms for ms, _ in rows)
    print(
        f"server time of the feature queries of one batch ({len(batch)} transactions): {total:.0f} ms, "
        f"{total / len(batch):.3f} ms/tx"
    )
    for ms, name in sorted(rows, reverse=True):
        print(f"  {ms:8.1f} ms  {name}")


async def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="fraudmesh-ingest-stages-"))
    os.chmod(tmp, 0o755)
    pg = start_postgres(tmp / "pg")
    rds = start_redis(tmp / "redis")
    try:
        world = generate_world(
            WorldParams(n_cards=2000, n_transactions=20_000, seed=1, start=datetime.now(UTC) - timedelta(days=14)),
            progress=False,
        )
        pool = await load_world_into(pg.extra["dsn"], world)
        online = OnlineStore.from_url(rds.extra["url"], version=FEATURE_SET_VERSION)
        timed = TimedPool(pool)
        tpool: Any = timed
        graph = PostgresGraphStore(tpool)
        ing = Ingestor(tpool, graph, online, CollectorRegistry(), check_interval_s=0)
        times, counts = timed.times, timed.counts
        txns = synthetic_transactions(args.n, seed=1, prefix="st")
        batches = [txns[k : k + args.batch] for k in range(0, len(txns), args.batch)]
        prof = cProfile.Profile() if args.profile else None
        servers = {"postgres": _pid(pg), "redis": _pid(rds)}
        srv0 = server_cpu(servers)
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        if prof:
            prof.enable()
        sem = asyncio.Semaphore(args.concurrency)

        async def one(b: list[Any]) -> None:
            async with sem:
                await ing.on_txns([Delivered(t, Delivery(SUBJECT, {}, t.transaction_id, math.inf)) for t in b])

        deferred_s = 0.0
        if args.deferred:  # the deferred pass after every micro-batch (a worker runs it every second)
            for b in batches:
                await one(b)
                d0 = time.perf_counter()
                await ing.deferred_pass()
                deferred_s += time.perf_counter() - d0
        else:
            await asyncio.gather(*(one(b) for b in batches))
        if prof:
            prof.disable()
        wall = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        srv1 = server_cpu(servers)
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        print(
            f"{args.n} transactions, batches of {args.batch}, concurrency {args.concurrency}: "
            f"{args.n / wall:.0f} tx/s, CPU per transaction: worker {cpu / args.n * 1000:.3f} ms, "
            + ", ".join(f"{k} {(srv1[k] - srv0.get(k, 0.0)) / args.n * 1000:.3f} ms" for k in srv1)
            + f"; load average {os.getloadavg()[0]:.1f}"
        )
        if args.deferred:
            print(f"deferred pass: {deferred_s / args.n * 1000:.3f} ms/tx wall (sequential after each batch)")
        print("statement wall time (client side, overlapping when concurrent):")
        for key, secs in sorted(times.items(), key=lambda kv: -kv[1])[:25]:
            print(f"  {secs / args.n * 1000:7.3f} ms/tx  {counts[key]:5d}x  {key}")
        if args.explain:
            await explain(pool, txns[-args.batch :])
        if args.check:
            await ing.deferred_pass()  # the lagging graph features of the other cards (a background job in a worker)
            ents = [("card", t.card_id) for t in txns[:: max(1, args.n // 200)]]
            ents += [("merchant", t.merchant_id or "") for t in txns[:50]]
            ents += [("device", t.device_id or "") for t in txns[:100]]
            ents += [("ip", t.ip_address or "") for t in txns[:100]]
            report = await check_consistency(pool, graph, online, ents)
            print(f"consistency: {report.checked} checked, {len(report.mismatches)} mismatches")
            for m in report.mismatches[:10]:
                print("  ", m)
        if prof:
            stats = pstats.Stats(prof, stream=sys.stdout)
            stats.sort_stats("tottime").print_stats(args.top)
            stats.sort_stats("cumulative").print_stats(args.top)
        await online.close()
        await pool.close()
    finally:
        rds.stop()
        stop_postgres(pg)
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ingest_stages", description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--check", action="store_true", help="consistency check of a sample afterwards")
    p.add_argument("--deferred", action="store_true", help="run and time the deferred pass after each batch")
    p.add_argument("--explain", action="store_true", help="server time of each feature query for one batch")
    p.add_argument("--top", type=int, default=30)
    asyncio.run(run(p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
