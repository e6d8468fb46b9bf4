"""The consistency check: online feature values against the registry definitions evaluated from the ledger as of
each entry's own `computed_at`. Exact (relative tolerance 1e-9, for float sums summed in another order).

    report = await check_consistency(pool, graph, online, [("card", "c1"), ("merchant", "m1")])
    report.checked, report.mismatches

`sample_entities` picks entities of recently ingested transactions from the ledger, for `fraudmesh features
check` and for the periodic job of the feature workers.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec

from feature_svc.compute import Entity, compute_points
from feature_svc.definitions import FEATURES
from feature_svc.graph import GraphStore
from feature_svc.online import OnlineStore
from shared.entities import ENTITY_ID_FIELD as ENTITY_COLUMN
from shared.entities import ENTITY_TYPES

REL_TOL = 1e-9


class Mismatch(msgspec.Struct, kw_only=True):
    entity_type: str
    entity_id: str
    feature: str
    online: float | None
    ledger: float
    computed_at: float


class CheckReport(msgspec.Struct, kw_only=True):
    checked: int
    """Entities compared (present in Redis with the current feature-set version)."""
    missing: int
    """Entities without a current online entry (nothing to compare)."""
    features_compared: int
    mismatches: list[Mismatch]


def same(a: float, b: float) -> bool:
    if math.isnan(a) and math.isnan(b):
        return True
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-9)


async def check_consistency(
    pool: asyncpg.Pool, graph: GraphStore, online: OnlineStore, entities: Sequence[Entity]
) -> CheckReport:
    unique = list(dict.fromkeys(entities))
    reads = await online.read(unique)
    present = [r for r in reads if r.present and r.version == online.version and r.computed_at is not None]
    points = [(r.entity_type, r.entity_id, datetime.fromtimestamp(r.computed_at or 0.0, UTC)) for r in present]
    expected = await compute_points(pool, graph, points) if points else []
    mismatches: list[Mismatch] = []
    compared = 0
    for r, values in zip(present, expected, strict=True):
        for name, want in values.items():
            compared += 1
            got = r.values.get(name)
            if got is None or not same(got, want):
                mismatches.append(
                    Mismatch(
                        entity_type=r.entity_type,
                        entity_id=r.entity_id,
                        feature=name,
                        online=got,
                        ledger=want,
                        computed_at=r.computed_at or 0.0,
                    )
                )
    return CheckReport(
        checked=len(present), missing=len(unique) - len(present), features_compared=compared, mismatches=mismatches
    )


async def confirmed_check(
    pool: asyncpg.Pool, graph: GraphStore, online: OnlineStore, entities: Sequence[Entity], settle_s: float
) -> CheckReport:
    """`check_consistency`, then, for the entities that differed, again after `settle_s` (the lagging bound):
        a difference counts only if the entry is still the same computation (same computed_at) and still differs.
        While ingestion runs, a transaction with an earlier timestamp can land after an entry was computed; the
        entry is refreshed within its freshness bound, so only a difference that outlives the bound is a fault (a
    feature whose declared bound is longer than the entry's age is not a fault yet)."""
    first = await check_consistency(pool, graph, online, entities)
    if not first.mismatches or settle_s <= 0:
        return first
    suspects = {(m.entity_type, m.entity_id): m.computed_at for m in first.mismatches}
    await asyncio.sleep(settle_s)
    again = await check_consistency(pool, graph, online, list(suspects))
    now = time.time()
    confirmed = [
        m
        for m in again.mismatches
        if suspects.get((m.entity_type, m.entity_id)) == m.computed_at
        and now - m.computed_at > FEATURES[m.feature].freshness_s
    ]
    return msgspec.structs.replace(first, mismatches=confirmed)


async def sample_entities(pool: asyncpg.Pool, n: int, since: timedelta) -> list[Entity]:
    """About `n` entities of each type, drawn from the ledger's transactions ingested within `since`."""
    out: list[Entity] = []
    for etype in ENTITY_TYPES:
        col = ENTITY_COLUMN[etype]
        rows = await pool.fetch(
            f"""SELECT DISTINCT {col} AS id FROM (
                    SELECT {col} FROM transactions
                    WHERE ingested_at >= now() - $1::interval AND {col} IS NOT NULL
                    ORDER BY random() LIMIT $2) s""",
            since,
            n,
        )
        out.extend((etype, r["id"]) for r in rows)
    return out
