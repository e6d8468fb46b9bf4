"""Request-reply endpoints: decode, deadline, handler, and a typed reply (an `ErrorReply` when it fails)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry.trace import Span, Status, StatusCode

from shared import subjects
from shared.context import Context, ServiceError, deadline_from_headers
from shared.dispatch import Route
from shared.logs import log_fields
from shared.messages import ErrorReply, HealthPing, field_error_of

if TYPE_CHECKING:
    from shared.service import Service

Handler = Callable[[Any, Context], Awaitable[msgspec.Struct | None]]


class EndpointRoute(Route):
    kind = "endpoint"

    def __init__(
        self,
        service: Service,
        name: str,
        subject: str,
        request_type: Any,
        handler: Handler,
        queue: str | None,
        concurrency: int,
    ) -> None:
        super().__init__(name, subject, queue or "")
        self.service = service
        self.subject = subject
        self.request_type = request_type
        self.handler = handler
        self.queue = queue
        self.concurrency = concurrency
        self.decoder: msgspec.msgpack.Decoder[Any] = service.codec.decoder(request_type)
        self.sub: Subscription | None = None
        self.log = logging.getLogger(f"fraudmesh.{service.name}")

    async def handle(self, item: Any, subject: str, headers: dict[str, str], span: Span | None) -> str:
        msg: Msg = item
        svc = self.service
        rid = headers.get(subjects.HDR_REQUEST_ID, "")
        outcome = "ok"
        reply: msgspec.Struct | None
        try:
            ctx = Context(
                subject=subject,
                headers=headers,
                request_id=rid,
                deadline_ms=deadline_from_headers(
                    headers, svc.settings.request_timeout_ms, svc.settings.max_request_timeout_ms
                ),
                reply=msg.reply or "",
            )
            ctx.check_deadline(f"{self.name}: start")
            try:
                # an empty body is a valid health ping (`nats req fraudmesh.health.inference ""`)
                req = (
                    HealthPing() if self.request_type is HealthPing and not msg.data else self.decoder.decode(msg.data)
                )
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise ServiceError(
                    "bad_request", f"Invalid {self.request_type.__name__}: {exc}", errors=[field_error_of(exc)]
                ) from None
            reply = await self.handler(req, ctx)
        except ServiceError as exc:
            outcome = exc.code
            reply = exc.reply(rid)
            if span is not None:
                span.set_status(Status(StatusCode.ERROR, exc.message))
        except Exception as exc:
            outcome = "error"
            self.log.exception("handler failed", extra=log_fields(handler=self.name))
            reply = ErrorReply(
                code="internal",
                message=f"{svc.name} failed on {self.name}: {type(exc).__name__}. The request id is in the "
                f"service log.",
                request_id=rid,
                retryable=True,
            )
            if span is not None:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, str(exc)))
        if reply is not None and msg.reply:
            with contextlib.suppress(Exception):
                await svc.nc.publish(msg.reply, svc.codec.encode(reply))
        return outcome
