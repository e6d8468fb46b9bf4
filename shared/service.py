"""The actor/service base every fraudmesh service stands on: the one way a message enters a service.

A `Service` owns one NATS connection (reconnecting forever, drained on SIGTERM/SIGINT) and its routes, in
three forms that share one dispatch core (shared/dispatch.py: log context, an OpenTelemetry `process <subject>`
span, the handler metric `fraudmesh_handler_messages_total{handler,outcome}` and its latency histogram):
- `endpoint(...)`: request-reply (shared/endpoint.py): decode, deadline, bounded concurrency, typed reply or
  `ErrorReply`;
- `consumer(...)`: JetStream pull consumers (shared/consumer.py): fetch per free slot, `in_progress`
  heartbeats, ack after the handler, nak/term/dead-letter by a `ConsumerPolicy` (shared/policy.py);
  `priority_consumer(...)` the same over several durables, highest priority first;
- `listener(...)` and `kv_watch(...)`: inboxes, advisories and KV buckets (shared/listener.py).
Every service also answers the NATS micro discovery verbs `$SRV.PING|INFO|STATS` (shared/discovery.py).

Subclasses declare routes in `on_start` and keep their own state on `self`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar, TypeVar

import msgspec
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue
from opentelemetry import trace
from opentelemetry.trace import SpanKind, TracerProvider
from prometheus_client import CollectorRegistry

from shared import subjects
from shared.consumer import BatchHandler, Consumer, MessageHandler, PriorityConsumer
from shared.context import (
    Context,
    DeadlineExceeded,
    Delivered,
    Delivery,
    Poison,
    ServiceError,
    Transient,
    deadline_from_headers,
    now_ms,
)
from shared.dead_letter import DeadLetters
from shared.discovery import Discovery
from shared.dispatch import Dispatcher, Route, messaging_attributes
from shared.endpoint import EndpointRoute, Handler
from shared.listener import RAW, KvHandler, KvWatchRoute, ListenerHandler, ListenerRoute
from shared.logs import configure_logging, log_fields
from shared.messages import Codec, HealthPing, HealthReply
from shared.metrics import HandlerMetrics, serve_metrics
from shared.nats_conn import connect_nats
from shared.policy import ConsumerPolicy
from shared.runtime_config import LiveSettings, config_bucket
from shared.settings import Settings
from shared.telemetry import inject, pass_through, setup_tracing, shutdown_tracing, tracing_enabled

__all__ = [
    "RAW",
    "ConsumerPolicy",
    "Context",
    "DeadlineExceeded",
    "Delivered",
    "Delivery",
    "Poison",
    "Service",
    "ServiceError",
    "StartupError",
    "Transient",
    "deadline_from_headers",
    "now_ms",
    "run_service",
]

T = TypeVar("T")
log = logging.getLogger("fraudmesh.service")


class StartupError(RuntimeError):
    """The service cannot start (e.g. no model). The message says what is missing and how to fix it."""


class Service:
    """Base class of the fraudmesh actors. See the module docstring."""

    name: ClassVar[str] = "service"
    description: ClassVar[str] = "a fraudmesh service"

    def __init__(self, settings: Settings, *, tracer_provider: TracerProvider | None = None) -> None:
        """`tracer_provider`: record spans with this provider (tests); by default spans are recorded when
        shared.telemetry.setup_tracing installed an exporter, and not made at all otherwise."""
        self.settings = settings
        """The settings in force: the environment's, with the runtime overrides (`POST /config`) on top."""
        self.live = LiveSettings(settings)
        self.instance_id = settings.instance_id or f"{self.name}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.codec = Codec()
        self.registry = CollectorRegistry(auto_describe=True)
        self.handler_metrics = HandlerMetrics(self.registry, self.name)
        self._own_tracing = tracer_provider is not None
        self.tracer = (
            tracer_provider.get_tracer(f"fraudmesh.{self.name}")
            if tracer_provider is not None
            else trace.get_tracer(f"fraudmesh.{self.name}")
        )
        self.dispatcher = Dispatcher(self.tracer, self.handler_metrics)
        self.dead_letters = DeadLetters(self)
        self.log = logging.getLogger(f"fraudmesh.{self.name}")
        self.nc: NATS = NATS()
        self.ready = False
        self.discovery: Discovery | None = None
        self._endpoints: list[EndpointRoute] = []
        self._listeners: list[ListenerRoute] = []
        self._consumers: list[Consumer[Any]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._stop_metrics: Callable[[], None] | None = None

    @property
    def tracing(self) -> bool:
        return self._own_tracing or tracing_enabled()

    @property
    def routes(self) -> list[Route]:
        return [*self._endpoints, *self._consumers, *self._listeners]

    # ------------------------------------------------------------------------------ lifecycle hooks
    async def on_start(self) -> None:
        """Connect stores, declare routes. Runs after NATS is connected."""

    async def on_stop(self) -> None:
        """Release resources. Runs after in-flight work is drained, before NATS is closed."""

    def health_details(self) -> dict[str, str]:
        return {}

    def on_settings(self, settings: Settings) -> None:
        """The runtime settings changed (`POST /config`): `self.settings` is already the new one. Override to
        re-apply values copied at start (limits, windows)."""

    # ------------------------------------------------------------------------------------ routes
    def endpoint(
        self,
        subject: str,
        request_type: Any,
        handler: Handler,
        *,
        queue: str | None = None,
        concurrency: int | None = None,
        name: str | None = None,
    ) -> None:
        """A request-reply endpoint: `handler(request, ctx)` returns the reply Struct (or raises ServiceError)."""
        self._endpoints.append(
            EndpointRoute(
                self,
                name or subject,
                subject,
                request_type,
                handler,
                queue,
                concurrency or self.settings.handler_concurrency,
            )
        )

    def consumer(
        self,
        *,
        name: str,
        stream: str,
        durable: str,
        message_type: type[T],
        handler: MessageHandler[T] | None = None,
        batch_handler: BatchHandler[T] | None = None,
        batch_size: int = 1,
        max_wait_s: float = 0.5,
        concurrency: int = 1,
        policy: ConsumerPolicy | None = None,
        linger_s: float = 0.0,
    ) -> None:
        """A JetStream pull consumer bound to the existing durable `durable` of `stream` (declare it first,
        shared/jetstream.py). Give `handler(message, delivery)` (one message at a time) or
        `batch_handler(list[Delivered])` (micro-batches of up to `batch_size`, waiting at most `max_wait_s`;
        with `linger_s`, a fetch that did not fill the batch is topped up once after that long).
        `concurrency` messages (or batches) are handled at once. The message is acked when the handler returns;
        what happens when it raises is the `policy` (shared/policy.py)."""
        self._consumers.append(
            Consumer(
                self,
                name=name,
                stream=stream,
                durable=durable,
                message_type=message_type,
                handler=handler,
                batch_handler=batch_handler,
                batch_size=batch_size,
                max_wait_s=max_wait_s,
                concurrency=concurrency,
                policy=policy or ConsumerPolicy(max_deliver=self.settings.max_deliver),
                linger_s=linger_s,
            )
        )

    def priority_consumer(
        self,
        *,
        name: str,
        stream: str,
        durables: list[str],
        message_type: type[T],
        handler: MessageHandler[T],
        max_wait_s: float = 0.5,
        concurrency: int = 1,
        policy: ConsumerPolicy | None = None,
    ) -> PriorityConsumer[T]:
        """Like `consumer`, over several durables of `stream` in priority order (shared/consumer.py
        `PriorityConsumer`): each free slot takes a message of the first durable that has one. Returns the route,
        whose `wake()` makes an idle consumer look at the queues at once."""
        route = PriorityConsumer(
            self,
            name=name,
            stream=stream,
            durables=durables,
            message_type=message_type,
            handler=handler,
            max_wait_s=max_wait_s,
            concurrency=concurrency,
            policy=policy or ConsumerPolicy(max_deliver=self.settings.max_deliver),
        )
        self._consumers.append(route)
        return route

    def listener(
        self,
        subject: str,
        message_type: Any,
        handler: ListenerHandler,
        *,
        queue: str | None = None,
        name: str | None = None,
        destination: str | None = None,
    ) -> None:
        """A plain subscription (an inbox, an advisory): `handler(message, ctx)`, no reply. `message_type=RAW`
        hands over the body as bytes. `destination` names it in spans when the subject holds an id."""
        self._listeners.append(ListenerRoute(self, name or subject, subject, message_type, handler, queue, destination))

    def kv_watch(
        self, bucket: str, handler: KvHandler, open_bucket: Callable[[], Awaitable[KeyValue]], *, name: str
    ) -> None:
        """Watch every key of a KV bucket: `handler(entry, ctx)` for each current value, then each change."""
        self._listeners.append(KvWatchRoute(self, name, bucket, handler, open_bucket))

    def spawn(self, coro: Coroutine[Any, Any, Any], done: Callable[[], None] | None = None) -> None:
        """Run `coro` as a task the service waits for when it stops; `done()` runs when it ends."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)

        def finished(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if done is not None:
                done()

        task.add_done_callback(finished)

    async def _subscribe(self, ep: EndpointRoute) -> None:
        sem = asyncio.Semaphore(ep.concurrency)
        dispatcher = self.dispatcher

        async def on_msg(msg: Any) -> None:
            await sem.acquire()  # back-pressure: the subscription stops being drained while we are full
            self.spawn(dispatcher.run(ep, msg, msg.subject, msg.headers or {}, len(msg.data)), sem.release)

        ep.sub = await self.nc.subscribe(ep.subject, queue=ep.queue or "", cb=on_msg, pending_msgs_limit=65536)

    # ------------------------------------------------------------------------------ NATS helpers
    def span(self, name: str, **attributes: Any) -> contextlib.AbstractContextManager[Any]:
        """A child span of the current one, or nothing at all when tracing is off."""
        if not self.tracing:
            return contextlib.nullcontext(None)
        return self.tracer.start_as_current_span(name, attributes=attributes)

    def producer_span(
        self, destination: str, msg_id: str = "", **attributes: object
    ) -> contextlib.AbstractContextManager[Any]:
        """A `publish <destination>` PRODUCER span (OpenTelemetry messaging conventions), or nothing when
        tracing is off. Build the outgoing headers inside it, so the consumer's span becomes its child."""
        if not self.tracing:
            return contextlib.nullcontext(None)
        return self.tracer.start_as_current_span(
            f"publish {destination}",
            kind=SpanKind.PRODUCER,
            attributes=messaging_attributes("publish", destination, **{"messaging.message.id": msg_id}, **attributes),
        )

    def outgoing_headers(self, ctx: Context | None = None, **extra: str) -> dict[str, str]:
        """Headers for a message sent on behalf of `ctx`: deadline, request id and the current trace context."""
        headers: dict[str, str] = {}
        if ctx is not None:
            if ctx.has_deadline:
                headers[subjects.HDR_DEADLINE] = str(int(ctx.deadline_ms))
            if ctx.request_id:
                headers[subjects.HDR_REQUEST_ID] = ctx.request_id
        headers.update(extra)
        if self.tracing:
            return inject(headers)
        return pass_through(ctx.headers if ctx is not None else None, headers)

    async def connect(self) -> None:
        self.nc = await connect_nats(
            self.settings.nats_url,
            self.instance_id,
            on_disconnect=self.handler_metrics.disconnects.labels(self.name).inc,
            on_reconnect=self.handler_metrics.reconnects.labels(self.name).inc,
            settings=self.settings,
        )

    async def _on_config(self, entry: KeyValue.Entry, _ctx: Context) -> None:
        """The runtime config bucket's key changed (or was read at start): apply it to this instance."""
        self.live.apply_entry(entry)

    def _settings_changed(self, settings: Settings) -> None:
        self.settings = settings
        self.on_settings(settings)
        self.log.info(
            "runtime settings applied",
            extra=log_fields(revision=self.live.revision, overrides=msgspec.to_builtins(self.live.overrides)),
        )

    async def _health(self, _req: HealthPing, _ctx: Context) -> HealthReply:
        details = {**self.health_details(), "config_revision": str(self.live.revision)}
        return HealthReply(
            service=self.name,
            instance_id=self.instance_id,
            status="ok" if self.ready else "degraded",
            details=details,
        )

    # ---------------------------------------------------------------------------------- running
    async def start(self) -> None:
        self.dispatcher.tracing = self.tracing
        await self.connect()
        await self.on_start()
        self.endpoint(subjects.health_subject(self.name), HealthPing, self._health, name="health", concurrency=4)
        self.live.listen(self._settings_changed)
        js = self.nc.jetstream(timeout=5.0)
        self.kv_watch(
            subjects.CONFIG_BUCKET,
            self._on_config,
            lambda: config_bucket(js, self.settings.stream_replicas),
            name="runtime_config",
        )
        for ep in self._endpoints:
            await self._subscribe(ep)
        for listener in self._listeners:
            await listener.start()
        for consumer in self._consumers:
            await consumer.start()
        self.discovery = Discovery(
            self.nc,
            name=self.name,
            description=self.description,
            metadata={"instance_id": self.instance_id},
            routes=lambda: self.routes,
        )
        await self.discovery.start()
        await self.nc.flush()
        if self.settings.metrics_port and self._stop_metrics is None:
            self._stop_metrics = serve_metrics(
                self.registry, self.settings.metrics_port, lambda: self.ready and self.nc.is_connected
            )
        self.ready = True
        self.log.info("started", extra=log_fields(routes=[f"{r.kind} {r.destination}" for r in self.routes]))

    async def stop(self, timeout: float = 20.0) -> None:
        """Graceful stop: stop taking messages (endpoints, listeners, consumers stop fetching), finish what is
        in flight, drain the connection."""
        if not self.ready and self.nc.is_closed:
            return
        self.ready = False
        self.log.info("stopping: draining in-flight work", extra=log_fields(in_flight=len(self._tasks)))
        for ep in self._endpoints:
            if ep.sub is not None:
                with contextlib.suppress(Exception):
                    await ep.sub.unsubscribe()
        await asyncio.gather(*(c.stop() for c in self._consumers), *(li.stop() for li in self._listeners))
        if self.discovery is not None:
            with contextlib.suppress(Exception):
                await self.discovery.stop()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        await self.on_stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.nc.drain(), timeout=5.0)
        if self._stop_metrics:
            self._stop_metrics()
        self.log.info("stopped")

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        await self.start()
        await self._stop.wait()
        await self.stop()


def run_service(factory: Callable[[Settings], Service]) -> None:
    """Entry point of `python -m <service>`: settings, logs, tracing, uvloop, run until SIGTERM."""
    import sys

    from shared.settings import SettingsError, load_settings, parse_cli

    parse_cli(
        f"python -m {factory.__module__.split('.')[0]}", "A fraudmesh service; every setting is a FRAUDMESH_* variable."
    )
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"fraudmesh: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    service = factory(settings)
    configure_logging(service.name, service.instance_id, settings.log_level)
    setup_tracing(f"fraudmesh-{service.name}", service.instance_id)
    runner: Callable[[Coroutine[Any, Any, None]], None]
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency, but asyncio works too
        runner = asyncio.run
    try:
        runner(service.run())
    except StartupError as exc:
        logging.getLogger("fraudmesh").error(str(exc))
        print(f"fraudmesh {service.name}: {exc}", file=sys.stderr)
        raise SystemExit(3) from None
    finally:
        shutdown_tracing()
