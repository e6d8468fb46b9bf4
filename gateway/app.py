"""The Litestar application factory: controllers, dependencies, errors, OpenAPI, metrics, keys, rate limits, CORS.

The gateway talks to the rest of fraudmesh only through NATS (`NatsBridge`), and to Redis only for the shared rate
limit. Routes live in controllers by domain (`gateway/controllers/`); a new route module is one line in
`API_CONTROLLERS` (behind the API keys), `ADMIN_CONTROLLERS` (behind the admin keys) or `OPEN_CONTROLLERS` (probes
and metrics). Errors: `gateway/errors.py`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Controller, Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from redis.asyncio import Redis

from gateway.auth import admin_key_guard, api_key_guard, parse_keys
from gateway.bridge import NatsBridge
from gateway.compression import GZIP
from gateway.controllers.admin import CacheAdminController, CacheStatsController, ConfigController
from gateway.controllers.batches import BatchController
from gateway.controllers.features import FeaturesController
from gateway.controllers.health import HealthController
from gateway.controllers.info import VERSION, InfoController
from gateway.controllers.jobs import JobReadsController, JobsController, jobs_dependency
from gateway.controllers.mlflow import MlflowController, PingController
from gateway.controllers.models import ModelsController
from gateway.controllers.oip import OipHealthController, OipModelController
from gateway.controllers.operations import FeatureImportanceController, ModelAdminController
from gateway.controllers.personalization import PersonalizationController
from gateway.controllers.score import ScoreController
from gateway.dependencies import dependencies
from gateway.errors import EXCEPTION_HANDLERS
from gateway.ingest import IngestController
from gateway.job_runner import Jobs
from gateway.openapi_docs import SECURITY, openapi_config, static_docs
from gateway.ratelimit import rate_limit
from gateway.request_context import request_context, request_id_of
from gateway.stores import Stores
from gateway.telemetry import otel_plugins
from shared.settings import Settings

__all__ = ["ADMIN_CONTROLLERS", "API_CONTROLLERS", "OPEN_CONTROLLERS", "create_app", "request_id_of"]
"""`request_id_of` lives in gateway.request_context; it is also importable from here, where it used to be."""


class MetricsController(PrometheusController):
    """`GET /metrics`, gzipped for scrapers that accept it."""

    middleware = [GZIP]


API_CONTROLLERS: tuple[type[Controller], ...] = (
    ScoreController,
    PersonalizationController,
    FeaturesController,
    BatchController,
    MlflowController,
    ModelsController,
    OipModelController,
    IngestController,
    JobReadsController,
    JobsController,
    FeatureImportanceController,
    CacheStatsController,
)
"""Routes behind FRAUDMESH_API_KEYS and the rate limit."""
ADMIN_CONTROLLERS: tuple[type[Controller], ...] = (ModelAdminController, ConfigController, CacheAdminController)
"""Operations (load, delete, validate, restart), runtime settings and cache clearing: behind an
FRAUDMESH_ADMIN_API_KEYS key whenever API keys are set (`admin_key_guard`; an API key is not an admin key), and the
rate limit."""
OPEN_CONTROLLERS: tuple[type[Controller], ...] = (
    HealthController,
    MetricsController,
    InfoController,
    PingController,
    OipHealthController,
)
"""Probes and metrics: no key, no rate limit."""

MAX_BODY_BYTES = 32 * 1024 * 1024


def create_app(settings: Settings, bridge: NatsBridge | None = None) -> Litestar:
    nats = bridge or NatsBridge(settings, name=settings.instance_id or "gateway")
    redis = Redis.from_url(settings.redis_url) if settings.rate_limit_per_second else None
    jobs = Jobs(settings, nats)
    stores = Stores.from_url(settings.redis_url)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await nats.start()
        await jobs.start()
        try:
            yield
        finally:
            await jobs.stop()  # the jobs running here finish first (they score through `nats`)
            await stores.close()
            await nats.stop()
            if redis is not None:
                await redis.aclose()

    prometheus = PrometheusConfig(
        app_name="fraudmesh-gateway", prefix="fraudmesh_http", group_path=True, exclude=["/metrics"]
    )
    middleware: list[Any] = [request_context, prometheus.middleware]
    if redis is not None:
        middleware.append(rate_limit(settings.rate_limit_per_second, redis, parse_keys(settings.api_keys)).middleware)
    cors = CORSConfig(allow_origins=settings.cors_origins.split(",")) if settings.cors_origins else None
    api = Router(
        path="/",
        route_handlers=list(API_CONTROLLERS),
        guards=api_key_guard(settings.api_keys),
        security=SECURITY,
    )
    admin = Router(
        path="/",
        route_handlers=list(ADMIN_CONTROLLERS),
        guards=admin_key_guard(settings.admin_api_keys, settings.api_keys),
        security=SECURITY,
    )
    return Litestar(
        route_handlers=[api, admin, *OPEN_CONTROLLERS, static_docs()],
        dependencies={**dependencies(nats, stores), **jobs_dependency(jobs)},
        plugins=otel_plugins(settings),
        lifespan=[lifespan],
        middleware=middleware,
        cors_config=cors,
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=MAX_BODY_BYTES,
        logging_config=None,  # the process's JSON logging (shared.logs) stays in charge; Litestar's would replace it
        openapi_config=openapi_config(settings, VERSION),
    )
