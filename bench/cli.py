"""`python -m bench`: benchmark a running fraudmesh stack (or start one with --up) and write the reports."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from bench import peer
from bench.prepare import prepare_gnn
from bench.report import RESULTS_DIR, write_report
from bench.runner import BenchConfig, StackUnavailable, run_bench


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--run-dir", type=Path, default=Path("var"), help="where the stack's stack.json is (var)")
    p.add_argument("--name", default="", help="report name (default: bench-<UTC date and time>)")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where reports go (bench/results)")
    p.add_argument("--up", action="store_true", help="start the stack first and stop it afterwards")
    p.add_argument("--duration", type=float, default=15.0, help="seconds per single-score phase (15)")
    p.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds before each phase (3)")
    p.add_argument("--baseline-duration", type=float, default=8.0, help="seconds per baseline phase (8)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    p.add_argument("--connections", type=_ints, default=(4, 32), help="wrk connection counts (4,32)")
    p.add_argument("--nats-concurrency", type=_ints, default=(4, 32), help="NATS in-flight requests (4,32)")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--batch-iterations", type=int, default=30)
    p.add_argument("--batch-warmup", type=int, default=3)
    p.add_argument("--api-key", default="", help="X-API-Key for the gateway, if it asks for one")
    p.add_argument(
        "--no-ingest",
        action="store_true",
        help="what-if scoring: requests say ingest=false, so scored transactions skip FRAUD_TXNS "
        "(run with and without to see what live ingestion costs)",
    )
    p.add_argument(
        "--skip",
        default="",
        help="comma-separated phases, kinds (baseline, single, batch, features) or transports (http, nats, redis) "
        "to skip",
    )
    p.add_argument("--features-entities", type=int, default=4000, help="entities per features.compute run (4000)")
    p.add_argument("--features-concurrency", type=int, default=4, help="features.compute requests in flight (4)")
    p.add_argument("--features-request-size", type=int, default=200, help="entities per features.compute request")
    p.add_argument("--features-reads", type=int, default=200, help="timed Redis reads of the partial (200)")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--force", action="store_true", help="replace the reports of an earlier run with the same --name")
    p.add_argument(
        "--peer",
        default="",
        help="a service with seed 001's API (POST /score/fraud, /score/batch) to drive beside fraudmesh, phase by "
        "phase with the same tools; `auto`: prepare and start seed 001's service here (bench/peer.py) and stop it "
        "afterwards",
    )
    p.add_argument("--peer-root", type=Path, default=peer.DEFAULT_ROOT, help="where --peer auto keeps its files")
    p.add_argument("--peer-mirror", type=Path, default=peer.DEFAULT_MIRROR, help="seed 001's bare git dir")
    p.add_argument(
        "--bootstrap-only",
        action="store_true",
        help="measure the bootstrap model with synthetic transactions (the old default) instead of the GNN",
    )
    p.add_argument("--no-bootstrap-row", action="store_true", help="skip the bootstrap model's second row")
    p.add_argument(
        "--cold-duration", type=float, default=5.0, help="seconds of the cold single-score phase (5; 0: no cold phase)"
    )
    p.add_argument(
        "--prepare",
        action="store_true",
        help="if the stack has no world or no trained GNN: run `fraudmesh simulate`, `features export` and "
        "`train --epochs 3` first (minutes; the data stays in --run-dir for the next run)",
    )
    p.add_argument(
        "--growth",
        default="",
        help="names (comma-separated) of `python -m bench.growth` reports in --out-dir whose tables go into this "
        "report too (e.g. one with the batches, one with the worlds)",
    )
    p.add_argument(
        "--render-only",
        action="store_true",
        help="measure nothing: rewrite --name's Markdown from its JSON (with --growth: adding those tables)",
    )
    return p


def render_only(args: argparse.Namespace) -> int:
    path = args.out_dir / f"{args.name}.json"
    if not args.name or not path.is_file():
        print(f"bench: --render-only needs --name of a report in {args.out_dir} ({path} is missing)", file=sys.stderr)
        return 1
    result = json.loads(path.read_text())
    result["name"] = args.name
    if args.growth:
        result["growth"] = load_growth(args.out_dir, args.growth)
    json_path, md_path = write_report(result, args.out_dir, plot=not args.no_plot)
    print(f"reports: {json_path}\n         {md_path}")
    return 0


def load_growth(out_dir: Path, names: str) -> dict[str, Any]:
    """The growth reports `names` merged (later ones fill what earlier ones lack); missing ones are reported."""
    merged: dict[str, Any] = {"reports": []}
    for name in (n.strip() for n in names.split(",") if n.strip()):
        path = out_dir / f"{name}.json"
        if not path.is_file():
            print(f"bench: no growth report {path} (run `python -m bench.growth --name {name}`)", file=sys.stderr)
            continue
        doc = json.loads(path.read_text())
        merged["reports"].append(name)
        for key in ("batches", "worlds", "params", "notes"):
            if doc.get(key) and not merged.get(key):
                merged[key] = doc[key]
    return merged


def existing_report(out_dir: Path, name: str) -> Path | None:
    """The report a run named `name` would overwrite, if there is one."""
    return next((p for p in (out_dir / f"{name}.json", out_dir / f"{name}.md") if p.exists()), None)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.render_only:
        return render_only(args)
    from deploy.stack import StackState, down, up

    name = args.name or "bench-" + dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    if (taken := existing_report(args.out_dir, name)) is not None and not args.force:
        print(
            f"bench: {taken} exists: a run named {name!r} would overwrite it. Choose another --name, or pass "
            "--force to replace it.",
            file=sys.stderr,
        )
        return 2
    cfg = BenchConfig(
        name=name,
        run_dir=args.run_dir,
        duration_s=args.duration,
        warmup_s=args.warmup,
        baseline_duration_s=args.baseline_duration,
        threads=args.threads,
        connections=args.connections,
        nats_concurrency=args.nats_concurrency,
        batch_size=args.batch_size,
        batch_iterations=args.batch_iterations,
        batch_warmup=args.batch_warmup,
        api_key=args.api_key,
        ingest=not args.no_ingest,
        skip=tuple(s.strip() for s in args.skip.split(",") if s.strip()),
        features_entities=args.features_entities,
        features_request_size=args.features_request_size,
        features_concurrency=args.features_concurrency,
        features_reads=args.features_reads,
        model="bootstrap" if args.bootstrap_only else "gnn",
        bootstrap_row=not args.no_bootstrap_row,
        cold_duration_s=args.cold_duration,
    )
    started_here = False
    peer_proc: peer.Peer | None = None
    try:
        if args.peer == "auto":
            peer.prepare(args.peer_root, args.peer_mirror)
            peer_proc = peer.start(args.peer_root)
            cfg.peer_url = peer_proc.url
            print(f"[bench] seed 001's service is up at {peer_proc.url}", flush=True)
        elif args.peer:
            cfg.peer_url = args.peer.rstrip("/")
        if args.up:
            state = up(args.run_dir, {"gateway": 1, "aggregator": 1, "inference": 2, "feature": 2})
            started_here = True
        else:
            loaded = StackState.load(args.run_dir.resolve())
            if loaded is None or not loaded.gateway_url:
                print(f"no stack recorded in {args.run_dir}; run `fraudmesh up` or pass --up", file=sys.stderr)
                return 1
            state = loaded
        if args.prepare and not args.bootstrap_only:
            prepare_gnn(args.run_dir)
        result = run_bench(cfg, state, peer_proc)
    except (StackUnavailable, peer.PeerError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        if started_here:
            down(args.run_dir)
        if peer_proc is not None:
            peer_proc.stop()
    if args.growth:
        result["growth"] = load_growth(args.out_dir, args.growth)
    json_path, md_path = write_report(result, args.out_dir, plot=not args.no_plot)
    print(f"\nreports: {json_path}\n         {md_path}")
    if result.get("slowest_hop"):
        s = result["slowest_hop"]
        print(f"slowest hop ({s['phase']}): {s['hop']}, {s['mean_ms']:.2f} ms of the mean request")
    if (result.get("features") or {}).get("skipped"):
        print(f"features phase {result['features']['skipped']}")
    return 0
