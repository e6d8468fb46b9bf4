"""The gateway's own Redis pieces: the idempotency store (gateway/idempotency.py) and the figures and clearing of
the caches behind `GET /cache/stats` and `POST /cache/clear` (the online feature store and the stored decisions).

One Redis client with short timeouts (a store that hangs must not hold the scoring path: see IDEMPOTENCY_TIMEOUT_S).
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from feature_svc.online import DEFAULT_PREFIX as FEATURE_PREFIX
from gateway.idempotency import KEY_PREFIX as IDEMPOTENCY_PREFIX
from gateway.idempotency import Idempotency, count_prefix, delete_prefix

REDIS_TIMEOUT_S = 0.25
"""Connect and read timeout of the gateway's Redis calls: past it, a request is scored without idempotency."""
ENTITY_TYPES = ("card", "merchant", "device", "ip")


@dataclass(slots=True)
class Stores:
    redis: Redis
    idempotency: Idempotency

    @classmethod
    def from_url(cls, url: str, registry: CollectorRegistry = REGISTRY) -> Stores:
        redis = Redis.from_url(
            url,
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
            max_connections=256,
        )
        return cls(redis, Idempotency(redis, registry))

    async def close(self) -> None:
        await self.idempotency.drain()
        await self.redis.aclose()

    async def feature_keys(self) -> dict[str, int]:
        """Entities with features in the online store, per entity type (SCAN)."""
        return {t: await count_prefix(self.redis, f"{FEATURE_PREFIX}:{t}:") for t in ENTITY_TYPES}

    async def decision_keys(self) -> int:
        return await count_prefix(self.redis, IDEMPOTENCY_PREFIX)

    async def redis_info(self) -> dict[str, int]:
        """Redis's own figures: memory, and the hits and misses of key lookups since it started."""
        stats = await self.redis.info("stats")
        memory = await self.redis.info("memory")
        return {
            "used_memory_bytes": int(memory.get("used_memory", 0)),
            "keyspace_hits": int(stats.get("keyspace_hits", 0)),
            "keyspace_misses": int(stats.get("keyspace_misses", 0)),
            "evicted_keys": int(stats.get("evicted_keys", 0)),
            "expired_keys": int(stats.get("expired_keys", 0)),
            "total_keys": int(await self.redis.dbsize()),
        }

    async def clear_features(self) -> int:
        return await delete_prefix(self.redis, f"{FEATURE_PREFIX}:")

    async def clear_decisions(self) -> int:
        return await self.idempotency.forget_all()
