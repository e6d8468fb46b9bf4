"""Calibrated probabilities from ranking scores, fitted with the labels known at the validation cut-off.

A validation row of age a at the cut-off that is a fraud had its label arrive with probability F(a) (the delay
distribution, trainer.maturity). Isotonic regression on validation with each known fraud weighted 1/F(a) (inverse
probability of being labelled yet, capped) and every other row weighted 1 restores the fraud mass the cut-off
hides, without looking at labels from after it. Brier score, expected calibration error and the reliability
diagram are then measured on the test week with its eventual labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_IPW = 10.0  # a fraud labelled very young stands for at most 10


@dataclass(frozen=True)
class Calibrator:
    """Piecewise-linear map from score to probability (isotonic knots)."""

    xs: np.ndarray
    ys: np.ndarray

    def __call__(self, score: np.ndarray) -> np.ndarray:
        return np.interp(score, self.xs, self.ys)  # type: ignore[no-any-return]

    def to_json(self) -> dict[str, list[float]]:
        return {"score": [float(v) for v in self.xs], "probability": [float(v) for v in self.ys]}


def fit(score: np.ndarray, y_known: np.ndarray, f_age: np.ndarray, weight: np.ndarray) -> Calibrator:
    from sklearn.isotonic import IsotonicRegression

    ipw = np.where(y_known, np.minimum(1.0 / np.maximum(f_age, 1e-9), MAX_IPW), 1.0)
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    iso.fit(score, y_known.astype(np.float64), sample_weight=weight * ipw)
    return Calibrator(xs=np.asarray(iso.X_thresholds_), ys=np.asarray(iso.y_thresholds_))


def brier(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> float:
    return float(np.sum(w * (p - y) ** 2) / np.sum(w))


def reliability(y: np.ndarray, p: np.ndarray, w: np.ndarray, bins: int = 10) -> dict[str, list[float]]:
    """Equal-mass bins by predicted probability (weighted): mean prediction, observed rate, weight per bin."""
    order = np.argsort(p, kind="stable")
    cw = np.cumsum(w[order]) / np.sum(w)
    edges = np.searchsorted(cw, np.linspace(0, 1, bins + 1)[1:-1])
    out: dict[str, list[float]] = {"predicted": [], "observed": [], "weight": []}
    for part in np.split(order, edges):
        if len(part) == 0:
            continue
        ww = w[part]
        out["predicted"].append(float(np.sum(ww * p[part]) / ww.sum()))
        out["observed"].append(float(np.sum(ww * y[part]) / ww.sum()))
        out["weight"].append(float(ww.sum() / np.sum(w)))
    return out


def ece(y: np.ndarray, p: np.ndarray, w: np.ndarray, bins: int = 10) -> float:
    r = reliability(y, p, w, bins)
    return float(sum(wt * abs(a - b) for a, b, wt in zip(r["predicted"], r["observed"], r["weight"], strict=True)))


def reliability_png(curves: dict[str, dict[str, list[float]]], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    top = max([0.01, *(v for c in curves.values() for v in c["predicted"] + c["observed"])])
    ax.plot([0, top], [0, top], color="grey", lw=0.8, label="perfect")
    for name, c in curves.items():
        ax.plot(c["predicted"], c["observed"], "o-", label=name, ms=4)
    ax.set_xscale("symlog", linthresh=1e-3)
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("predicted probability (calibrated)")
    ax.set_ylabel("observed fraud rate (test, eventual labels)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
