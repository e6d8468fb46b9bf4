"""The GNN scoring path as it was before issue 12, kept as the baseline of `bench/partial.py` and the oracle of
`tests/test_fast_path.py`: the straightforward computation the fast path must equal, score for score and reason
for reason.

- entity read: `OnlineStore.read_packed` (a Lua script of HMGETs, a reply of 4 fields per entity), decoded one
  entity at a time (`decode_vectors`, one `VectorRead` each);
- the input block: one table per entity type filled row by row, embeddings copied one entity at a time;
- the explainer: one ONNX run per group of inputs, each on its own occluded copy of the partial.

Only the timings are new (the same stages as `inference_svc.scorer.STAGES`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from feature_svc.client import compute_remote
from feature_svc.online import VectorRead
from inference_svc.embeddings import EmbeddingBlock
from inference_svc.entity_features import ENTITY_ORDER, EntityFeatureSource, EntityStats
from inference_svc.model import OnnxModel
from inference_svc.reasons import OcclusionExplainer, _logit
from inference_svc.scorer import Scorer
from inference_svc.tx_features import DESCRIPTIONS
from shared import subjects
from shared.degraded import FEATURE_STORE_UNAVAILABLE, compute_failure_reason
from shared.entities import ENTITY_ID_FIELD
from shared.messages import RiskFactor, Transaction


class ReferenceEntitySource(EntityFeatureSource):
    """`EntityFeatureSource` with the pre-issue-12 `build`."""

    async def build(
        self,
        transactions: Sequence[Transaction],
        *,
        timeout_s: float,
        headers: dict[str, str] | None = None,
        embeddings: EmbeddingBlock | None = None,
    ) -> tuple[np.ndarray, EntityStats]:
        n = len(transactions)
        stats = EntityStats()
        unique: dict[tuple[str, str], int] = {}
        slots: dict[str, list[int]] = {}
        for etype in ENTITY_ORDER:
            attr = ENTITY_ID_FIELD[etype]
            col = []
            for tx in transactions:
                eid = getattr(tx, attr)
                col.append(-1 if eid is None else unique.setdefault((etype, eid), len(unique)))
            slots[etype] = col
        entities = list(unique)
        stats.entities = len(entities)

        t0 = self.timer()
        try:
            keys = [self.store.key(t, i) for t, i in entities]
            raw = await self.store._packed_script(
                keys=keys, args=[len(keys), *("computed_at", "version", "known", "_vec")]
            )
            stats.redis_ms = (self.timer() - t0) * 1000.0
            t0 = self.timer()
            reads = self.store.decode_vectors(entities, raw, max_age_s=self.max_age_s, now=self.clock())
        except Exception as exc:
            reads = [VectorRead(present=False) for _ in entities]
            stats.reasons.append(FEATURE_STORE_UNAVAILABLE)
            self.last_error = f"redis: {type(exc).__name__}: {exc}"[:300]
        decode_s = self.timer() - t0
        t0 = self.timer()
        emb_vectors = embeddings.vectors(entities) if embeddings is not None else []
        embed_s = self.timer() - t0
        vectors: list[np.ndarray | None] = [r.vector for r in reads]
        ages = np.array([r.age_s if r.fresh and r.age_s is not None else 0.0 for r in reads], dtype=np.float64)
        computed_flag = np.zeros(len(entities), dtype=bool)
        unavailable_flag = np.zeros(len(entities), dtype=bool)
        stats.cache_hits = sum(1 for r in reads if r.fresh)
        stats.cache_stale = sum(1 for r in reads if r.present and r.stale)
        stats.cache_misses = sum(1 for r in reads if not r.present)

        missing = [i for i, r in enumerate(reads) if not r.fresh]
        if missing:
            t1 = self.timer()
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
            except Exception as exc:
                stats.unavailable = len(missing)
                unavailable_flag[missing] = True
                stats.reasons.append(compute_failure_reason(exc))
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            stats.compute_ms = (self.timer() - t1) * 1000.0

        t0 = self.timer()
        blocks = []
        row_age = np.full(n, np.nan)
        row_computed = np.zeros(n, dtype=np.int64)
        row_degraded = np.zeros(n, dtype=bool)
        for etype in ENTITY_ORDER:
            width = self.widths[etype]
            table = np.full((len(entities) + 1, width), np.nan)
            for i, vec in enumerate(vectors):
                if vec is not None and entities[i][0] == etype:
                    table[i] = vec
            idx = np.array(slots[etype], dtype=np.int64)
            blocks.append(table[idx])
            has = idx >= 0
            ent_age = np.where(has, np.append(ages, np.nan)[idx], np.nan)
            row_age = np.fmax(row_age, ent_age)
            row_computed += np.where(has, np.append(computed_flag, False)[idx], False) * width
            row_degraded |= np.where(has, np.append(unavailable_flag, False)[idx], False)
        decode_s += self.timer() - t0
        t0 = self.timer()
        if embeddings is not None:
            for etype in embeddings.spec.types:
                table = np.tile(embeddings.defaults[etype], (len(entities) + 1, 1))
                for i, vec in enumerate(emb_vectors):
                    if entities[i][0] == etype:
                        table[i] = vec
                blocks.append(table[np.array(slots[etype], dtype=np.int64)])
        embed_s += self.timer() - t0
        stats.decode_ms, stats.embed_ms = decode_s * 1000.0, embed_s * 1000.0
        row_age[row_degraded] = np.nan
        stats.row_age_s = row_age
        stats.row_degraded = row_degraded
        stats.row_computed = row_computed
        matrix = np.hstack(blocks) if blocks else np.zeros((n, 0))
        return matrix, stats


class ReferenceOcclusion(OcclusionExplainer):
    """`OcclusionExplainer` with the pre-issue-12 `explain`: one ONNX run per group."""

    def _occlude(self, x: np.ndarray, cols: np.ndarray) -> np.ndarray:
        z = x.copy()
        for c in cols:
            name = self.names[c]
            if name.startswith("emb_"):
                etype, k = name[4:].rsplit("_", 1)
                default = self.embedding_defaults.get(etype)
                z[:, c] = default[int(k)] if default is not None else 0.0
            else:
                z[:, c] = np.nan
        return z

    def explain(self, x: np.ndarray, p: np.ndarray, k: int = 3, min_weight: float = 0.1) -> list[list[RiskFactor]]:
        if x.shape[0] == 0 or not self.groups:
            return [[] for _ in range(x.shape[0])]
        base = _logit(p)
        deltas = np.stack([base - _logit(self.predict(self._occlude(x, cols))) for _, cols, _ in self.groups], axis=1)
        order = np.argsort(-deltas, axis=1)[:, :k].tolist()
        weights = np.round(deltas.astype(np.float64), 4).tolist()
        out: list[list[RiskFactor]] = []
        for row, top in enumerate(order):
            factors = []
            for gi in top:
                w = weights[row][gi]
                if w <= min_weight:
                    break
                group, _, code = self.groups[gi]
                if group is None:
                    factors.append(
                        RiskFactor(code=code, description=self.tx_descriptions[code], weight=w, source="transaction")
                    )
                else:
                    values = x[row]

                    def v(name: str, values: np.ndarray = values) -> float:
                        i = self.index.get(name)
                        return float(values[i]) if i is not None else float("nan")

                    factors.append(RiskFactor(code=code, description=group.text(v), weight=w, source=group.source))
            out.append(factors)
        return out


def reference_scorer(model: OnnxModel, source: EntityFeatureSource) -> Scorer:
    """A Scorer on the pre-issue-12 path: `source` re-classed as the reference entity source (same store, same
    NATS connection), and the per-group explainer."""
    ref = ReferenceEntitySource(
        source.store, source.nc, max_age_s=source.max_age_s, clock=source.clock, timer=source.timer
    )
    scorer = Scorer(model, ref)
    if scorer.occlusion is not None:
        scorer.occlusion = ReferenceOcclusion(
            model.meta.feature_names,
            model.predict,
            DESCRIPTIONS,
            scorer.embeddings.defaults if scorer.embeddings is not None else None,
        )
    return scorer
