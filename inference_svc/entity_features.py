"""Route 1 of the scoring path: the features of every entity of a partial.

One Redis command (`OnlineStore.read_blocks`: a Lua script whose reply is one bulk string of fixed-size records,
decoded by numpy) reads the packed vectors of every card, merchant, device and IP of the partial (each distinct
entity once), and keeps only the columns the model takes. The block is assembled per entity type with numpy fancy
indexing; the embeddings come from the model's in-memory table the same way. Entities that are missing or stale
(another feature-set version, or older than FRAUDMESH_FEATURE_MAX_AGE_S) are computed by the feature workers with
one `features.compute` request, which also writes them to Redis, so the next partial that meets them reads them.

If Redis cannot be read, every entity is asked of the feature service; if the feature service cannot answer in time
(or its PostgreSQL ledger is down), the partial is still scored: those entities' features are NaN (models tolerate
missing values) and each affected score says so (`degraded`, with the reasons of `inference_svc/degraded.py`) and has
no freshness (null, never 0). Nothing here raises on an infrastructure failure, so no partial is retried or
dead-lettered because a store is down.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from nats.aio.client import Client as NATS

from feature_svc.client import compute_remote
from feature_svc.online import OnlineStore, TypeBlock
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
    """The Redis read, decoding its reply included."""
    compute_ms: float = 0.0
    decode_ms: float = 0.0
    """Assembling the registry columns of the rows from the entities' vectors."""
    embed_ms: float = 0.0
    """Looking up the embedding columns (in memory)."""
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
        clock: Callable[[], float] = time.time,
        wanted: Collection[str] | None = None,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        """`wanted`: the feature names the model takes; only those columns are read from Redis (all when None).
        `timer`: the clock of the stage timings (bench/partial.py swaps in time.process_time for CPU time)."""
        self.span = span or (lambda name, **attrs: contextlib.nullcontext())
        self.producer_span = producer_span or (lambda destination, msg_id="", **attrs: contextlib.nullcontext())
        self.store = store
        self.nc = nc
        self.max_age_s = max_age_s
        self.clock = clock
        self.timer = timer
        """Epoch seconds that ages are measured against (a test fixes it to compare two paths' ages)."""
        layout = store.layout
        self.widths = {t: len(layout[t]) for t in ENTITY_ORDER}
        """Whole vector widths (what features.compute computes per entity, counted in `row_computed`)."""
        self.read_all = wanted is None
        self.columns = {
            t: [i for i, name in enumerate(layout[t]) if wanted is None or name in wanted] for t in ENTITY_ORDER
        }
        """Per type, the positions in its vector that are read: the model's (`wanted`), or all of them."""
        self.names: list[str] = [layout[t][i] for t in ENTITY_ORDER for i in self.columns[t]]
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
        then, with `embeddings`, each type's embedding (its default where the entity has none or is absent).

        Per type, each distinct entity once: `ids[type]` in first-seen order, and per transaction its slot in
        it (-1 when it has none, which picks a NaN row, or the default embedding). Everything past collecting
        the ids is numpy on whole columns; no Python loop per entity."""
        n = len(transactions)
        stats = EntityStats()
        ids: dict[str, list[str]] = {}
        slots: dict[str, np.ndarray] = {}
        for etype in ENTITY_ORDER:
            attr = _ID_FIELD[etype]
            index: dict[str, int] = {}
            col = [
                -1 if (eid := getattr(tx, attr)) is None else index.setdefault(eid, len(index)) for tx in transactions
            ]
            ids[etype] = list(index)
            slots[etype] = np.array(col, dtype=np.int64)
        stats.entities = sum(len(v) for v in ids.values())

        t0 = self.timer()
        with self.span("redis read features", **{"db.system": "redis", "fraudmesh.entities": stats.entities}):
            # one command, one bulk string (the embeddings are in memory, static per model version)
            try:
                columns = None if self.read_all else self.columns
                blocks = await self.store.read_blocks(ids, columns, max_age_s=self.max_age_s, now=self.clock())
            except Exception as exc:  # Redis down or failing: compute every entity instead, flag the scores
                blocks = {t: self._absent(t, len(ids[t])) for t in ENTITY_ORDER}
                stats.reasons.append(FEATURE_STORE_UNAVAILABLE)
                self.last_error = f"redis: {type(exc).__name__}: {exc}"[:300]
        stats.redis_ms = (self.timer() - t0) * 1000.0
        stats.cache_hits = sum(int(b.fresh.sum()) for b in blocks.values())
        stats.cache_stale = sum(int(b.stale.sum()) for b in blocks.values())
        stats.cache_misses = sum(int((~b.present).sum()) for b in blocks.values())
        # computed entities have age 0, as unavailable ones (their rows' age is dropped below)
        ages = {t: np.where(b.fresh, b.age_s, 0.0) for t, b in blocks.items()}
        computed_flag = {t: np.zeros(len(ids[t]), dtype=bool) for t in ENTITY_ORDER}
        unavailable_flag = {t: np.zeros(len(ids[t]), dtype=bool) for t in ENTITY_ORDER}

        missing = [(t, int(i)) for t in ENTITY_ORDER for i in np.flatnonzero(~blocks[t].fresh)]
        if missing:
            t1 = self.timer()
            try:
                with self.producer_span(subjects.FEATURES_COMPUTE, **{"fraudmesh.entities": len(missing)}):
                    reply = await compute_remote(
                        self.nc,
                        [(t, ids[t][i]) for t, i in missing],
                        write=True,
                        timeout=max(0.05, timeout_s),
                        headers=self._trace_headers(headers),
                    )
                layout = self.store.layout
                for (t, i), ent in zip(missing, reply.entities, strict=True):
                    names = layout[t]
                    blocks[t].values[i] = [ent.values.get(names[c], np.nan) for c in self.columns[t]]
                    computed_flag[t][i] = True
                stats.computed = len(missing)
            except Exception as exc:  # FeatureServiceError, timeout, no responders: degrade, never fail the partial
                stats.unavailable = len(missing)
                for t, i in missing:
                    unavailable_flag[t][i] = True
                stats.reasons.append(compute_failure_reason(exc))
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            stats.compute_ms = (self.timer() - t1) * 1000.0

        t2 = self.timer()
        width = sum(len(c) for c in self.columns.values())
        emb_types = list(embeddings.spec.types) if embeddings is not None else []
        dim = embeddings.spec.dim if embeddings is not None else 0
        matrix = np.empty((n, width + dim * len(emb_types)), dtype=np.float64)
        row_age = np.full(n, np.nan)
        row_computed = np.zeros(n, dtype=np.int64)
        row_degraded = np.zeros(n, dtype=bool)
        at = 0
        for etype in ENTITY_ORDER:
            w = len(self.columns[etype])
            idx = slots[etype]
            has = idx >= 0
            # the last row of each table stands for "no such entity": NaN features, no age, not computed
            table = np.vstack([blocks[etype].values, np.full((1, w), np.nan)])
            matrix[:, at : at + w] = table[idx]
            at += w
            row_age = np.fmax(row_age, np.append(ages[etype], np.nan)[idx])
            row_computed += np.append(computed_flag[etype], False)[idx] * self.widths[etype]
            row_degraded |= np.append(unavailable_flag[etype], False)[idx] & has
        stats.decode_ms = (self.timer() - t2) * 1000.0
        if embeddings is not None:
            t3 = self.timer()
            for etype in emb_types:
                rows = embeddings.rows_of(etype, ids.get(etype, []))  # its last row: the default, for idx -1
                matrix[:, at : at + dim] = embeddings.table[rows[slots[etype]]]
                at += dim
            stats.embed_ms = (self.timer() - t3) * 1000.0
        row_age[row_degraded] = np.nan  # features missing: no freshness to report (null, never 0)
        stats.row_age_s = row_age
        stats.row_degraded = row_degraded
        stats.row_computed = row_computed
        return matrix, stats

    def _absent(self, etype: str, count: int) -> TypeBlock:
        return TypeBlock(
            present=np.zeros(count, dtype=bool),
            fresh=np.zeros(count, dtype=bool),
            age_s=np.full(count, np.nan),
            values=np.full((count, len(self.columns[etype])), np.nan),
        )
