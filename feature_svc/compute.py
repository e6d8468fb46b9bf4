"""Compute registry features for many entities, point-in-time correct, with batched SQL.

The core is `compute_points`: a list of (entity type, entity id, as_of) points, each with its own as_of. For every
SQL group of the registry it runs ONE query over all points of that entity type:

    SELECT q.i, g.* FROM unnest($1::text[], $2::timestamptz[]) WITH ORDINALITY AS q(id, as_of, i)
    CROSS JOIN LATERAL (SELECT <the group's feature expressions> FROM <the group's rows for q>) g

and the graph features through the GraphStore (bounded concurrency). Online requests (`compute_features`) are
points that share one as_of; the offline export (feature_svc/offline.py) passes each transaction's own timestamp.
Same definitions, same SQL, so online and offline values are identical by construction.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg
from opentelemetry import trace
from opentelemetry.trace import Tracer

from feature_svc.definitions import (
    ENTITY_COLUMN,
    ENTITY_TABLE,
    ENTITY_TYPES,
    FEATURES,
    GROUPS,
    EntityType,
    Feature,
    SqlGroup,
)
from feature_svc.graph.batch import BatchGraphStore

if TYPE_CHECKING:
    from feature_svc.graph.base import GraphStore

Entity = tuple[str, str]
Point = tuple[str, str, datetime]
Values = dict[str, float]

GRAPH_CONCURRENCY = 8
_default_tracer = trace.get_tracer("fraudmesh.feature.compute")


class FeatureError(ValueError):
    """A bad entity type or as_of; the message says which."""


def check_as_of(as_of: datetime) -> datetime:
    if as_of.tzinfo is None or as_of.utcoffset() is None:
        raise FeatureError(f"as_of must be timezone-aware (UTC), got naive {as_of.isoformat()}")
    return as_of


def _check_type(entity_type: str) -> EntityType:
    if entity_type not in ENTITY_TYPES:
        raise FeatureError(f"unknown entity type {entity_type!r}; expected one of {', '.join(ENTITY_TYPES)}")
    return entity_type


def group_sql(group: SqlGroup, features: Sequence[Feature]) -> str:
    """The one query of a group: every feature expression, over every (id, as_of) point, in point order."""
    cols = ",\n       ".join(f'(({f.sql}))::float8 AS "{f.name}"' for f in features)
    return (
        "SELECT q.i, g.*\n"
        "FROM unnest($1::text[], $2::timestamptz[]) WITH ORDINALITY AS q(id, as_of, i)\n"
        f"CROSS JOIN LATERAL (SELECT {cols}\n    FROM {group.source}) g\n"
        "ORDER BY q.i"
    )


def _sql_groups(entity_type: str) -> dict[str, list[Feature]]:
    out: dict[str, list[Feature]] = defaultdict(list)
    for f in FEATURES.values():
        if f.entity_type == entity_type and f.kind == "sql":
            out[f.group].append(f)
    return out


def _graph_features(entity_type: str) -> list[Feature]:
    return [f for f in FEATURES.values() if f.entity_type == entity_type and f.kind == "graph"]


@contextlib.contextmanager
def _span(tracer: Tracer, name: str, **attrs: Any) -> Iterator[None]:
    with tracer.start_as_current_span(name, attributes=attrs):
        yield


async def _run_group(
    pool: asyncpg.Pool,
    group: SqlGroup,
    features: list[Feature],
    points: list[Point],
    out: list[Values],
    tracer: Tracer,
) -> None:
    with _span(tracer, f"postgres {group.name}", **{"db.system": "postgresql", "fraudmesh.points": len(points)}):
        rows = await pool.fetch(group_sql(group, features), [p[1] for p in points], [p[2] for p in points])
    names = [f.name for f in features]
    for row in rows:
        values = out[row["i"] - 1]
        for name in names:
            values[name] = float(row[name])


async def _run_graph(
    graph: GraphStore,
    features: list[Feature],
    points: list[Point],
    out: list[Values],
    tracer: Tracer,
    concurrency: int,
) -> None:
    """Set-based features in one query each when the store offers it (feature_svc/graph/batch.py), the others
    (and every feature on a store without batches) one traversal per entity, `concurrency` at a time."""
    sem = asyncio.Semaphore(concurrency)
    batched = isinstance(graph, BatchGraphStore)

    async def one(k: int, f: Feature) -> None:
        assert f.graph is not None
        async with sem:
            out[k][f.name] = float(await f.graph(graph, points[k][1], points[k][2]))

    async def batch(f: Feature) -> None:
        assert isinstance(graph, BatchGraphStore) and f.graph_batch is not None
        values = await graph.batch_values(
            f.graph_batch,
            f.entity_type,
            [p[1] for p in points],
            [p[2] for p in points],
        )
        for k, v in enumerate(values):
            out[k][f.name] = v

    etype = points[0][0]
    jobs = []
    for f in features:
        if batched and f.graph_batch is not None:
            jobs.append(batch(f))
        else:
            jobs.extend(one(k, f) for k in range(len(points)))
    with _span(tracer, f"graph {etype}", **{"fraudmesh.points": len(points), "fraudmesh.features": len(features)}):
        await asyncio.gather(*jobs)


async def compute_points(
    pool: asyncpg.Pool,
    graph: GraphStore,
    points: Sequence[Point],
    *,
    tracer: Tracer | None = None,
    graph_concurrency: int = GRAPH_CONCURRENCY,
) -> list[Values]:
    """Features of each (entity_type, entity_id, as_of) point, in order: all of its type's registry features."""
    tracer = tracer or _default_tracer
    by_type: dict[str, list[int]] = defaultdict(list)
    for k, (etype, _eid, as_of) in enumerate(points):
        by_type[_check_type(etype)].append(k)
        check_as_of(as_of)
    results: list[Values] = [{} for _ in points]
    jobs = []
    for etype, idx in by_type.items():
        sub = [points[k] for k in idx]
        sub_out: list[Values] = [results[k] for k in idx]  # the same dicts: filled in place
        for name, feats in _sql_groups(etype).items():
            jobs.append(_run_group(pool, GROUPS[name], feats, sub, sub_out, tracer))
        gfeats = _graph_features(etype)
        if gfeats:
            jobs.append(_run_graph(graph, gfeats, sub, sub_out, tracer, graph_concurrency))
    await asyncio.gather(*jobs)
    order = {t: [f.name for f in FEATURES.values() if f.entity_type == t] for t in by_type}
    return [{n: v[n] for n in order[p[0]]} for p, v in zip(points, results, strict=True)]


async def compute_features(
    pool: asyncpg.Pool,
    graph: GraphStore,
    entities: Sequence[Entity],
    as_of: datetime,
    *,
    tracer: Tracer | None = None,
    graph_concurrency: int = GRAPH_CONCURRENCY,
) -> dict[Entity, Values]:
    """Features of each (entity_type, entity_id) as of `as_of` (strictly before it). Duplicates are computed once."""
    unique = list(dict.fromkeys((t, i) for t, i in entities))
    values = await compute_points(
        pool, graph, [(t, i, as_of) for t, i in unique], tracer=tracer, graph_concurrency=graph_concurrency
    )
    return dict(zip(unique, values, strict=True))


async def known_entities(
    pool: asyncpg.Pool, entities: Sequence[Entity], *, tracer: Tracer | None = None
) -> set[Entity]:
    """The entities the ledger knows: a row in their entity table or at least one transaction."""
    tracer = tracer or _default_tracer
    by_type: dict[EntityType, list[str]] = defaultdict(list)
    for t, i in entities:
        by_type[_check_type(t)].append(i)
    known: set[Entity] = set()
    with _span(tracer, "postgres known entities", **{"db.system": "postgresql"}):
        for etype, ids in by_type.items():
            key = ENTITY_COLUMN[etype]
            table = ENTITY_TABLE[etype]
            rows = await pool.fetch(
                f"""SELECT x.id FROM unnest($1::text[]) AS x(id)
                    WHERE EXISTS (SELECT 1 FROM {table} e WHERE e.{key} = x.id)
                       OR EXISTS (SELECT 1 FROM transactions t WHERE t.{key} = x.id)""",
                list(dict.fromkeys(ids)),
            )
            known.update((etype, r["id"]) for r in rows)
    return known


UNKNOWN_PROBE_ID = "\x01fraudmesh:no-such-entity"
"""An id no entity has: what `UnknownValues` computes the definitions for."""


class UnknownValues:
    """The features of an entity the ledger does not know (no entity row, no transaction, so no label and no edge
    either): every definition evaluated over empty sets (counts 0, `seconds_since_last_txn` -1, ...), the same for
    every such entity and every as_of. Computed once per entity type by running the registry's own queries for an
    id no entity has, so it cannot drift from the definitions; the feature service answers a never-seen card,
    device or IP with it instead of some fifteen queries that would find nothing (the cold path of scoring).
    tests/test_features_service.py holds it equal to a recompute."""

    def __init__(self) -> None:
        self._values: dict[str, Values] = {}

    async def of(
        self, pool: asyncpg.Pool, graph: GraphStore, entity_type: str, as_of: datetime, *, tracer: Tracer | None = None
    ) -> Values:
        values = self._values.get(entity_type)
        if values is None:
            [values] = await compute_points(pool, graph, [(entity_type, UNKNOWN_PROBE_ID, as_of)], tracer=tracer)
            self._values[entity_type] = values
        return dict(values)
