"""The shapes of the feature registry (feature_svc/definitions.py): a feature, a SQL group, the freshness bounds."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final, Literal

from shared.entities import EntityType

if TYPE_CHECKING:
    from feature_svc.graph.base import GraphStore
    from feature_svc.graph.batch import BatchKind

Dtype = Literal["float64", "int64", "bool"]
GraphFn = Callable[["GraphStore", str, datetime], Awaitable[float]]

FRESH_S: Final = 1.0
"""Freshness bound of every feature of an entity an ingested transaction or label touches directly."""
LAGGING_S: Final = 10.0
"""Freshness bound of graph features that change second-hand: the sharing counts, component sizes and 2-hop
fraud counts of the OTHER cards on a device or IP that a new transaction used (refreshed by the deferred pass)."""
COMPONENT_LAG_S: Final = 300.0
"""card_component_size changes when an edge is added anywhere in the component, not just next to the card: the
live path refreshes it when the card or a card sharing a device or IP with it transacts; beyond that, the
scoring path's max age (FRAUDMESH_FEATURE_MAX_AGE_S, default 300 s) bounds it."""
COMPONENT_CAP: Final = 200
"""component_size stops walking at this many nodes (a hub costs no more than this)."""
SMALL_AMOUNT: Final = 5.0
"""Card testing probes with amounts below this."""

TS = 't."timestamp"'


@dataclass(frozen=True)
class SqlGroup:
    """Rows one group's aggregates run over, for one (entity, as_of) pair: a FROM clause using `q.id`, `q.as_of`."""

    name: str
    entity_type: EntityType
    source: str


@dataclass(frozen=True)
class Feature:
    name: str
    entity_type: EntityType
    dtype: Dtype
    description: str
    version: int = 1
    group: str = ""
    sql: str | None = None
    graph: GraphFn | None = None
    graph_batch: BatchKind | None = None
    """The set-based form of `graph` (a kind of feature_svc/graph/batch.py), used when the store offers it."""
    freshness_s: float = 1.0
    """Freshness bound under live ingestion: an ingested transaction or label shows in this feature's online
    value within this many seconds (see docs/architecture.md, live features)."""

    @property
    def kind(self) -> Literal["sql", "graph"]:
        return "sql" if self.sql is not None else "graph"
