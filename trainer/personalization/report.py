"""The evaluation report of the personalization family: README.md, metrics.json and (if matplotlib is there) a plot."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from trainer.personalization.evaluate import K
from trainer.personalization.pipeline import Outcome

NAMES = {
    "popularity": "popularity (most interacted items; item conversion rate)",
    "matrix_factorization": "matrix factorisation (same BPR embeddings and head, no propagation)",
    "lightgcn": "**LightGCN** (3 propagation layers, torch-geometric `LGConv`) + conversion head",
}


def write(outcome: Outcome, directory: Path, command: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    doc = asdict(outcome)
    doc["path"] = str(outcome.path) if outcome.path else None
    (directory / "metrics.json").write_text(json.dumps(doc, indent=2, default=float) + "\n")
    m = outcome.metrics
    rows = [
        f"| {NAMES.get(name, name)} | {d[f'ndcg@{K}']:.4f} | {d[f'recall@{K}']:.4f} | {d['conversion_auc']:.4f} |"
        for name, d in m.items()
    ]
    g, mf, pop = m["lightgcn"], m["matrix_factorization"], m["popularity"]
    beats = g[f"ndcg@{K}"] > mf[f"ndcg@{K}"] and g[f"ndcg@{K}"] > pop[f"ndcg@{K}"]
    w, s = outcome.world, outcome.split
    plot = _plot(outcome, directory / "training.png")
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in outcome.seconds.items())
    text = f"""# Personalization model: evaluation report

Written by `{command}` (model version `{outcome.version}`). One run, one seed: no intervals; the figures move
with the world seed and training seed.

## The world (feature_svc/world/personalization)
{w["users"]} users, {w["items"]} items in 12 categories, {w["days"]} days, {w["events"]} events (view, add_to_cart,
purchase) in {w["sessions"]} sessions, world seed {w["seed"]}. Users have a sparse category taste, a latent taste
shared across categories and a price sensitivity; items have a popularity and a price; a session has one category
intent.

## The time split
- history: days 0-{s["history_days"]:.0f}: the interaction graph ({s["history_edges"]:.0f} user-item edges) and the
  user/item features (point in time: nothing at or after the cut-off);
- head training: days {s["history_days"]:.0f}-{s["head_days"]:.0f}: {s["head_views"]:.0f} views, labelled by a
  purchase in the same session;
- test: days {s["head_days"]:.0f}-{w["days"]}: ranking for the {s["test_users"]:.0f} users with a new item (every
  item they had not interacted with in the history is a candidate; the relevant ones are those they interacted
  with in the test days) and conversion AUC over {s["test_views"]:.0f} test views.

## Results (test split)
| model | NDCG@{K} | recall@{K} | conversion AUC |
|---|---|---|---|
{chr(10).join(rows)}

LightGCN {"beats" if beats else "does NOT beat"} both baselines on NDCG@{K}
({g[f"ndcg@{K}"]:.4f} vs {mf[f"ndcg@{K}"]:.4f} for matrix factorisation and {pop[f"ndcg@{K}"]:.4f} for popularity).
Conversion AUC (views of the test days; the head sees the pair's affinity and the context features):
LightGCN {g["conversion_auc"]:.4f}, matrix factorisation {mf["conversion_auc"]:.4f}, the item's conversion rate
alone {pop["conversion_auc"]:.4f}. Both learned heads beat the item rate; the graph adds nothing to it here (a
tie), because in this world a purchase depends mostly on the user's price sensitivity and the item's price, which
the context features carry, not on the co-interaction structure the graph propagates.

Training time (2 shared cores, 1 torch thread, noisy): {timing}.
{f"![training]({plot.name})" if plot else ""}

## Served artifact
`model.onnx` holds the user and item tables (each with a cold-start row, the mean), the relevance percentile
(share of all items the user's affinity ranks below the item) and the conversion head: the server needs neither
torch nor the graph. Inputs: `user_index`, `item_index`, `context` (feature_svc/world/personalization/features.py
`CONTEXT_FEATURES`, built from the `user` and `item` rows of the online store).
"""
    path = directory / "README.md"
    path.write_text(text)
    return path


def _plot(outcome: Outcome, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    for name, loss in outcome.losses.items():
        a.plot(range(1, len(loss) + 1), loss, label=name)
    a.set_xlabel("epoch")
    a.set_ylabel("BPR loss")
    a.legend()
    names = list(outcome.metrics)
    b.bar(names, [outcome.metrics[n][f"ndcg@{K}"] for n in names], color=["grey", "tab:blue", "tab:orange"])
    b.set_ylabel(f"NDCG@{K} (test)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
