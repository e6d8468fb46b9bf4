"""The personalization features in the Redis online store: one HASH per user, item and session (entity types of
their own, shared/entities.py `PERSONALIZATION_ENTITY_TYPES`), versioned by `FEATURE_SET_VERSION`.

    python -m feature_svc.world.personalization --redis-url redis://127.0.0.1:6379/0   # the default world
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from feature_svc.online import DEFAULT_PREFIX, FeatureRecord, OnlineStore
from feature_svc.world.personalization.features import (
    FEATURE_SET_VERSION,
    ITEM_FEATURES,
    SESSION_FEATURES,
    USER_FEATURES,
    as_mapping,
    item_features,
    session_features,
    user_features,
)
from feature_svc.world.personalization.world import SECONDS_PER_DAY, World

LAYOUT: Mapping[str, Sequence[str]] = {"user": USER_FEATURES, "item": ITEM_FEATURES, "session": SESSION_FEATURES}


def store(redis_url: str, ttl_s: int, prefix: str = DEFAULT_PREFIX) -> OnlineStore:
    """The online store of the personalization feature set (its own version and layout, the same Redis)."""
    return OnlineStore.from_url(
        redis_url, version=FEATURE_SET_VERSION, ttl_s=ttl_s, layout=LAYOUT, max_connections=8, prefix=prefix
    )


def records(world: World, cutoff: float | None = None, now: float | None = None) -> Iterator[FeatureRecord]:
    """Every user, item and session row computed from the events before `cutoff` (default: the whole world)."""
    cutoff = world.options.days * SECONDS_PER_DAY + 1.0 if cutoff is None else cutoff
    at = time.time() if now is None else now
    tables: list[tuple[str, tuple[str, ...], np.ndarray, int]] = [
        ("user", USER_FEATURES, user_features(world, cutoff), world.n_users),
        ("item", ITEM_FEATURES, item_features(world, cutoff), world.n_items),
        ("session", SESSION_FEATURES, session_features(world, cutoff), world.n_sessions),
    ]
    for etype, names, table, n in tables:
        ids = world.user_id if etype == "user" else world.item_id if etype == "item" else world.session_id
        for k in range(n):
            yield FeatureRecord(entity_type=etype, entity_id=ids(k), values=as_mapping(names, table[k]), computed_at=at)


async def load(online: OnlineStore, world: World, cutoff: float | None = None, chunk: int = 2000) -> int:
    """Write every row (in pipelined chunks); returns how many."""
    n = 0
    batch: list[FeatureRecord] = []
    for rec in records(world, cutoff):
        batch.append(rec)
        if len(batch) >= chunk:
            n += await online.write(batch)
            batch = []
    if batch:
        n += await online.write(batch)
    return n
