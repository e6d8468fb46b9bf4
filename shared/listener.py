"""Plain listeners on the service base: core NATS subscriptions (inboxes, advisories) and KV watches.

A listener's handler gets the decoded message (or the raw bytes / the KV entry) and a `Context`. What it
raises is logged and counted (outcome `error`); a message that does not decode is counted `undecodable`; a
message whose deadline header has passed is dropped, counted `expired`. There is no reply: listeners are for
messages nobody waits on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.kv import KeyValue
from opentelemetry.trace import Span, Status, StatusCode

from shared import subjects
from shared.context import Context, now_ms, optional_deadline
from shared.dispatch import Route
from shared.logs import log_fields

if TYPE_CHECKING:
    from shared.service import Service

ListenerHandler = Callable[[Any, Context], Awaitable[None]]
KvHandler = Callable[[KeyValue.Entry, Context], Awaitable[None]]
RAW = None
"""`message_type=RAW`: the handler gets the message body as bytes."""


class ListenerRoute(Route):
    kind = "listener"

    def __init__(
        self,
        service: Service,
        name: str,
        subject: str,
        message_type: Any,
        handler: ListenerHandler,
        queue: str | None,
        destination: str | None = None,
    ) -> None:
        super().__init__(name, destination or subject, queue or "")
        self.service = service
        self.subject = subject
        self.queue = queue
        self.handler = handler
        self.message_type = message_type
        self.decoder: msgspec.msgpack.Decoder[Any] | None = (
            None if message_type is RAW else service.codec.decoder(message_type)
        )
        self.sub: Subscription | None = None
        self.log = logging.getLogger(f"fraudmesh.{service.name}")

    async def handle(self, item: Any, subject: str, headers: dict[str, str], span: Span | None) -> str:
        data: bytes = item.data if isinstance(item, Msg) else item
        ctx = Context(subject, headers, headers.get(subjects.HDR_REQUEST_ID, ""), optional_deadline(headers))
        if ctx.deadline_ms <= now_ms():
            return "expired"
        try:
            message = data if self.decoder is None else self.decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.log.error("undecodable message", extra=log_fields(handler=self.name, error=str(exc)))
            return "undecodable"
        return await self.call(message, ctx, span)

    async def call(self, message: Any, ctx: Context, span: Span | None) -> str:
        try:
            await self.handler(message, ctx)
        except Exception as exc:
            self.log.exception("listener failed", extra=log_fields(handler=self.name))
            if span is not None:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, str(exc)))
            return "error"
        return "ok"

    async def start(self) -> None:
        dispatcher = self.service.dispatcher

        async def on_msg(msg: Msg) -> None:
            await dispatcher.run(self, msg, msg.subject, msg.headers or {}, len(msg.data))

        self.sub = await self.service.nc.subscribe(
            self.subject, queue=self.queue or "", cb=on_msg, pending_msgs_limit=65536
        )

    async def stop(self) -> None:
        if self.sub is not None:
            with contextlib.suppress(Exception):
                await self.sub.unsubscribe()


class KvWatchRoute(ListenerRoute):
    """Watches every key of a KV bucket (current values first), restarting the watch when it fails. Each
    entry goes through the dispatch like a message (subject `$KV.<bucket>.<key>`)."""

    kind = "kv_watch"

    def __init__(
        self, service: Service, name: str, bucket: str, handler: KvHandler, open_bucket: Callable[[], Any]
    ) -> None:
        super().__init__(service, name, f"$KV.{bucket}.>", RAW, handler, None, destination=f"$KV.{bucket}")
        self.bucket = bucket
        self.open_bucket = open_bucket
        self._task: asyncio.Task[None] | None = None
        self._watcher: Any = None

    async def handle(self, item: Any, subject: str, headers: dict[str, str], span: Span | None) -> str:
        ctx = Context(subject, headers, "", float("inf"))
        return await self.call(item, ctx, span)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name=f"watch {self.bucket}")

    async def _watch(self) -> None:
        dispatcher = self.service.dispatcher
        empty: dict[str, str] = {}
        while True:
            try:
                kv: KeyValue = await self.open_bucket()
                self._watcher = await kv.watchall()
                async for entry in self._watcher:
                    if entry is None:  # the end of the current values
                        continue
                    await dispatcher.run(self, entry, f"$KV.{self.bucket}.{entry.key}", empty)
                await asyncio.sleep(1.0)  # the watcher was stopped (reconnect trouble): start another
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.warning("KV watch failed; retrying", extra=log_fields(bucket=self.bucket, error=repr(exc)))
                await asyncio.sleep(2.0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()
