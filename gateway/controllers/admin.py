"""Admin routes: runtime settings (`GET/POST /config`) and the caches (`GET /cache/stats`, `POST /cache/clear`).

`POST /config` merges a JSON object of runtime settings (shared/runtime_config.py) into the overrides kept in the
NATS KV bucket `fraudmesh_config` (compare-and-set on its revision, so concurrent changes from two gateways both
land); every gateway, aggregator, inference and feature instance watches that key and applies the change without a
restart (its `/health` details report `config_revision`). `create_app` puts `ConfigController` and
`CacheAdminController` behind `admin_key_guard`, and `CacheStatsController` behind the API keys.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, Response, get, post
from nats.errors import Error as NatsError
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from redis.exceptions import RedisError

from gateway.admin_schemas import (
    CONFIG_EXAMPLE,
    CacheClearRequest,
    CacheClearResponse,
    CacheStatsResponse,
    ConfigResponse,
    DecisionStoreStats,
    OnlineStoreStats,
    RedisStats,
)
from gateway.bridge import BridgeError, NatsBridge, unavailable
from gateway.dependencies import Gateway, provide_request_id
from gateway.envelope import decode_envelope, json_body
from gateway.openapi_spec import body_operation_of, error_responses
from gateway.validation import BodyError
from shared import runtime_config, subjects
from shared.messages import FieldError
from shared.runtime_config import APPLIES_TO, ConfigError, RuntimeConfig

CAS_ATTEMPTS = 8
APPLIED_WAIT_S = 3.0
"""POST /config answers once this gateway applied the change itself (its watch), or after this long."""
_clear_decoder = msgspec.json.Decoder(CacheClearRequest)


def config_response(bridge: NatsBridge) -> ConfigResponse:
    live = bridge.live
    now = live.current
    return ConfigResponse(
        revision=live.revision,
        instance_id=bridge.name,
        overrides=live.overrides,
        settings=RuntimeConfig(**{f: getattr(now, f) for f in runtime_config.RUNTIME_FIELDS}),
        applies_to={k: list(v) for k, v in APPLIES_TO.items()},
    )


def _unavailable(request_id: str, what: str, exc: BaseException) -> BridgeError:
    return unavailable(request_id, f"{what} ({type(exc).__name__}); retry shortly.")


class ConfigController(Controller):
    tags = ["admin"]

    @get(
        "/config",
        operation_id="getConfig",
        summary="The runtime settings: overrides in force everywhere and this gateway's values",
        responses=error_responses(401, 429),
    )
    async def get_config(self, gateway: Gateway) -> ConfigResponse:
        """`overrides` are the settings changed with POST /config (they apply to every instance); `settings` are
        the values this gateway applies now (its own environment's where nothing is overridden)."""
        return config_response(gateway.bridge)

    @post(
        "/config",
        operation_id="setConfig",
        operation_class=body_operation_of(dict[str, Any], CONFIG_EXAMPLE),
        summary="Change runtime settings on every instance, without a restart",
        status_code=200,
        responses=error_responses(400, 401, 413, 415, 429, 503),
    )
    async def set_config(self, request: Request[Any, Any, Any], gateway: Gateway) -> ConfigResponse:
        """A JSON object of runtime settings (see `settings` in GET /config for their names); `null` removes an
        override. Validated as a whole (400 names each bad field; nothing changes then), stored in the NATS KV
        bucket fraudmesh_config and applied by every gateway, aggregator and inference instance. Answers once this
        gateway applies it; other instances follow within moments (`config_revision` in their /health details)."""
        rid = provide_request_id(request)
        body = await json_body(request)
        try:
            patch = msgspec.json.decode(body) if body.strip() else None
        except msgspec.DecodeError as exc:
            raise BodyError([FieldError(path="$", message=f"Not valid JSON: {exc}.")]) from None
        bridge = gateway.bridge
        try:
            kv = await runtime_config.config_bucket(
                bridge.require_nc(rid).jetstream(timeout=5.0), bridge.settings.stream_replicas
            )
            revision = 0
            for _ in range(CAS_ATTEMPTS):
                try:
                    entry = await kv.get(subjects.CONFIG_KEY)
                    current, last = runtime_config.decode(entry.value or b""), entry.revision or 0
                except KeyNotFoundError:
                    current, last = RuntimeConfig(), 0
                try:
                    merged = runtime_config.merge(current, patch, bridge.live.base)
                except ConfigError as exc:
                    raise BodyError(exc.errors, "The config change is invalid; nothing was changed.") from None
                try:
                    data = runtime_config.encode(merged)
                    revision = (
                        await kv.update(subjects.CONFIG_KEY, data, last=last)
                        if last
                        else await kv.create(subjects.CONFIG_KEY, data)
                    )
                    break
                except (KeyWrongLastSequenceError, KeyNotFoundError):
                    continue  # changed by someone else meanwhile: merge into theirs
                except NatsError as exc:
                    if "wrong last sequence" in str(exc).lower() or "key exists" in str(exc).lower():
                        continue
                    raise
            else:
                raise unavailable(rid, "The runtime settings kept changing under this request; retry it.")
        except (NatsError, TimeoutError) as exc:
            raise _unavailable(rid, "The runtime settings were not stored in NATS (nothing changed)", exc) from None
        await bridge.live.wait_for(revision, APPLIED_WAIT_S)
        return config_response(bridge)


class CacheStatsController(Controller):
    tags = ["admin"]

    @get(
        "/cache/stats",
        operation_id="cacheStats",
        summary="Online feature store and idempotency store figures",
        responses=error_responses(401, 429, 503),
    )
    async def cache_stats(self, request: Request[Any, Any, Any], gateway: Gateway) -> CacheStatsResponse:
        """Counts keys with SCAN (cost grows with the store: an operator's route, not a probe). `hits` to
        `unchecked` are this gateway's since it started; the sums over gateways are in /metrics
        (`fraudmesh_idempotency_total`)."""
        stores, settings = gateway.stores, gateway.settings
        try:
            entities = await stores.feature_keys()
            stored = await stores.decision_keys()
            info = await stores.redis_info()
        except (RedisError, OSError) as exc:
            raise _unavailable(provide_request_id(request), "Redis cannot be reached", exc) from None
        totals = stores.idempotency.totals
        return CacheStatsResponse(
            online_store=OnlineStoreStats(entities=entities, total=sum(entities.values())),
            decisions=DecisionStoreStats(
                enabled=settings.idempotency_enabled,
                window_s=settings.idempotency_window_s,
                stored=stored,
                hits=totals["hit"],
                misses=totals["miss"],
                conflicts=totals["conflict"],
                rescores=totals["rescore"],
                unchecked=totals["unchecked"],
                writes_in_flight=stores.idempotency.writes_in_flight,
            ),
            redis=RedisStats(**info),
        )


class CacheAdminController(Controller):
    tags = ["admin"]

    @post(
        "/cache/clear",
        operation_id="clearCache",
        operation_class=body_operation_of(CacheClearRequest, {"caches": ["decisions"]}),
        summary="Clear the online feature store and/or the stored decisions",
        status_code=200,
        responses=error_responses(400, 401, 413, 415, 429, 503),
    )
    async def clear(self, request: Request[Any, Any, Any], gateway: Gateway) -> Response[CacheClearResponse]:
        """`features`: every entity's online features are deleted (the next score of each computes them from the
        ledger: slower until warm). `decisions`: every stored decision is deleted (the next request of each
        transaction id is scored anew)."""
        body = decode_envelope(await json_body(request), _clear_decoder)
        stores = gateway.stores
        cleared: dict[str, int] = {}
        try:
            for name in dict.fromkeys(body.caches):
                cleared[name] = await (stores.clear_features() if name == "features" else stores.clear_decisions())
        except (RedisError, OSError) as exc:
            raise _unavailable(provide_request_id(request), "Redis cannot be reached", exc) from None
        return Response(CacheClearResponse(cleared=cleared))
