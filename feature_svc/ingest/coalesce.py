"""One refresh for the entities of many micro-batches: the direct refreshes of a feature worker, coalesced.

Every micro-batch of live traffic touches the busy merchants (and popular IPs) again; recomputed per batch, a
merchant with thousands of transactions in its 30-day window costs its full window in every batch, and at
live batch sizes (tens of transactions) that was the largest part of the ingestion's PostgreSQL time
(bench/results/ingest-perf-*.md). Here a batch, once its ledger rows and edges are written, hands its entities to
the worker's `RefreshCoalescer` and waits:
- one refresh round recomputes the union of the entities of every batch that arrived since the last round
  began (an entity touched by ten batches is recomputed once); rounds run one at a time, at most every
  `min_interval_s`;
- an entity whose last round started less than `entity_interval_s` ago waits for a later round (a merchant
  touched by every batch is recomputed at most once per `entity_interval_s`, not once per round);
- the batch is acked only after rounds that started after it came have written all of its entities (nothing is
  acked before its features are up to date, as before); a round starts after the ledger writes of every batch
  in it, so its `as_of` (now) covers their transactions.

The freshness bound of the direct features (1 s) holds as long as `entity_interval_s` plus a round or two stay
below it; the freshness histogram (`path="direct"`) measures it per transaction, from JetStream storing it to the
last of its entities being written. Under a backlog the rounds grow by themselves (more batches wait while one
runs), which is when merging saves the most.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from feature_svc.compute import Entity

RefreshFn = Callable[[list[Entity]], Awaitable[object]]


@dataclass(eq=False)
class _Waiter:
    future: asyncio.Future[None]
    remaining: set[Entity]
    """Its entities no round started after it came has written yet."""


class RefreshCoalescer:
    def __init__(self, run: RefreshFn, min_interval_s: float, entity_interval_s: float = 0.0) -> None:
        self._run = run
        self.min_interval_s = min_interval_s
        self.entity_interval_s = entity_interval_s
        self._pending: dict[Entity, None] = {}
        self._waiters: list[_Waiter] = []
        self._last: dict[Entity, float] = {}
        """When each entity's latest round started (only those within `entity_interval_s`)."""
        self._task: asyncio.Task[None] | None = None
        self._last_start = -1e9
        self.rounds = 0
        """Refresh rounds run (for tests and the benchmark)."""
        self.entities = 0
        """Entities recomputed over all rounds."""

    async def refresh(self, entities: Sequence[Entity]) -> None:
        """Return once rounds started after this call have recomputed and written all of `entities`; raise what
        such a round raised (the caller's batch is then not acked and is redelivered)."""
        if not entities:
            return
        waiter = _Waiter(asyncio.get_running_loop().create_future(), set(entities))
        self._pending.update(dict.fromkeys(entities))
        self._waiters.append(waiter)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._rounds())
        await waiter.future

    def _due_at(self, entity: Entity) -> float:
        return self._last.get(entity, -1e9) + self.entity_interval_s

    async def _rounds(self) -> None:
        while self._pending:
            start_at = max(self._last_start + self.min_interval_s, min(map(self._due_at, self._pending)))
            wait = start_at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue  # more may have arrived meanwhile
            now = time.monotonic()
            due = {e for e in self._pending if self._due_at(e) <= now}
            for e in due:
                del self._pending[e]
                self._last[e] = now
            self._last = {e: t for e, t in self._last.items() if t + self.entity_interval_s > now}
            attached = [(w, w.remaining & due) for w in self._waiters]
            attached = [(w, taken) for w, taken in attached if taken]
            self._last_start = now
            self.rounds += 1
            self.entities += len(due)
            try:
                await self._run(list(due))
            except asyncio.CancelledError:
                for w, _ in attached:
                    w.future.cancel()
                raise
            except Exception as exc:  # every batch with entities in the round fails with it (and is redelivered)
                for w, _ in attached:
                    self._drop(w)
                    if not w.future.done():
                        w.future.set_exception(exc)
                continue
            for w, taken in attached:
                w.remaining -= taken
                if not w.remaining:
                    self._drop(w)
                    if not w.future.done():
                        w.future.set_result(None)

    def _drop(self, waiter: _Waiter) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)

    async def close(self) -> None:
        """Stop a round in flight (its batches fail: they were not acked and are redelivered)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for w in self._waiters:
            w.future.cancel()
        self._waiters = []
        self._pending = {}
