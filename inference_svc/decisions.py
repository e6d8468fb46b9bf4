"""From a score to a decision: risk level, recommended action, confidence and the top risk factors."""

from __future__ import annotations

import numpy as np

from inference_svc.artifact import Thresholds
from inference_svc.tx_features import DESCRIPTIONS
from shared.messages import Action, FactorSource, RiskFactor, RiskLevel

SCORE_DECIMALS = 6
"""A fraud score is answered with this many decimals (and validated at this precision: inference_svc/validation.py)."""

ACTIONS: dict[RiskLevel, Action] = {
    "low": "approve",
    "medium": "review",
    "high": "review",
    "critical": "decline",
}
LEVELS: tuple[RiskLevel, ...] = ("low", "medium", "high", "critical")


def risk_levels(scores: np.ndarray, t: Thresholds) -> list[RiskLevel]:
    idx = np.searchsorted(np.array([t.medium, t.high, t.critical]), scores, side="right")
    return [LEVELS[i] for i in idx]


def confidence(scores: np.ndarray, t: Thresholds) -> np.ndarray:
    """How far the score sits from the nearest band edge, relative to the band: 0.5 on an edge, 1.0 mid-band.

    A score right on a threshold could as well have landed in the next band, so its decision is least certain.
    """
    edges = np.array([0.0, t.medium, t.high, t.critical, 1.0])
    band = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, 3)
    lo, hi = edges[band], edges[band + 1]
    width = np.maximum(hi - lo, 1e-9)
    dist = np.minimum(scores - lo, hi - scores) / width  # 0 at an edge, 0.5 mid-band
    confidence: np.ndarray = np.clip(0.5 + dist, 0.5, 1.0)
    return confidence


def top_factors(
    contributions: np.ndarray | None,
    x: np.ndarray,
    names: list[str],
    k: int = 3,
    min_weight: float = 0.05,
    descriptions: dict[str, tuple[str, FactorSource]] | None = None,
) -> list[list[RiskFactor]]:
    """The k features pushing each score up the most (contributions above `min_weight` only), strongest first.

    Vectorised: numpy picks and sorts the top k per row; Python only builds the few RiskFactor objects.
    """
    n = x.shape[0]
    if contributions is None or n == 0:
        return [[] for _ in range(n)]
    k = min(k, contributions.shape[1])
    idx = np.argpartition(-contributions, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(contributions, idx, axis=1)
    order = np.argsort(-vals, axis=1)
    idx = np.take_along_axis(idx, order, axis=1).tolist()
    vals = np.round(np.take_along_axis(vals, order, axis=1).astype(np.float64), 4).tolist()
    known = descriptions or {}
    described = [known.get(name) or (DESCRIPTIONS.get(name, name), "transaction") for name in names]
    out: list[list[RiskFactor]] = []
    for row_idx, row_vals in zip(idx, vals, strict=True):
        factors = []
        for j, w in zip(row_idx, row_vals, strict=True):
            if w <= min_weight:
                break
            text, source = described[j]
            factors.append(RiskFactor(code=names[j], description=text, weight=w, source=source))
        out.append(factors)
    return out
