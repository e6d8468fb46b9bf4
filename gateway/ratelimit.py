"""Rate limits shared by every gateway replica: a fixed one-second window counted in Redis.

Built on Litestar's `RateLimitConfig` (exclusions, the identifier, the middleware slot), with our own middleware
class: Litestar's stores a JSON history per client with a read-modify-write that two replicas can interleave (and
lose counts), so the count here is one atomic `INCR` + `EXPIRE` round trip per request.

A client is its API key (a valid one: a made-up key would buy a fresh budget) or else its address. The address is
the peer's, or X-Forwarded-For's only when the peer is a trusted proxy: uvicorn applies the header only for
FRAUDMESH_TRUSTED_PROXIES (see `gateway.__main__`). A refused request gets 429 with Retry-After, sent from here
(not raised) so that the metrics middleware around it counts a 429. When Redis cannot be
reached the limit is not applied (fail open, logged at most every 10 s): an outage of the limiter must not stop
scoring.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from litestar import Request
from litestar.middleware.rate_limit import RateLimitConfig, RateLimitMiddleware
from litestar.types import Receive, Scope, Send
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.auth import HEADER, key_matches
from gateway.errors import error_response
from gateway.request_context import request_id_of
from shared.messages import ErrorReply

log = logging.getLogger("fraudmesh.gateway.ratelimit")
EXCLUDED = ["/health", "/healthz", "/ready", "/metrics", "/docs", "/swagger", "/ping", "/v2/health", "/v2$", "/$"]
"""Probes, metrics and docs (prefixes; `/$` is the root and `/v2$` the OIP server metadata only)."""
WINDOW_S = 1


def client_identifier(keys: tuple[bytes, ...]) -> Any:
    def identify(request: Request[Any, Any, Any]) -> str:
        given = request.headers.get(HEADER)
        if given is not None and keys and key_matches(given.encode(), keys):
            return "key:" + hashlib.sha256(given.encode()).hexdigest()[:24]  # never the key itself in Redis
        return "addr:" + (request.client.host if request.client else "unknown")

    return identify


@dataclass
class SharedRateLimitConfig(RateLimitConfig):
    redis: Redis | None = field(default=None)
    prefix: str = "fraudmesh:ratelimit"


class SharedRateLimitMiddleware(RateLimitMiddleware):
    config: SharedRateLimitConfig
    _last_warning = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request: Request[Any, Any, Any] = scope["litestar_app"].request_class(scope)
        if await self.should_check_request(request):
            now = time.time()
            window = int(now // WINDOW_S)
            count = await self._count(f"{self.config.prefix}:{self.cache_key_from_request(request)}:{window}")
            if count > self.max_requests:
                retry_after = max(1, math.ceil((window + 1) * WINDOW_S - now))
                reply = ErrorReply(
                    code="rate_limited",
                    message=f"Rate limit of {self.max_requests} requests per second exceeded; retry after "
                    f"{retry_after} s.",
                    request_id=request_id_of(request),
                    retryable=True,
                )
                response = error_response(reply)
                response.headers.update({"Retry-After": str(retry_after), "RateLimit-Limit": str(self.max_requests)})
                # answered here, inside the metrics middleware, so that the 429 is counted as one
                await response.to_asgi_response(None, request)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _count(self, key: str) -> int:
        redis = self.config.redis
        assert redis is not None
        try:
            async with redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, WINDOW_S + 1)
                count, _ = await pipe.execute()
            return int(count)
        except (RedisError, OSError) as exc:
            if time.monotonic() - self._last_warning > 10:
                self._last_warning = time.monotonic()
                log.warning("rate limit not applied: Redis unreachable (%s)", type(exc).__name__)
            return 0


def rate_limit(per_second: int, redis: Redis, keys: tuple[bytes, ...]) -> SharedRateLimitConfig:
    return SharedRateLimitConfig(
        rate_limit=("second", per_second),
        exclude=[f"^{p}" for p in EXCLUDED],
        identifier_for_request=client_identifier(keys),
        middleware_class=SharedRateLimitMiddleware,
        set_rate_limit_headers=False,
        redis=redis,
    )
