"""Bring the online features of some entities up to date: recompute them from the ledger and the graph as of
now (the registry's own definitions, so online = offline by construction) and write them to Redis unless a
newer computation is already there."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime

import asyncpg
from opentelemetry.trace import Tracer

from feature_svc.compute import Entity, compute_features, known_entities
from feature_svc.graph import GraphStore
from feature_svc.online import FeatureRecord, OnlineStore

CHUNK = 5000
"""Entities per compute call (each SQL group is one query over all of them)."""
WRITE_CHUNK = 1000
"""Entities per Redis write (one Lua call each): a script blocks Redis while it runs, scoring reads included, so
one call stays at a few milliseconds."""


def now_ms() -> datetime:
    """Now, to the millisecond: `computed_at` (epoch float seconds) then maps back to exactly this instant, so a
    recompute "as of computed_at" (the consistency check) uses the very same window bounds."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


async def refresh(
    pool: asyncpg.Pool,
    graph: GraphStore,
    online: OnlineStore,
    entities: Sequence[Entity],
    *,
    tracer: Tracer | None = None,
    in_ledger: Collection[Entity] = (),
) -> tuple[float, int]:
    """Recompute and write `entities`; return (computed_at epoch seconds, records written).

    `in_ledger`: entities the caller knows have a committed ledger transaction (the ingestor's, right after writing
    their rows): their `known` flag is true without asking PostgreSQL, which saves the known-entities query for
    most of a live refresh round."""
    unique = list(dict.fromkeys(entities))
    as_of = now_ms()
    written = 0
    for start in range(0, len(unique), CHUNK):
        part = unique[start : start + CHUNK]
        values = await compute_features(pool, graph, part, as_of, tracer=tracer)
        unsure = [e for e in part if e not in in_ledger]
        known = await known_entities(pool, unsure, tracer=tracer) if unsure else set()
        known.update(e for e in part if e in in_ledger)
        records = [
            FeatureRecord(entity_type=t, entity_id=i, values=v, computed_at=as_of.timestamp(), known=(t, i) in known)
            for (t, i), v in values.items()
        ]
        for k in range(0, len(records), WRITE_CHUNK):
            written += await online.write_if_newer(records[k : k + WRITE_CHUNK])
    return as_of.timestamp(), written
