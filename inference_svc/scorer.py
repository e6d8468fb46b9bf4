"""Scoring one partial: input tuples from the feature sources, onnxruntime, decisions and reasons.

The seams: a `FeatureSource` builds the model's input matrix for a partial (the transaction's own fields now;
the Redis online store and graph features join through the same protocol), and the model is whatever
`OnnxModel` the registry hands over (a new version swaps in without touching this code).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from inference_svc.decisions import ACTIONS, confidence, risk_levels, top_factors
from inference_svc.model import OnnxModel
from inference_svc.tx_features import FEATURE_NAMES, featurize
from shared.messages import Transaction, TransactionScore


class FeatureSource(Protocol):
    names: Sequence[str]

    async def build(self, transactions: Sequence[Transaction]) -> np.ndarray: ...


class TransactionFieldSource:
    """Features from the transaction's own fields; no I/O."""

    names: Sequence[str] = FEATURE_NAMES

    async def build(self, transactions: Sequence[Transaction]) -> np.ndarray:
        return featurize(transactions)


class ModelInputMismatch(RuntimeError):
    pass


class Scorer:
    def __init__(self, model: OnnxModel, source: FeatureSource) -> None:
        if list(model.meta.feature_names) != list(source.names):
            raise ModelInputMismatch(
                f"model {model.version} expects features {model.meta.feature_names}, but the feature source "
                f"provides {list(source.names)}"
            )
        self.model = model
        self.source = source

    async def score(self, transactions: Sequence[Transaction]) -> tuple[list[TransactionScore], np.ndarray]:
        x = await self.source.build(transactions)
        p = self.model.predict(x)
        meta = self.model.meta
        levels = risk_levels(p, meta.thresholds)
        conf = confidence(p, meta.thresholds)
        factors = top_factors(self.model.contributions(x), x, meta.feature_names)
        version = self.model.version
        n_features = x.shape[1]
        rounded = np.round(p.astype(np.float64), 6).tolist()
        confs = np.round(conf.astype(np.float64), 4).tolist()
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
            )
            for i, tx in enumerate(transactions)
        ]
        return scores, p
