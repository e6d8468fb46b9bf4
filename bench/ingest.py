"""The `ingest` benchmark: FRAUD_TXNS throughput of 1 and 2 feature workers, and freshness (publish to visible).

It starts its own nats-server, redis-server and PostgreSQL in a temporary directory (nothing shared with a running
stack), loads a small seeded world, then for each worker count:
1. throughput: publishes `backlog` synthetic transactions (new ids, an existing-size population of cards,
   merchants, devices and IPs) with NO worker running, starts the workers, and times the consumer lag from the
   first ack to 0: transactions ingested per second, ledger + graph + online features included;
2. freshness: publishes at `rate` per second for `duration` seconds, and every `probe_every_s` a probe
   transaction on a brand-new card, polling Redis until the card's online entry exists: the probe's latency from
   publish to visible. p50/p99 over the probes.
Writes bench/results/ingest-<date>.json and .md.

    python -m bench.ingest                       # ~3 minutes on the 2-core machine
    python -m bench.ingest --backlog 5000 --workers 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import redis.asyncio as aioredis
from nats.js import JetStreamContext

from bench import procs
from bench.stats import summarize
from deploy.servers import start_nats, start_postgres, start_redis, stop_postgres
from deploy.stack import ServiceProc, StackState, start_service, stop_service
from feature_svc.ingest.synthetic import synthetic_transactions
from feature_svc.world import WorldParams, generate_world
from shared import subjects
from shared.ingest_messages import TxnIngest, encode_for_stream, stream_msg_id
from shared.jetstream import ensure_ingest_streams
from shared.settings import load_settings
from tests.worlds import load_world_into

RESULTS = Path(__file__).resolve().parent / "results"


async def publish(js: JetStreamContext, txns: list[TxnIngest]) -> None:
    for start in range(0, len(txns), 1000):
        futures = [
            await js.publish_async(
                subjects.TXNS_SUBJECT,
                encode_for_stream(t),
                headers={subjects.HDR_MSG_ID: stream_msg_id(t.transaction_id)},
            )
            for t in txns[start : start + 1000]
        ]
        await asyncio.gather(*futures)


async def lag(js: JetStreamContext) -> int:
    try:
        info = await js.consumer_info(subjects.TXNS_STREAM, subjects.TXNS_CONSUMER)
    except Exception:
        return -1
    return int((info.num_pending or 0) + (info.num_ack_pending or 0))


async def wait_workers(js: JetStreamContext, n: int, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            info = await js.consumer_info(subjects.TXNS_STREAM, subjects.TXNS_CONSUMER)
            if (info.num_waiting or 0) >= n:
                return
        except Exception:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{n} feature worker(s) did not start pulling within {timeout}s")


def server_cpu(servers: dict[str, int]) -> dict[str, float]:
    """CPU seconds of the servers; PostgreSQL's include its backends (children of the postmaster)."""
    out = procs.snapshot(servers)
    if "postgres" in servers:
        out["postgres"] = out.get("postgres", 0.0) + sum(procs.children(servers["postgres"]).values())
    return out


async def throughput(
    js: JetStreamContext, state: StackState, n_workers: int, backlog: int, tag: str, servers: dict[str, int]
) -> dict[str, Any]:
    txns = synthetic_transactions(backlog, seed=n_workers, prefix=f"tp{tag}")
    await publish(js, txns)
    workers = [start_service(state, "feature", i, {}) for i in range(n_workers)]
    for _ in range(1200):  # the clock starts at the first ack, not at process start (imports, migrations)
        if 0 <= await lag(js) < backlog:
            break
        await asyncio.sleep(0.05)
    first = await lag(js)
    before = procs.snapshot({f"feature-{w.index}": w.pid for w in workers}) | server_cpu(servers)
    started = time.monotonic()
    for _ in range(18_000):  # at most 15 minutes
        if await lag(js) == 0:
            break
        await asyncio.sleep(0.05)
    wall = time.monotonic() - started
    after = procs.snapshot({f"feature-{w.index}": w.pid for w in workers}) | server_cpu(servers)
    cpu = procs.diff(before, after, wall)
    backlog = first
    return {
        "workers": workers,
        "measured": backlog,
        "wall_s": round(wall, 2),
        "tx_per_s": round(backlog / wall, 1),
        "cores": cpu,
        "load_average": os.getloadavg(),
    }


async def freshness(
    js: JetStreamContext, redis_url: str, rate: float, duration: float, probe_every_s: float, tag: str
) -> dict[str, Any]:
    r = aioredis.from_url(redis_url)
    background = synthetic_transactions(int(rate * duration), seed=99, prefix=f"fr{tag}")
    latencies: list[float] = []

    async def feed() -> None:
        t0 = time.monotonic()
        for k in range(0, len(background), max(1, int(rate / 20))):
            chunk = background[k : k + max(1, int(rate / 20))]
            await publish(js, chunk)
            await asyncio.sleep(max(0.0, t0 + (k + len(chunk)) / rate - time.monotonic()))

    async def probes() -> None:
        end = time.monotonic() + duration
        k = 0
        while time.monotonic() < end:
            k += 1
            card = f"probe{tag}_card_{k}"
            probe = TxnIngest(
                transaction_id=f"probe{tag}-{k}",
                card_id=card,
                transaction_amount=9.99,
                merchant_id="probe_m",
                timestamp=datetime.now(UTC) - timedelta(milliseconds=1),
            )
            sent = time.monotonic()
            await publish(js, [probe])
            for _ in range(6000):  # at most 30 s
                if await r.exists(f"fm:feat:card:{card}"):
                    break
                await asyncio.sleep(0.005)
            latencies.append((time.monotonic() - sent) * 1000.0)
            await asyncio.sleep(probe_every_s)

    await asyncio.gather(feed(), probes())
    await r.aclose()
    return {"rate": rate, "duration_s": duration, "probes": len(latencies), "latency_ms": summarize(latencies)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="fraudmesh-bench-ingest-"))
    os.chmod(tmp, 0o755)  # PostgreSQL runs as its own user
    pg = start_postgres(tmp / "pg")
    nats_srv = start_nats(tmp / "nats")
    redis_srv = start_redis(tmp / "redis")
    out: dict[str, Any] = {"params": vars(args), "runs": []}
    try:
        world = generate_world(
            WorldParams(n_cards=2000, n_transactions=20_000, seed=1, start=datetime.now(UTC) - timedelta(days=14)),
            progress=False,
        )
        pool = await load_world_into(pg.extra["dsn"], world)
        await pool.close()
        state = StackState(
            run_dir=str(tmp),
            nats_url=nats_srv.extra["url"],
            redis_url=redis_srv.extra["url"],
            postgres_dsn=pg.extra["dsn"],
        )
        nc = await nats.connect(nats_srv.extra["url"])
        js = nc.jetstream(timeout=30.0)
        await ensure_ingest_streams(js, load_settings({}))
        for n in args.workers:
            servers = {
                name: pid
                for name, pid in (("postgres", _pid(pg)), ("redis", _pid(redis_srv)), ("nats", _pid(nats_srv)))
                if pid
            }
            tp = await throughput(js, state, n, args.backlog, str(n), servers)
            workers: list[ServiceProc] = tp.pop("workers")
            print(
                f"{n} worker(s): {tp['tx_per_s']:.0f} tx/s ({tp['measured']} in {tp['wall_s']} s), "
                f"cores {tp['cores']}, load average {tp['load_average'][0]:.1f}"
            )
            fr = await freshness(js, redis_srv.extra["url"], args.rate, args.duration, args.probe_every_s, str(n))
            lat = fr["latency_ms"]
            print(f"  freshness at {args.rate:.0f} tx/s: p50 {lat['p50']:.0f} ms p99 {lat['p99']:.0f} ms")
            out["runs"].append({"workers": n, "throughput": tp, "freshness": fr})
            for w in workers:
                stop_service(w, timeout=20.0)
        await nc.drain()
    finally:
        redis_srv.stop()
        nats_srv.stop()
        stop_postgres(pg)
    return out


def _pid(server: Any) -> int:
    if server.proc is not None:
        return int(server.proc.pid)
    if server.pid:
        return int(server.pid)
    pidfile = Path(server.extra.get("data", "")) / "postmaster.pid"
    return int(pidfile.read_text().split()[0]) if pidfile.is_file() else 0


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Ingest benchmark (FRAUD_TXNS into ledger, graph and online features)",
        "",
        f"Backlog {result['params']['backlog']} transactions per run; freshness probes while publishing "
        f"{result['params']['rate']:.0f} tx/s. Machine: 2 cores shared with the servers (and other work).",
        "",
        "| feature workers | ingest tx/s | worker cores | load average | freshness p50 | freshness p99 | probes |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        tp, lat = run["throughput"], run["freshness"]["latency_ms"]
        cores = sum(v for k, v in tp["cores"].items() if k.startswith("feature"))
        lines.append(
            f"| {run['workers']} | {tp['tx_per_s']:.0f} | {cores:.2f} | {tp['load_average'][0]:.1f} | "
            f"{lat['p50']:.0f} ms | {lat['p99']:.0f} ms | {run['freshness']['probes']} |"
        )
    lines += ["", "Cores used during the throughput runs, by process (1.0 = one full core):", ""]
    for run in result["runs"]:
        cores = ", ".join(f"{k} {v:.2f}" for k, v in sorted(run["throughput"]["cores"].items()))
        lines.append(f"- {run['workers']} worker(s): {cores}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.split("\n")[0])
    p.add_argument("--backlog", type=int, default=10_000)
    p.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    p.add_argument("--rate", type=float, default=100.0, help="background tx/s during the freshness probes")
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--probe-every-s", type=float, default=0.2)
    p.add_argument("--name", default=f"ingest-{datetime.now(UTC):%Y%m%d}")
    args = p.parse_args(argv)
    result = asyncio.run(run(args))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2, default=str))
    (RESULTS / f"{args.name}.md").write_text(markdown(result))
    print(f"wrote bench/results/{args.name}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
