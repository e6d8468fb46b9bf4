"""Micro-benchmark of one inference worker's GNN scoring path (issue 12): the fast path against the path as it was
(`bench/partial_reference.py`), on the same data, in the same run, interleaved.

What is timed is what a worker does with a partial it pulled, minus NATS: decode the `Partial` message, score it
(`Scorer.score`: the Redis read of its entities, the input tuples, ONNX, the explainer, decisions and reasons) and
encode the `PartialResult`. A "partial set" of 200 or 1,000 transactions is that many world transactions split into
partials of `--partial-size` (the aggregator's default, 200) and scored one after the other, as one worker scores
a batch. Every stage of `inference_svc.scorer.STAGES` is reported, summed over the partials of a set.

The data: a tiny world and a GNN trained on it (the `train` extra; cached in `--model-dir`), a Redis of its own
(started and stopped here) holding a packed feature vector for every entity of the world (seeded random values:
the timings do not depend on them), and the model's embeddings in memory. Every entity is in Redis and fresh, so
no `features.compute` is needed (the warm path). Each run also checks that both paths give identical results.

    python -m bench.partial                     # bench/results/partial-<date>.{json,md}
    python -m bench.partial --profile           # plus the top functions of each path (cProfile)
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from bench.machine import machine
from bench.partial_reference import reference_scorer
from deploy.servers import start_redis
from feature_svc.definitions import FEATURE_SET_VERSION
from feature_svc.online import FeatureRecord, OnlineStore
from inference_svc.entity_features import ENTITY_ORDER, EntityFeatureSource
from inference_svc.model import load_model
from inference_svc.scorer import STAGES, Scorer
from shared.entities import ENTITY_ID_FIELD
from shared.messages import Partial, PartialResult, Transaction

PATHS = ("before", "after")
Timer = Callable[[], float]
CLOCKS: dict[str, Timer] = {"wall": time.perf_counter, "cpu": time.process_time}
"""Each partial set is handled twice per path: stages timed on the wall clock, then in this process's CPU time
(what the worker itself spends, whatever else the machine runs; the Redis server's own time is not in it)."""
ROOT = Path(__file__).resolve().parent.parent


def world_params() -> Any:
    from feature_svc.world import WorldParams

    return WorldParams(n_cards=2000, n_transactions=30_000, days=21, seed=3, ring_share=0.02, card_testing_share=0.01)


def ensure_model(model_dir: Path) -> None:
    """Train the tiny GNN into `model_dir` unless a model is there already."""
    if any(model_dir.glob("*/model.onnx")):
        return
    from feature_svc.world import generate_world
    from tests.worlds import train_tiny_gnn

    print(f"training a tiny GNN into {model_dir} (once; the `train` extra) ...", flush=True)
    train_tiny_gnn(generate_world(world_params(), progress=False), model_dir)


def world_transactions() -> list[dict[str, Any]]:
    from feature_svc.world import generate_world

    rows = generate_world(world_params(), progress=False).transactions.to_pylist()
    return [
        {
            "transaction_id": f"b-{i}",
            "card_id": r["card_id"],
            "transaction_amount": float(r["amount"]),
            "merchant_id": r["merchant_id"],
            "mcc_code": r["mcc_code"],
            "country_code": r["country_code"],
            "device_id": r["device_id"],
            "ip_address": r["ip_address"],
            "channel": r["channel"],
            "currency": r["currency"],
            "timestamp": r["timestamp"],
        }
        for i, r in enumerate(rows)
    ]


async def fill_redis(store: OnlineStore, txs: list[dict[str, Any]], seed: int) -> int:
    """A packed vector for every entity of `txs`: seeded values, a few NaN (missing values the model tolerates)."""
    rng = np.random.default_rng(seed)
    now = time.time()
    records = []
    for etype in ENTITY_ORDER:
        names = list(store.layout[etype])
        ids = sorted({t[ENTITY_ID_FIELD[etype]] for t in txs if t[ENTITY_ID_FIELD[etype]] is not None})
        values = rng.exponential(3.0, size=(len(ids), len(names)))
        values[rng.random(values.shape) < 0.02] = np.nan
        for eid, row in zip(ids, values.tolist(), strict=True):
            rec = FeatureRecord(
                entity_type=etype, entity_id=eid, values=dict(zip(names, row, strict=True)), computed_at=now
            )
            records.append(rec)
    for i in range(0, len(records), 2000):
        await store.write(records[i : i + 2000])
    return len(records)


async def handle(
    scorer: Scorer, raw: bytes, enc: msgspec.msgpack.Encoder, dec: Any, timer: Timer = time.perf_counter
) -> tuple[dict[str, float], bytes]:
    """One partial as the worker handles it (inference_svc/worker.py), NATS aside, its stages timed by `timer`."""
    scorer.timer = timer
    if isinstance(scorer.entities, EntityFeatureSource):
        scorer.entities.timer = timer
    t0 = timer()
    partial = dec.decode(raw)
    stages: dict[str, float] = {}
    scores, _, stats = await scorer.score(partial.transactions, timeout_s=5.0, timings=stages)
    t1 = timer()
    result = PartialResult(
        request_id=partial.request_id,
        index=partial.index,
        scores=scores,
        worker_id="bench",
        model_version=scorer.model.version,
        timings_ms={k: round(v, 3) for k, v in stages.items()},
    )
    enc.encode(result)
    stages["message_ms"] = (timer() - t1) * 1000.0
    stages["total_ms"] = (timer() - t0) * 1000.0
    assert stats is not None and stats.computed == 0 and stats.unavailable == 0, "the bench is the warm path"
    return stages, enc.encode(scores)  # what is compared between the paths (the timings differ, of course)


def partial_messages(txs: list[dict[str, Any]], partial_size: int) -> list[bytes]:
    enc = msgspec.msgpack.Encoder()
    structs = msgspec.convert(txs, list[Transaction])
    bounds = range(0, len(structs), partial_size)
    return [
        enc.encode(Partial(request_id="bench", index=k, count=len(bounds), transactions=structs[i : i + partial_size]))
        for k, i in enumerate(bounds)
    ]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    ensure_model(args.model_dir)
    model = load_model(args.model_dir, threads=1)
    txs = world_transactions()
    with tempfile.TemporaryDirectory(prefix="bench-partial-") as tmp:
        redis = start_redis(Path(tmp))
        try:
            store = OnlineStore.from_url(redis.extra["url"], version=FEATURE_SET_VERSION, ttl_s=86400)
            written = await fill_redis(store, txs, args.seed)
            now = time.time() + 1.0  # one clock for both paths, so that their feature ages are equal too
            source = EntityFeatureSource(store, None, max_age_s=3600.0, clock=lambda: now)  # type: ignore[arg-type]
            # after: as the worker builds it, reading only the model's columns
            lean = EntityFeatureSource(
                store,
                None,  # type: ignore[arg-type]
                max_age_s=3600.0,
                clock=lambda: now,
                wanted=model.meta.feature_names,
            )
            scorers = {"before": reference_scorer(model, source), "after": Scorer(model, lean)}
            out = await measure(args, scorers, txs, store)
            out["entities_in_redis"] = written
            await store.close()
        finally:
            redis.stop()
    out.update(model_version=model.version, features_used=len(model.meta.feature_names), machine=machine())
    return out


async def script_usec(store: OnlineStore) -> float:
    """Microseconds the Redis server has spent in EVALSHA (INFO commandstats): the bench is its only client."""
    stats = await store.redis.info("commandstats")
    return float(stats.get("cmdstat_evalsha", {}).get("usec", 0.0))


async def measure(
    args: argparse.Namespace, scorers: dict[str, Scorer], txs: list[dict[str, Any]], store: OnlineStore
) -> dict[str, Any]:
    enc = msgspec.msgpack.Encoder()
    dec = msgspec.msgpack.Decoder(Partial)
    rng = np.random.default_rng(args.seed)
    sets: dict[str, Any] = {}
    profiles: dict[str, str] = {}
    for size in args.sizes:
        samples: dict[tuple[str, str], list[dict[str, float]]] = {(p, c): [] for p in PATHS for c in CLOCKS}
        entities: list[int] = []
        for rep in range(args.warmup + args.repeats):
            start = int(rng.integers(0, len(txs) - size))
            msgs = partial_messages(txs[start : start + size], args.partial_size)
            entities.append(sum(count_entities(dec.decode(m)) for m in msgs))
            order = PATHS if rep % 2 == 0 else PATHS[::-1]  # interleaved, alternating who goes first
            results: dict[str, list[bytes]] = {}
            for path in order:
                for clock, timer in CLOCKS.items():
                    total: dict[str, float] = {}
                    results[path] = []
                    usec = await script_usec(store)
                    for m in msgs:
                        stages, reply = await handle(scorers[path], m, enc, dec, timer)
                        results[path].append(reply)
                        for k, v in stages.items():
                            total[k] = total.get(k, 0.0) + v
                    total["redis_server_ms"] = (await script_usec(store) - usec) / 1000.0
                    if rep >= args.warmup:
                        samples[(path, clock)].append(total)
            if results["before"] != results["after"]:
                raise SystemExit(f"the paths disagree on a {size}-transaction set (start {start}): not a benchmark")
        sets[str(size)] = {
            "transactions": size,
            "partials": -(-size // args.partial_size),
            "entities_mean": round(statistics.fmean(entities), 1),
            "identical_results": True,
            **{p: {c: summarize_stages(samples[(p, c)]) for c in CLOCKS} for p in PATHS},
        }
        if args.profile:
            msgs = partial_messages(txs[:size], args.partial_size)
            for path in PATHS:
                profiles[f"{path} {size}"] = await profile(scorers[path], msgs, enc, dec, args.profile_rounds)
    return {"sets": sets, "profiles": profiles}


def count_entities(partial: Partial) -> int:
    return sum(len({getattr(t, ENTITY_ID_FIELD[e]) for t in partial.transactions} - {None}) for e in ENTITY_ORDER)


def summarize_stages(samples: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    keys = [f"{s}_ms" for s in STAGES] + ["message_ms", "total_ms", "redis_server_ms"]
    out = {}
    for k in keys:
        values = sorted(s.get(k, 0.0) for s in samples)
        out[k.removesuffix("_ms")] = {
            "median": round(statistics.median(values), 3),
            "p10": round(values[len(values) // 10], 3),
            "p90": round(values[min(len(values) - 1, (len(values) * 9) // 10)], 3),
        }
    return out


async def profile(scorer: Scorer, msgs: list[bytes], enc: msgspec.msgpack.Encoder, dec: Any, rounds: int) -> str:
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(rounds):
        for m in msgs:
            await handle(scorer, m, enc, dec)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(15)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls"))
    return "\n".join(ln.replace(str(ROOT) + "/", "") for ln in lines[start:])


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"# One inference worker's GNN path, before and after issue 12 ({doc['date']})",
        "",
        f"Command: `{doc['command']}`. Model `{doc['model_version']}` ({doc['features_used']} inputs). "
        f"{doc['repeats']} measured rounds per set after {doc['warmup']} warm-up, before and after interleaved "
        "(alternating which goes first), each round on another random slice of world transactions, every entity "
        "fresh in Redis. Both paths gave identical results on every round (scores, levels, reasons, weights: "
        "the msgpack bytes of every `TransactionScore`). Each set is handled twice per path: stages timed on the wall "
        "clock, and in the CPU time of this process (the worker's own work, less disturbed by whatever else runs; "
        "the Redis server's time is not in it). Medians (p10-p90) in ms, summed over the partials of a "
        f"set, of partials of {doc['partial_size']} transactions. "
        f"Machine: {doc['machine'].get('cpu_model', '?')}, "
        f"{doc['machine'].get('cores', '?')} CPUs shared with other work while this ran: absolute figures are noisy, "
        "the before/after ratio within one run is the figure to read.",
        "",
    ]
    stage_text = {
        "read": "Redis read (one Lua call, reply decoded to vectors)",
        "decode": "registry columns assembled from the vectors",
        "embed": "embedding lookup (in memory)",
        "inputs": "transaction fields, column order",
        "onnx": "ONNX run of the scores",
        "explain": "occlusion explainer (its ONNX runs included)",
        "decisions": "levels, confidence, `TransactionScore`s",
        "message": "`PartialResult` built and encoded",
        "total": "the whole handling, `Partial` decoded to result encoded",
        "redis_server": "the Redis server's time in the read script (INFO commandstats), not in the total",
    }
    for size, s in doc["sets"].items():
        lines += [
            f"## {size} transactions ({s['partials']} partial(s), {s['entities_mean']:.0f} distinct entities)",
            "",
            "| stage | what | wall before | wall after | wall after / before | CPU before | CPU after "
            "| CPU after / before |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for stage, what in stage_text.items():
            cells = []
            for clock in CLOCKS:
                b, a = s["before"][clock][stage], s["after"][clock][stage]
                ratio = f"{a['median'] / b['median']:.2f}" if b["median"] > 0 else "-"
                cells += [
                    f"{b['median']:.2f} ({b['p10']:.2f}-{b['p90']:.2f})",
                    f"{a['median']:.2f} ({a['p10']:.2f}-{a['p90']:.2f})",
                    ratio,
                ]
            lines.append(f"| {stage} | {what} | " + " | ".join(cells) + " |")
        lines.append("")
    for name, text in doc.get("profiles", {}).items():
        lines += [f"## cProfile, {name} (top 15 by own time)", "", "```", text, "```", ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.partial", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[200, 1000])
    ap.add_argument("--partial-size", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--model-dir", type=Path, default=ROOT / "var" / "bench-gnn")
    ap.add_argument("--profile", action="store_true", help="add cProfile's top functions of each path")
    ap.add_argument("--profile-rounds", type=int, default=10)
    ap.add_argument("--name", default="partial-" + datetime.now(UTC).strftime("%Y%m%d"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args(argv)
    doc = asyncio.run(run(args))
    doc.update(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        command="python -m bench.partial " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
        repeats=args.repeats,
        warmup=args.warmup,
        partial_size=args.partial_size,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (args.out / f"{args.name}.md").write_text(markdown(doc))
    print(markdown(doc))


if __name__ == "__main__":
    main()
