"""Label maturity: what is known at a cut-off, how sure an unlabelled row is to be legit, and choices made only
with what was known.

A chargeback arrives days after the fraud. At a cut-off T, a transaction of age a = T - t that has no label yet
is legit with a confidence that grows with a: if it were fraud, its label would have arrived with probability
F(a), F the delay distribution. So

- `delay_cdf` estimates F from the labels known at T alone (right-truncated data: a delay d is only observable
  for rows older than d; the Lynden-Bell product-limit estimator corrects for it);
- `maturity_weights` weighs an unlabelled row by F(age) (a row too young to have a label counts for little as a
  negative) and a labelled one by 1: the censoring treatment every model gets, GNN and gradient boosting alike;
- `known_target` is the label and weight of rows judged at a cut-off (validation at the validation cut-off);
- `choose` picks a candidate by weighted PR-AUC on that target, never on eventual labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from trainer import metrics
from trainer.data import US_PER_DAY

GRID_DAYS = 0.25  # resolution of the delay distribution


@dataclass(frozen=True)
class DelayCdf:
    """F(d) on a grid of GRID_DAYS: the probability that a fraud's label arrives within d days (given it
    arrives within the longest delay observable at the cut-off)."""

    cdf: np.ndarray  # cdf[i] = F((i + 1) * GRID_DAYS)

    def __call__(self, age_us: np.ndarray) -> np.ndarray:
        i = np.floor(np.asarray(age_us, dtype=np.float64) / (GRID_DAYS * US_PER_DAY)).astype(np.int64) - 1
        out = np.where(i < 0, 0.0, self.cdf[np.clip(i, 0, len(self.cdf) - 1)])
        return out  # type: ignore[no-any-return]

    def to_json(self) -> dict[str, object]:
        days = (np.arange(len(self.cdf)) + 1) * GRID_DAYS
        marks = [2, 5, 7, 14, 21, 28]
        return {
            "grid_days": GRID_DAYS,
            "F": {f"{d}d": round(float(self(np.array([d * US_PER_DAY]))[0]), 3) for d in marks},
            "max_days": float(days[-1]) if len(days) else 0.0,
        }


def delay_cdf(ts: np.ndarray, label_time: np.ndarray, is_fraud: np.ndarray, cutoff: int) -> DelayCdf:
    """Lynden-Bell estimate of the label-delay distribution from the labels known at `cutoff` only."""
    known = is_fraud & (label_time < cutoff) & (ts < cutoff)
    delay = (label_time[known] - ts[known]) / (GRID_DAYS * US_PER_DAY)
    age = (cutoff - ts[known]) / (GRID_DAYS * US_PER_DAY)
    if len(delay) == 0:
        return DelayCdf(cdf=np.ones(1))
    bins = np.floor(delay).astype(np.int64)
    n_bins = int(bins.max()) + 1
    events = np.bincount(bins, minlength=n_bins).astype(np.float64)
    # at risk at bin d: observed labels with delay <= d (bin) that were old enough to show a delay of d
    age_bins = np.floor(age).astype(np.int64)
    risk = np.zeros(n_bins)
    starts = np.bincount(bins, minlength=n_bins)
    ends = np.bincount(np.minimum(age_bins, n_bins - 1), minlength=n_bins)
    # risk[d] = #{i: bins_i <= d <= age_i} = cumulative starts up to d minus those whose age ended before d
    risk = np.cumsum(starts) - np.concatenate([[0], np.cumsum(ends)[:-1]])
    ratio = np.where(risk > 0, 1.0 - events / np.maximum(risk, 1), 1.0)
    # F(d) = prod_{j > d} ratio_j, F(last) = 1
    tail = np.concatenate([np.cumprod(ratio[::-1])[::-1][1:], [1.0]])
    return DelayCdf(cdf=np.clip(tail, 0.0, 1.0))


def maturity_weights(
    ts: np.ndarray, label_time: np.ndarray, is_fraud: np.ndarray, cutoff: int, cdf: DelayCdf, floor: float = 0.02
) -> tuple[np.ndarray, np.ndarray]:
    """Labels known at `cutoff` and their weights: 1 for a known fraud, F(age) for an unlabelled row (at least
    `floor`, so no row vanishes)."""
    y = is_fraud & (label_time < cutoff)
    w = np.where(y, 1.0, np.maximum(cdf(cutoff - ts), floor))
    return y, w


def known_target(
    ts: np.ndarray, label_time: np.ndarray, is_fraud: np.ndarray, cutoff: int, cdf: DelayCdf, weight: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """What a choice made at `cutoff` may use: labels known then, maturity weights times sampling weights."""
    y, w = maturity_weights(ts, label_time, is_fraud, cutoff, cdf)
    return y, w * weight


def choose(candidates: Sequence[np.ndarray], y_known: np.ndarray, w_known: np.ndarray) -> tuple[int, list[float]]:
    """The candidate with the best weighted PR-AUC on the labels known at the cut-off, and every candidate's."""
    aps = [float(metrics.scores(y_known, s, w_known)["pr_auc"]) for s in candidates]
    aps = [a if np.isfinite(a) else -1.0 for a in aps]
    return int(np.argmax(aps)), aps
