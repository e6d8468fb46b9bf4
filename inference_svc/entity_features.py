"""Route 1 of the scoring path: the features of every entity of a partial.

One pipelined Redis round trip reads the packed vectors of every card, merchant, device and IP of the partial
(each distinct entity once). Entities that are missing or stale (another feature-set version, or older than
FRAUDMESH_FEATURE_MAX_AGE_S) are computed by the feature workers with one `features.compute` request, which
also writes them to Redis, so the next partial that meets them reads them.

If Redis cannot be read, every entity is asked of the feature service; if the feature service cannot answer in time
(or its PostgreSQL ledger is down), the partial is still scored: those entities' features are NaN (models tolerate
missing values) and each affected score says so (`degraded`, with the reasons of `inference_svc/degraded.py`) and has
no freshness (null, never 0). Nothing here raises on an infrastructure failure, so no partial is retried or
dead-lettered because a store is down.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from nats.aio.client import Client as NATS

from feature_svc.client import compute_remote
from feature_svc.online import OnlineStore, VectorRead
from inference_svc.embeddings import EmbeddingBlock
from shared import subjects
from shared.degraded import FEATURE_STORE_UNAVAILABLE, compute_failure_reason
from shared.entities import ENTITY_ID_FIELD, ENTITY_TYPES
from shared.messages import Transaction
from shared.telemetry import inject, tracing_enabled

ENTITY_ORDER: tuple[str, ...] = ENTITY_TYPES
_ID_FIELD: dict[str, str] = {k: v for k, v in ENTITY_ID_FIELD.items()}


@dataclass
class EntityStats:
    """What building one partial's entity features took."""

    entities: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    cache_stale: int = 0
    computed: int = 0
    """Distinct entities computed on the fly by features.compute for this partial."""
    unavailable: int = 0
    """Entities whose features could be neither read nor computed (scored with NaN)."""
    redis_ms: float = 0.0
    compute_ms: float = 0.0
    row_age_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Per transaction: age of its oldest entity feature (0 for features computed now; NaN when none)."""
    row_computed: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Per transaction: how many of its feature values were computed on the fly."""
    row_degraded: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    """Per transaction: True when some of its entities' features could be neither read nor computed."""
    reasons: list[str] = field(default_factory=list)
    """Why (`inference_svc/degraded.py` reason codes), when any row is degraded."""


class EntityFeatureSource:
    """Builds the entity block of a partial's input tuples (see the module docstring)."""

    def __init__(
        self,
        store: OnlineStore,
        nc: NATS,
        *,
        max_age_s: float,
        span: Callable[..., contextlib.AbstractContextManager[Any]] | None = None,
        producer_span: Callable[..., contextlib.AbstractContextManager[Any]] | None = None,
    ) -> None:
        self.span = span or (lambda name, **attrs: contextlib.nullcontext())
        self.producer_span = producer_span or (lambda destination, msg_id="", **attrs: contextlib.nullcontext())
        self.store = store
        self.nc = nc
        self.max_age_s = max_age_s
        self.widths = {t: len(store.layout[t]) for t in ENTITY_ORDER}
        self.names: list[str] = [n for t in ENTITY_ORDER for n in store.layout[t]]
        self.last_error = ""

    @staticmethod
    def _trace_headers(headers: dict[str, str] | None) -> dict[str, str] | None:
        """Inside a recording span, carry *its* context (so the feature service's spans hang under it)."""
        if not tracing_enabled():
            return headers
        return inject(dict(headers or {}))

    async def build(
        self,
        transactions: Sequence[Transaction],
        *,
        timeout_s: float,
        headers: dict[str, str] | None = None,
        embeddings: EmbeddingBlock | None = None,
    ) -> tuple[np.ndarray, EntityStats]:
        """The (n, len(names) [+ embedding columns]) block: registry features per entity type in ENTITY_ORDER,
        then, with `embeddings`, each type's embedding (its default where the entity has none or is absent)."""
        n = len(transactions)
        stats = EntityStats()
        # each distinct entity once; slots[t][row] = index into `unique`, or -1 when the transaction has none
        unique: dict[tuple[str, str], int] = {}
        slots: dict[str, list[int]] = {}
        for etype in ENTITY_ORDER:
            attr = _ID_FIELD[etype]
            col = []
            for tx in transactions:
                eid = getattr(tx, attr)
                col.append(-1 if eid is None else unique.setdefault((etype, eid), len(unique)))
            slots[etype] = col
        entities = list(unique)
        stats.entities = len(entities)

        t0 = time.perf_counter()
        with self.span("redis read features", **{"db.system": "redis", "fraudmesh.entities": len(entities)}):
            # one command: the packed feature vectors (the embeddings are in memory, static per model version)
            try:
                reads, _ = await self.store.read_packed(entities, (), max_age_s=self.max_age_s)
            except Exception as exc:  # Redis down or failing: compute every entity instead, flag the scores
                reads = [VectorRead(present=False) for _ in entities]
                stats.reasons.append(FEATURE_STORE_UNAVAILABLE)
                self.last_error = f"redis: {type(exc).__name__}: {exc}"[:300]
        emb_vectors = embeddings.vectors(entities) if embeddings is not None else []
        stats.redis_ms = (time.perf_counter() - t0) * 1000.0
        vectors: list[np.ndarray | None] = [r.vector for r in reads]
        ages = np.array([r.age_s if r.fresh and r.age_s is not None else 0.0 for r in reads], dtype=np.float64)
        computed_flag = np.zeros(len(entities), dtype=bool)
        unavailable_flag = np.zeros(len(entities), dtype=bool)
        stats.cache_hits = sum(1 for r in reads if r.fresh)
        stats.cache_stale = sum(1 for r in reads if r.present and r.stale)
        stats.cache_misses = sum(1 for r in reads if not r.present)

        missing = [i for i, r in enumerate(reads) if not r.fresh]
        if missing:
            t1 = time.perf_counter()
            try:
                with self.producer_span(subjects.FEATURES_COMPUTE, **{"fraudmesh.entities": len(missing)}):
                    reply = await compute_remote(
                        self.nc,
                        [entities[i] for i in missing],
                        write=True,
                        timeout=max(0.05, timeout_s),
                        headers=self._trace_headers(headers),
                    )
                layout = self.store.layout
                for i, ent in zip(missing, reply.entities, strict=True):
                    vectors[i] = np.array([ent.values.get(name, np.nan) for name in layout[ent.type]], dtype="<f8")
                    computed_flag[i] = True
                stats.computed = len(missing)
            except Exception as exc:  # FeatureServiceError, timeout, no responders: degrade, never fail the partial
                stats.unavailable = len(missing)
                unavailable_flag[missing] = True
                stats.reasons.append(compute_failure_reason(exc))
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            stats.compute_ms = (time.perf_counter() - t1) * 1000.0

        blocks = []
        row_age = np.full(n, np.nan)
        row_computed = np.zeros(n, dtype=np.int64)
        row_degraded = np.zeros(n, dtype=bool)
        for etype in ENTITY_ORDER:
            width = self.widths[etype]
            table = np.full((len(entities) + 1, width), np.nan)  # last row: "no such entity" -> NaN
            for i, vec in enumerate(vectors):
                if vec is not None and entities[i][0] == etype:
                    table[i] = vec
            idx = np.array(slots[etype], dtype=np.int64)
            blocks.append(table[idx])  # -1 picks the NaN row
            has = idx >= 0
            ent_age = np.where(has, np.append(ages, np.nan)[idx], np.nan)
            row_age = np.fmax(row_age, ent_age)
            row_computed += np.where(has, np.append(computed_flag, False)[idx], False) * width
            row_degraded |= np.where(has, np.append(unavailable_flag, False)[idx], False)
        if embeddings is not None:
            for etype in embeddings.spec.types:
                table = np.tile(embeddings.defaults[etype], (len(entities) + 1, 1))  # last row: absent entity
                for i, vec in enumerate(emb_vectors):
                    if entities[i][0] == etype:
                        table[i] = vec
                blocks.append(table[np.array(slots[etype], dtype=np.int64)])
        row_age[row_degraded] = np.nan  # features missing: no freshness to report (null, never 0)
        stats.row_age_s = row_age
        stats.row_degraded = row_degraded
        stats.row_computed = row_computed
        matrix = np.hstack(blocks) if blocks else np.zeros((n, 0))
        return matrix, stats
