"""The personalization clickstream on the live path: a feature worker's consumer of FRAUD_CLICKS
(`fraud.clicks.ingest`, shared/click_messages.py).

Each micro-batch: the events go into the event log (PostgreSQL `click_events`, idempotent on `event_id`); then the
user, item and session features of every entity the batch touched are recomputed from the log with the definitions
the simulator's loader and the trainer use (feature_svc/world/personalization/features.py, through the
`Clickstream` protocol: the log of those entities, densely re-indexed, is one) and written to Redis
(`write_if_newer`, stamped with the database's clock taken after the insert, so that of two workers refreshing the
same user the one that saw more events wins); only then is the batch acked. A worker killed mid-batch loses and
double-counts nothing: the redelivered batch is written again (no-op) and its entities recomputed.

`compute(pool, ..., as_of=t)` gives the same rows as of a time (events at or after `t` are not used): point-in-time
correct, for a recompute that checks the online values or for training snapshots.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg
import numpy as np
from prometheus_client import Counter, Histogram

from feature_svc.ingest.decoding import StreamDecoder
from feature_svc.online import FeatureRecord, OnlineStore
from feature_svc.world.personalization.features import (
    ITEM_FEATURES,
    SESSION_FEATURES,
    USER_FEATURES,
    as_mapping,
    item_features,
    session_features,
    user_features,
)
from feature_svc.world.personalization.world import CATEGORIES
from shared import subjects
from shared.click_messages import EVENT_TYPES, ClickEvent
from shared.consumer import Consumer
from shared.context import Delivered
from shared.jetstream import ingest_policy

if TYPE_CHECKING:
    from shared.service import Service

CLICKS = "ingest_clicks"
CATEGORY_INDEX = {c: i for i, c in enumerate(CATEGORIES)}
EVENT_CODE = {t: i for i, t in enumerate(EVENT_TYPES)}
EVERYTHING = float("inf")

_INSERT = """
INSERT INTO click_events (event_id, user_id, item_id, session_id, event_type, event_time, item_category, item_price)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int2[], $6::timestamptz[], $7::int2[],
                     $8::float8[])
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id
"""
_EVENTS_OF = """
SELECT user_id, item_id, session_id, event_type, extract(epoch FROM event_time)::float8 AS t, item_category, item_price
FROM click_events
WHERE {column} = ANY($1::text[]) AND ($2::float8 IS NULL OR event_time < to_timestamp($2))
ORDER BY event_time, event_id
"""


@dataclass(frozen=True)
class EventLog:
    """Events of some entities, their users, items and sessions re-indexed densely: a `Clickstream` (the item's
    price and category are those of its latest event)."""

    event_user: np.ndarray
    event_item: np.ndarray
    event_type: np.ndarray
    event_session: np.ndarray
    event_time: np.ndarray
    item_price: np.ndarray
    item_category: np.ndarray
    users: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    sessions: list[str] = field(default_factory=list)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_sessions(self) -> int:
        return len(self.sessions)


def event_log(rows: Iterable[Sequence[Any]]) -> EventLog:
    """From rows (user_id, item_id, session_id, event_type code, time s, category index, price) in time order."""
    users: dict[str, int] = {}
    items: dict[str, int] = {}
    sessions: dict[str, int] = {}
    u_col: list[int] = []
    i_col: list[int] = []
    s_col: list[int] = []
    kinds: list[int] = []
    times: list[float] = []
    price: dict[int, float] = {}
    category: dict[int, int] = {}
    for user, item, session, kind, t, cat, p in rows:
        i = items.setdefault(item, len(items))
        u_col.append(users.setdefault(user, len(users)))
        i_col.append(i)
        s_col.append(sessions.setdefault(session, len(sessions)))
        kinds.append(int(kind))
        times.append(float(t))
        price[i], category[i] = float(p), int(cat)  # the latest event's (rows are in time order)
    n = len(items)
    return EventLog(
        event_user=np.asarray(u_col, dtype=np.int64),
        event_item=np.asarray(i_col, dtype=np.int64),
        event_type=np.asarray(kinds, dtype=np.int64),
        event_session=np.asarray(s_col, dtype=np.int64),
        event_time=np.asarray(times, dtype=np.float64),
        item_price=np.asarray([price[k] for k in range(n)], dtype=np.float64),
        item_category=np.asarray([category[k] for k in range(n)], dtype=np.int64),
        users=list(users),
        items=list(items),
        sessions=list(sessions),
    )


async def compute(
    pool: asyncpg.Pool,
    users: Sequence[str],
    items: Sequence[str],
    sessions: Sequence[str],
    as_of: float | None = None,
    computed_at: float | None = None,
) -> list[FeatureRecord]:
    """The feature rows of these users, items and sessions from the event log (as of `as_of`, epoch seconds: only
    events before it count; default every event). An entity without events gets no row."""
    at = time.time() if computed_at is None else computed_at
    out: list[FeatureRecord] = []
    async with pool.acquire() as conn:
        for etype, column, ids in (
            ("user", "user_id", users),
            ("item", "item_id", items),
            ("session", "session_id", sessions),
        ):
            if not ids:
                continue
            log = event_log(await conn.fetch(_EVENTS_OF.format(column=column), list(ids), as_of))
            if etype == "user":
                table, names, keys = user_features(log, EVERYTHING), USER_FEATURES, log.users
            elif etype == "item":
                table, names, keys = item_features(log, EVERYTHING), ITEM_FEATURES, log.items
            else:
                table, names, keys = session_features(log, EVERYTHING), SESSION_FEATURES, log.sessions
            wanted = set(ids)
            out += [
                FeatureRecord(entity_type=etype, entity_id=key, values=as_mapping(names, table[k]), computed_at=at)
                for k, key in enumerate(keys)
                if key in wanted
            ]
    return out


def _utc(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


async def write_events(pool: asyncpg.Pool, events: Sequence[ClickEvent]) -> tuple[set[str], float]:
    """Insert the events (a known `event_id` is left as it is); returns the ids new to the log and the database's
    clock right after the insert committed (the `computed_at` of the rows recomputed from it)."""
    unique = list({e.event_id: e for e in events}.values())
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            _INSERT,
            [e.event_id for e in unique],
            [e.user_id for e in unique],
            [e.item_id for e in unique],
            [e.session_id for e in unique],
            [EVENT_CODE[e.event_type] for e in unique],
            [_utc(e.timestamp) for e in unique],
            [CATEGORY_INDEX[e.item_category] for e in unique],
            [e.item_price for e in unique],
        )
        now = float(await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())::float8"))
    return {r["event_id"] for r in rows}, now


class ClickMetrics:
    def __init__(self, service: Service) -> None:
        self.events = Counter(
            "fraudmesh_click_events",
            "Clickstream messages consumed from FRAUD_CLICKS, by outcome: new (its event written to the event log) or "
            "duplicate (its event_id was already there, or twice in the batch: a redelivery or a re-publish).",
            ["outcome"],
            registry=service.registry,
        )
        self.refreshed = Counter(
            "fraudmesh_click_entities_refreshed",
            "Personalization feature rows recomputed from the event log and written to Redis, by entity type.",
            ["entity_type"],
            registry=service.registry,
        )
        self.batch_seconds = Histogram(
            "fraudmesh_click_batch_seconds",
            "Time to apply one clickstream micro-batch (event log write, recompute, Redis write).",
            registry=service.registry,
        )


def unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


class ClickIngestor:
    def __init__(self, pool: asyncpg.Pool, online: OnlineStore, metrics: ClickMetrics) -> None:
        self.pool = pool
        self.online = online
        self.m = metrics

    async def on_clicks(self, batch: list[Delivered[ClickEvent]]) -> None:
        started = time.perf_counter()
        events = [d.message for d in batch]
        new, at = await write_events(self.pool, events)
        # every touched entity, not only those of new events: a redelivered batch may have been written by a
        # worker that died before refreshing its features
        records = await compute(
            self.pool,
            unique(e.user_id for e in events),
            unique(e.item_id for e in events),
            unique(e.session_id for e in events),
            computed_at=at,
        )
        await self.online.write_if_newer(records)
        self.m.events.labels("new").inc(len(new))
        self.m.events.labels("duplicate").inc(len(events) - len(new))
        for etype in ("user", "item", "session"):
            self.m.refreshed.labels(etype).inc(sum(r.entity_type == etype for r in records))
        self.m.batch_seconds.observe(time.perf_counter() - started)


class ClickWiring:
    """The FRAUD_CLICKS consumer of one feature worker on the service base (micro-batch form). The stream and its
    durable consumer are declared with the other ingest streams (shared/jetstream.py)."""

    def __init__(self, service: Service, pool: asyncpg.Pool, online: OnlineStore) -> None:
        self.service = service
        self.online = online
        self.ingestor = ClickIngestor(pool, online, ClickMetrics(service))

    def start(self) -> None:
        """Register the consumer (it starts with the service). Call from `on_start`, after the ingest streams and
        consumers are declared."""
        settings = self.service.settings
        self.service.consumer(
            name=CLICKS,
            stream=subjects.CLICKS_STREAM,
            durable=subjects.CLICKS_CONSUMER,
            message_type=ClickEvent,
            batch_handler=self.ingestor.on_clicks,
            batch_size=settings.ingest_batch_size,
            max_wait_s=settings.ingest_max_wait_ms / 1000.0,
            linger_s=settings.ingest_linger_ms / 1000.0,
            policy=ingest_policy(),
        )
        decoder: Any = StreamDecoder(ClickEvent)  # JSON or msgpack (feature_svc/ingest/decoding.py)
        for route in self.service.routes:
            if isinstance(route, Consumer) and route.name == CLICKS:
                route.decoder = decoder

    async def stop(self) -> None:
        await self.online.close()
