"""TEMPORARY consumer wiring for the ingest streams, until the service base's `Service.consumer` (micro-batch
form) is merged: a durable pull subscription, micro-batches of at most `batch_size` messages waiting at most
`max_wait_s`, decoded by Content-Type (JSON or msgpack), acked only after the batch handler returned; a batch
whose handler raised is nak'ed with a capped backoff; an undecodable message is terminated and dead-lettered.
It mirrors the base API's shapes (`Delivered(message, delivery)`, `delivery.deliveries`, `delivery.reject`), so
the handlers move to `Service.consumer` unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import BadRequestError

from shared import subjects
from shared.ingest_messages import Label, TxnIngest, decode_from_stream

T = TypeVar("T", TxnIngest, Label)
log = logging.getLogger("fraudmesh.ingest")

ACK_WAIT_S = 60.0
MAX_DELIVER = 20
NAK_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)


@dataclass
class Delivery:
    msg: Msg
    deliveries: int
    published: float
    """Epoch seconds when JetStream stored the message."""
    rejected: str = ""

    def reject(self, reason: str) -> None:
        self.rejected = reason


@dataclass
class Delivered(Generic[T]):
    message: T
    delivery: Delivery


def ingest_consumer_config(durable: str, subject: str) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=durable,
        description="Feature workers: every replica pulls micro-batches from this one durable consumer.",
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ACK_WAIT_S,
        max_deliver=MAX_DELIVER,
        max_ack_pending=20_000,
        max_waiting=512,
        filter_subject=subject,
    )


async def ensure_ingest_consumer(js: JetStreamContext, stream: str, durable: str, subject: str) -> None:
    with contextlib.suppress(BadRequestError):  # exists (with these or older settings): keep it
        await js.add_consumer(stream, ingest_consumer_config(durable, subject))


class PullLoop(Generic[T]):
    def __init__(
        self,
        js: JetStreamContext,
        *,
        stream: str,
        subject: str,
        durable: str,
        message_type: type[T],
        batch_handler: Callable[[list[Delivered[T]]], Awaitable[None]],
        batch_size: int,
        max_wait_s: float,
        concurrency: int = 1,
    ) -> None:
        self.js = js
        self.stream = stream
        self.subject = subject
        self.durable = durable
        self.message_type: type[T] = message_type
        self.batch_handler: Callable[[list[Delivered[T]]], Awaitable[None]] = batch_handler
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self.concurrency = concurrency
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await ensure_ingest_consumer(self.js, self.stream, self.durable, self.subject)
        for _ in range(self.concurrency):  # each lane fetches and handles its own micro-batches
            psub = await self.js.pull_subscribe_bind(self.durable, self.stream)
            self._tasks.append(asyncio.create_task(self._run(psub)))

    async def stop(self) -> None:
        """Stop fetching and let the batch in hand finish."""
        self._stopping.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 30.0)

    async def _run(self, psub: JetStreamContext.PullSubscription) -> None:
        while not self._stopping.is_set():
            try:
                msgs = await psub.fetch(self.batch_size, timeout=self.max_wait_s)
            except (TimeoutError, NatsTimeout):
                continue
            except Exception as exc:
                log.warning("ingest fetch failed on %s: %s", self.durable, exc)
                await asyncio.sleep(0.5)
                continue
            await self._handle(msgs)

    async def _handle(self, msgs: list[Msg]) -> None:
        good: list[Delivered[T]] = []
        kept: list[Msg] = []
        for msg in msgs:
            meta = msg.metadata
            delivery = Delivery(msg=msg, deliveries=meta.num_delivered or 1, published=meta.timestamp.timestamp())
            try:
                body = decode_from_stream(
                    msg.data, (msg.headers or {}).get(subjects.HDR_CONTENT_TYPE), self.message_type
                )
            except Exception as exc:
                await self._dead_letter(msg, f"undecodable {self.message_type.__name__}: {exc}")
                continue
            good.append(Delivered(body, delivery))  # type: ignore[arg-type]
            kept.append(msg)
        if not good:
            return
        try:
            await self.batch_handler(good)
        except Exception as exc:
            deliveries = max(d.delivery.deliveries for d in good)
            delay = NAK_BACKOFF_S[min(deliveries, len(NAK_BACKOFF_S)) - 1]
            log.warning("ingest batch failed (%d messages), retrying in %.1fs: %r", len(good), delay, exc)
            for msg in kept:
                with contextlib.suppress(Exception):
                    await msg.nak(delay=delay)
            return
        for d, msg in zip(good, kept, strict=True):
            if d.delivery.rejected:
                await self._dead_letter(msg, d.delivery.rejected)
            else:
                with contextlib.suppress(Exception):
                    await msg.ack()

    async def _dead_letter(self, msg: Msg, reason: str) -> None:
        headers = dict(msg.headers or {})
        headers.pop(subjects.HDR_MSG_ID, None)
        headers[subjects.HDR_DLQ_REASON] = reason[:500]
        log.error("ingest message dead-lettered from %s: %s", self.durable, reason[:500])
        try:
            await self.js.publish(subjects.INGEST_DLQ_SUBJECT, msg.data, headers=headers)
        except Exception:
            with contextlib.suppress(Exception):
                await msg.nak(delay=5.0)  # keep it: never drop what was accepted
            return
        with contextlib.suppress(Exception):
            await msg.term()
