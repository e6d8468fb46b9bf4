"""Live-sized ingestion, statement by statement: what PostgreSQL spends per ingested transaction when the
micro-batches are as small as in live scoring traffic (tens of transactions), ranked by pg_stat_statements.

    python -m bench.ingest_live --batch 30 --n 3000 --name ingest-live

Runs `Ingestor.on_txns` in process (no NATS) on its own PostgreSQL (with `pg_stat_statements` preloaded) and
Redis over a seeded world whose history ends now (so the 30-day windows of busy merchants are full, as in a
world that has been ingesting), feeding it world transactions re-sent with new ids and the current time: the
entities a scored transaction touches in the benchmark. Reports the CPU per transaction of the worker, the
PostgreSQL backends and Redis, the statements ranked by total execution time (plus planning time) and the
consistency check of a sample, and writes bench/results/<name>.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
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
from feature_svc.online import OnlineStore
from feature_svc.world import WorldParams, generate_world
from shared.context import Delivered, Delivery
from shared.ingest_messages import TxnIngest
from tests.worlds import load_world_into

SUBJECT = "fraud.txns.ingest"
RESULTS = Path(__file__).parent / "results"

TOP_SQL = """SELECT calls, total_exec_time, total_plan_time, rows, shared_blks_hit + shared_blks_read AS blocks,
    query FROM pg_stat_statements
    WHERE query NOT ILIKE '%pg_stat_statements%' ORDER BY total_exec_time + total_plan_time DESC LIMIT $1"""


def _short(sql: str) -> str:
    text = " ".join(sql.split())
    return text if len(text) <= 160 else text[:90] + " … " + text[-60:]


async def live_transactions(pool: asyncpg.Pool, n: int, prefix: str) -> list[TxnIngest]:
    """`n` world transactions (seeded hash order, like the scoring benchmark's bodies) with new ids, stamped now."""
    rows = await pool.fetch(
        "SELECT card_id, amount, merchant_id, mcc_code, country_code, channel, device_id, ip_address "
        "FROM transactions ORDER BY md5(transaction_id || 'live') LIMIT $1",
        n,
    )
    now = datetime.now(UTC)
    return [
        TxnIngest(
            transaction_id=f"{prefix}-{k}",
            timestamp=now - timedelta(milliseconds=n - k),
            card_id=r["card_id"],
            merchant_id=r["merchant_id"],
            device_id=r["device_id"],
            ip_address=r["ip_address"],
            transaction_amount=float(r["amount"]),
            currency="EUR",
            country_code=r["country_code"],
            mcc_code=r["mcc_code"],
            channel=r["channel"],
            source="http",
        )
        for k, r in enumerate(rows)
    ]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="fraudmesh-ingest-live-"))
    os.chmod(tmp, 0o755)
    settings = {"shared_preload_libraries": "pg_stat_statements", "pg_stat_statements.track": "all"}
    if args.explain_log:  # the plans of slow statements (auto_explain) into that file
        settings |= {
            "shared_preload_libraries": "pg_stat_statements,auto_explain",
            "auto_explain.log_min_duration": str(args.explain_ms),
            "auto_explain.log_analyze": "on",
            "auto_explain.log_buffers": "on",
        }
    pg = start_postgres(tmp / "pg", settings=settings)
    rds = start_redis(tmp / "redis")
    try:
        t_world = time.perf_counter()
        world = generate_world(
            WorldParams(
                n_cards=args.cards,
                n_transactions=args.world,
                days=args.days,
                seed=1,
                start=datetime.now(UTC) - timedelta(days=args.days, minutes=5),
            ),
            progress=False,
        )
        pool = await load_world_into(pg.extra["dsn"], world)
        # a settled world: autovacuum keeps a long-running ledger's visibility map set but for the newest pages
        for table in ("transactions", "edges", "labels", "card_fraud_labels"):
            await pool.execute(f"VACUUM (FREEZE, ANALYZE) {table}")
        # a second pass: the first left the tables loaded last (edges) out of the visibility map (all_visible 0 of
        # 2,304 pages, seen with pg_visibility), so every index-only scan of the graph fetched the heap, unlike a
        # settled ledger's (autovacuum sets the map where nothing rewrites the rows)
        for table in ("transactions", "edges", "labels", "card_fraud_labels"):
            await pool.execute(f"VACUUM {table}")
        # after the VACUUM: created before it, the extension left every page of the world not all-visible
        await pool.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        visible = {
            r["relname"]: [r["relpages"], r["relallvisible"]]
            for r in await pool.fetch(
                "SELECT relname, relpages, relallvisible FROM pg_class WHERE relname IN ('transactions', 'edges')"
            )
        }
        print(f"world of {args.world} transactions loaded in {time.perf_counter() - t_world:.0f} s", flush=True)
        online = OnlineStore.from_url(rds.extra["url"], version=FEATURE_SET_VERSION)
        graph = PostgresGraphStore(pool)
        extra = (
            {
                "refresh_interval_s": args.refresh_interval_ms / 1000.0,
                "entity_refresh_interval_s": args.entity_interval_ms / 1000.0,
            }
            if "refresh_interval_s" in inspect.signature(Ingestor).parameters  # the code before them had none
            else {}
        )
        ing = Ingestor(pool, graph, online, CollectorRegistry(), check_interval_s=0, **extra)
        txns = await live_transactions(pool, args.n + args.warmup, "live")
        warm, txns = txns[: args.warmup], txns[args.warmup :]
        batches = [txns[k : k + args.batch] for k in range(0, len(txns), args.batch)]

        def delivered(b: list[TxnIngest]) -> list[Delivered[TxnIngest]]:
            return [Delivered(t, Delivery(SUBJECT, {}, t.transaction_id, math.inf)) for t in b]

        for k in range(0, len(warm), args.batch):  # caches, prepared statements, plans
            await ing.on_txns(delivered(warm[k : k + args.batch]))
        await pool.execute("SELECT pg_stat_statements_reset()")
        servers = {"postgres": _pid(pg), "redis": _pid(rds)}
        srv0 = server_cpu(servers)
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        deferred_s = 0.0
        slots = asyncio.Semaphore(args.concurrency)

        async def one(b: list[TxnIngest]) -> None:
            try:
                await ing.on_txns(delivered(b))
            finally:
                slots.release()

        in_flight: list[asyncio.Task[None]] = []
        for b in batches:  # one worker, `concurrency` micro-batches at a time (a consumer's free slots), the
            await slots.acquire()  # deferred pass about every second as in a worker
            in_flight.append(asyncio.create_task(one(b)))
            if args.deferred and time.perf_counter() - t0 - deferred_s > (deferred_s + 1.0):
                d0 = time.perf_counter()
                await ing.deferred_pass()
                deferred_s += time.perf_counter() - d0
        await asyncio.gather(*in_flight)
        if args.deferred:
            d0 = time.perf_counter()
            await ing.deferred_pass()
            deferred_s += time.perf_counter() - d0
        wall = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        srv1 = server_cpu(servers)
        load1 = os.getloadavg()[0]
        top = await pool.fetch(TOP_SQL, args.top)
        n = len(txns)
        worker = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        stmt_total = sum(r["total_exec_time"] + r["total_plan_time"] for r in top)
        statements = [
            {
                "query": _short(r["query"]),
                "calls": r["calls"],
                "exec_ms_per_tx": r["total_exec_time"] / n,
                "plan_ms_per_tx": r["total_plan_time"] / n,
                "mean_ms": (r["total_exec_time"] + r["total_plan_time"]) / max(1, r["calls"]),
                "rows": r["rows"],
                "blocks_per_call": r["blocks"] / max(1, r["calls"]),
                "share": (r["total_exec_time"] + r["total_plan_time"]) / stmt_total if stmt_total else 0.0,
            }
            for r in top
        ]
        sample = txns[:: max(1, n // 100)]
        ents = [("card", t.card_id) for t in sample] + [("merchant", t.merchant_id or "") for t in sample]
        ents += [("device", t.device_id) for t in sample if t.device_id]
        ents += [("ip", t.ip_address) for t in sample if t.ip_address]
        await ing.deferred_pass()
        report = await check_consistency(pool, graph, online, ents)
        busiest = await pool.fetch(
            """SELECT merchant_id, count(*) AS n FROM transactions WHERE "timestamp" >= now() - interval '30 days'
               GROUP BY merchant_id ORDER BY n DESC LIMIT 3"""
        )
        result: dict[str, Any] = {
            "name": args.name,
            "code": args.code_label,
            "refresh_rounds": getattr(getattr(ing, "coalescer", None), "rounds", None),
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "params": {k: v for k, v in vars(args).items() if k != "func"},
            "transactions": n,
            "wall_s": wall,
            "tx_per_s": n / wall,
            "load_average": [load0, load1],
            "cpu_ms_per_tx": {
                "worker": worker / n * 1000,
                **{k: (srv1[k] - srv0.get(k, 0.0)) / n * 1000 for k in srv1},
            },
            "deferred_wall_s": deferred_s,
            "pages_all_visible": visible,
            "busiest_merchants_30d": [[r["merchant_id"], r["n"]] for r in busiest],
            "statements": statements,
            "consistency": {"checked": report.checked, "mismatches": len(report.mismatches)},
        }
        await online.close()
        await pool.close()
        return result
    finally:
        rds.stop()
        stop_postgres(pg)
        if args.explain_log:
            shutil.copy(tmp / "pg" / "logs" / "postgres.log", args.explain_log)
        shutil.rmtree(tmp, ignore_errors=True)


def markdown(r: dict[str, Any]) -> str:
    c = r["cpu_ms_per_tx"]
    lines = [
        f"# Live-sized ingestion: {r['name']} ({r['at']})",
        "",
        f"`python -m bench.ingest_live --batch {r['params']['batch']} --n {r['params']['n']} "
        f"--world {r['params']['world']} --cards {r['params']['cards']} "
        f"--concurrency {r['params'].get('concurrency', 1)} "
        f"--refresh-interval-ms {r['params'].get('refresh_interval_ms', 0):g} "
        f"--entity-interval-ms {r['params'].get('entity_interval_ms', 0):g}`: {r['transactions']} world "
        f"transactions re-sent now, micro-batches of {r['params']['batch']}, "
        f"{r['params'].get('concurrency', 1)} at a time, handler in process ({r.get('code', '')}). "
        f"Load average {r['load_average'][0]:.1f} -> {r['load_average'][1]:.1f} (2 cores, shared).",
        "",
        f"- refresh rounds: {r.get('refresh_rounds')} for {r['transactions'] // r['params']['batch']} micro-batches",
        f"- {r['tx_per_s']:.0f} tx/s; CPU per transaction: worker {c['worker']:.3f} ms, "
        f"PostgreSQL {c.get('postgres', 0):.3f} ms, Redis {c.get('redis', 0):.3f} ms",
        f"- busiest merchants (rows in 30 days): {r['busiest_merchants_30d']}",
        f"- pages [all, all-visible] after the world's VACUUM: {r.get('pages_all_visible', {})}",
        f"- consistency: {r['consistency']['checked']} checked, {r['consistency']['mismatches']} mismatches",
        "",
        "| # | exec ms/tx | plan ms/tx | share | calls | mean ms | blocks/call | statement |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, s in enumerate(r["statements"], 1):
        q = s["query"].replace("|", "\\|")
        lines.append(
            f"| {k} | {s['exec_ms_per_tx']:.3f} | {s['plan_ms_per_tx']:.3f} | {s['share']:.0%} | {s['calls']} | "
            f"{s['mean_ms']:.2f} | {s['blocks_per_call']:.0f} | `{q}` |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ingest_live", description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=3000, help="transactions measured")
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--batch", type=int, default=30, help="micro-batch size (live traffic: tens)")
    p.add_argument("--world", type=int, default=200_000, help="world transactions (history ending now)")
    p.add_argument("--cards", type=int, default=20_000)
    p.add_argument("--days", type=int, default=42)
    p.add_argument("--concurrency", type=int, default=1, help="micro-batches in flight (FRAUDMESH_INGEST_CONCURRENCY)")
    p.add_argument(
        "--refresh-interval-ms",
        type=float,
        default=0.0,
        help="refresh rounds at most this often (FRAUDMESH_INGEST_REFRESH_INTERVAL_MS; 0: the Ingestor's default)",
    )
    p.add_argument(
        "--entity-interval-ms",
        type=float,
        default=0.0,
        help="one entity refreshed at most this often (FRAUDMESH_INGEST_ENTITY_REFRESH_INTERVAL_MS)",
    )
    p.add_argument("--deferred", action="store_true", help="run the deferred pass about once a second")
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--explain-log", default="", help="copy the PostgreSQL log with auto_explain plans here")
    p.add_argument("--explain-ms", type=int, default=10, help="auto_explain threshold (ms)")
    p.add_argument("--name", default="")
    p.add_argument("--code-label", default="", help="which code ran (e.g. a commit), for the report")
    args = p.parse_args(argv)
    result = asyncio.run(run(args))
    print(markdown(result))
    if args.name:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / f"{args.name}.md").write_text(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
