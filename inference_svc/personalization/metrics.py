"""Prometheus metrics of the personalization family on an inference worker (beside the base's handler metric,
`fraudmesh_handler_messages_total{handler="personalization_score"}`), labelled by family and version."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

FAMILY = "personalization"


class PersonalizationMetrics:
    def __init__(self, r: CollectorRegistry) -> None:
        self.pairs = Counter(
            "fraudmesh_family_scored_pairs",
            "(user, item) pairs scored, by model family and version.",
            ["family", "version"],
            registry=r,
        )
        self.active_info = Gauge(
            "fraudmesh_family_active_info",
            "The version of a model family this worker serves (value 1).",
            ["family", "version"],
            registry=r,
        )
        self.swaps = Counter(
            "fraudmesh_family_swaps", "Times this worker switched a family's version.", ["family"], registry=r
        )
        self.relevance = Histogram(
            "fraudmesh_personalization_relevance",
            "Relevance scores answered, by version.",
            ["version"],
            buckets=tuple(round(i * 0.1, 1) for i in range(1, 11)),
            registry=r,
        )

    def served(self, old: str | None, new: str) -> None:
        if old is not None:
            self.active_info.labels(FAMILY, old).set(0)
            self.swaps.labels(FAMILY).inc()
        self.active_info.labels(FAMILY, new).set(1)
