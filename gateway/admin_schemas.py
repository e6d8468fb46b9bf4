"""Bodies of the admin routes: `GET/POST /config` (runtime settings) and `GET /cache/stats`, `POST /cache/clear`."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

from shared.runtime_config import RuntimeConfig


def _d(text: str, example: object = None) -> Meta:
    return Meta(description=text, examples=[example]) if example is not None else Meta(description=text)


class ConfigResponse(Struct, kw_only=True):
    revision: Annotated[
        int, _d("Revision of the runtime overrides in the NATS KV bucket fraudmesh_config (0: never set).", 3)
    ]
    instance_id: Annotated[str, _d("The gateway instance that answered (its `settings` are its own).", "gateway-0")]
    overrides: Annotated[
        RuntimeConfig, _d("The settings changed at runtime, for every instance; a field left out is not overridden.")
    ]
    settings: Annotated[RuntimeConfig, _d("Every runtime setting as this gateway applies it now.")]
    applies_to: Annotated[
        dict[str, list[str]],
        _d("Which services read each runtime setting.", {"partial_size": ["aggregator"]}),
    ]


CONFIG_EXAMPLE = {"partial_size": 100, "coalesce_window_ms": 1.0, "degraded_policy": "review"}

CacheName = Literal["features", "decisions"]


class OnlineStoreStats(Struct, kw_only=True):
    entities: Annotated[
        dict[str, int], _d("Entities with features in Redis, per entity type.", {"card": 1200, "merchant": 80})
    ]
    total: Annotated[int, _d("Entities with features in Redis, in all.", 1280)]


class DecisionStoreStats(Struct, kw_only=True):
    enabled: Annotated[bool, _d("Idempotency is on (FRAUDMESH_IDEMPOTENCY_ENABLED or POST /config).", True)]
    window_s: Annotated[float, _d("How long a decision is kept for replays, s.", 86400.0)]
    stored: Annotated[int, _d("Transaction ids with a stored decision now (all gateways).", 5000)]
    hits: Annotated[int, _d("This gateway since it started: stored decisions replayed.", 12)]
    misses: Annotated[int, _d("This gateway since it started: ids scored for the first time.", 4988)]
    conflicts: Annotated[int, _d("This gateway since it started: known ids with another body (409).", 1)]
    rescores: Annotated[int, _d("This gateway since it started: ids scored anew with ?rescore=true.", 3)]
    unchecked: Annotated[int, _d("This gateway since it started: ids scored while the store was unreachable.", 0)]
    writes_in_flight: Annotated[int, _d("Decisions this gateway is still writing to Redis.", 0)]


class RedisStats(Struct, kw_only=True):
    used_memory_bytes: Annotated[int, _d("Memory Redis uses, bytes.", 1048576)]
    keyspace_hits: Annotated[int, _d("Key lookups that found the key, since Redis started.", 10000)]
    keyspace_misses: Annotated[int, _d("Key lookups that found nothing, since Redis started.", 120)]
    evicted_keys: Annotated[int, _d("Keys evicted for memory, since Redis started.", 0)]
    expired_keys: Annotated[int, _d("Keys expired by their TTL, since Redis started.", 40)]
    total_keys: Annotated[int, _d("Keys in the database (features, decisions, rate-limit counters).", 6300)]


class CacheStatsResponse(Struct, kw_only=True):
    online_store: Annotated[OnlineStoreStats, _d("The online feature store (Redis HASH per entity).")]
    decisions: Annotated[DecisionStoreStats, _d("The idempotency store: decisions by transaction id.")]
    redis: Annotated[RedisStats, _d("Redis's own figures.")]


class CacheClearRequest(Struct, kw_only=True, forbid_unknown_fields=True):
    caches: Annotated[
        list[CacheName],
        Meta(
            min_length=1,
            description="What to clear: `features` (the online store: features are recomputed from the ledger on "
            "the next score, slower meanwhile) and/or `decisions` (stored decisions: the next request of each "
            "transaction id is scored anew).",
            examples=[["decisions"]],
        ),
    ]


class CacheClearResponse(Struct, kw_only=True):
    cleared: Annotated[dict[str, int], _d("Keys deleted per cache.", {"decisions": 5000})]
