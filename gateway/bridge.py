"""The gateway's only way out: NATS. Maps a scoring call onto `fraud.score` (with a deadline and trace), a feature
read onto `features.get`, model operations onto `fraud.model.ops` and `fraud.model.control`, and gathers health.
Every NATS failure becomes a `BridgeError` in one place (`_request`): no responders -> 503 `unavailable`, timeout
-> 504 `deadline_exceeded`, an `ErrorReply` -> its code."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from prometheus_client import REGISTRY, CollectorRegistry, Counter

from gateway.admission import Admission, Refusal
from gateway.inflight import AggregatorLost, ScoreCalls
from shared import subjects
from shared.discovery import Discovery
from shared.feature_messages import EntityRef, EntityType, FeaturesGetAnswer, FeaturesGetReply, FeaturesGetRequest
from shared.logs import log_fields
from shared.messages import Codec, ErrorReply, HealthPing, HealthReply, ScoreAnswer, ScoreReply, ScoreRequest
from shared.model_messages import (
    ModelControl,
    ModelControlReply,
    ModelInfo,
    ModelInfoReply,
    ModelInfoRequest,
    ModelOps,
    ModelOpsReply,
    ModelWorkerState,
)
from shared.nats_conn import connect_nats
from shared.personalization_messages import (
    PersonalizationAnswer,
    PersonalizationInfoAnswer,
    PersonalizationModelInfo,
    PersonalizationModelInfoRequest,
    PersonalizationScoreReply,
    PersonalizationScoreRequest,
)
from shared.runtime_config import LiveSettings, config_bucket
from shared.settings import Settings
from shared.telemetry import inject, label_family, tracing_enabled

log = logging.getLogger("fraudmesh.gateway.bridge")
REPLY_GRACE_S = 0.25
"""How long past the deadline we still wait for the aggregator's own (incomplete or deadline) reply."""

MODEL_OPS_TIMEOUT_S = 60.0
"""Loading a model (a GNN with its embeddings) or reloading a worker takes seconds, not the scoring deadline."""
CONTROL_GRACE_S = 0.2
"""After the expected workers answered a broadcast, how long more answers are still gathered."""

SERVICES = ("aggregator", "inference", "feature")
HEALTH_MAX_AGE_S = 1.0
"""`/health` and `/ready` never answer from health replies older than this."""
HEALTH_MEMORY_S = 1.5
"""An instance that answered a health ping this recently counts as up even if it missed the last gather."""


def _counter(registry: CollectorRegistry, name: str, doc: str, service: str) -> Counter:
    """The labelled child of a counter, created once per registry (apps are built more than once in tests)."""
    existing = registry._names_to_collectors.get(name + "_total")
    counter = existing if isinstance(existing, Counter) else Counter(name, doc, ["service"], registry=registry)
    child: Counter = counter.labels(service)
    return child


class BridgeError(Exception):
    def __init__(self, reply: ErrorReply) -> None:
        super().__init__(reply.message)
        self.reply = reply


def unavailable(request_id: str, message: str, retry_after_s: float = 1.0) -> BridgeError:
    """A 503 the client retries after `retry_after_s` seconds; `message` says what was wrong and what to do."""
    return BridgeError(
        ErrorReply(
            code="unavailable", request_id=request_id, retryable=True, retry_after_s=retry_after_s, message=message
        )
    )


class NatsBridge:
    def __init__(self, settings: Settings, name: str, registry: CollectorRegistry = REGISTRY) -> None:
        self.live = LiveSettings(settings)
        """This gateway's settings with the runtime overrides (`POST /config`) on top; `settings` reads it."""
        self.reconnects = _counter(
            registry, "fraudmesh_nats_reconnects", "NATS reconnections of this process.", "gateway"
        )
        self.name = name
        self.codec = Codec()
        self.nc: NATS | None = None
        self._health_cache: tuple[float, dict[str, list[HealthReply]]] | None = None
        self._health_task: asyncio.Future[dict[str, list[HealthReply]]] | None = None
        self.discovery: Discovery | None = None
        self._seen: dict[tuple[str, str], tuple[float, HealthReply]] = {}
        self.calls: ScoreCalls | None = None
        self.admission = Admission(
            settings.gateway_max_in_flight,
            settings.gateway_max_in_flight_transactions,
            settings.admission_max_queue_ms / 1000.0,
        )
        self.live.listen(self._settings_changed)
        self._config_task: asyncio.Task[None] | None = None

    @property
    def settings(self) -> Settings:
        return self.live.current

    def _settings_changed(self, settings: Settings) -> None:
        self.admission.max_requests = settings.gateway_max_in_flight
        self.admission.max_transactions = settings.gateway_max_in_flight_transactions
        self.admission.max_queue_s = settings.admission_max_queue_ms / 1000.0
        log.info(
            "runtime settings applied",
            extra=log_fields(revision=self.live.revision, overrides=msgspec.to_builtins(self.live.overrides)),
        )

    async def _watch_config(self) -> None:
        """Follow the runtime config bucket (current value first), restarting the watch when it fails."""
        while True:
            try:
                nc = self.nc
                if nc is None:
                    return
                kv = await config_bucket(nc.jetstream(timeout=5.0), self.settings.stream_replicas)
                watcher: Any = await kv.watch(subjects.CONFIG_KEY)
                try:
                    async for entry in watcher:
                        if entry is not None:
                            self.live.apply_entry(entry)
                finally:
                    with contextlib.suppress(Exception):
                        await watcher.stop()
                await asyncio.sleep(1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("runtime config watch failed; retrying", extra=log_fields(error=repr(exc)))
                await asyncio.sleep(2.0)

    async def start(self) -> None:
        self.nc = await connect_nats(
            self.settings.nats_url, self.name, on_reconnect=self.reconnects.inc, settings=self.settings
        )
        # `$SRV.PING/INFO/STATS` like every service (nats micro ls, examples/list_services.py). It has no NATS
        # endpoints of its own: it serves HTTP, named in the metadata.
        self.discovery = Discovery(
            self.nc,
            name="gateway",
            description="HTTP gateway: validation, keys, rate limits; maps HTTP onto fraud.score and features.get",
            metadata={"instance_id": self.name, "http": f"{self.settings.http_host}:{self.settings.http_port}"},
            routes=tuple,
        )
        await self.discovery.start()
        self.calls = ScoreCalls(self.nc)
        await self.calls.start()
        self._config_task = asyncio.create_task(self._watch_config(), name="watch runtime config")

    async def stop(self) -> None:
        if self._config_task is not None:
            self._config_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._config_task
        if self.discovery is not None:
            with contextlib.suppress(Exception):
                await self.discovery.stop()
        if self.calls is not None:
            await self.calls.stop()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.drain()

    def require_nc(self, request_id: str) -> NATS:
        if self.nc is None or not self.nc.is_connected:
            raise BridgeError(
                ErrorReply(
                    code="unavailable",
                    message="The gateway is not connected to NATS; retry shortly.",
                    request_id=request_id,
                    retryable=True,
                )
            )
        return self.nc

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    async def score(
        self, req: ScoreRequest, deadline_ms: float, request_id: str, client_traceparent: str | None = None
    ) -> ScoreReply:
        headers = {subjects.HDR_DEADLINE: str(int(deadline_ms))}
        label_family("fraud")
        if tracing_enabled():
            inject(headers)  # the current span is the gateway's server span (Litestar's OpenTelemetry plugin)
        elif client_traceparent:
            headers["traceparent"] = client_traceparent  # not recording here: keep the caller's trace whole
        remaining = deadline_ms / 1000.0 - time.time()
        n = len(req.transactions)
        refusal = self.admission.try_admit(n, remaining)
        if refusal is not None:
            raise _overloaded(refusal, request_id)
        try:
            answer = await self._request(
                subjects.SCORE,
                req,
                ScoreAnswer,
                request_id,
                max(0.001, remaining) + REPLY_GRACE_S,
                headers,
                down=f"No aggregator is subscribed to {subjects.SCORE}: the scoring service is down. Start it "
                f"(`fraudmesh up`) or retry.",
                late="The scoring request got no answer before its deadline. Retry with a larger timeout_ms, "
                "or a smaller batch.",
                watched=True,
            )
        finally:
            self.admission.release(n)
        assert isinstance(answer, ScoreReply)
        return answer

    async def personalize(
        self, req: PersonalizationScoreRequest, deadline_ms: float, request_id: str
    ) -> PersonalizationScoreReply:
        """Score (user, item) pairs on `personalization.score` (an inference worker answers)."""
        headers = {subjects.HDR_DEADLINE: str(int(deadline_ms))}
        label_family("personalization")
        if tracing_enabled():
            inject(headers)
        answer = await self._request(
            subjects.PERSONALIZATION_SCORE,
            req,
            PersonalizationAnswer,
            request_id,
            max(0.001, deadline_ms / 1000.0 - time.time()) + REPLY_GRACE_S,
            headers,
            down=f"No inference worker answers {subjects.PERSONALIZATION_SCORE}: the inference service is down. "
            "Start it (`fraudmesh up`) or retry.",
            late="The personalization request got no answer before its deadline. Retry with a larger timeout_ms.",
        )
        assert isinstance(answer, PersonalizationScoreReply)
        return answer

    async def personalization_info(self, request_id: str) -> PersonalizationModelInfo:
        """What the inference fleet serves of the personalization family (`personalization.model.info`)."""
        answer = await self._request(
            subjects.PERSONALIZATION_MODEL_INFO,
            PersonalizationModelInfoRequest(),
            PersonalizationInfoAnswer,
            request_id,
            self.settings.request_timeout_ms / 1000.0,
            {},
            down=f"No inference worker answers {subjects.PERSONALIZATION_MODEL_INFO}.",
            late="The inference service did not say which personalization model it serves in time; retry.",
        )
        assert isinstance(answer, PersonalizationModelInfo)
        return answer

    def refuse_if_overloaded(self, n: int, deadline_ms: float, request_id: str) -> None:
        """Raise the 503 that `score` would raise for `n` transactions now, before the caller spends work on them
        (a batch is counted before its transactions are validated). Counts nothing in."""
        refusal = self.admission.check(n, deadline_ms / 1000.0 - time.time())
        if refusal is not None:
            raise _overloaded(refusal, request_id)

    async def features(
        self, entity_type: EntityType, entity_id: str, names: list[str] | None, request_id: str
    ) -> FeaturesGetReply:
        """The online features of one entity through `features.get` (missing or stale ones are computed)."""
        req = FeaturesGetRequest(
            entities=[EntityRef(type=entity_type, id=entity_id)],
            names=names,
            max_age_s=self.settings.feature_max_age_s,
            request_id=request_id,
        )
        answer = await self._request(
            subjects.FEATURES_GET,
            req,
            FeaturesGetAnswer,
            request_id,
            self.settings.request_timeout_ms / 1000.0,
            {},
            down=f"No feature service is running ({subjects.FEATURES_GET} has no responders).",
            late="The feature service did not answer in time.",
        )
        assert isinstance(answer, FeaturesGetReply)
        return answer

    async def model_info(self, request_id: str, family: str = "fraud") -> ModelInfo:
        """What the inference fleet serves, from one worker on `fraud.model.info` (the registry's view)."""
        answer = await self._request(
            subjects.MODEL_INFO,
            ModelInfoRequest(family=family),
            ModelInfoReply,
            request_id,
            self.settings.request_timeout_ms / 1000.0,
            {},
            down=f"No inference worker answers {subjects.MODEL_INFO}: the inference service is down. Start it "
            "(`fraudmesh up`) or retry.",
            late="The inference service did not say which model it serves in time; retry.",
        )
        assert isinstance(answer, ModelInfo)
        return answer

    async def model_ops(self, body: ModelOps, request_id: str, timeout_s: float = MODEL_OPS_TIMEOUT_S) -> object:
        """One inference worker carries out a model operation (`fraud.model.ops`); its reply, or BridgeError."""
        return await self._request(
            subjects.MODEL_OPS,
            body,
            ModelOpsReply,
            request_id,
            timeout_s,
            {},
            down=f"No inference worker answers {subjects.MODEL_OPS}: the inference service is down. Start it "
            "(`fraudmesh up`) or retry.",
            late=f"The inference service did not finish the model operation within {timeout_s:.0f} s; check "
            "GET /models before retrying.",
        )

    async def inference_workers(self) -> int:
        """How many inference workers answered the last health gather (at least 1, to wait for someone)."""
        return max(1, len((await self.health()).get("inference", [])))

    async def model_control(
        self,
        request: ModelControl,
        request_id: str,
        *,
        expect: int,
        timeout_s: float = MODEL_OPS_TIMEOUT_S,
        wanted: str = "",
    ) -> list[ModelWorkerState]:
        """Broadcast on `fraud.model.control` and gather the workers' states: until `expect` have answered (then a
        short grace for more), or, with `wanted`, until the worker of that instance id has; or `timeout_s`."""
        nc = self.require_nc(request_id)
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        out: dict[str, ModelWorkerState] = {}
        try:
            headers = {
                subjects.HDR_DEADLINE: str(int((time.time() + timeout_s) * 1000)),
                subjects.HDR_REQUEST_ID: request_id,
            }
            await nc.publish(subjects.MODEL_CONTROL, self.codec.encode(request), reply=inbox, headers=headers)
            end = time.monotonic() + timeout_s
            while (left := end - time.monotonic()) > 0:
                try:
                    msg = await sub.next_msg(timeout=left)
                except (NatsTimeout, TimeoutError):
                    break
                if not msg.data:  # "no responders": no worker listens
                    break
                with contextlib.suppress(Exception):
                    reply = self.codec.decoder(ModelControlReply).decode(msg.data)
                    if isinstance(reply, ModelWorkerState):
                        out[reply.instance_id] = reply
                if wanted and wanted in out:
                    break
                if not wanted and len(out) >= expect:
                    end = min(end, time.monotonic() + CONTROL_GRACE_S)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        return sorted(out.values(), key=lambda w: w.instance_id)

    async def _request(
        self,
        subject: str,
        body: object,
        answer_type: Any,
        request_id: str,
        timeout: float,
        headers: dict[str, str],
        *,
        down: str,
        late: str,
        watched: bool = False,
    ) -> object:
        """One request-reply on NATS; every failure, and an `ErrorReply` answer, raises BridgeError. `watched`: through
        `ScoreCalls`, which fails the request early when the aggregator holding it dies."""
        nc = self.require_nc(request_id)
        headers[subjects.HDR_REQUEST_ID] = request_id
        try:
            if watched and self.calls is not None:
                msg = await self.calls.request(subject, self.codec.encode(body), headers, timeout)
            else:
                msg = await nc.request(subject, self.codec.encode(body), timeout=timeout, headers=headers)
        except AggregatorLost as exc:
            raise unavailable(
                request_id,
                f"The {exc}. Retry (the request was not answered; scoring is idempotent per transaction id).",
            ) from None
        except NoRespondersError:
            raise BridgeError(
                ErrorReply(code="unavailable", request_id=request_id, retryable=True, message=down)
            ) from None
        except (NatsTimeout, TimeoutError):
            raise BridgeError(
                ErrorReply(code="deadline_exceeded", request_id=request_id, retryable=True, message=late)
            ) from None
        answer: object = self.codec.decoder(answer_type).decode(msg.data)
        if isinstance(answer, ErrorReply):
            answer.request_id = request_id
            raise BridgeError(answer)
        return answer

    async def health(self, window_s: float = 0.3, cache_s: float = 0.5) -> dict[str, list[HealthReply]]:
        """Every instance of every service answers its health subject; gather for `window_s`.

        Stale-while-revalidate for at most HEALTH_MAX_AGE_S: a result older than `cache_s` is returned at once while
        one background gather refreshes it, so probes never wait out the gather window; a result older than
        HEALTH_MAX_AGE_S (after idle) is not returned: the caller waits for the fresh one. An instance that missed
        one gather but answered within HEALTH_MEMORY_S still counts, so readiness does not flap with one slow
        replica."""
        now = time.monotonic()
        cached = self._health_cache
        if self._health_task is None or (
            self._health_task.done() and cached is not None and now - cached[0] >= cache_s
        ):
            self._health_task = asyncio.ensure_future(self._gather_health(window_s))
        if cached is not None and now - cached[0] < HEALTH_MAX_AGE_S:
            return cached[1]
        return await asyncio.shield(self._health_task)

    @property
    def health_age_s(self) -> float:
        """Seconds since the health replies in use were gathered."""
        return time.monotonic() - self._health_cache[0] if self._health_cache is not None else 0.0

    async def _gather_health(self, window_s: float) -> dict[str, list[HealthReply]]:
        out: dict[str, list[HealthReply]] = {s: [] for s in SERVICES}
        if self.nc is None or not self.nc.is_connected:
            self._seen.clear()
            self._health_cache = (time.monotonic(), out)
            return out
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox + ".*")
        try:
            ping = self.codec.encode(HealthPing())
            for svc in SERVICES:
                await self.nc.publish(subjects.health_subject(svc), ping, reply=f"{inbox}.{svc}")
            end = time.monotonic() + window_s
            while (left := end - time.monotonic()) > 0:
                try:
                    msg = await sub.next_msg(timeout=left)
                except (NatsTimeout, TimeoutError):
                    break
                with contextlib.suppress(Exception):
                    rep = self.codec.decode(msg.data, HealthReply)
                    self._seen[(msg.subject.rsplit(".", 1)[-1], rep.instance_id)] = (time.monotonic(), rep)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        now = time.monotonic()
        for key, (seen_at, rep) in list(self._seen.items()):
            if now - seen_at > HEALTH_MEMORY_S:
                del self._seen[key]
            else:
                out.setdefault(key[0], []).append(rep)
        self._health_cache = (now, out)
        return out


def _overloaded(refusal: Refusal, request_id: str) -> BridgeError:
    return unavailable(
        request_id,
        f"Overloaded: this gateway refuses the request rather than answer it late ({refusal.reason}). "
        "Retry after the Retry-After delay.",
        refusal.retry_after_s,
    )


async def wait_connected(bridge: NatsBridge, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if bridge.connected:
            return True
        await asyncio.sleep(0.05)
    return False
