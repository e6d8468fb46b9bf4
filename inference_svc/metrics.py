"""Prometheus metrics of an inference worker."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from inference_svc.entity_features import EntityStats

SCORE_BUCKETS = tuple(round(i * 0.05, 2) for i in range(1, 21))


class ModelMetrics:
    """The model versions a worker serves (inference_svc/model_manager.py)."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.active_info = Gauge(
            "fraudmesh_model_active_info", "The model version this worker serves (value 1).", ["version"], registry=r
        )
        self.candidate_share = Gauge(
            "fraudmesh_model_candidate_share",
            "A/B: share of partials this worker routes to the candidate version.",
            ["version"],
            registry=r,
        )
        self.swaps = Counter(
            "fraudmesh_model_swaps", "Times this worker switched its active model version.", registry=r
        )
        self.swap_failures = Counter(
            "fraudmesh_model_swap_failures",
            "Model versions this worker was told to serve but could not load.",
            registry=r,
        )


class InferenceMetrics(ModelMetrics):
    """Everything an inference worker measures besides the handler metric of the base (which counts partials by
    outcome: `fraudmesh_handler_messages_total{handler="partials"}`: ok, expired, retried, poison, ...)."""

    def __init__(self, r: CollectorRegistry) -> None:
        super().__init__(r)
        self.partials = Counter(
            "fraudmesh_inference_partials",
            "Partials scored by this worker and their results published (outcome: scored).",
            ["outcome"],
            registry=r,
        )
        self.redeliveries = Counter(
            "fraudmesh_inference_redeliveries", "Partials this worker received on a redelivery.", registry=r
        )
        self.queue_time = Histogram(
            "fraudmesh_partial_queue_seconds",
            "Time a partial waited in the work queue before a worker took it.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.compute_time = Histogram(
            "fraudmesh_partial_compute_seconds",
            "Time to score a partial (features, ONNX, decisions), by stage.",
            ["stage"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=r,
        )
        self.feature_cache = Counter(
            "fraudmesh_inference_feature_reads",
            "Entity feature reads from the online store on the scoring path, by result (hit, miss, stale).",
            ["result"],
            registry=r,
        )
        for result in ("hit", "miss", "stale"):
            self.feature_cache.labels(result)
        self.features_computed = Counter(
            "fraudmesh_features_computed_on_the_fly",
            "Entities whose features were computed by features.compute while scoring.",
            registry=r,
        )
        self.features_unavailable = Counter(
            "fraudmesh_features_unavailable",
            "Entities scored without features (feature service did not answer in time).",
            registry=r,
        )
        self.feature_age = Histogram(
            "fraudmesh_feature_age_seconds",
            "Age of the oldest entity feature behind each score.",
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 21600, 86400),
            registry=r,
        )
        self.scores = Histogram(
            "fraudmesh_model_score",
            "Fraud scores produced, by model version.",
            ["model_version"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.model_partials = Counter(
            "fraudmesh_model_partials",
            "Partials scored, by model version and A/B arm (active, candidate).",
            ["model_version", "arm"],
            registry=r,
        )

    def observe_scores(self, version: str, probs: np.ndarray) -> None:
        """Every score of a partial into the score histogram."""
        observe = self.scores.labels(version).observe
        for p in probs.tolist():
            observe(p)

    def record_features(self, stats: EntityStats) -> None:
        self.feature_cache.labels("hit").inc(stats.cache_hits)
        self.feature_cache.labels("miss").inc(stats.cache_misses)
        self.feature_cache.labels("stale").inc(stats.cache_stale)
        self.features_computed.inc(stats.computed)
        self.features_unavailable.inc(stats.unavailable)
        observe = self.feature_age.observe
        for age in stats.row_age_s[~np.isnan(stats.row_age_s)].tolist():
            observe(age)
