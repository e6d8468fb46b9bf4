"""The validation sample a model ships (`<model_dir>/<version>/validation.parquet`, declared in its metadata as
`validation`) and the check that serving reproduces the trainer's metrics on it (`POST /validate`).

The trainer writes the sample's model inputs, labels and its own scores, and records ROC AUC and average precision
(PR AUC) computed from its own scores, at the precision the API answers scores with. A worker scores the same inputs
with onnxruntime and computes the same metrics: they agree within a tolerance when the exported model and its input
order are what the trainer evaluated.
The metrics are computed here with numpy (the serving path needs no scikit-learn); tests/unit check them against
scikit-learn.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from inference_svc.artifact import ModelMetadata, ValidationSpec
from inference_svc.decisions import SCORE_DECIMALS
from shared.model_messages import MetricCheck, ValidationReport

VALIDATION_FILE = "validation.parquet"
LABEL, TRAINER_SCORE = "label", "trainer_score"
DEFAULT_TOLERANCE = 0.005
"""Absolute difference allowed between a reported and an observed metric: float32 ONNX scores against the trainer's
float64 ones move a few tied or near-tied pairs, far below this; a wrong input order or a broken export moves the
metrics by far more."""


def roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve (the Mann-Whitney statistic, ties counted half), as sklearn's `roc_auc_score`."""
    y = np.asarray(y).astype(bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = np.asarray(s, dtype=np.float64)[order]
    ranks = np.empty(len(s), dtype=np.float64)
    # average ranks over ties
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """Average precision (PR AUC) as sklearn's `average_precision_score`: sum over distinct thresholds of the
    recall step times the precision there."""
    y = np.asarray(y).astype(bool)
    pos = int(y.sum())
    if pos == 0:
        return float("nan")
    order = np.argsort(-np.asarray(s, dtype=np.float64), kind="mergesort")
    s_sorted, y_sorted = np.asarray(s, dtype=np.float64)[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s_sorted) - 1]  # last index of each distinct score
    tp = np.cumsum(y_sorted)[last]
    precision = tp / (last + 1.0)
    recall = tp / pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def sample_metrics(y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    """ROC AUC and PR AUC of the scores as the API answers them (SCORE_DECIMALS decimals). At full precision the
    comparison would hinge on scores below 1e-6, which onnxruntime's fast sigmoid and torch's exact one order
    differently (absolute error ~1e-7): on a small GNN that moved ROC AUC by 0.08 with every score within 1.2e-7."""
    served = np.round(np.asarray(s, dtype=np.float64), SCORE_DECIMALS)
    return {"roc_auc": round(roc_auc(y, served), 6), "pr_auc": round(average_precision(y, served), 6)}


def write_sample(
    base: Path, names: list[str], x: np.ndarray, y: np.ndarray, trainer_scores: np.ndarray, source: str
) -> ValidationSpec:
    """Write the sample into a model version's directory; returns the spec for its metadata."""
    cols: dict[str, pa.Array] = {n: pa.array(x[:, j].astype(np.float32)) for j, n in enumerate(names)}
    cols[LABEL] = pa.array(np.asarray(y).astype(np.int8))
    cols[TRAINER_SCORE] = pa.array(np.asarray(trainer_scores).astype(np.float64))
    pq.write_table(pa.table(cols), base / VALIDATION_FILE, compression="zstd")
    return ValidationSpec(
        file=VALIDATION_FILE,
        rows=len(y),
        positives=int(np.asarray(y).astype(bool).sum()),
        metrics=sample_metrics(y, trainer_scores),
        source=source,
    )


def read_sample(base: Path, spec: ValidationSpec, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(inputs in `names` order, labels); raises ValueError saying what is wrong with the file."""
    path = base / spec.file
    if not path.is_file():
        raise ValueError(f"{path} is missing (the metadata declares it): copy or re-export the model version")
    table = pq.read_table(path)
    missing = [n for n in [*names, LABEL] if n not in table.column_names]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    x = np.column_stack([table.column(n).to_numpy(zero_copy_only=False) for n in names]).astype(np.float32)
    y = table.column(LABEL).to_numpy(zero_copy_only=False).astype(bool)
    return x, y


def scalar_metrics(meta: ModelMetadata) -> dict[str, float]:
    return {k: float(v) for k, v in meta.metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def validate(
    meta: ModelMetadata, base: Path, predict: Callable[[np.ndarray], np.ndarray], tolerance: float
) -> ValidationReport:
    """Score the shipped sample with `predict` and compare; a model without a sample gets a report that says so."""
    report = ValidationReport(
        version=meta.version, kind=meta.kind, tolerance=tolerance, model_report=scalar_metrics(meta)
    )
    spec = meta.validation
    if spec is None:
        report.message = (
            f"Model version {meta.version} ships no validation sample (its metadata.json has no `validation` "
            f"entry), so it cannot be validated. Models exported by the current trainer and bootstrap include "
            f"{VALIDATION_FILE}; re-export this one, or activate one that has it."
        )
        return report
    report.sample_file = spec.file
    try:
        x, y = read_sample(base, spec, meta.feature_names)
    except (ValueError, OSError, pa.ArrowException) as exc:
        report.message = f"The validation sample of {meta.version} cannot be read: {exc}"
        return report
    observed = sample_metrics(y, predict(x))
    checks = []
    for name, reported in spec.metrics.items():
        seen = observed.get(name)
        if seen is None:
            continue
        diff = abs(seen - reported)
        checks.append(
            MetricCheck(
                name=name, reported=reported, observed=seen, difference=round(diff, 6), agrees=diff <= tolerance
            )
        )
    agrees = bool(checks) and all(c.agrees for c in checks)
    report.sample_available = True
    report.rows, report.positives = len(y), int(y.sum())
    report.reported, report.observed, report.checks, report.agrees = dict(spec.metrics), observed, checks, agrees
    worst = max(checks, key=lambda c: c.difference) if checks else None
    report.message = (
        f"{meta.version} reproduces the trainer's metrics on its {len(y)}-row validation sample within {tolerance}"
        if agrees
        else f"{meta.version} does NOT reproduce the trainer's metrics on its validation sample: "
        + (f"{worst.name} {worst.observed} vs {worst.reported} reported" if worst else "no metric to compare")
        + ". The served artifact differs from what was evaluated (input order, export, or a damaged file)."
    )
    return report
