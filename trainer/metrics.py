"""Weighted ranking metrics (legit rows of a sampled offline store carry weight 1/sampling rate)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

FPR_TARGET = 0.01


def recall_at_fpr(y: np.ndarray, score: np.ndarray, weight: np.ndarray, fpr: float = FPR_TARGET) -> float:
    legit = ~y
    if not y.any() or not legit.any():
        return float("nan")
    thr = weighted_quantile(score[legit], weight[legit], 1.0 - fpr)
    return float(np.mean(score[y] > thr))


def weighted_quantile(values: np.ndarray, weight: np.ndarray, q: float) -> float:
    order = np.argsort(values, kind="stable")
    cw = np.cumsum(weight[order])
    pos = int(np.searchsorted(cw, q * cw[-1], side="left"))
    return float(values[order][min(pos, len(values) - 1)])


def scores(y: np.ndarray, score: np.ndarray, weight: np.ndarray) -> dict[str, float]:
    y = y.astype(bool)
    if not y.any() or y.all():
        return {"pr_auc": float("nan"), "roc_auc": float("nan"), "recall_at_1pct_fpr": float("nan"), "positives": 0}
    return {
        "pr_auc": round(float(average_precision_score(y, score, sample_weight=weight)), 4),
        "roc_auc": round(float(roc_auc_score(y, score, sample_weight=weight)), 4),
        "recall_at_1pct_fpr": round(recall_at_fpr(y, score, weight), 4),
        "positives": int(y.sum()),
    }


def by_kind(y: np.ndarray, kind: np.ndarray, score: np.ndarray, weight: np.ndarray, kinds: tuple[str, ...]) -> dict:
    """Overall, and for each fraud kind: its positives against all legit rows (other kinds left out)."""
    out = {"all": scores(y, score, weight)}
    legit = ~y.astype(bool)
    for k in kinds:
        m = legit | (kind == k)
        out[k] = scores(kind[m] == k, score[m], weight[m])
    return out
