"""The ingestor of a feature worker: the micro-batch handlers of FRAUD_TXNS and FRAUD_LABELS.

For each micro-batch, in this order, and acked by the consumer only after all of it:
1. ledger rows and graph edges (idempotent on transaction_id, feature_svc/ingest/ledger_writer.py), and the
   parked labels of the new transactions;
2. the online features of every entity the batch touched directly (card, merchant, device, IP of each new
   transaction; card, merchant, and for a fraud label the devices and IPs of its card and the cards on those),
   recomputed from the ledger as of now and written to Redis unless a newer computation is there, in a refresh
   round shared with the worker's other batches in flight (feature_svc/ingest/coalesce.py: a busy merchant
   touched by every batch is recomputed once per round, not once per batch);
3. the freshness histogram (JetStream publish time to visible in Redis) for every new message.
The second-hand graph effects of transactions (sharing counts of the other cards on a device or IP that gained a
card, i.e. a new edge) go to the deferred pass, which refreshes them every `DEFERRED_PERIOD_S` (the lagging
class of the registry).
A worker killed anywhere in a batch acked nothing of it: the batch is redelivered and, the writes being
idempotent, counted once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter as Tally
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

import asyncpg
from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from feature_svc.compute import Entity
from feature_svc.definitions import LAGGING_S
from feature_svc.graph import GraphStore
from feature_svc.ingest import touched
from feature_svc.ingest.check import confirmed_check
from feature_svc.ingest.coalesce import RefreshCoalescer
from feature_svc.ingest.deferred import DeferredQueue
from feature_svc.ingest.ledger_writer import drop_pending_labels, take_pending_labels, write_labels, write_transactions
from feature_svc.ingest.refresh import refresh
from feature_svc.online import OnlineStore
from shared import subjects
from shared.ingest_messages import Label, TxnIngest

if TYPE_CHECKING:
    from shared.context import Delivered, Delivery

M = TypeVar("M", TxnIngest, Label)
log = logging.getLogger("fraudmesh.ingest")

DEFERRED_PERIOD_S = 1.0
DEFERRED_SHARE = 0.2
"""Most of the worker's time the deferred pass takes while it has work: after each chunk it pauses (1 - share) /
share times as long as the chunk took. A hub (a shared device, a carrier IP) gaining cards can ask for far more
refreshes per second than the direct path (up to `MAX_NEIGHBOURS` cards per new edge): then the lagging features
lag more instead of the 1-second ones."""
DEFERRED_BATCH = 500
DEFERRED_CHUNK = 100
"""Cards per refresh call of the deferred pass (one compute and one Redis write each)."""
DEFERRED_YIELD_S = 0.25
"""Before each chunk, the deferred pass waits up to this long for the worker's direct micro-batches to finish: the
1-second features go first, the lagging ones (10 s) take the gaps, and at least one chunk per wait."""
LAG_PERIOD_S = 2.0
RECENT = 5000
"""Recently touched entities kept for the periodic consistency sample."""
CHECK_SAMPLE = 50
FRESHNESS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "fraudmesh_ingest_messages",
            "Ingested stream messages by stream and outcome (new, duplicate, parked: a label whose transaction "
            "is not in the ledger yet).",
            ["stream", "outcome"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "fraudmesh_ingest_batch_seconds",
            "Time to apply one micro-batch (ledger, graph, online features).",
            ["stream"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.freshness = Histogram(
            "fraudmesh_feature_freshness_seconds",
            "Ingest to visible: from JetStream storing a transaction or label to its entities' online features "
            "including it, by freshness class (direct: the 1-second features; deferred: the lagging graph ones).",
            ["path"],
            buckets=FRESHNESS_BUCKETS,
            registry=registry,
        )
        self.refreshed = Counter(
            "fraudmesh_ingest_entities_refreshed",
            "Entities whose online features the ingestor recomputed, by path (direct: once per refresh round, "
            "however many batches of the round touched them; deferred).",
            ["path"],
            registry=registry,
        )
        self.rounds = Counter(
            "fraudmesh_ingest_refresh_rounds",
            "Refresh rounds of the direct path: each recomputes the entities of every micro-batch that arrived "
            "since the previous round began (feature_svc/ingest/coalesce.py).",
            registry=registry,
        )
        self.lag = Gauge(
            "fraudmesh_ingest_consumer_lag",
            "Messages of the stream not yet acked by the feature workers' durable consumer (pending + in flight).",
            ["stream"],
            registry=registry,
        )
        self.mismatches = Counter(
            "fraudmesh_feature_consistency_mismatches",
            "Online feature values that differ from a recompute from the ledger as of their computed_at.",
            ["entity_type"],
            registry=registry,
        )
        self.checked = Counter(
            "fraudmesh_feature_consistency_checked",
            "Entities compared by the periodic consistency check.",
            registry=registry,
        )
        for stream in (subjects.TXNS_STREAM, subjects.LABELS_STREAM):
            self.lag.labels(stream)
            for outcome in ("new", "duplicate", "parked"):
                self.messages.labels(stream, outcome)
        for path in ("direct", "deferred"):
            self.freshness.labels(path)
            self.refreshed.labels(path)
        for etype in ("card", "merchant", "device", "ip"):
            self.mismatches.labels(etype)


def published_at(delivery: Delivery, default: float) -> float:
    """When JetStream stored the message (epoch seconds)."""
    msg = delivery.msg
    if msg is None:
        return default
    try:
        return float(msg.metadata.timestamp.timestamp())
    except Exception:  # not a JetStream message (tests): no publish time
        return default


class Ingestor:
    """The ingest handlers and background passes of one feature worker (see the module docstring)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        graph: GraphStore,
        online: OnlineStore,
        registry: CollectorRegistry,
        *,
        check_interval_s: float = 60.0,
        refresh_interval_s: float = 0.0,
        entity_refresh_interval_s: float = 0.0,
    ) -> None:
        self.pool = pool
        self.graph = graph
        self.online = online
        self.m = IngestMetrics(registry)
        self.check_interval_s = check_interval_s
        self.recent: deque[Entity] = deque(maxlen=RECENT)
        self.deferred = DeferredQueue(online.redis, online.prefix)
        self._deferred_size = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.last_error = ""
        self._direct = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.coalescer = RefreshCoalescer(self._refresh_direct, refresh_interval_s, entity_refresh_interval_s)
        self._in_ledger: Tally[Entity] = Tally()
        """Entities of the transactions of the batches waiting for a refresh round: their ledger rows are
        committed, so the round needs no known-entities query for them (counted per batch: several may share one)."""

    async def _refresh_direct(self, entities: list[Entity]) -> None:
        await refresh(self.pool, self.graph, self.online, entities, in_ledger=self._in_ledger)
        self.m.refreshed.labels("direct").inc(len(entities))
        self.m.rounds.inc()

    # ------------------------------------------------------------------------------------ handlers
    @contextlib.contextmanager
    def _direct_batch(self) -> Iterator[None]:
        """Marks a direct micro-batch in flight (the deferred pass gives way to it)."""
        self._direct += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._direct -= 1
            if self._direct == 0:
                self._idle.set()

    async def on_txns(self, batch: list[Delivered[TxnIngest]]) -> None:
        with self._direct_batch():
            await self._on_txns(batch)

    async def on_labels(self, batch: list[Delivered[Label]]) -> None:
        with self._direct_batch():
            await self._on_labels(batch)

    async def _on_txns(self, batch: list[Delivered[TxnIngest]]) -> None:
        started = time.perf_counter()
        txns = [d.message for d in batch]
        result = await write_transactions(self.pool, self.graph, txns)
        # a redelivered message may have been written by a worker that died before refreshing: refresh it too
        again = [d.message for d in batch if d.delivery.deliveries > 1]
        ids = list(dict.fromkeys(t.transaction_id for t in txns))
        parked = await take_pending_labels(self.pool, ids)
        entities = touched.of_transactions([*result.new, *again])
        written = entities.copy()
        if parked:
            labels = await write_labels(self.pool, self.graph, parked)
            entities += touched.of_labels(labels.new)
            label_cards = [r.card_id for r in labels.new if r.is_fraud]
            if label_cards:
                entities += await touched.graph_neighbours(self.graph, label_cards)
        self._in_ledger.update(written)
        try:
            await self.coalescer.refresh(entities)
        finally:
            self._in_ledger.subtract(written)
            for e in written:
                if self._in_ledger[e] <= 0:
                    del self._in_ledger[e]
        # the other cards on a device or IP change only when it gains a card; a redelivered batch may have been
        # written (edges included) by a worker that died before queueing them: queue all of its nodes
        await self.deferred.add([*result.new_links, *touched.devices_and_ips(again)])
        if parked:
            await drop_pending_labels(self.pool, [lb.transaction_id for lb in parked])
        self._after(subjects.TXNS_STREAM, batch, {t.transaction_id for t in result.new}, entities, started)

    async def _on_labels(self, batch: list[Delivered[Label]]) -> None:
        started = time.perf_counter()
        result = await write_labels(self.pool, self.graph, [d.message for d in batch])
        entities = touched.of_labels(result.new)
        fraud_cards = [r.card_id for r in result.new if r.is_fraud]
        if fraud_cards:
            entities += await touched.graph_neighbours(self.graph, fraud_cards)
        await self.coalescer.refresh(entities)
        self.m.messages.labels(subjects.LABELS_STREAM, "parked").inc(len(result.waiting))
        new_ids = {r.transaction_id for r in result.new}
        self._after(subjects.LABELS_STREAM, batch, new_ids, entities, started)

    def _after(
        self,
        stream: str,
        batch: list[Delivered[TxnIngest]] | list[Delivered[Label]],
        new_ids: set[str],
        entities: list[Entity],
        started: float,
    ) -> None:
        now = time.time()
        new = 0
        for d in batch:
            if d.message.transaction_id in new_ids:
                new += 1
                self.m.freshness.labels("direct").observe(max(0.0, now - published_at(d.delivery, now)))
        self.m.messages.labels(stream, "new").inc(new)
        self.m.messages.labels(stream, "duplicate").inc(max(0, len(batch) - new))
        self.m.batch_seconds.labels(stream).observe(time.perf_counter() - started)
        self.recent.extend(entities)

    # ------------------------------------------------------------------------------- background
    def start_background(self, js: JetStreamContext) -> None:
        self._tasks = [
            asyncio.create_task(self._every(DEFERRED_PERIOD_S, self.deferred_pass)),
            asyncio.create_task(self._every(LAG_PERIOD_S, lambda: self.update_lag(js))),
        ]
        if self.check_interval_s > 0:
            self._tasks.append(asyncio.create_task(self._every(self.check_interval_s, self.periodic_check)))

    async def stop_background(self) -> None:
        await self.coalescer.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _every(self, period: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                await job()
            except Exception as exc:  # a background job never dies: it says why and tries again
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("ingest background job failed: %s", self.last_error)

    async def deferred_pass(self) -> None:
        """Refresh the other cards on the devices and IPs that gained a card (the lagging features), the oldest
        `DEFERRED_BATCH` queue entries at a time, until the queue is empty. A card whose online entry was computed
        after the newest of those entries was queued (a transaction of its own refreshed it since) already
        includes the new edges and is skipped; the others are refreshed `DEFERRED_CHUNK` at a time, each chunk
        after the direct micro-batches in flight (or `DEFERRED_YIELD_S`) and followed by a pause, so that a long pass
        takes at most `DEFERRED_SHARE` of the worker's time and the 1-second features stay fresh."""
        while True:
            entries = await self.deferred.oldest(DEFERRED_BATCH)
            if not entries:
                self._deferred_size = 0
                return
            cards = await touched.cards_on(self.graph, [node for node, _ in entries], exclude=set())
            newest = max(touched_at for _, touched_at in entries)
            computed = await self.deferred.computed_at([self.online.key(t, i) for t, i in cards])
            stale = [c for c, at in zip(cards, computed, strict=True) if at is None or at < newest]
            for start in range(0, len(stale), DEFERRED_CHUNK):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._idle.wait(), DEFERRED_YIELD_S)
                began = time.monotonic()
                await refresh(self.pool, self.graph, self.online, stale[start : start + DEFERRED_CHUNK])
                await asyncio.sleep((time.monotonic() - began) * (1.0 - DEFERRED_SHARE) / DEFERRED_SHARE)
            await self.deferred.done(entries)
            now = time.time()
            for _, touched_at in entries:
                self.m.freshness.labels("deferred").observe(max(0.0, now - touched_at))
            self.m.refreshed.labels("deferred").inc(len(stale))
            self._deferred_size = await self.deferred.size()

    async def update_lag(self, js: JetStreamContext) -> None:
        for stream, durable in (
            (subjects.TXNS_STREAM, subjects.TXNS_CONSUMER),
            (subjects.LABELS_STREAM, subjects.LABELS_CONSUMER),
        ):
            info = await js.consumer_info(stream, durable)
            self.m.lag.labels(stream).set((info.num_pending or 0) + (info.num_ack_pending or 0))

    async def periodic_check(self) -> None:
        if not self.recent:
            return
        sample = random.sample(list(dict.fromkeys(self.recent)), min(CHECK_SAMPLE, len(set(self.recent))))
        report = await confirmed_check(self.pool, self.graph, self.online, sample, LAGGING_S)
        self.m.checked.inc(report.checked)
        for mismatch in report.mismatches:
            self.m.mismatches.labels(mismatch.entity_type).inc()
        if report.mismatches:
            log.error("online features differ from the ledger: %s", report.mismatches[:5])

    def health(self) -> dict[str, str]:
        out = {"ingest_deferred": str(self._deferred_size)}
        if self.last_error:
            out["ingest_last_error"] = self.last_error
        return out
