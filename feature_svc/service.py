"""The feature-service actor: `features.compute` and `features.get` in queue group `feature_svc`.

- `features.compute` computes the registry features of a list of entities from PostgreSQL and the graph store,
  as of a point in time (default now), writes them to the Redis online store when the computation is current,
  and replies with the vectors in request order.
- Large requests are split across feature workers: a request over more than `chunk_size` entities (default 200)
  is cut into chunks that this worker sends concurrently on `features.compute.chunk` (same queue group, so
  every worker, itself included, takes some) and merges. Chunks have their own subject and concurrency limit, so
  parents waiting for chunks can never hold every handler slot that the chunks need.
- `features.get` reads through Redis: entities whose HASH is present and current are hits; missing or stale
  ones are computed (as of now, in chunks as above), written and returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from prometheus_client import Counter, Histogram

from feature_svc.compute import Entity, UnknownValues, compute_features, known_entities
from feature_svc.definitions import FEATURE_SET_VERSION, FEATURES
from feature_svc.graph import GraphStore, open_graph_store
from feature_svc.ingest.clicks import ClickWiring
from feature_svc.ingest.refresh import now_ms
from feature_svc.ingest.wiring import IngestWiring
from feature_svc.ledger import LedgerError, connect, migrate
from feature_svc.online import DEFAULT_PREFIX, FeatureRecord, OnlineStore
from feature_svc.world.personalization.online import store as personalization_store
from shared import subjects
from shared.feature_messages import (
    EntityFeatures,
    EntityRef,
    FeaturesComputeAnswer,
    FeaturesComputeReply,
    FeaturesComputeRequest,
    FeaturesGetReply,
    FeaturesGetRequest,
)
from shared.messages import ErrorReply, FieldError
from shared.policy import TRANSIENT_ERRORS
from shared.service import Context, Service, ServiceError, StartupError
from shared.settings import Settings

COMPUTE_CHUNK = subjects.FEATURES_COMPUTE_CHUNK
"""Internal: one chunk of a large features.compute request (never split again). Same body and reply."""
CHUNK_SIZE = 200
CURRENT_WINDOW = timedelta(seconds=60)
"""An as_of within this of now is a current computation: its features are written to Redis."""
CONNECT_TIMEOUT_S = 30.0
LEDGER_DOWN = (*TRANSIENT_ERRORS, asyncpg.OperatorInterventionError)
"""The ledger is unreachable, or shutting down (AdminShutdownError)."""
HEALTH_CHECK_S = 0.5
"""How often the ledger and Redis are checked for the health replies (a SELECT 1 and a PING)."""


class FeatureMetrics:
    def __init__(self, service: Service) -> None:
        r = service.registry
        self.computed = Counter("fraudmesh_features_computed", "Entities whose features were computed.", registry=r)
        self.compute_seconds = Histogram(
            "fraudmesh_feature_compute_seconds",
            "Time to compute the features of one (chunk of a) request.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.cache = Counter(
            "fraudmesh_feature_cache_requests",
            "features.get lookups by result.",
            ["result"],
            registry=r,
        )
        for result in ("hit", "miss", "stale"):
            self.cache.labels(result)


class FeatureService(Service):
    name = "feature"

    def __init__(
        self,
        settings: Settings,
        *,
        schema: str | None = None,
        redis_prefix: str = DEFAULT_PREFIX,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        super().__init__(settings)
        self.schema = schema
        self.redis_prefix = redis_prefix
        self.chunk_size = chunk_size
        self.m = FeatureMetrics(self)
        self.unknown = UnknownValues()
        self.pool: asyncpg.Pool | None = None
        self.graph: GraphStore | None = None
        self.online: OnlineStore | None = None
        self._status: dict[str, str] = {"postgres": "connecting", "redis": "connecting"}
        self._monitor: asyncio.Task[None] | None = None
        self.ingest: IngestWiring | None = None
        self.clicks: ClickWiring | None = None

    # ----------------------------------------------------------------------------------- lifecycle
    async def on_start(self) -> None:
        self.pool = await self._connect_ledger()
        self.graph = await open_graph_store(self.settings, pool=self.pool)
        self.online = OnlineStore.from_url(
            self.settings.redis_url,
            version=FEATURE_SET_VERSION,
            ttl_s=self.settings.feature_ttl_s,
            prefix=self.redis_prefix,
        )
        if not await self.online.ping():
            self.log.warning("redis is not reachable yet; features.get will fail until it is")
        await self._check()
        self._monitor = asyncio.create_task(self._watch())
        queue = subjects.QUEUE_FEATURES
        self.endpoint(subjects.FEATURES_COMPUTE, FeaturesComputeRequest, self.compute, queue=queue, name="compute")
        self.endpoint(COMPUTE_CHUNK, FeaturesComputeRequest, self.compute_chunk, queue=queue, name="compute_chunk")
        self.endpoint(subjects.FEATURES_GET, FeaturesGetRequest, self.get, queue=queue, name="get")
        if self.settings.ingest_enabled:
            self.ingest = IngestWiring(self, self.pool, self.graph, self.online)
            await self.ingest.start(self.nc.jetstream(timeout=10.0))
            # the personalization clickstream (FRAUD_CLICKS, declared with the other ingest streams)
            ttl = self.settings.feature_ttl_s
            self.clicks = ClickWiring(
                self, self.pool, personalization_store(self.settings.redis_url, ttl, self.redis_prefix)
            )
            self.clicks.start()

    async def _connect_ledger(self) -> asyncpg.Pool:
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while True:
            try:
                pool = await connect(self.settings.postgres_dsn, schema=self.schema, min_size=2, max_size=16)
                await migrate(pool)
                return pool
            except LedgerError as exc:
                if time.monotonic() > deadline:
                    raise StartupError(f"{exc} (FRAUDMESH_POSTGRES_DSN)") from exc
                self.log.warning("ledger not reachable yet, retrying: %s", exc)
                await asyncio.sleep(1.0)

    async def on_stop(self) -> None:
        if self.ingest is not None:
            await self.ingest.stop()
        if self.clicks is not None:
            await self.clicks.stop()
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        if self.graph is not None:
            await self.graph.close()
        if self.online is not None:
            await self.online.close()
        if self.pool is not None:
            await self.pool.close()

    async def _check(self) -> None:
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.fetchval("SELECT 1"), HEALTH_CHECK_S)
                self._status["postgres"] = f"ok ({self.pool.get_size()} connections, {self.pool.get_idle_size()} idle)"
            except Exception as exc:
                self._status["postgres"] = f"error: {type(exc).__name__}"
        if self.online is not None:
            self._status["redis"] = "ok" if await self.online.ping() else "unreachable"

    async def _watch(self) -> None:
        while True:  # cheap (SELECT 1, PING) and frequent: `/health` tells the truth within a second
            await asyncio.sleep(HEALTH_CHECK_S)
            await self._check()

    def health_details(self) -> dict[str, str]:
        ingest = self.ingest.health() if self.ingest is not None else {"ingest": "off"}
        return {**self._status, "feature_set_version": FEATURE_SET_VERSION, "features": str(len(FEATURES)), **ingest}

    # ------------------------------------------------------------------------------------- compute
    def _as_of(self, as_of: datetime | None) -> tuple[datetime, bool]:
        now = now_ms()
        if as_of is None:
            return now, True
        if as_of.tzinfo is None:
            as_of = as_of.replace(tzinfo=UTC)
        if as_of > now + CURRENT_WINDOW:
            raise ServiceError(
                "bad_request",
                f"as_of {as_of.isoformat()} is in the future; omit it to compute as of now",
                errors=[FieldError(path="$.as_of", message="must not be in the future")],
            )
        return as_of, now - as_of <= CURRENT_WINDOW

    async def compute(self, req: FeaturesComputeRequest, ctx: Context) -> FeaturesComputeReply:
        as_of, current = self._as_of(req.as_of)
        write = req.write and current
        chunk = req.chunk_size or self.chunk_size
        if len(req.entities) <= chunk:
            return await self._compute_local(req.entities, as_of, write, ctx)
        return await self._split(req.entities, as_of, write, chunk, ctx)

    async def compute_chunk(self, req: FeaturesComputeRequest, ctx: Context) -> FeaturesComputeReply:
        as_of, current = self._as_of(req.as_of)
        return await self._compute_local(req.entities, as_of, req.write and current, ctx)

    async def _compute_local(
        self, entities: list[EntityRef], as_of: datetime, write: bool, ctx: Context
    ) -> FeaturesComputeReply:
        assert self.pool is not None and self.graph is not None and self.online is not None
        ctx.check_deadline("features.compute")
        started = time.perf_counter()
        refs: list[Entity] = [(e.type, e.id) for e in entities]
        try:
            values, known = await self._values(refs, as_of)
        except LEDGER_DOWN as exc:  # the ledger (or graph store) is down: say so, retryable, never a 500
            raise ServiceError(
                "unavailable",
                f"The ledger (PostgreSQL) or graph store is unreachable ({type(exc).__name__}), so features cannot "
                f"be computed; retry shortly. `/health` shows the state of postgres.",
                retryable=True,
            ) from None
        computed_at = as_of.timestamp()
        if write:
            records = [
                FeatureRecord(entity_type=t, entity_id=i, values=v, computed_at=computed_at, known=(t, i) in known)
                for (t, i), v in values.items()
            ]
            with self.tracer.start_as_current_span("redis write", attributes={"db.system": "redis", "n": len(records)}):
                try:
                    await self.online.write_if_newer(records)
                except TRANSIENT_ERRORS as exc:  # Redis down: the caller still gets the values it asked for
                    write = False
                    self.log.warning("redis write failed; features returned unstored", extra={"error": repr(exc)})
        elapsed = time.perf_counter() - started
        self.m.computed.inc(len(values))
        self.m.compute_seconds.observe(elapsed)
        out = [
            EntityFeatures(
                type=e.type,
                id=e.id,
                values=values[(e.type, e.id)],
                computed_at=computed_at,
                version=FEATURE_SET_VERSION,
                known=(e.type, e.id) in known,
            )
            for e in entities
        ]
        return FeaturesComputeReply(
            entities=out,
            version=FEATURE_SET_VERSION,
            computed_at=computed_at,
            as_of=as_of,
            written=write,
            workers=[self.instance_id],
            compute_ms=elapsed * 1000.0,
        )

    async def _values(self, refs: list[Entity], as_of: datetime) -> tuple[dict[Entity, dict[str, float]], set[Entity]]:
        """The features of `refs` and which of them the ledger knows: the known ones computed from the ledger, the
        others given the values of an entity with no history (`UnknownValues`) without querying for them (a new
        card, device or IP on the scoring path)."""
        assert self.pool is not None and self.graph is not None
        known = await known_entities(self.pool, refs, tracer=self.tracer)
        unique = list(dict.fromkeys(refs))
        values = await compute_features(
            self.pool, self.graph, [e for e in unique if e in known], as_of, tracer=self.tracer
        )
        for e in unique:
            if e not in known:
                values[e] = await self.unknown.of(self.pool, self.graph, e[0], as_of, tracer=self.tracer)
        return values, known

    async def _split(
        self, entities: list[EntityRef], as_of: datetime, write: bool, chunk: int, ctx: Context
    ) -> FeaturesComputeReply:
        started = time.perf_counter()
        parts = [entities[i : i + chunk] for i in range(len(entities)) if i % chunk == 0]
        replies = await asyncio.gather(*(self._request_chunk(p, as_of, write, ctx) for p in parts))
        merged: list[EntityFeatures] = [e for r in replies for e in r.entities]
        workers = sorted({w for r in replies for w in r.workers})
        return FeaturesComputeReply(
            entities=merged,
            version=FEATURE_SET_VERSION,
            computed_at=as_of.timestamp(),
            as_of=as_of,
            written=write,
            chunks=len(parts),
            workers=workers,
            compute_ms=(time.perf_counter() - started) * 1000.0,
        )

    async def _request_chunk(
        self, part: list[EntityRef], as_of: datetime, write: bool, ctx: Context
    ) -> FeaturesComputeReply:
        body = self.codec.encode(FeaturesComputeRequest(entities=part, as_of=as_of, write=write))
        try:
            msg = await self.nc.request(
                COMPUTE_CHUNK, body, timeout=max(0.001, ctx.remaining_s()), headers=self.outgoing_headers(ctx)
            )
        except NatsTimeout:
            raise ServiceError(
                "deadline_exceeded", "a feature chunk was not computed before the deadline", retryable=True
            ) from None
        except NoRespondersError:
            raise ServiceError("unavailable", "no feature worker took a chunk", retryable=True) from None
        answer: FeaturesComputeReply | ErrorReply = self.codec.decoder(FeaturesComputeAnswer).decode(msg.data)
        if isinstance(answer, ErrorReply):
            raise ServiceError(answer.code, f"feature chunk failed: {answer.message}", retryable=answer.retryable)
        return answer

    # ----------------------------------------------------------------------------------------- get
    async def get(self, req: FeaturesGetRequest, ctx: Context) -> FeaturesGetReply:
        assert self.online is not None
        if req.names is not None:
            bad = [
                FieldError(path=f"$.names[{k}]", message=f"unknown feature {n!r}")
                for k, n in enumerate(req.names)
                if n not in FEATURES
            ]
            if bad:
                raise ServiceError("bad_request", f"{len(bad)} unknown feature name(s)", errors=bad)
        refs = list(dict.fromkeys((e.type, e.id) for e in req.entities))
        with self.tracer.start_as_current_span("redis read", attributes={"db.system": "redis", "n": len(refs)}):
            try:
                reads = await self.online.read(refs, max_age_s=req.max_age_s)
            except Exception as exc:
                raise ServiceError("unavailable", f"redis online store: {type(exc).__name__}", retryable=True) from exc
        found: dict[Entity, EntityFeatures] = {}
        hits = misses = stale = 0
        todo: list[EntityRef] = []
        for (t, i), r in zip(refs, reads, strict=True):
            if r.fresh:
                hits += 1
                found[(t, i)] = EntityFeatures(
                    type=t,
                    id=i,
                    values=r.values,
                    computed_at=r.computed_at or 0.0,
                    version=r.version,
                    source="cache",
                    age_s=r.age_s or 0.0,
                    known=r.known,
                )
            else:
                stale += r.present
                misses += not r.present
                todo.append(EntityRef(type=t, id=i))
        self.m.cache.labels("hit").inc(hits)
        self.m.cache.labels("miss").inc(misses)
        self.m.cache.labels("stale").inc(stale)
        if todo:
            as_of = now_ms()
            if len(todo) <= self.chunk_size:
                reply = await self._compute_local(todo, as_of, True, ctx)
            else:
                reply = await self._split(todo, as_of, True, self.chunk_size, ctx)
            found.update(((e.type, e.id), e) for e in reply.entities)
        wanted = set(req.names) if req.names is not None else None
        out = []
        for e in req.entities:
            ef = found[(e.type, e.id)]
            if wanted is not None:
                ef = msgspec.structs.replace(ef, values={k: v for k, v in ef.values.items() if k in wanted})
            out.append(ef)
        return FeaturesGetReply(
            entities=out, version=FEATURE_SET_VERSION, hits=hits, misses=misses, stale=stale, computed=len(todo)
        )
