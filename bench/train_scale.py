"""`python -m bench.train_scale`: `fraudmesh train` against the world's size, full-graph and neighbour-sampled.

Each run is one `fraudmesh train --local-features` process (it simulates its world in-process; registry features
from the numpy subset, so no PostgreSQL or offline store is needed) under GNU time: wall seconds, peak RSS, and
the trainer's own phase seconds (prepare, GNN, baseline, ablation, embeddings+GBM) from the artifact's metadata,
with the GNN's validation PR-AUC (labels known at the validation cut-off). Mini-batch runs use
`--batch-size/--fanout` (trainer.minibatch); full-graph runs take one step per day on the whole snapshot.

Writes `bench/results/<name>.json` and `.md` after every run, so a long run that is stopped keeps what it measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.growth import CARDS_PER_TX, _ints
from bench.machine import machine
from bench.prepare import TRAIN_EPOCHS
from bench.report import RESULTS_DIR

PHASES = ("prepare", "gnn", "baseline", "ablation", "emb_gbm")


def timed(cmd: list[str], log: Path) -> dict[str, Any]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (GNU time) of one command; its output goes to `log`.
    On a shared machine the CPU seconds are the steadier measure of the work."""
    full = ["/usr/bin/time", "-f", "MAXRSS_KB %M\nCPU_S %U %S", *cmd]
    t0 = time.monotonic()
    with log.open("w") as fh:
        proc = subprocess.run(full, stdout=fh, stderr=subprocess.STDOUT, check=False)
    wall = time.monotonic() - t0
    text = log.read_text(errors="replace")
    lines = text.splitlines()
    rss = next((int(ln.split()[1]) for ln in lines if ln.startswith("MAXRSS_KB ")), None)
    cpu = next((float(ln.split()[1]) + float(ln.split()[2]) for ln in lines if ln.startswith("CPU_S ")), None)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd[2:])}` exited {proc.returncode}; see {log}:\n{text[-1200:]}")
    return {"seconds": wall, "cpu_s": cpu, "max_rss_mib": rss / 1024 if rss else None}


def _metadata(model_dir: Path) -> dict[str, Any]:
    found = sorted(model_dir.glob("gnn-*/metadata.json"))
    if not found:
        raise RuntimeError(f"no gnn-* artifact in {model_dir}")
    meta: dict[str, Any] = json.loads(found[-1].read_text())
    return meta


def one_run(n: int, batch_size: int, fanout: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    cards = max(1000, int(n * CARDS_PER_TX))
    mode = f"mini-batch {batch_size}, fan-out {fanout}" if batch_size > 0 else "full graph"
    model_dir = work / f"models-{n}-{batch_size}"
    cmd = [sys.executable, "-m", "deploy.cli", "train", "--local-features", "--transactions", str(n),
           "--cards", str(cards), "--seed", str(args.seed), "--epochs", str(args.epochs),
           "--threads", str(args.threads), "--legit-fraction", str(args.legit_fraction),
           "--batch-size", str(batch_size), "--fanout", fanout,
           "--no-progress", "--no-report", "--no-activate", "--no-publish", "--model-dir", str(model_dir)]  # fmt: skip
    row: dict[str, Any] = {"transactions": n, "cards": cards, "mode": mode, "batch_size": batch_size}
    print(f"[train-scale] {n:,} transactions, {mode} ...", flush=True)
    started = time.time()
    row["load_avg_1m_start"] = round(os.getloadavg()[0], 2)
    try:
        row.update(timed(cmd, work / f"train-{n}-{batch_size}.log"))
        meta = _metadata(model_dir)
        tr = meta["training"]
        row["phases_s"] = {k: tr["seconds"].get(k) for k in PHASES}
        row["peak_rss_mib_after"] = tr.get("peak_rss_mib") or {}
        row["epochs_run"] = tr["gnn"]["epochs_run"]
        row["rows"] = tr["rows"]
        val = meta["metrics"]["detail"]["validation_known"]["gnn"]
        row["val_known_pr_auc"] = {k: val[k]["pr_auc"] for k in ("all", "ring") if k in val}
        print(f"[train-scale]   {row['seconds']:.0f} s, peak RSS {row['max_rss_mib']:.0f} MiB", flush=True)
    except RuntimeError as exc:
        row["error"] = str(exc)[-800:]
        print(f"[train-scale]   {exc}", file=sys.stderr, flush=True)
    row["started_at"] = dt.datetime.fromtimestamp(started, dt.UTC).isoformat(timespec="seconds")
    row["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    return row


def quality(n: int, epochs: int, batch_size: int, fanout: str, seed: int, threads: int) -> dict[str, Any]:
    """Full-graph against mini-batch GNN training on one world (same world, same training seed, same prepared
    data): the validation PR-AUC (labels known at the validation cut-off) of the early-stopped model, overall and on
    rings, and the GNN training seconds of each."""
    import torch

    from feature_svc.world import FRAUD_KINDS, WorldParams, generate_world
    from trainer import metrics
    from trainer.train import TrainConfig, predict, prepare, train_gnn

    torch.set_num_threads(threads)
    world = generate_world(WorldParams(seed=seed, n_cards=int(n * CARDS_PER_TX), n_transactions=n), progress=False)
    base = TrainConfig(epochs=epochs, patience=epochs, threads=threads, progress=False)
    prep = prepare(world, None, base)
    val = prep.part == 1
    out: dict[str, Any] = {"transactions": n, "epochs": epochs, "runs": []}
    fan = tuple(int(x) for x in fanout.split(","))
    for mode, b in (("full graph", 0), (f"mini-batch {batch_size}, fan-out {fanout}", batch_size)):
        cfg = TrainConfig(epochs=epochs, patience=epochs, threads=threads, progress=False, batch_size=b, fanout=fan)
        t0 = time.process_time()
        encoder, head, info = train_gnn(prep, cfg)
        cpu = time.process_time() - t0
        p_val, _ = predict(encoder, head, prep, val)
        m = metrics.by_kind(prep.y_val_known[val], prep.kind[val], p_val, prep.w_val_known[val], tuple(FRAUD_KINDS))
        out["runs"].append(
            {
                "mode": mode,
                "cpu_s": round(cpu, 1),
                "best_epoch": info["best"]["epoch"],
                "val_known_pr_auc": {k: m[k]["pr_auc"] for k in ("all", "ring")},
                "history": info["history"],
            }
        )
        print(f"[train-scale] quality {n:,}: {mode}: {out['runs'][-1]['val_known_pr_auc']}", flush=True)
    return out


def _saved_mib(fn: Any) -> tuple[Any, float]:
    """Run `fn` and add up the tensors autograd saves for the backward pass: the step's activation memory (a tensor
    saved by two operations counts twice, so an upper bound)."""
    import torch

    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, round(total / 2**20, 1)


def step_cost(n: int, configs: list[tuple[int, str]], seed: int, threads: int) -> dict[str, Any]:
    """One GNN optimiser step on the last training day's snapshot of a world of `n` transactions: for each
    (batch size, fan-out) a mini-batch of that day's transactions (its neighbour sample), then the full snapshot;
    each with its subgraph size, CPU seconds and the activation memory autograd keeps for the backward pass."""
    import resource

    import numpy as np
    import torch

    from feature_svc.world import WorldParams, generate_world
    from trainer.data import US_PER_DAY, ledger_from_world
    from trainer.gnn import Encoder
    from trainer.sampler import NODE_TYPES, SnapshotGraph, sample
    from trainer.snapshot import edge_table, snapshot
    from trainer.train import snapshot_tensors

    torch.set_num_threads(threads)
    world = generate_world(WorldParams(seed=seed, n_cards=int(n * CARDS_PER_TX), n_transactions=n), progress=False)
    ledger = ledger_from_world(world)
    day = ledger.days - 15  # the last training day of the default 28/7/7 split
    snap = snapshot(ledger, edge_table(ledger), ledger.start_us + day * US_PER_DAY)
    rows = np.flatnonzero(ledger.day_of(ledger.ts) == day)
    rng = np.random.default_rng(seed)
    encoder = Encoder(32, 16, 3)
    graph = SnapshotGraph.of(snap)
    out: dict[str, Any] = {
        "transactions": n,
        "day_transactions": len(rows),
        "graph_nodes": {t: len(snap.x[t]) for t in NODE_TYPES},
        "graph_edges": int(sum(e.shape[1] for e in snap.edges.values())) * 2,
        "mini_batch": [],
    }
    for batch_size, fanout in configs:
        batch = rng.choice(rows, size=min(batch_size, len(rows)), replace=False)
        fan = tuple(int(x) for x in fanout.split(","))
        t0 = time.process_time()
        ent = {t: np.where(ledger.ent[t][batch] >= 0, ledger.ent[t][batch], len(snap.x[t])) for t in NODE_TYPES}
        sub = sample(graph, {t: np.unique(v) for t, v in ent.items()}, fan, rng)
        x = {t: torch.from_numpy(sub.x[t]) for t in NODE_TYPES}
        ei = {et: torch.from_numpy(e) for et, e in sub.edges.items()}
        emb, saved = _saved_mib(lambda x=x, ei=ei: encoder.encode(x, ei))
        sum(v.square().sum() for v in emb.values()).backward()
        encoder.zero_grad()
        out["mini_batch"].append(
            {
                "batch_size": len(batch),
                "fanout": fanout,
                "subgraph_nodes": {t: len(v) for t, v in sub.nodes.items()},
                "subgraph_edges": int(sum(e.shape[1] for e in sub.edges.values())),
                "cpu_s": round(time.process_time() - t0, 2),
                "saved_activations_mib": saved,
            }
        )
    t0 = time.process_time()
    emb, saved = _saved_mib(lambda: encoder(*snapshot_tensors(snap)))
    sum(v.square().sum() for v in emb.values()).backward()
    out["full_graph"] = {"cpu_s": round(time.process_time() - t0, 2), "saved_activations_mib": saved}
    out["process_peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(f"[train-scale] step cost {n:,}: {out}", flush=True)
    return out


def _f(x: Any, nd: int = 0) -> str:
    return "-" if x is None else f"{x:,.{nd}f}" if isinstance(x, int | float) else str(x)


def markdown(result: dict[str, Any]) -> str:
    p = result["params"]
    lines = [
        f"# fraudmesh training against the world's size: {result['name']}",
        "",
        f"Run {result['started_at']} → {result.get('finished_at', '(running)')} on {result['machine'].get('cpu_model')}"
        f", {result['machine'].get('cores', '')} cores, under `nice -n 10`.",
    ]
    if result["rows"]:
        lines += [
            "",
            f"`fraudmesh train --local-features --epochs {p['epochs']} --threads {p['threads']} --legit-fraction "
            f"{p.get('legit_fraction', 1.0)}`, one process per row:",
            "",
            "| transactions | cards | GNN training | wall s | CPU s | peak RSS MiB | prepare s | GNN s | baseline s | "
            "head-only s | emb+GBM s | epochs | val PR-AUC all / ring | load 1m start/end |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
    for r in result["rows"]:
        ph = r.get("phases_s") or {}
        auc = r.get("val_known_pr_auc") or {}
        cells = [
            f"{r['transactions']:,}",
            f"{r['cards']:,}",
            r["mode"],
            _f(r.get("seconds")),
            _f(r.get("cpu_s")),
            _f(r.get("max_rss_mib")),
            *(_f(ph.get(k)) for k in PHASES),
            _f(r.get("epochs_run")),
            f"{_f(auc.get('all'), 3)} / {_f(auc.get('ring'), 3)}",
            f"{r['load_avg_1m_start']} / {r['load_avg_1m_end']}",
        ]
        if r.get("error"):
            cells[3] = f"error: {r['error'][-200:]}".replace("|", "/").replace("\n", " ")
        lines.append("| " + " | ".join(cells) + " |")
    for r in result["rows"]:
        after = r.get("peak_rss_mib_after")
        if after:
            phases = ", ".join(f"{k} {_f(v)}" for k, v in after.items())
            lines += ["", f"Peak RSS (MiB) at the end of each phase, {r['transactions']:,}, {r['mode']}: {phases}."]
    lines += [
        *_quality_lines(result.get("quality")),
        *_step_lines(result.get("step_cost")),
        "",
        "Wall seconds are under the load of other jobs on a shared 2-core machine (load averages in the last column):"
        " an upper bound, not a cost model; CPU seconds (user + system) are the steadier measure. The phase seconds"
        " are the trainer's own (time.perf_counter); peak RSS is"
        " GNU time's maximum resident set of the whole process (world simulation included).",
        "",
    ]
    return "\n".join(lines)


def _quality_lines(q: dict[str, Any] | None) -> list[str]:
    if not q:
        return []
    out = [
        "",
        f"Model quality, full graph against mini-batch: world of {q['transactions']:,} transactions (seed 0), "
        f"training seed 0, {q['epochs']} epochs each (early stopping on the best epoch), same prepared data (every "
        "legit row, local features):",
        "",
        "| GNN training | CPU s | best epoch | validation PR-AUC all | ring |",
        "|---|---|---|---|---|",
    ]
    for r in q["runs"]:
        auc = r["val_known_pr_auc"]
        cells = [r["mode"], _f(r["cpu_s"]), str(r["best_epoch"]), _f(auc["all"], 3), _f(auc["ring"], 3)]
        out.append("| " + " | ".join(cells) + " |")
    return out


def _step_lines(sc: dict[str, Any] | None) -> list[str]:
    if not sc:
        return []
    nodes = sum(sc["graph_nodes"].values())
    day = sc["day_transactions"]
    lines = [
        "",
        f"One GNN step (forward + backward, 3 layers, hidden 32) on the last training day's snapshot of a world of "
        f"{sc['transactions']:,} transactions ({nodes:,} nodes, {sc['graph_edges']:,} directed edges, {day:,} "
        "transactions that day). Activation memory: the tensors autograd keeps for the backward pass.",
        "",
        "| step | nodes | edges | CPU s | activation MiB | steps per day (all rows) |",
        "|---|---|---|---|---|---|",
    ]
    for mb in sc["mini_batch"]:
        sub = sum(mb["subgraph_nodes"].values())
        lines.append(
            f"| mini-batch of {mb['batch_size']:,}, fan-out {mb['fanout']} | {sub:,} | {mb['subgraph_edges']:,} | "
            f"{_f(mb['cpu_s'], 2)} | {_f(mb['saved_activations_mib'], 1)} | {-(-day // mb['batch_size'])} |"
        )
    fg = sc["full_graph"]
    lines.append(
        f"| full snapshot | {nodes:,} | {sc['graph_edges']:,} | {_f(fg['cpu_s'], 2)} | "
        f"{_f(fg['saved_activations_mib'], 1)} | 1 |"
    )
    return lines


def write(result: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    jp, mp = out_dir / f"{result['name']}.json", out_dir / f"{result['name']}.md"
    jp.write_text(json.dumps(result, indent=2) + "\n")
    mp.write_text(markdown(result))
    return jp, mp


MODEL_REPORT = Path("reports/model/scale.md")


def model_report(results_dir: Path, out: Path) -> Path:
    """reports/model/scale.md: every `train-scale-*.json` in `results_dir`, one table (linked from the study
    report, reports/model/README.md)."""
    found = sorted(results_dir.glob("train-scale-*.json"))
    if not found:
        raise RuntimeError(f"no train-scale-*.json in {results_dir}: run `python -m bench.train_scale` first")
    results = [json.loads(p.read_text()) for p in found]
    lines = [
        "# Training time and memory against the world's size",
        "",
        f"Generated by `python -m bench.train_scale --model-report` from {', '.join(p.name for p in found)} "
        f"(in {os.path.relpath(results_dir)}). Each run is one `fraudmesh train --local-features` process (world "
        "simulated in-process, every model of the pipeline: GNN, head-only, gradient boosting, embeddings+GBM, "
        "export).",
        "",
        "GNN training modes: **full graph**: one optimiser step per training day, the encoder over that day's whole "
        "snapshot (memory and time per step grow with the world); **mini-batch**: the day's transactions in batches, "
        "each batch's card, merchant, device and IP the seeds of a neighbour sample of the snapshot (`--batch-size`, "
        "`--fanout` per hop; trainer/minibatch.py, trainer/sampler.py), so the encoder's memory per step is bounded "
        "by batch size x fan-out (how tightly depends on the fan-out: 3-hop neighbourhoods run through "
        "merchants). Validation, test scoring and export run the encoder on full snapshots, without "
        "gradients, in both modes (the embeddings serving gets).",
        "",
    ]
    for r in results:
        body = markdown(r).splitlines()
        lines += ["#" + body[0], *body[1:], ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.train_scale", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--worlds", type=_ints, default=(200_000, 1_000_000), help="world sizes (200000,1000000)")
    p.add_argument("--batch-size", type=int, default=2048, help="mini-batch size (transactions)")
    p.add_argument("--fanout", default="10,10,10", help="mini-batch fan-out per hop (10,10,10)")
    p.add_argument("--full-graph-up-to", type=int, default=200_000,
                   help="also train full-graph on worlds up to this size (0: never)")  # fmt: skip
    p.add_argument("--epochs", type=int, default=TRAIN_EPOCHS)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="world seed")
    p.add_argument("--legit-fraction", type=float, default=0.2,
                   help="share of legit rows kept for the tabular models, weighted back (0.2, as the study); the "
                   "graph always has every transaction")  # fmt: skip
    p.add_argument(
        "--quality",
        type=int,
        default=0,
        help="instead: compare full-graph and mini-batch validation PR-AUC on a world of this size",
    )
    p.add_argument("--quality-epochs", type=int, default=10)
    p.add_argument(
        "--step-cost",
        type=int,
        default=0,
        help="instead: CPU and memory of one GNN step, mini-batch vs full snapshot, at this world size",
    )
    p.add_argument(
        "--step-configs",
        default="2048:10,10,10;512:10,10,10;512:5,3,2;128:5,3,2",
        help="with --step-cost: batch:fanout;... (2048:10,10,10;512:10,10,10;512:5,3,2;128:5,3,2)",
    )
    p.add_argument("--model-report", action="store_true",
                   help=f"instead: write {MODEL_REPORT} from the train-scale-*.json in --out-dir")  # fmt: skip
    p.add_argument("--name", default="", help="report name (default: train-scale-<UTC date and time>)")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = p.parse_args(argv)
    if args.model_report:
        try:
            print(model_report(args.out_dir, MODEL_REPORT))
        except RuntimeError as exc:
            print(f"bench.train_scale: {exc}", file=sys.stderr)
            return 1
        return 0
    name = args.name or "train-scale-" + dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    result: dict[str, Any] = {
        "name": name,
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "params": {
            k: getattr(args, k)
            for k in ("worlds", "batch_size", "fanout", "epochs", "threads", "seed", "legit_fraction")
        },
        "rows": [],
    }
    if args.step_cost:
        configs = [(int(c.split(":")[0]), c.split(":")[1]) for c in args.step_configs.split(";") if c.strip()]
        result["step_cost"] = step_cost(args.step_cost, configs, args.seed, args.threads)
        result["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        jp, mp = write(result, args.out_dir)
        print(f"\nreports: {jp}\n         {mp}")
        return 0
    if args.quality:
        result["quality"] = quality(args.quality, args.quality_epochs, args.batch_size, args.fanout, args.seed,
                                    args.threads)  # fmt: skip
        result["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        jp, mp = write(result, args.out_dir)
        print(f"\nreports: {jp}\n         {mp}")
        return 0
    with tempfile.TemporaryDirectory(prefix="fraudmesh-train-scale-") as tmp:
        for n in args.worlds:
            modes = [args.batch_size] + ([0] if 0 < n <= args.full_graph_up_to else [])
            for b in modes:
                result["rows"].append(one_run(n, b, args.fanout, args, Path(tmp)))
                write(result, args.out_dir)
    result["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    jp, mp = write(result, args.out_dir)
    print(f"\nreports: {jp}\n         {mp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
