"""95% intervals over incidents: resample whole rings, bursts, takeovers and thefts (not rows), and legit rows
(Poisson weights), then recompute the metric averaged over training seeds.

Rows of one incident are not independent (a ring's purchases share its devices), so a row bootstrap would give
intervals far too narrow. Every model and every training seed sees the same resampled world in a replicate, so
differences between models are paired.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.metrics import average_precision_score

Metric = Callable[[np.ndarray, np.ndarray, np.ndarray], float]


def pr_auc(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> float:
    if not (y & (w > 0)).any():
        return float("nan")
    return float(average_precision_score(y, s, sample_weight=w))


def recall_at(threshold: float) -> Metric:
    def metric(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> float:
        pos = y & (w > 0)
        return float(np.sum(w[pos] * (s[pos] >= threshold)) / np.sum(w[pos])) if pos.any() else float("nan")

    return metric


def replicate_weights(
    incident: np.ndarray, y: np.ndarray, weight: np.ndarray, n: int, seed: int = 0
) -> list[np.ndarray]:
    """`n` bootstrap weight vectors: each positive incident drawn with replacement (multinomial counts), each
    legit row with a Poisson(1) count, times the sampling weight. The first vector is the original data."""
    rng = np.random.default_rng(seed)
    ids, inverse = np.unique(np.where(y, incident, ""), return_inverse=True)
    is_inc = ids != ""
    out = [weight.astype(np.float64)]
    n_inc = int(is_inc.sum())
    for _ in range(n):
        counts = np.zeros(len(ids))
        if n_inc:
            counts[is_inc] = rng.multinomial(n_inc, np.full(n_inc, 1.0 / n_inc))
        mult = np.where(y, counts[inverse], rng.poisson(1.0, len(y)))
        out.append(weight * mult)
    return out


def summarise(values: np.ndarray) -> dict[str, float]:
    """values[0] is the point estimate, values[1:] the replicates."""
    rep = values[1:][np.isfinite(values[1:])]
    lo, hi = np.percentile(rep, [2.5, 97.5]) if len(rep) else (np.nan, np.nan)
    return {"value": round(float(values[0]), 4), "lo": round(float(lo), 4), "hi": round(float(hi), 4)}


def seed_mean_interval(
    metric_per_seed: list[Metric] | Metric,
    y: np.ndarray,
    scores_per_seed: list[np.ndarray],
    weights: list[np.ndarray],
) -> np.ndarray:
    """For each weight vector: the metric averaged over the training seeds."""
    metrics = metric_per_seed if isinstance(metric_per_seed, list) else [metric_per_seed] * len(scores_per_seed)
    return np.array([np.mean([m(y, s, w) for m, s in zip(metrics, scores_per_seed, strict=True)]) for w in weights])
