"""JetStream pull consumers on the service base: the one pull loop of fraudmesh.

A consumer binds to an existing durable pull consumer (declared idempotently in shared/jetstream.py), and
- fetches only for a free slot (one message, or one micro-batch, per free slot: it never hoards messages an
  idle replica could be handling);
- sends `in_progress` every ack_wait/3 while the handler runs, so a slow message is not redelivered under it;
- acks only after the handler returns (a crash before that means redelivery to another replica);
- applies its `ConsumerPolicy` when the handler does not succeed (shared/policy.py): nak with backoff, term
  when the deadline passed, or term + dead-letter (shared/dead_letter.py);
- on stop, stops fetching; the service then waits for the handlers in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import FetchTimeoutError
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from shared import subjects
from shared.context import Delivered, Delivery, now_ms, optional_deadline
from shared.dispatch import Route, messaging_attributes
from shared.logs import log_fields
from shared.policy import EXPIRED, UNDECODABLE_ERRORS, Action, ConsumerPolicy, Decision
from shared.telemetry import extract

if TYPE_CHECKING:
    from shared.service import Service

T = TypeVar("T")
MessageHandler = Callable[[T, Delivery], Awaitable[None]]
BatchHandler = Callable[[list[Delivered[T]]], Awaitable[None]]


TOP_UP_WAIT_S = 0.01
"""How long a linger top-up fetch waits when nothing arrived during the linger."""


class Heartbeat:
    """Sends `in_progress` for the given messages every `period` seconds until cancelled. A timer, not a task:
    most messages are handled long before the first beat."""

    def __init__(self, msgs: Sequence[Msg], period: float) -> None:
        self._msgs = msgs
        self._period = period
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = self._loop.call_later(period, self._beat)
        self._tasks: set[asyncio.Task[None]] = set()
        self.beats = 0

    def _beat(self) -> None:
        self.beats += 1
        task = self._loop.create_task(self._send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._handle = self._loop.call_later(self._period, self._beat)

    async def _send(self) -> None:
        for msg in self._msgs:
            with contextlib.suppress(Exception):
                await msg.in_progress()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class Consumer(Route, Generic[T]):
    """One durable pull consumer of a service (see the module docstring). Made by `Service.consumer`."""

    kind = "consumer"

    def __init__(
        self,
        service: Service,
        *,
        name: str,
        stream: str,
        durable: str,
        message_type: type[T],
        handler: MessageHandler[T] | None,
        batch_handler: BatchHandler[T] | None,
        batch_size: int,
        max_wait_s: float,
        concurrency: int,
        policy: ConsumerPolicy,
        linger_s: float = 0.0,
    ) -> None:
        if (handler is None) == (batch_handler is None):
            raise ValueError(f"consumer {name}: give exactly one of handler= and batch_handler=")
        super().__init__(name, stream, durable)
        self.service = service
        self.stream = stream
        self.durable = durable
        self.message_type = message_type
        self.handler = handler
        self.batch_handler = batch_handler
        self.batch_size = batch_size if batch_handler is not None else 1
        self.max_wait_s = max_wait_s
        self.linger_s = linger_s if batch_handler is not None else 0.0
        self.concurrency = concurrency
        self.policy = policy
        self.decoder: msgspec.msgpack.Decoder[Any] = service.codec.decoder(message_type)
        self.heartbeat_s = 1.0
        self.log = logging.getLogger(f"fraudmesh.{service.name}")
        self._psub: JetStreamContext.PullSubscription | None = None
        self._puller: asyncio.Task[None] | None = None
        self._running = False

    # ------------------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        js = self.service.nc.jetstream(timeout=5.0)
        self._psub = await js.pull_subscribe_bind(durable=self.durable, stream=self.stream)
        info = await js.consumer_info(self.stream, self.durable)
        self.heartbeat_s = max(0.05, (info.config.ack_wait or 30.0) / 3.0)
        filter_subject = info.config.filter_subject
        if filter_subject:
            self.destination = filter_subject
            self.span_name = f"process {filter_subject}"
            self.attributes = messaging_attributes(
                "process", filter_subject, **{"messaging.consumer.group.name": self.durable}
            )
        self.service.dead_letters.expose(self.name)
        self._running = True
        self._puller = asyncio.create_task(self._pull(self._psub), name=f"pull {self.name}")

    async def stop(self) -> None:
        """Stop fetching (the fetch in progress ends within max_wait_s); in-flight handlers keep running."""
        self._running = False
        if self._puller is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._puller, timeout=self.max_wait_s + 2.0)
        if self._psub is not None:
            with contextlib.suppress(Exception):
                await self._psub.unsubscribe()

    def stats_metadata(self) -> dict[str, str]:
        return {"kind": self.kind, "stream": self.stream, "durable": self.durable}

    # -------------------------------------------------------------------------------------- pulling
    async def _pull(self, psub: JetStreamContext.PullSubscription) -> None:
        slots = asyncio.Semaphore(self.concurrency)
        single = self.batch_handler is None
        while self._running:
            await slots.acquire()
            if not self._running:
                slots.release()
                break
            try:
                msgs = await psub.fetch(self.batch_size, timeout=self.max_wait_s)
            except (TimeoutError, FetchTimeoutError):
                msgs = []
            except Exception as exc:  # connection trouble: nats-py reconnects; back off briefly
                if self._running:
                    self.log.warning("fetch failed", extra=log_fields(consumer=self.name, error=repr(exc)))
                    await asyncio.sleep(0.2)
                msgs = []
            if not msgs:
                slots.release()
                continue
            if self.linger_s > 0 and len(msgs) < self.batch_size and self._running:
                msgs += await self._top_up(psub, self.batch_size - len(msgs))
            if single:
                msg = msgs[0]
                self.service.spawn(
                    self.service.dispatcher.run(self, msg, msg.subject, msg.headers or {}, len(msg.data)),
                    slots.release,
                )
            else:
                self.service.spawn(self._run_batch(msgs), slots.release)

    async def _top_up(self, psub: JetStreamContext.PullSubscription, room: int) -> list[Msg]:
        """Micro-batches under steady traffic: wait `linger_s`, then take what arrived meanwhile (up to `room`).
        A handler whose cost is mostly per batch (or per distinct entity) then runs on fewer, bigger batches."""
        await asyncio.sleep(self.linger_s)
        try:
            return list(await psub.fetch(room, timeout=TOP_UP_WAIT_S))
        except Exception:  # nothing more arrived (a timeout), or connection trouble: the next fetch sees it
            return []

    def _delivery(self, msg: Msg, headers: dict[str, str]) -> Delivery:
        meta = msg.metadata
        return Delivery(
            subject=msg.subject,
            headers=headers,
            request_id=headers.get(subjects.HDR_REQUEST_ID, ""),
            deadline_ms=optional_deadline(headers),
            msg=msg,
            deliveries=meta.num_delivered or 1,
            stream_seq=meta.sequence.stream if meta.sequence else 0,
        )

    # ----------------------------------------------------------------------------- one at a time
    async def handle(self, item: Any, subject: str, headers: dict[str, str], span: Span | None) -> str:
        msg: Msg = item
        delivery = self._delivery(msg, headers)
        if span is not None:
            span.set_attribute("messaging.nats.delivery_count", delivery.deliveries)
        if delivery.deadline_ms <= now_ms():
            await self._settle(msg, headers, EXPIRED)
            return EXPIRED.outcome
        assert self.handler is not None
        heartbeat = Heartbeat((msg,), self.heartbeat_s)
        try:
            await self.handler(self.decoder.decode(msg.data), delivery)
        except Exception as exc:
            heartbeat.cancel()
            decision = self.policy.decide(exc, delivery.deliveries)
            if span is not None:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, decision.reason))
            await self._settle(msg, headers, decision)
            return decision.outcome
        heartbeat.cancel()
        return await self._ack(msg)

    async def _ack(self, msg: Msg) -> str:
        try:
            await msg.ack()
        except Exception as exc:  # the message comes back after ack_wait; the handler must be idempotent
            self.log.warning("ack failed", extra=log_fields(consumer=self.name, error=repr(exc)))
            return "ack_failed"
        return "ok"

    async def _settle(self, msg: Msg, headers: dict[str, str], decision: Decision) -> None:
        """Carry out a policy decision for one message. Never raises."""
        try:
            if decision.action is Action.NAK:
                self.log.warning(
                    "message failed; will be retried",
                    extra=log_fields(consumer=self.name, error=decision.reason, delay_s=decision.delay_s),
                )
                await msg.nak(delay=decision.delay_s)
            elif decision.action is Action.TERM:
                await msg.term()
            elif decision.action is Action.GIVE_UP:
                self.log.error(
                    "message given up: its dependencies stayed unavailable",
                    extra=log_fields(consumer=self.name, error=decision.reason),
                )
                await msg.term()
                await self.service.dead_letters.tell_owner(
                    consumer=self.name,
                    data=msg.data,
                    headers=headers,
                    reason=decision.reason,
                    notice=self.policy.owner_notice,
                )
            else:
                try:
                    await self.service.dead_letters.send(
                        consumer=self.name,
                        data=msg.data,
                        headers=headers,
                        reason=decision.reason,
                        kind=decision.outcome,
                        subject=self.policy.dead_letter_subject,
                        notice=self.policy.owner_notice,
                    )
                except Exception as exc:  # the DLQ did not take it: keep the message, it comes back
                    self.log.error("dead-letter failed", extra=log_fields(consumer=self.name, error=repr(exc)))
                    await msg.nak(delay=self.policy.backoff_max_s)
                    return
                await msg.term()
        except Exception as exc:
            self.log.warning("settling a message failed", extra=log_fields(consumer=self.name, error=repr(exc)))

    # -------------------------------------------------------------------------------- micro-batches
    async def _run_batch(self, msgs: list[Msg]) -> None:
        started = time.perf_counter_ns()
        outcomes: list[str] = []
        good: list[Delivered[T]] = []
        kept: list[Msg] = []
        now = now_ms()
        for msg in msgs:
            headers = msg.headers or {}
            delivery = self._delivery(msg, headers)
            if delivery.deadline_ms <= now:
                await self._settle(msg, headers, EXPIRED)
                outcomes.append(EXPIRED.outcome)
                continue
            try:
                good.append(Delivered(self.decoder.decode(msg.data), delivery))
                kept.append(msg)
            except UNDECODABLE_ERRORS as exc:
                decision = self.policy.decide(exc, delivery.deliveries)
                await self._settle(msg, headers, decision)
                outcomes.append(decision.outcome)
        if good:
            outcomes.extend(await self._handle_batch(good, kept))
        elapsed = time.perf_counter_ns() - started
        self.requests += len(outcomes)
        self.processing_ns += elapsed
        for outcome in outcomes:
            if outcome != "ok":
                self.errors += 1
                self.last_error = outcome
            self.service.handler_metrics.observe(self.name, outcome, elapsed / 1e9)

    async def _handle_batch(self, good: list[Delivered[T]], kept: list[Msg]) -> list[str]:
        assert self.batch_handler is not None
        span_cm: contextlib.AbstractContextManager[Span | None] = contextlib.nullcontext(None)
        if self.service.dispatcher.tracing:
            links = [Link(trace.get_current_span(extract(d.delivery.headers)).get_span_context()) for d in good]
            attributes = messaging_attributes(
                "process",
                self.destination,
                **{"messaging.consumer.group.name": self.durable, "messaging.batch.message_count": len(good)},
            )
            span_cm = self.service.tracer.start_as_current_span(
                self.span_name, kind=SpanKind.CONSUMER, attributes=attributes, links=links
            )
        with span_cm as span:
            heartbeat = Heartbeat(kept, self.heartbeat_s)
            try:
                await self.batch_handler(good)
            except Exception as exc:
                heartbeat.cancel()
                if span is not None:
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, str(exc)))
                outcomes = []
                for d, msg in zip(good, kept, strict=True):
                    decision = self.policy.decide(exc, d.delivery.deliveries)
                    await self._settle(msg, d.delivery.headers, decision)
                    outcomes.append(decision.outcome)
                return outcomes
            heartbeat.cancel()
            outcomes = []
            for d, msg in zip(good, kept, strict=True):
                if d.delivery.rejected:
                    decision = Decision(Action.DEAD_LETTER, "poison", reason=d.delivery.rejected)
                    await self._settle(msg, d.delivery.headers, decision)
                    outcomes.append(decision.outcome)
                else:
                    outcomes.append(await self._ack(msg))
            return outcomes


NO_WAIT = b'{"batch":1,"no_wait":true}'
"""A pull request for one message that the server answers at once: the message, or a 404/408 status."""


class PriorityConsumer(Consumer[T]):
    """Several durable pull consumers of one stream, highest priority first (e.g. one per priority subject), handled
    as one route. Made by `Service.priority_consumer`.

    For each free slot it asks the durables in order for one message without waiting (`no_wait` pull requests)
    and takes the first it gets: a queued message of a higher durable always starts before one of a lower durable.
    When every durable is empty it pauses (doubling from 10 ms up to `max_wait_s`, or until `wake()`), then looks
    again. Everything after the fetch (heartbeats, ack after the handler, the policy on failure) is `Consumer`'s.
    """

    kind = "priority_consumer"

    def __init__(
        self,
        service: Service,
        *,
        name: str,
        stream: str,
        durables: Sequence[str],
        message_type: type[T],
        handler: MessageHandler[T],
        max_wait_s: float,
        concurrency: int,
        policy: ConsumerPolicy,
    ) -> None:
        if not durables:
            raise ValueError(f"priority consumer {name}: give at least one durable")
        super().__init__(
            service,
            name=name,
            stream=stream,
            durable=",".join(durables),
            message_type=message_type,
            handler=handler,
            batch_handler=None,
            batch_size=1,
            max_wait_s=max_wait_s,
            concurrency=concurrency,
            policy=policy,
        )
        self.durables = tuple(durables)
        self._inboxes: list[tuple[str, Any]] = []
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look at the queues now (a message was just published) instead of at the end of the idle pause."""
        self._wake.set()

    async def start(self) -> None:
        nc = self.service.nc
        js = nc.jetstream(timeout=5.0)
        waits = []
        filters = []
        for durable in self.durables:
            info = await js.consumer_info(self.stream, durable)
            waits.append(info.config.ack_wait or 30.0)
            filters.append(info.config.filter_subject or "")
            inbox = nc.new_inbox()
            self._inboxes.append((f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{durable}", await nc.subscribe(inbox)))
        self.heartbeat_s = max(0.05, min(waits) / 3.0)
        self.destination = ",".join(f for f in filters if f) or self.stream
        self.span_name = f"process {self.destination}"
        self.attributes = messaging_attributes(
            "process", self.destination, **{"messaging.consumer.group.name": self.durable}
        )
        self.service.dead_letters.expose(self.name)
        self._running = True
        self._puller = asyncio.create_task(self._pull_by_priority(), name=f"pull {self.name}")

    async def stop(self) -> None:
        self._running = False
        self._wake.set()
        if self._puller is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._puller, timeout=self.max_wait_s + 7.0)
        for _, sub in self._inboxes:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def stats_metadata(self) -> dict[str, str]:
        return {"kind": self.kind, "stream": self.stream, "durables": self.durable}

    async def _next_of(self, api: str, sub: Any) -> Msg | None:
        """One message of one durable, or None when it has none now."""
        while sub.pending_msgs:  # a message that came after an earlier request timed out: take it first
            msg = await sub.next_msg(timeout=0.01)
            if not (msg.headers or {}).get("Status"):
                return msg  # type: ignore[no-any-return]
        await self.service.nc.publish(api, NO_WAIT, reply=sub.subject)
        msg = await sub.next_msg(timeout=5.0)
        if (msg.headers or {}).get("Status"):  # 404 no messages, 408 request timeout, 409 ...: nothing now
            return None
        return msg  # type: ignore[no-any-return]

    async def _next(self) -> Msg | None:
        for api, sub in self._inboxes:
            msg = await self._next_of(api, sub)
            if msg is not None:
                return msg
        return None

    async def _pull_by_priority(self) -> None:
        slots = asyncio.Semaphore(self.concurrency)
        pause = 0.0
        while self._running:
            await slots.acquire()
            if not self._running:
                slots.release()
                break
            self._wake.clear()
            try:
                msg = await self._next()
            except Exception as exc:  # connection trouble or a request timeout: nats-py reconnects; back off
                if self._running:
                    self.log.warning("fetch failed", extra=log_fields(consumer=self.name, error=repr(exc)))
                msg = None
                pause = self.max_wait_s
            if msg is None:
                slots.release()
                pause = min(self.max_wait_s, max(0.01, pause * 2))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=pause)
                continue
            pause = 0.0
            self.service.spawn(
                self.service.dispatcher.run(self, msg, msg.subject, msg.headers or {}, len(msg.data)),
                slots.release,
            )
