"""`python -m bench.growth`: how costs grow with the work (issue 12, "Cost as work grows").

- batch time against batch size (100, 1,000, 10,000 world transactions, GNN, ingestion on) and against the
  number of inference workers (1, 2), on the running stack (`fraudmesh up`, a world and a trained GNN);
- `fraudmesh simulate`, `features export` and `train` against the world's size (50k and 200k transactions, 1M on
  request), each world in a PostgreSQL schema of its own that is dropped afterwards.

Writes `bench/results/<name>.json` and `.md`; `python -m bench --growth <name>` puts the tables in the main report.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench import bodies, httpbatch, models, procs
from bench.growth_report import write_growth
from bench.machine import machine
from bench.prepare import TRAIN_EPOCHS
from bench.report import RESULTS_DIR

CARDS_PER_TX = 0.1
"""Cards per transaction, as the default world (20k cards, 200k transactions)."""


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


class InferenceWorkers:
    """Scale the stack's inference workers by stopping and starting processes (stack.json follows)."""

    def __init__(self, state: Any) -> None:
        self.state = state
        live = self.running()
        self.original = len(live)
        env = procs.environ(live[0].pid) if live else {}
        drop = {"FRAUDMESH_INSTANCE_ID", "FRAUDMESH_METRICS_PORT", "FRAUDMESH_HTTP_PORT"}
        self.extra_env = {k: v for k, v in env.items() if k not in drop}

    def running(self) -> list[Any]:
        from deploy.servers import alive

        return sorted((s for s in self.state.services if s.name == "inference" and alive(s.pid)), key=lambda s: s.index)

    def scale(self, n: int) -> list[str]:
        from deploy.servers import alive
        from deploy.stack import start_service, stop_service

        live = self.running()
        for svc in live[n:]:
            stop_service(svc)
        self.state.services = [s for s in self.state.services if s.name != "inference" or alive(s.pid)]
        used = {s.index for s in self.running()}
        index = 0
        while len(used) < n:
            if index not in used:
                svc = start_service(self.state, "inference", index, self.extra_env)
                at = next((k for k, s in enumerate(self.state.services) if s.name == "gateway"), None)
                self.state.services.insert(at if at is not None else len(self.state.services), svc)
                used.add(index)
            index += 1
        self.state.save()
        return sorted(f"inference-{s.index}" for s in self.running())


def _batch_docs(txs: list[dict[str, Any]], size: int, partial_size: int | None = None) -> bytes:
    reps = (txs * (size // max(len(txs), 1) + 1))[:size]
    doc: dict[str, Any] = {"transactions": reps}
    if partial_size:
        doc["partial_size"] = partial_size
    return json.dumps(doc).encode()


def _wait_workers(gw: str, doc: bytes, want: set[str], timeout_s: float = 90.0) -> None:
    """Score small batches until every worker in `want` has served a partial (a started worker is loaded)."""
    end = time.monotonic() + timeout_s
    seen: set[str] = set()
    last = ""
    with httpx.Client(base_url=gw, timeout=60.0, headers={"Content-Type": "application/json"}) as client:
        while time.monotonic() < end:
            r = client.post("/predict?ingest=false", content=doc)
            last = f"{r.status_code} {r.text[:200]}"
            if r.status_code == 200:
                seen |= {str(p.get("worker_id", "")) for p in r.json().get("partials", [])}
                if want <= seen:
                    return
            time.sleep(0.3)
    raise RuntimeError(
        f"inference workers {sorted(want - seen)} served no partial within {timeout_s:.0f} s (last reply: {last})"
    )


def batch_growth(state: Any, sizes: tuple[int, ...], workers: tuple[int, ...], iterations: int) -> dict[str, Any]:
    """p50/p95/p99 of one batch per (workers, size), GNN, ingestion on, world transactions."""
    gw = state.gateway_url
    model_dir = Path(state.run_dir) / "models"
    gnn = models.newest(models.local_models(model_dir), models.GNN_KIND, model_dir)
    if gnn is None:
        raise RuntimeError(models.NO_GNN.format(model_dir=model_dir))
    models.activate(Path(state.run_dir), gw, gnn)
    txs = asyncio.run(bodies.world_transactions(state.postgres_dsn, max(sizes), 11))
    if txs is None:
        raise RuntimeError(bodies.NO_WORLD)
    scaler = InferenceWorkers(state)
    rows: list[dict[str, Any]] = []
    try:
        for n in workers:
            names = scaler.scale(n)
            _wait_workers(gw, _batch_docs(txs, 200, partial_size=50), set(names))
            for size in sizes:
                doc = _batch_docs(txs, size)
                its = max(3, iterations if size <= 1000 else iterations // 3)
                print(f"[growth] {n} inference worker(s), batch of {size:,} x {its} ...", flush=True)
                out = httpbatch.batches(gw, doc, its, warmup=2, timeout_s=300.0)
                lat = out["latency_ms"]
                rows.append(
                    {
                        "inference_workers": n,
                        "batch_size": size,
                        "requests": out["requests"],
                        "latency_ms": lat,
                        "server_latency_ms": out["server_latency_ms"],
                        "tx_per_s": out["tx_per_s"],
                        "partials_per_request": out["partials_per_request"],
                        "partials_by_worker": out["partials_by_worker"],
                        "errors": out["errors"],
                        "ms_per_1000_tx": lat["p50"] / size * 1000.0 if lat.get("p50") else None,
                    }
                )
                print(f"[growth]   p50 {lat['p50']:.1f} ms  p99 {lat['p99']:.1f} ms", flush=True)
    finally:
        scaler.scale(max(scaler.original, 1))
    return {"model": gnn, "ingest": True, "rows": rows}


def _timed(cmd: list[str], log: Path) -> dict[str, Any]:
    """Wall seconds and peak RSS (GNU time) of one command; its output goes to `log`."""
    full = ["/usr/bin/time", "-f", "MAXRSS_KB %M", *cmd]
    t0 = time.monotonic()
    with log.open("w") as fh:
        proc = subprocess.run(full, stdout=fh, stderr=subprocess.STDOUT, check=False)
    wall = time.monotonic() - t0
    text = log.read_text(errors="replace")
    rss = next((int(ln.split()[1]) for ln in text.splitlines() if ln.startswith("MAXRSS_KB ")), None)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd[2:])}` exited {proc.returncode}; see {log}:\n{text[-1200:]}")
    return {"seconds": wall, "max_rss_mib": rss / 1024 if rss else None}


def world_growth(
    run_dir: Path, sizes: tuple[int, ...], work: Path, on_row: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """simulate, features export and train (3 epochs, not activated, not published) per world size; `on_row`
    sees the table after each size (so a long run that is stopped keeps what it measured)."""
    from deploy.stack import StackState

    state = StackState.load(run_dir.resolve())
    if state is None:
        raise RuntimeError(f"no stack in {run_dir}: the world steps need its PostgreSQL (`fraudmesh up`)")
    base = [sys.executable, "-m", "deploy.cli", "--run-dir", str(run_dir)]
    rows = []
    for n in sizes:
        cards = max(1000, int(n * CARDS_PER_TX))
        schema = f"bench_growth_{n}"
        offline, model_dir = work / f"offline-{n}", work / f"models-{n}"
        world = ["--transactions", str(n), "--cards", str(cards)]
        row: dict[str, Any] = {"transactions": n, "cards": cards, "schema": schema, "epochs": TRAIN_EPOCHS}
        try:
            print(f"[growth] world of {n:,} transactions: simulate ...", flush=True)
            row["simulate"] = _timed([*base, "simulate", *world, "--schema", schema], work / f"simulate-{n}.log")
            print(f"[growth]   {row['simulate']['seconds']:.0f} s; features export ...", flush=True)
            row["features export"] = _timed(
                [*base, "features", "export", "--schema", schema, "--out", str(offline)], work / f"export-{n}.log"
            )
            print(f"[growth]   {row['features export']['seconds']:.0f} s; train ...", flush=True)
            row["train"] = _timed(
                [*base, "train", *world, "--offline", str(offline), "--epochs", str(TRAIN_EPOCHS), "--no-progress",
                 "--no-report", "--no-activate", "--no-publish", "--model-dir", str(model_dir)],
                work / f"train-{n}.log",
            )  # fmt: skip
            print(f"[growth]   {row['train']['seconds']:.0f} s", flush=True)
        except RuntimeError as exc:
            row["error"] = str(exc)
            print(f"[growth]   {exc}", file=sys.stderr, flush=True)
        finally:
            asyncio.run(_drop_schema(state.postgres_dsn, schema))
        rows.append(row)
        if on_row is not None:
            on_row({"rows": rows, "cards_per_transaction": CARDS_PER_TX})
    return {"rows": rows, "cards_per_transaction": CARDS_PER_TX}


async def _drop_schema(dsn: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.growth", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--run-dir", type=Path, default=Path("var"))
    p.add_argument("--name", default="", help="report name (default: growth-<UTC date and time>)")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--sizes", type=_ints, default=(100, 1000, 10000), help="batch sizes (100,1000,10000)")
    p.add_argument("--workers", type=_ints, default=(1, 2), help="inference worker counts (1,2)")
    p.add_argument("--iterations", type=int, default=10, help="batches per size up to 1,000 (a third above)")
    p.add_argument("--worlds", type=_ints, default=(50_000, 200_000), help="world sizes (50000,200000)")
    p.add_argument("--skip", default="", help="batches and/or worlds")
    args = p.parse_args(argv)
    from deploy.stack import StackState

    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    state = StackState.load(args.run_dir.resolve())
    if state is None or not state.gateway_url:
        print(f"bench.growth: no stack in {args.run_dir}; start one with `fraudmesh up`", file=sys.stderr)
        return 1
    name = args.name or "growth-" + dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    result: dict[str, Any] = {
        "name": name,
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "params": {
            "sizes": args.sizes,
            "workers": args.workers,
            "iterations": args.iterations,
            "worlds": args.worlds,
            "epochs": TRAIN_EPOCHS,
        },
        "load_avg_1m_start": round(os.getloadavg()[0], 2),
    }
    try:
        if "batches" not in skip:
            result["batches"] = batch_growth(state, args.sizes, args.workers, args.iterations)
        if "worlds" not in skip:

            def save(worlds: dict[str, Any]) -> None:
                write_growth({**result, "worlds": worlds}, args.out_dir)

            with tempfile.TemporaryDirectory(prefix="fraudmesh-growth-") as tmp:
                result["worlds"] = world_growth(args.run_dir, args.worlds, Path(tmp), save)
    except RuntimeError as exc:
        print(f"bench.growth: {exc}", file=sys.stderr)
        return 1
    result["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    result["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    json_path, md_path = write_growth(result, args.out_dir)
    print(f"\nreports: {json_path}\n         {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
