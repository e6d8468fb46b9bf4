"""Dynamic batching of small requests: many single-transaction requests share one partial.

Each partial costs a JetStream publish and ack, a pull, an ONNX run and a result message, whatever its size,
so at high load single scores are cheaper together. The policy adds no latency when the pipeline is idle:
- a request that arrives while fewer than `max_inflight` coalesced partials are out is flushed on the next
  loop turn (together with whatever else arrived in the same turn);
- otherwise requests wait until one of those partials comes back, the buffer reaches `max_size`, or
  `window_ms` passes, whichever is first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aggregator.pending import PendingBatch
from shared.messages import Transaction, TransactionScore
from shared.service import Context


@dataclass
class CoalescedOutcome:
    scores: list[TransactionScore | None]
    batch: PendingBatch
    offset: int


@dataclass
class _Member:
    transactions: list[Transaction]
    ctx: Context
    future: asyncio.Future[CoalescedOutcome]


# publish(transactions, contexts) -> the PendingBatch it registered; the caller awaits `done`.
Publisher = Callable[[list[Transaction], list[Context]], Awaitable[PendingBatch]]
Finisher = Callable[[PendingBatch], None]


class Coalescer:
    def __init__(
        self, publish: Publisher, finish: Finisher, *, window_ms: float, max_size: int, max_inflight: int
    ) -> None:
        self._publish = publish
        self._finish = finish
        self._window_s = window_ms / 1000.0
        self._max_size = max_size
        self._max_inflight = max_inflight
        self._buffer: list[_Member] = []
        self._buffered = 0
        self._inflight = 0
        self._flush_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def reconfigure(self, *, window_ms: float, max_size: int) -> None:
        """New window and size (runtime settings); requests already buffered keep their timer."""
        self._window_s = window_ms / 1000.0
        self._max_size = max_size

    async def submit(self, transactions: list[Transaction], ctx: Context) -> CoalescedOutcome:
        loop = asyncio.get_running_loop()
        member = _Member(transactions, ctx, loop.create_future())
        self._buffer.append(member)
        self._buffered += len(transactions)
        if self._buffered >= self._max_size or self._inflight < self._max_inflight:
            self._schedule_flush(loop)
        elif self._timer is None:
            self._timer = loop.call_later(self._window_s, self._schedule_flush, loop)
        return await member.future

    def _schedule_flush(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._buffer:
            members: list[_Member] = []
            size = 0
            while self._buffer and (not members or size + len(self._buffer[0].transactions) <= self._max_size):
                m = self._buffer.pop(0)
                members.append(m)
                size += len(m.transactions)
            self._buffered -= size
            self._inflight += 1
            task = asyncio.create_task(self._run(members))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, members: list[_Member]) -> None:
        transactions = [tx for m in members for tx in m.transactions]
        try:
            batch = await self._publish(transactions, [m.ctx for m in members])
        except Exception as exc:
            self._inflight -= 1
            for m in members:
                if not m.future.done():
                    m.future.set_exception(exc)
            self._reflush()
            return
        # wait for the one partial, bounded by the latest member deadline (each member has its own timeout)
        longest = max(m.ctx.remaining_s() for m in members)
        try:
            await asyncio.wait_for(batch.done.wait(), timeout=longest)
        except TimeoutError:
            pass
        finally:
            self._inflight -= 1
            self._finish(batch)
        scores = batch.scores(len(transactions))
        offset = 0
        for m in members:
            n = len(m.transactions)
            if not m.future.done():
                m.future.set_result(CoalescedOutcome(scores[offset : offset + n], batch, offset))
            offset += n
        self._reflush()

    def _reflush(self) -> None:
        if self._buffer:
            self._schedule_flush(asyncio.get_running_loop())
