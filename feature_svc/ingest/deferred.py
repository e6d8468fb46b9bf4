"""The durable queue of the deferred pass: devices and IPs whose OTHER cards need their graph features refreshed.

A Redis sorted set (`{prefix}:ingest:deferred`), member `type|id`, score = when it was last touched (epoch s).
Every feature worker reads the oldest entries, refreshes the cards on them, and removes an entry only if it was
not touched again meanwhile (its score unchanged: one Lua call), so a worker killed in the middle loses nothing
and a touch that raced the refresh is refreshed on the next pass.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from feature_svc.compute import Entity

_REMOVE_IF_UNCHANGED = """
local removed = 0
for i = 1, #ARGV, 2 do
  local cur = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if cur and tonumber(cur) == tonumber(ARGV[i + 1]) then
    redis.call('ZREM', KEYS[1], ARGV[i])
    removed = removed + 1
  end
end
return removed
"""


_COMPUTED_AT = """
local out = {}
for i = 1, #KEYS do
  out[i] = redis.call('HGET', KEYS[i], 'computed_at') or ''
end
return out
"""


class DeferredQueue:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.key = f"{prefix}:ingest:deferred"
        self._remove: Any = redis.register_script(_REMOVE_IF_UNCHANGED)
        self._computed_at: Any = redis.register_script(_COMPUTED_AT)

    async def add(self, nodes: Sequence[Entity]) -> None:
        if nodes:
            now = time.time()
            await self.redis.zadd(self.key, {f"{t}|{i}": now for t, i in nodes}, gt=True)

    async def oldest(self, n: int) -> list[tuple[Entity, float]]:
        raw: list[Any] = await self.redis.zrange(self.key, 0, n - 1, withscores=True)
        out: list[tuple[Entity, float]] = []
        for member, score in raw:
            text = member.decode() if isinstance(member, bytes) else str(member)
            etype, _, eid = text.partition("|")
            out.append(((etype, eid), float(score)))
        return out

    async def done(self, entries: Sequence[tuple[Entity, float]]) -> int:
        if not entries:
            return 0
        args: list[str] = []
        for (t, i), score in entries:
            args.extend((f"{t}|{i}", repr(score)))
        return int(await self._remove(keys=[self.key], args=args))

    async def size(self) -> int:
        return int(await self.redis.zcard(self.key))

    async def computed_at(self, keys: Sequence[str]) -> list[float | None]:
        """The online entries' `computed_at` (None where there is none), in ONE Redis call."""
        if not keys:
            return []
        raw: list[Any] = await self._computed_at(keys=list(keys), args=[])
        return [float(v) if v not in (b"", "") else None for v in raw]
