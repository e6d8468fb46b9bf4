"""Ranking (NDCG@k, recall@k over every item the user had not interacted with in the history) and conversion AUC."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

K = 10


def ranking(
    scores: np.ndarray, test_items: dict[int, set[int]], seen: dict[int, set[int]], k: int = K
) -> dict[str, float]:
    """`scores`: [U, I] (higher: more relevant). Items of the user's history are never recommended."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ndcg, recall = [], []
    for u, relevant in test_items.items():
        s = scores[u].copy()
        s[list(seen.get(u, ()))] = -np.inf
        top = np.argpartition(-s, k)[:k]
        top = top[np.argsort(-s[top])]
        hits = np.array([i in relevant for i in top], dtype=np.float64)
        ideal = discounts[: min(len(relevant), k)].sum()
        ndcg.append(float((hits * discounts).sum() / ideal))
        recall.append(float(hits.sum() / min(len(relevant), k)))
    return {f"ndcg@{k}": float(np.mean(ndcg)), f"recall@{k}": float(np.mean(recall)), "users": float(len(ndcg))}


def auc(y: np.ndarray, p: np.ndarray) -> float:
    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")
