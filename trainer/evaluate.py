"""`fraudmesh evaluate`: the evaluation report of a trained GNN artifact against its baseline, on the test window
(`--study DIR`: the multi-world, multi-seed report with intervals, trainer.study_report).

Writes `reports/model/README.md` with PR and ROC curves (PNG, matplotlib Agg), PR-AUC, ROC-AUC and recall at 1%
FPR overall and for each fraud kind (that kind's positives against all legit rows), and the onnxruntime cost of
one 200-transaction partial (median of many single-threaded runs). Reads only the artifact (no torch).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from feature_svc.world import FRAUD_KINDS
from inference_svc.artifact import active_version, read_metadata
from trainer import metrics

PARTIAL = 200


def onnx_partial_cost(model_path: Path, width: int, runs: int = 300, partial: int = PARTIAL) -> dict[str, float]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).normal(size=(partial, width)).astype(np.float32)
    for _ in range(20):
        sess.run(None, {name: x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {name: x})
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1e3
    return {
        "median_ms": round(float(np.median(ms)), 4),
        "p95_ms": round(float(np.percentile(ms, 95)), 4),
        "runs": runs,
        "partial": partial,
        "threads": 1,
    }


def _curves(scores: dict[str, np.ndarray], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    y, w, kind = scores["y"].astype(bool), scores["weight"], scores["kind"]
    groups = [("all", np.ones_like(y))] + [(k, (~y) | (kind == k)) for k in FRAUD_KINDS]
    files = []
    for curve in ("pr", "roc"):
        fig, axes = plt.subplots(1, len(groups), figsize=(4 * len(groups), 4), squeeze=False)
        for ax, (name, m) in zip(axes[0], groups, strict=True):
            yy = y[m] if name == "all" else (kind[m] == name)
            for model, style in (("gnn", "-"), ("baseline", "--")):
                s = scores[model][m]
                if yy.sum() == 0:
                    continue
                if curve == "pr":
                    p, r, _ = precision_recall_curve(yy, s, sample_weight=w[m])
                    ap = metrics.scores(yy, s, w[m])["pr_auc"]
                    ax.plot(r, p, style, label=f"{model} (AP {ap:.3f})")
                    ax.set_xlabel("recall")
                    ax.set_ylabel("precision")
                else:
                    fpr, tpr, _ = roc_curve(yy, s, sample_weight=w[m])
                    auc = metrics.scores(yy, s, w[m])["roc_auc"]
                    ax.plot(fpr, tpr, style, label=f"{model} (AUC {auc:.3f})")
                    ax.set_xscale("log")
                    ax.set_xlim(1e-4, 1)
                    ax.axvline(0.01, color="grey", lw=0.5)
                    ax.set_xlabel("false positive rate (log)")
                    ax.set_ylabel("true positive rate")
            ax.set_title(f"{name} (n+={int(yy.sum())})")
            ax.legend(loc="lower left" if curve == "pr" else "lower right", fontsize=8)
            ax.grid(alpha=0.3)
        fig.suptitle(f"{'Precision-recall' if curve == 'pr' else 'ROC'} on the test window: GNN vs baseline")
        fig.tight_layout()
        name = f"{curve}_curves.png"
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        files.append(name)
    return files


def _table(m: dict) -> list[str]:
    if "head_only" in m:
        return _table_with_ablation(m)
    rows = [
        "| slice | positives | GNN PR-AUC | baseline PR-AUC | GNN ROC-AUC | baseline ROC-AUC | GNN recall@1%FPR | "
        "baseline recall@1%FPR |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k in ("all", *FRAUD_KINDS):
        g, b = m["gnn"][k], m["baseline"][k]
        rows.append(
            f"| {k} | {g['positives']} | **{g['pr_auc']:.4f}** | {b['pr_auc']:.4f} | {g['roc_auc']:.4f} | "
            f"{b['roc_auc']:.4f} | {g['recall_at_1pct_fpr']:.4f} | {b['recall_at_1pct_fpr']:.4f} |"
        )
    return rows


def _table_with_ablation(m: dict) -> list[str]:
    rows = [
        "| slice | positives | GNN PR-AUC | baseline PR-AUC | head-only PR-AUC | GNN ROC-AUC | baseline ROC-AUC | "
        "GNN recall@1%FPR | baseline recall@1%FPR |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k in ("all", *FRAUD_KINDS):
        g, b, h = m["gnn"][k], m["baseline"][k], m["head_only"][k]
        rows.append(
            f"| {k} | {g['positives']} | **{g['pr_auc']:.4f}** | {b['pr_auc']:.4f} | {h['pr_auc']:.4f} | "
            f"{g['roc_auc']:.4f} | {b['roc_auc']:.4f} | {g['recall_at_1pct_fpr']:.4f} | {b['recall_at_1pct_fpr']:.4f} |"
        )
    return rows


def write_report(model_dir: Path, version: str, out: Path, runs: int = 300) -> Path:
    base = model_dir / version
    meta = read_metadata(base / "metadata.json")
    scores = dict(np.load(base / "eval" / "test_scores.npz", allow_pickle=False))
    y, w, kind = scores["y"].astype(bool), scores["weight"], scores["kind"]
    models = [k for k in ("gnn", "baseline", "head_only") if k in scores]
    m = {model: metrics.by_kind(y, kind, scores[model], w, tuple(FRAUD_KINDS)) for model in models}
    out.mkdir(parents=True, exist_ok=True)
    pngs = _curves(scores, out)
    cost = onnx_partial_cost(base / "model.onnx", len(meta.feature_names), runs=runs)
    tr = meta.training
    hist = json.loads((base / "eval" / "history.json").read_text()) if (base / "eval" / "history.json").exists() else {}
    ring_win = m["gnn"]["ring"]["pr_auc"] > m["baseline"]["ring"]["pr_auc"]
    tf = tr.get("train_fraud", {})
    lines = [
        f"# Model evaluation: `{version}`",
        "",
        f"Generated by `fraudmesh evaluate` from `{base}`. Test window "
        f"{tr.get('split', {}).get('val_end', '?')} to {tr.get('split', {}).get('end', '?')} (never tuned on); "
        "validation chose the epoch and the thresholds. Labels: eventual chargebacks. Legit rows of a sampled "
        "offline store are weighted by 1/sampling rate, so precision is that of the full traffic.",
        "",
        f"- features: {tr.get('source', '?')} (feature set `{tr.get('feature_set_version', '?')}`), "
        f"{len(tr.get('inputs', {}).get('registry_features', []))} registry features, "
        f"{len(tr.get('inputs', {}).get('tx_fields', []))} transaction fields, "
        f"{tr.get('inputs', {}).get('embeddings', {}).get('dim', '?')}-dim embeddings x 4 entity types",
        f"- data: hash `{tr.get('data_hash', '?')}`, rows {tr.get('rows', {})}",
        f"- GNN: best epoch {hist.get('best', {}).get('epoch', '?')} of {hist.get('epochs_run', '?')} "
        f"(validation PR-AUC {hist.get('best', {}).get('val_pr_auc', '?')}); train time {tr.get('seconds', {})} s",
        "",
        "## Test metrics, GNN against the HistGradientBoosting baseline",
        "",
        "Per fraud kind: the positives of that kind against all legit rows (other kinds left out).",
        "",
        *_table(m),
        "",
        f"Ring fraud: the GNN {'beats' if ring_win else 'does NOT beat'} the baseline on PR-AUC "
        f"({m['gnn']['ring']['pr_auc']:.4f} vs {m['baseline']['ring']['pr_auc']:.4f}).",
        "",
        "## Reading the results",
        "",
        f"- Training labels are censored at the cut-off: of the {tf.get('eventual', '?')} frauds in the training "
        f"weeks only {tf.get('known_at_cutoff', '?')} had their chargeback by then; unlabelled rows are weighted by "
        "their label maturity F(age), for every model alike. Choices on validation (epoch, grid, calibration) use "
        "the labels known at the validation cut-off only; thresholds use no labels (shares of validation traffic).",
        "- One training seed, one world, no intervals: this page describes the served artifact. The model's quality, "
        "with intervals over incidents, training seeds and worlds, is in the study report (`fraudmesh evaluate "
        "--study DIR`, reports/model/README.md).",
        "",
        "## Curves",
        "",
        *(f"![{p}]({p})" for p in pngs),
        "",
        "## Inference cost of one partial",
        "",
        f"onnxruntime, one {PARTIAL}-transaction partial of the served head (input width "
        f"{len(meta.feature_names)}), 1 intra-op thread, median of {cost['runs']} runs after warm-up: "
        f"**{cost['median_ms']:.3f} ms** (p95 {cost['p95_ms']:.3f} ms). Building the input (Redis reads) is not "
        "included.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at report time.",
        "",
        "## Thresholds (chosen on validation)",
        "",
        f"medium >= {meta.thresholds.medium:.6g} (the top 5% of validation traffic), high >= "
        f"{meta.thresholds.high:.6g} (1%), critical >= {meta.thresholds.critical:.6g} (0.1%). Realised on the test "
        "window: "
        + ", ".join(
            f"{band} {float(np.sum(w * (scores['gnn'] >= getattr(meta.thresholds, band))) / np.sum(w)):.3%}"
            for band in ("medium", "high", "critical")
        )
        + ".",
        "",
    ]
    (out / "README.md").write_text("\n".join(lines))
    (out / "metrics.json").write_text(json.dumps({"version": version, "test": m, "onnx_partial": cost}, indent=1))
    return out / "README.md"


def evaluate_main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fraudmesh evaluate", description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", type=Path, default=Path(os.environ.get("FRAUDMESH_MODEL_DIR", "var/models")))
    ap.add_argument("--version", default="", help="artifact version (default: the active one)")
    ap.add_argument("--out", type=Path, default=None, help="default reports/model/served (--study: reports/model)")
    ap.add_argument("--runs", type=int, default=300, help="onnxruntime runs for the partial cost")
    ap.add_argument("--study", type=Path, default=None, help="a `python -m trainer.study` directory: the full report")
    ap.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates over incidents (--study)")
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="another study of the same worlds (e.g. a GNN variant) to list under 'what was tried' (--study)",
    )
    args = ap.parse_args(argv)
    if args.study is not None:
        from trainer.study_report import write_study_report

        if not any(args.study.glob("world-*/seed-*.npz")):
            print(
                f"fraudmesh evaluate: {args.study} holds no study runs; run python -m trainer.study --out {args.study}",
                file=sys.stderr,
            )
            return 2
        variants = dict((v.split("=", 1)[0], Path(v.split("=", 1)[1])) for v in args.variant if "=" in v)
        path = write_study_report(
            args.study, args.out or Path("reports/model"), n_boot=args.bootstrap, variants=variants
        )
        print(f"report written to {path}")
        return 0
    args.out = args.out or Path("reports/model/served")
    version = args.version or active_version(args.model_dir)
    path = write_report(args.model_dir, version, args.out, runs=args.runs)
    print(f"report written to {path}")
    return 0
