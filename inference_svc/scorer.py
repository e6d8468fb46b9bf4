"""Scoring one partial: input tuples from the feature sources, onnxruntime, decisions and reasons.

The input tuple of a transaction is built by name: its own fields (`tx_features`, no I/O) and, when the model
asks for them (or FRAUDMESH_ENTITY_FEATURES=always), the features of its card, merchant, device and IP from
the online store (`entity_features`, route 1). The model's metadata lists the names it was trained on, in
order; the scorer picks those columns, so a new model version with other inputs needs no code change here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from inference_svc.decisions import ACTIONS, SCORE_DECIMALS, confidence, risk_levels, top_factors
from inference_svc.entity_features import EntityFeatureSource, EntityStats
from inference_svc.model import OnnxModel
from inference_svc.reasons import OcclusionExplainer
from inference_svc.tx_features import DESCRIPTIONS, FEATURE_NAMES, featurize
from shared.degraded import mark
from shared.messages import FactorSource, Transaction, TransactionScore

STAGES = ("read", "features_compute", "decode", "embed", "inputs", "onnx", "explain", "decisions")
"""The stages `Scorer.score` times (`<stage>_ms`): the Redis read (reply decoded), features computed on the fly,
the registry columns assembled, the embedding lookup, the rest of the input tuples (transaction fields, column
order), the ONNX run of the scores, the explainer (its ONNX run included), and decisions and reasons."""


class ModelInputMismatch(RuntimeError):
    pass


LINEAR_BASELINE = (
    "the model's prediction at the training mean of every input; logit(prediction) = logit(baseline_prediction) "
    "+ the sum of the attributions (log-odds)"
)
OCCLUSION_BASELINE = (
    "the model's prediction with every input group unknown; each attribution is logit(prediction) - "
    "logit(prediction with that group unknown) (log-odds)"
)


@dataclass(frozen=True)
class Attributions:
    explainer: str
    baseline: str
    names: list[str]
    values: np.ndarray
    """(rows, names), log-odds."""
    predictions: np.ndarray
    baselines: np.ndarray


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p.astype(np.float64), 1e-9, 1 - 1e-9)
    return np.asarray(np.log(q / (1 - q)))


def entity_descriptions() -> dict[str, tuple[str, FactorSource]]:
    from feature_svc.definitions import FEATURES

    return {name: (f.description, "graph" if f.kind == "graph" else "features") for name, f in FEATURES.items()}


class Scorer:
    timer: Callable[[], float] = staticmethod(time.perf_counter)
    """The clock of the stage timings (bench/partial.py swaps in time.process_time for CPU time)."""

    def __init__(
        self, model: OnnxModel, entities: EntityFeatureSource | None = None, *, always_fetch: bool = False
    ) -> None:
        spec = model.meta.embedding_spec()
        self.embeddings = model.embeddings if spec is not None else None
        if spec is not None and self.embeddings is None:
            raise ModelInputMismatch(f"model {model.version} declares embeddings that were not loaded with it")
        entity_names = (entities.names if entities is not None else []) + (
            spec.column_names() if spec is not None and entities is not None else []
        )
        available = list(FEATURE_NAMES) + entity_names
        position = {name: i for i, name in enumerate(available)}
        missing = [n for n in model.meta.feature_names if n not in position]
        if missing:
            where = "" if entities is not None else " (entity features are off: FRAUDMESH_ENTITY_FEATURES)"
            raise ModelInputMismatch(
                f"model {model.version} needs features no source provides{where}: {missing[:10]}"
                f"{' ...' if len(missing) > 10 else ''}"
            )
        self.model = model
        self.columns = np.array([position[n] for n in model.meta.feature_names], dtype=np.int64)
        uses_entities = any(position[n] >= len(FEATURE_NAMES) for n in model.meta.feature_names)
        self.entities = entities if entities is not None and (uses_entities or always_fetch) else None
        self.occlusion = (
            None
            if model.meta.explainer is not None
            else OcclusionExplainer(
                model.meta.feature_names,
                model.predict,
                DESCRIPTIONS,
                self.embeddings.defaults if self.embeddings is not None else None,
            )
        )
        self.descriptions: dict[str, tuple[str, FactorSource]] = {
            **(entity_descriptions() if entities is not None else {}),
            **{name: (text, "transaction") for name, text in DESCRIPTIONS.items()},
        }

    async def inputs(
        self,
        transactions: Sequence[Transaction],
        *,
        timeout_s: float = 5.0,
        headers: dict[str, str] | None = None,
    ) -> tuple[np.ndarray, EntityStats | None]:
        """The model's input rows (its `feature_names`, in order) of these transactions."""
        x_tx = featurize(transactions)
        stats: EntityStats | None = None
        if self.entities is not None:
            x_ent, stats = await self.entities.build(
                transactions, timeout_s=timeout_s, headers=headers, embeddings=self.embeddings
            )
            full = np.hstack([x_tx, x_ent.astype(np.float32)])
        else:
            full = x_tx
        return full[:, self.columns], stats

    def attribute(self, x: np.ndarray) -> Attributions:
        """Per-input attributions (log-odds) and the baseline prediction of each row, as the model's explainer
        defines them: `linear` (exact: logit(p) = logit(baseline) + sum of attributions, the baseline being the
        prediction at the training mean) or `occlusion` (per group: logit(p) - logit(p with the group unknown);
        the baseline is the prediction with every group unknown)."""
        p = self.model.predict(x)
        if self.occlusion is None:
            contrib = self.model.contributions(x)
            assert contrib is not None  # no occlusion explainer: the model has an exact one
            logit_base = _logit(p) - contrib.astype(np.float64).sum(axis=1)
            return Attributions(
                explainer="linear",
                baseline=LINEAR_BASELINE,
                names=list(self.model.meta.feature_names),
                values=contrib.astype(np.float64),
                predictions=p.astype(np.float64),
                baselines=1.0 / (1.0 + np.exp(-logit_base)),
            )
        return Attributions(
            explainer="occlusion",
            baseline=OCCLUSION_BASELINE,
            names=self.occlusion.codes,
            values=self.occlusion.deltas(x, p).astype(np.float64),
            predictions=p.astype(np.float64),
            baselines=self.occlusion.baseline(x).astype(np.float64),
        )

    async def score(
        self,
        transactions: Sequence[Transaction],
        *,
        timeout_s: float = 5.0,
        headers: dict[str, str] | None = None,
        timings: dict[str, float] | None = None,
    ) -> tuple[list[TransactionScore], np.ndarray, EntityStats | None]:
        """Score a partial. With `timings`, the milliseconds of each stage are written into it (`STAGES`)."""
        clock = self.timer
        t0 = clock()
        x, stats = await self.inputs(transactions, timeout_s=timeout_s, headers=headers)
        t1 = clock()
        p = self.model.predict(x)
        t2 = clock()
        meta = self.model.meta
        levels = risk_levels(p, meta.thresholds)
        conf = confidence(p, meta.thresholds)
        if self.occlusion is not None:
            factors = self.occlusion.explain(x, p)
        else:
            factors = top_factors(self.model.contributions(x), x, meta.feature_names, descriptions=self.descriptions)
        t3 = clock()
        version = self.model.version
        n_features = x.shape[1]
        rounded = np.round(p.astype(np.float64), SCORE_DECIMALS).tolist()
        confs = np.round(conf.astype(np.float64), 4).tolist()
        if stats is not None:
            ages: list[float | None] = [None if np.isnan(a) else round(float(a), 3) for a in stats.row_age_s]
            computed = stats.row_computed.tolist()
        else:
            ages, computed = [None] * len(transactions), [0] * len(transactions)
        scores = [
            TransactionScore(
                transaction_id=tx.transaction_id or "",
                fraud_score=rounded[i],
                risk_level=levels[i],
                recommended_action=ACTIONS[levels[i]],
                confidence=confs[i],
                model_version=version,
                top_risk_factors=factors[i],
                features_used=n_features,
                feature_freshness_sec=ages[i],
                features_computed=computed[i],
            )
            for i, tx in enumerate(transactions)
        ]
        if stats is not None and stats.reasons:
            reasons = list(dict.fromkeys(stats.reasons))
            for i in np.flatnonzero(stats.row_degraded).tolist():
                mark(scores[i], reasons)
        if timings is not None:
            inputs_ms = (t1 - t0) * 1000.0
            if stats is not None:
                timings["read_ms"] = stats.redis_ms
                timings["features_compute_ms"] = stats.compute_ms
                timings["decode_ms"] = stats.decode_ms
                timings["embed_ms"] = stats.embed_ms
                inputs_ms -= stats.redis_ms + stats.compute_ms + stats.decode_ms + stats.embed_ms
            timings["inputs_ms"] = inputs_ms
            timings["onnx_ms"] = (t2 - t1) * 1000.0
            timings["explain_ms"] = (t3 - t2) * 1000.0
            timings["decisions_ms"] = (clock() - t3) * 1000.0
        return scores, p, stats
