"""Score (user, item) pairs: read the user, item and session rows of every pair from Redis in one round trip,
build the head's context (the trainer's definition, feature_svc/world/personalization/features.py), run the ONNX
model once for the whole request and say what the scores mean (interpret.py)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

import numpy as np

from feature_svc.online import OnlineRead, OnlineStore
from feature_svc.world.personalization.features import CONTEXT_FEATURES, context_vector
from inference_svc.personalization import interpret
from inference_svc.personalization.artifact import PersonalizationModel
from shared.personalization_messages import PersonalizationItem, PersonalizationScore

INLINE_ROWS = 64
"""Requests up to this many pairs run onnxruntime on the event loop; larger ones in a thread."""
_SHARE = CONTEXT_FEATURES.index("user_category_share")
_GAP = CONTEXT_FEATURES.index("price_vs_user_usual")


def _row(read: OnlineRead | None) -> dict[str, float] | None:
    return dict(read.values) if read is not None and read.fresh and read.values else None


class PersonalizationScorer:
    def __init__(self, model: PersonalizationModel, store: OnlineStore, max_age_s: float | None) -> None:
        self.model = model
        self.store = store
        self.max_age_s = max_age_s

    async def score(self, items: Sequence[PersonalizationItem]) -> list[PersonalizationScore]:
        wanted: dict[tuple[str, str], int] = {}
        for it in items:
            wanted.setdefault(("user", it.user_id), len(wanted))
            wanted.setdefault(("item", it.item_id), len(wanted))
            if it.session_id is not None:
                wanted.setdefault(("session", it.session_id), len(wanted))
        keys = list(wanted)
        reads = await self.store.read(keys, max_age_s=self.max_age_s)
        got = dict(zip(keys, reads, strict=True))
        rows = [
            (
                _row(got[("user", it.user_id)]),
                _row(got[("item", it.item_id)]),
                _row(got[("session", it.session_id)]) if it.session_id is not None else None,
            )
            for it in items
        ]
        context = np.stack(
            [context_vector(u, i, it.item_price, it.item_category) for it, (u, i, _) in zip(items, rows, strict=True)]
        ).astype(np.float32)
        m = self.model
        users = np.array([m.user_index.get(it.user_id, m.cold_user) for it in items], dtype=np.int64)
        item_idx = np.array([m.item_index.get(it.item_id, m.cold_item) for it in items], dtype=np.int64)
        if len(items) <= INLINE_ROWS:
            relevance, _, conversion = m.run(users, item_idx, context)
        else:
            relevance, _, conversion = await asyncio.to_thread(m.run, users, item_idx, context)
        out = []
        for k, (it, (user, item, session)) in enumerate(zip(items, rows, strict=True)):
            engagement = interpret.engagement(user, session)
            conv = float(conversion[k])
            ages = [
                r.age_s
                for key in (("user", it.user_id), ("item", it.item_id), ("session", it.session_id or ""))
                if (r := got.get(key)) is not None and r.fresh and r.age_s is not None
            ]
            given = sum(v is not None for v in (it.item_category, it.item_price, it.session_id))
            out.append(
                PersonalizationScore(
                    relevance_score=round(float(relevance[k]), 6),
                    conversion_probability=round(conv, 6) if math.isfinite(conv) else 0.0,
                    engagement_score=engagement,
                    user_segment=interpret.segment(user, engagement),
                    behavioral_signals=interpret.signals(
                        user, item, session, float(context[k, _SHARE]), float(context[k, _GAP]), conv
                    ),
                    features_used=len(user or {}) + len(item or {}) + len(session or {}) + 2 + given,
                    model_version=m.version,
                    feature_freshness_sec=round(max(ages), 3) if ages else None,
                )
            )
        return out
