"""The actor/service base every fraudmesh service stands on.

A `Service` owns one NATS connection (reconnecting forever, short ping interval, drained on SIGTERM/SIGINT)
and a set of typed endpoints. For each message an endpoint:
- decodes the msgpack body into its Struct type, answering an `ErrorReply` (never crashing) when it is bad;
- reads the request deadline from the `Fraudmesh-Deadline` header and refuses work that is already late;
- continues the W3C trace carried in the headers;
- runs the handler with bounded concurrency (a semaphore per endpoint: back-pressure, not unbounded tasks);
- records a Prometheus counter by outcome and a latency histogram.

Subclasses declare endpoints in `on_start` with `self.endpoint(...)` and keep their own state on `self`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CollectorRegistry

from shared import subjects
from shared.logs import configure_logging, log_fields, request_id_var, trace_id_of, trace_id_var
from shared.messages import Codec, ErrorCode, ErrorReply, FieldError, HealthPing, HealthReply, field_error_of
from shared.metrics import HandlerMetrics, serve_metrics
from shared.nats_conn import connect_nats
from shared.settings import Settings
from shared.telemetry import extract, inject, pass_through, setup_tracing, shutdown_tracing, tracing_enabled

Req = TypeVar("Req")
log = logging.getLogger("fraudmesh.service")


class ServiceError(Exception):
    """An error that becomes an `ErrorReply` for the caller."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        errors: list[FieldError] | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        self.errors = errors or []
        self.retryable = retryable

    def reply(self, request_id: str = "") -> ErrorReply:
        return ErrorReply(
            code=self.code,
            message=self.message,
            request_id=request_id,
            errors=self.errors,
            retryable=self.retryable,
        )


class DeadlineExceeded(ServiceError):
    def __init__(self, step: str, late_ms: float) -> None:
        super().__init__(
            "deadline_exceeded",
            f"The request deadline passed {late_ms:.1f} ms before '{step}'; ask for a longer timeout or a "
            f"smaller batch.",
            retryable=True,
        )


def now_ms() -> float:
    return time.time() * 1000.0


def deadline_from_headers(headers: dict[str, str] | None, default_ms: float, max_ms: float) -> float:
    """Absolute deadline (epoch ms) from the header, or now + default when the caller sent none. A deadline
    further out than `max_ms` is capped; one that is not a number is the caller's error."""
    raw = (headers or {}).get(subjects.HDR_DEADLINE)
    now = now_ms()
    if not raw:
        return now + default_ms
    try:
        deadline = float(raw)
    except ValueError:
        raise ServiceError(
            "bad_request",
            f"Header {subjects.HDR_DEADLINE}={raw!r} is not a number: send the deadline as Unix epoch milliseconds.",
            errors=[FieldError(path=f"headers.{subjects.HDR_DEADLINE}", message="expected epoch milliseconds")],
        ) from None
    return min(deadline, now + max_ms)


@dataclass
class Context:
    """What a handler knows about the message it is handling."""

    subject: str
    headers: dict[str, str]
    request_id: str
    deadline_ms: float
    received_ms: float = field(default_factory=now_ms)

    def remaining_s(self) -> float:
        return max(0.0, (self.deadline_ms - now_ms()) / 1000.0)

    def check_deadline(self, step: str) -> None:
        late = now_ms() - self.deadline_ms
        if late >= 0:
            raise DeadlineExceeded(step, late)


Handler = Callable[[Any, Context], Awaitable[msgspec.Struct | None]]


@dataclass
class Endpoint(Generic[Req]):
    name: str
    subject: str
    request_type: type[Req]
    handler: Handler
    queue: str | None
    concurrency: int
    sub: Subscription | None = None


class Service:
    """Base class of the fraudmesh actors. See the module docstring."""

    name: ClassVar[str] = "service"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.instance_id = settings.instance_id or f"{self.name}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.codec = Codec()
        self.registry = CollectorRegistry(auto_describe=True)
        self.handler_metrics = HandlerMetrics(self.registry, self.name)
        self.tracer = trace.get_tracer(f"fraudmesh.{self.name}")
        self.log = logging.getLogger(f"fraudmesh.{self.name}")
        self.nc: NATS = NATS()
        self.ready = False
        self._endpoints: list[Endpoint[Any]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._stop_metrics: Callable[[], None] | None = None

    @property
    def tracing(self) -> bool:
        return tracing_enabled()

    # ------------------------------------------------------------------------------ lifecycle hooks
    async def on_start(self) -> None:
        """Connect stores, declare endpoints. Runs after NATS is connected."""

    async def on_stop(self) -> None:
        """Release resources. Runs after endpoints are drained, before NATS is closed."""

    def health_details(self) -> dict[str, str]:
        return {}

    # ---------------------------------------------------------------------------------- endpoints
    def endpoint(
        self,
        subject: str,
        request_type: type[Req],
        handler: Handler,
        *,
        queue: str | None = None,
        concurrency: int | None = None,
        name: str | None = None,
    ) -> None:
        self._endpoints.append(
            Endpoint(
                name=name or subject,
                subject=subject,
                request_type=request_type,
                handler=handler,
                queue=queue,
                concurrency=concurrency or self.settings.handler_concurrency,
            )
        )

    async def _subscribe(self, ep: Endpoint[Any]) -> None:
        sem = asyncio.Semaphore(ep.concurrency)
        decoder = self.codec.decoder(ep.request_type)

        async def on_msg(msg: Msg) -> None:
            await sem.acquire()  # back-pressure: the subscription stops being drained while we are full
            task = asyncio.create_task(self._handle(ep, decoder, msg))
            self._tasks.add(task)
            task.add_done_callback(lambda t: (self._tasks.discard(t), sem.release()))

        ep.sub = await self.nc.subscribe(ep.subject, queue=ep.queue or "", cb=on_msg, pending_msgs_limit=65536)

    async def _handle(self, ep: Endpoint[Any], decoder: msgspec.msgpack.Decoder, msg: Msg) -> None:
        started = time.perf_counter()
        headers = msg.headers or {}
        rid = headers.get(subjects.HDR_REQUEST_ID, "")
        token = request_id_var.set(rid)
        trace_token = trace_id_var.set(trace_id_of(headers.get("traceparent")))
        outcome = "ok"
        span_cm = (
            self.tracer.start_as_current_span(
                f"{ep.name} process",
                context=extract(headers),
                kind=SpanKind.CONSUMER,
                attributes={"messaging.system": "nats", "messaging.destination.name": msg.subject},
            )
            if self.tracing
            else contextlib.nullcontext(None)
        )
        with span_cm as span:
            reply: msgspec.Struct | None
            try:
                ctx = Context(
                    subject=msg.subject,
                    headers=headers,
                    request_id=rid,
                    deadline_ms=deadline_from_headers(
                        headers, self.settings.request_timeout_ms, self.settings.max_request_timeout_ms
                    ),
                )
                ctx.check_deadline(f"{ep.name}: start")
                try:
                    # an empty body is a valid health ping (`nats req fraudmesh.health.inference ""`)
                    req = HealthPing() if ep.request_type is HealthPing and not msg.data else decoder.decode(msg.data)
                except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                    raise ServiceError(
                        "bad_request", f"Invalid {ep.request_type.__name__}: {exc}", errors=[field_error_of(exc)]
                    ) from None
                reply = await ep.handler(req, ctx)
            except ServiceError as exc:
                outcome = exc.code
                reply = exc.reply(rid)
                if span is not None:
                    span.set_status(Status(StatusCode.ERROR, exc.message))
            except Exception as exc:
                outcome = "error"
                self.log.exception("handler failed", extra=log_fields(handler=ep.name))
                reply = ErrorReply(
                    code="internal",
                    message=f"{self.name} failed on {ep.name}: {type(exc).__name__}. The request id is in the "
                    f"service log.",
                    request_id=rid,
                    retryable=True,
                )
                if span is not None:
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, str(exc)))
            if reply is not None and msg.reply:
                with contextlib.suppress(Exception):
                    await self.nc.publish(msg.reply, self.codec.encode(reply))
        self.handler_metrics.observe(ep.name, outcome, time.perf_counter() - started)
        request_id_var.reset(token)
        trace_id_var.reset(trace_token)

    def span(self, name: str, **attributes: object) -> contextlib.AbstractContextManager[Any]:
        """A child span of the current one, or nothing at all when tracing is off."""
        if not self.tracing:
            return contextlib.nullcontext(None)
        return self.tracer.start_as_current_span(name, attributes=attributes)  # type: ignore[arg-type]

    # ------------------------------------------------------------------------------ NATS helpers
    def outgoing_headers(self, ctx: Context | None = None, **extra: str) -> dict[str, str]:
        """Headers for a message sent on behalf of `ctx`: deadline, request id and the current trace context."""
        headers: dict[str, str] = {}
        if ctx is not None:
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
        )

    async def _health(self, _req: HealthPing, _ctx: Context) -> HealthReply:
        details = self.health_details()
        return HealthReply(
            service=self.name,
            instance_id=self.instance_id,
            status="ok" if self.ready else "degraded",
            details=details,
        )

    # ---------------------------------------------------------------------------------- running
    async def start(self) -> None:
        await self.connect()
        await self.on_start()
        self.endpoint(subjects.health_subject(self.name), HealthPing, self._health, name="health", concurrency=4)
        for ep in self._endpoints:
            await self._subscribe(ep)
        await self.nc.flush()
        if self.settings.metrics_port and self._stop_metrics is None:
            self._stop_metrics = serve_metrics(
                self.registry, self.settings.metrics_port, lambda: self.ready and self.nc.is_connected
            )
        self.ready = True
        self.log.info("started", extra=log_fields(endpoints=[e.subject for e in self._endpoints]))

    async def stop(self, timeout: float = 20.0) -> None:
        """Graceful stop: stop taking messages, finish what is in flight, drain the connection."""
        if not self.ready and self.nc.is_closed:
            return
        self.ready = False
        self.log.info("stopping: draining in-flight work", extra=log_fields(in_flight=len(self._tasks)))
        for ep in self._endpoints:
            if ep.sub is not None:
                with contextlib.suppress(Exception):
                    await ep.sub.unsubscribe()
        await self.before_drain()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        await self.on_stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.nc.drain(), timeout=5.0)
        if self._stop_metrics:
            self._stop_metrics()
        self.log.info("stopped")

    async def before_drain(self) -> None:
        """Stop pulling new work (pull consumers); in-flight tasks are awaited after this."""

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

    from shared.settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"fraudmesh: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    service = factory(settings)
    configure_logging(service.name, service.instance_id, settings.log_level)
    setup_tracing(f"fraudmesh-{service.name}", service.instance_id)
    try:
        import uvloop

        runner: Callable[[Awaitable[None]], None] = uvloop.run  # type: ignore[assignment]
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


class StartupError(RuntimeError):
    """The service cannot start (e.g. no model). The message says what is missing and how to fix it."""
