"""The evaluation study behind reports/model/README.md: several worlds x several training seeds, every model
(GNN, head-only, censoring-aware gradient boosting, GNN embeddings + gradient boosting) trained and scored the
same way, test scores saved for `fraudmesh evaluate --study DIR` to turn into intervals over incidents.

    python -m trainer.study --worlds 0 1 2 --train-seeds 0 1 2 --out var/study

Each run writes `world-<w>/seed-<s>.npz` (test scores, raw and calibrated, labels, kinds, incidents, weights) and
`world-<w>/seed-<s>.json` (thresholds and calibration chosen on validation, timings, peak memory); each world
writes `world-<w>/single_column.json`: the test PR-AUC of every registry column alone, per fraud kind (what
single-row and 1-hop features can do without a model).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from feature_svc.world import FRAUD_KINDS, WorldParams, generate_world
from feature_svc.world.options import add_world_arguments, world_overrides


def single_column(prep, test: np.ndarray) -> dict[str, dict[str, float]]:  # type: ignore[no-untyped-def]
    """Per fraud kind: every registry column's test PR-AUC alone (the better of its two directions)."""
    from trainer.bootstrap import pr_auc

    out: dict[str, dict[str, float]] = {}
    y, kind, w = prep.y_true[test], prep.kind[test], prep.weight[test]
    for k in FRAUD_KINDS:
        m = ~y | (kind == k)
        yk = kind[m] == k
        cols = {}
        for i, name in enumerate(prep.tab.names):
            x = np.nan_to_num(prep.tab.x[test][m, i], nan=-1.0)
            cols[name] = round(max(pr_auc(yk, x, w[m]), pr_auc(yk, -x, w[m])), 4)
        out[k] = dict(sorted(cols.items(), key=lambda kv: -kv[1]))
        out[k]["_base_rate"] = round(float(np.sum(w[m] * yk) / np.sum(w[m])), 5)
    return out


def world_graph_signal(world, legit_fraction: float) -> dict:  # type: ignore[no-untyped-def]
    """trainer.graph_signal on the validation week (days 28-35 of the default split), never the test week."""
    from trainer.data import US_PER_DAY, ledger_from_world
    from trainer.features import sample_legit
    from trainer.graph_signal import graph_signal

    ledger = ledger_from_world(world)
    rows = sample_legit(ledger, legit_fraction, seed=0)
    train_days = ledger.days - 14
    lo, hi = ledger.start_us + train_days * US_PER_DAY, ledger.start_us + (train_days + 7) * US_PER_DAY
    val = rows[(ledger.ts[rows] >= lo) & (ledger.ts[rows] < hi)]
    weight = np.where(ledger.is_fraud[val], 1.0, 1.0 / legit_fraction)
    return graph_signal(ledger, val, weight, tuple(FRAUD_KINDS))


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trainer.study", description=__doc__.splitlines()[0])
    ap.add_argument("--worlds", type=int, nargs="+", default=[0, 1, 2], help="world seeds (0 = the default world)")
    ap.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--transactions", type=int, default=WorldParams().n_transactions)
    ap.add_argument("--cards", type=int, default=WorldParams().n_cards)
    ap.add_argument("--days", type=int, default=WorldParams().days)
    ap.add_argument("--legit-fraction", type=float, default=0.2, help="share of legit rows kept (weighted back)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--patience", type=int, default=4)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--baseline-iter", type=int, default=100, help="cap on gradient-boosting iterations (grid)")
    ap.add_argument("--out", type=Path, default=Path("var/study"))
    ap.add_argument(
        "--signal-only", action="store_true", help="only (re)write each world's graph_signal.json (no training)"
    )
    add_world_arguments(ap)
    args = ap.parse_args(argv)

    from trainer import metrics
    from trainer.heads import fit_candidates
    from trainer.train import TrainConfig, run, thresholds_from_validation

    overrides = world_overrides(args)
    for w_seed in args.worlds:
        params = WorldParams(
            seed=w_seed, n_cards=args.cards, n_transactions=args.transactions, days=args.days, **overrides
        )
        world = generate_world(params, progress=False)
        out = args.out / f"world-{w_seed}"
        out.mkdir(parents=True, exist_ok=True)
        (out / "world.json").write_text(json.dumps({"params": params.to_json(), "summary": world.summary()}, indent=1))
        (out / "graph_signal.json").write_text(json.dumps(world_graph_signal(world, args.legit_fraction), indent=1))
        if args.signal_only:
            continue
        for t_seed in args.train_seeds:
            cfg = TrainConfig(
                seed=t_seed,
                epochs=args.epochs,
                patience=args.patience,
                layers=args.layers,
                legit_fraction=args.legit_fraction,
                threads=args.threads,
                baseline_iter=args.baseline_iter,
                progress=False,
            )
            started = time.perf_counter()
            result = run(world, None, replace(cfg))
            seconds = round(time.perf_counter() - started, 1)
            test = result.prep.part == 2
            if t_seed == args.train_seeds[0]:
                (out / "single_column.json").write_text(json.dumps(single_column(result.prep, test), indent=1))
            t_heads = time.perf_counter()
            heads = fit_candidates(result)
            seconds_heads = round(time.perf_counter() - t_heads, 1)
            val = result.prep.part == 1
            w_val = result.prep.weight[val]
            head_choices = {  # the new candidates' and the served head's thresholds and calibration, on validation
                key: {
                    "thresholds": thresholds_from_validation(heads.val[name], w_val),
                    "calibration": heads.calibration[name].to_json(),
                }
                for key, name in (("mlp_refit", "mlp_refit"), ("blend", "blend"), ("served", heads.chosen))
                if name in heads.val
            }
            extra = {}
            for name in ("mlp_refit", "blend"):
                if name in heads.test:
                    extra[name], extra[f"{name}_calibrated"] = heads.test[name], heads.test_calibrated[name]
            extra["served"] = heads.test[heads.chosen]
            extra["served_calibrated"] = heads.test_calibrated[heads.chosen]
            np.savez_compressed(out / f"seed-{t_seed}.npz", **result.test_scores, **extra)  # type: ignore[arg-type]
            np.savez_compressed(
                out / f"seed-{t_seed}.validation.npz",
                **heads.val,
                y_known=result.prep.y_val_known[val],
                w_known=result.prep.w_val_known[val],
                weight=w_val,
                kind=result.prep.kind[val].astype(str),
            )
            info = {
                "choices": {**result.choices, **head_choices},
                "head_selection": {
                    **heads.to_json(),
                    "val_known_by_kind": {
                        n: metrics.by_kind(
                            result.prep.y_val_known[val],
                            np.where(result.prep.y_val_known[val], result.prep.kind[val], ""),  # known kinds only
                            sv,
                            result.prep.w_val_known[val],
                            tuple(FRAUD_KINDS),
                        )
                        for n, sv in heads.val.items()
                    },
                },
                "seconds": {**result.seconds, "heads": seconds_heads, "total": round(seconds + seconds_heads, 1)},
                "peak_rss_mb": peak_rss_mb(),
                "gnn": result.gnn_info["best"],
                "epochs_run": result.gnn_info["epochs_run"],
                "rows": {p: int((result.prep.part == i).sum()) for i, p in enumerate(("train", "validation", "test"))},
                "train_fraud": {
                    "known_at_cutoff": int(result.prep.y_train[result.prep.part == 0].sum()),
                    "eventual": int(result.prep.y_true[result.prep.part == 0].sum()),
                },
                "label_delay": result.prep.delay,
                "config": result.config_json(),
                "tab_names": result.prep.tab.names,
            }
            (out / f"seed-{t_seed}.json").write_text(json.dumps(info, indent=1))
            ring = {m: v["ring"]["pr_auc"] for m, v in result.metrics["test"].items()}
            print(f"world {w_seed} seed {t_seed}: {seconds:.0f} s, ring PR-AUC {ring}", file=sys.stderr, flush=True)
            print(f"  heads (validation): {heads.to_json()}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
