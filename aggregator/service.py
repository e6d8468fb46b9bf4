"""The aggregator actor: `fraud.score` in, partials onto the JetStream work queue, one reply out.

For each request it splits the batch into partials, publishes each with `Nats-Msg-Id = {request_id}:{index}`
(JetStream drops a re-published duplicate) and the reply subject in a header, then collects the partial
results on its own inbox, counting each partial once. It answers when every partial is in, or just before the
deadline with a reply marked incomplete that names the missing transactions. It never waits past the deadline.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from nats.js import JetStreamContext
from prometheus_client import Counter, Gauge, Histogram

from aggregator.admission import AggregatorAdmission
from aggregator.coalesce import Coalescer
from aggregator.ingest_publisher import IngestPublisher
from aggregator.pending import PendingBatch, split_bounds
from shared import subjects
from shared.degraded import apply_policy
from shared.jetstream import ensure_inference_consumer, ensure_ingest_streams, ensure_streams, partials_owner_notice
from shared.logs import log_fields
from shared.messages import (
    ErrorReply,
    Partial,
    PartialInfo,
    PartialOutcome,
    PartialResult,
    ScoreReply,
    ScoreRequest,
    Transaction,
    TransactionScore,
)
from shared.service import RAW, Context, Service, ServiceError, now_ms
from shared.settings import Settings
from shared.telemetry import MODEL_FAMILY, label_family

REPLY_MARGIN_S = 0.05
"""Reply this long before the deadline, so the incomplete answer reaches the caller before its own timeout."""


class AggregatorMetrics:
    def __init__(self, service: Service) -> None:
        r = service.registry
        self.in_flight = Gauge("fraudmesh_partials_in_flight", "Partials published and not yet answered.", registry=r)
        self.published = Counter("fraudmesh_partials_published", "Partials published to the work queue.", registry=r)
        self.redeliveries = Counter(
            "fraudmesh_partial_redeliveries",
            "Partial results that came from a redelivery (a worker died or timed out before acking).",
            registry=r,
        )
        self.duplicates = Counter(
            "fraudmesh_partial_results_duplicate",
            "Partial results ignored because already counted.",
            registry=r,
        )
        self.late = Counter(
            "fraudmesh_partial_results_late",
            "Partial results that arrived after their request was answered.",
            registry=r,
        )
        self.requests = Counter(
            "fraudmesh_score_requests", "Scoring requests answered, by outcome.", ["outcome"], registry=r
        )
        self.batch_size = Histogram(
            "fraudmesh_score_batch_size",
            "Transactions per scoring request.",
            buckets=(1, 10, 50, 200, 1000, 5000, 10000),
            registry=r,
        )


class Aggregator(Service):
    name = "aggregator"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.m = AggregatorMetrics(self)
        self.admission = AggregatorAdmission(settings.aggregator_max_in_flight_transactions)
        self.pending: dict[str, PendingBatch] = {}
        self.inbox = subjects.results_subject(self.instance_id)
        self.js: JetStreamContext | None = None
        self.ingest: IngestPublisher | None = None
        self.coalescer = Coalescer(
            self._publish_coalesced,
            self._finish,
            window_ms=settings.coalesce_window_ms,
            max_size=settings.partial_size,
            max_inflight=max(2, settings.inference_concurrency * 2),
        )

    async def on_start(self) -> None:
        self.js = self.nc.jetstream(timeout=5.0)
        await ensure_streams(self.js, self.settings)
        await ensure_inference_consumer(self.js, self.settings)
        await ensure_ingest_streams(self.js, self.settings)
        self.ingest = IngestPublisher(self.js, self.registry)
        self.listener(self.inbox, PartialOutcome, self._on_result, name="results", destination=subjects.RESULTS_PREFIX)
        self.listener(
            subjects.max_deliveries_advisory(),
            RAW,
            self._on_max_deliveries,
            queue=subjects.QUEUE_DEAD_LETTERS,
            name="max_deliveries",
        )
        self.dead_letters.expose(subjects.INFERENCE_CONSUMER)
        self.endpoint(subjects.SCORE, ScoreRequest, self.score, queue=subjects.QUEUE_AGGREGATOR, name="score")

    async def on_stop(self) -> None:
        if self.ingest is not None:  # let the scored transactions in flight reach FRAUD_TXNS
            await self.ingest.drain()

    def on_settings(self, settings: Settings) -> None:
        self.admission.max_transactions = settings.aggregator_max_in_flight_transactions
        self.coalescer.reconfigure(window_ms=settings.coalesce_window_ms, max_size=settings.partial_size)

    def health_details(self) -> dict[str, str]:
        ingest = self.ingest.health() if self.ingest is not None else {}
        return {
            "pending_batches": str(len(self.pending)),
            "transactions_in_flight": str(self.admission.in_flight),
            "refused": str(self.admission.refused),
            **ingest,
        }

    # ------------------------------------------------------------------------------------- scoring
    async def score(self, req: ScoreRequest, ctx: Context) -> ScoreReply | ErrorReply:
        started = time.perf_counter()
        txs = req.transactions
        n = len(txs)
        if n > self.settings.max_batch_size:
            raise ServiceError(
                "payload_too_large",
                f"{n} transactions in one request; the limit is {self.settings.max_batch_size}. Split the batch.",
            )
        rid = req.request_id or ctx.request_id or uuid.uuid4().hex
        ctx.request_id = rid
        label_family("fraud")
        self.admission.admit(n)
        try:
            if ctx.reply and ctx.headers.get(subjects.HDR_ACK):
                await self._accepted(ctx.reply)
            return await self._score(req, ctx, rid, started)
        finally:
            self.admission.release(n)

    async def _accepted(self, reply: str) -> None:
        """Tell the caller which instance took its request (subjects.HDR_ACK), so it can watch this instance."""
        headers = {
            subjects.HDR_ACCEPTED_BY: self.instance_id,
            subjects.HDR_SERVICE_ID: self.discovery.id if self.discovery is not None else "",
        }
        await self.nc.publish(reply, b"", headers=headers)

    async def _score(self, req: ScoreRequest, ctx: Context, rid: str, started: float) -> ScoreReply | ErrorReply:
        txs = req.transactions
        n = len(txs)
        for i, tx in enumerate(txs):
            if tx.transaction_id is None:
                tx.transaction_id = f"{rid}-{i}"
        self.m.batch_size.observe(n)
        size = req.partial_size or self.settings.partial_size
        ctx.check_deadline("split")
        timings: dict[str, float] = {}

        if n < size and self.settings.coalesce_window_ms > 0:
            try:
                out = await asyncio.wait_for(
                    self.coalescer.submit(txs, ctx), timeout=max(0.0, ctx.remaining_s() - REPLY_MARGIN_S)
                )
                scores, infos = out.scores, [self._coalesced_info(out.batch, n)]
            except TimeoutError:
                scores, infos = [None] * n, [PartialInfo(index=0, size=n, scored=False)]
        else:
            # The batch id keys the partials (Nats-Msg-Id `{batch_id}:{index}`) and our pending table. It is the
            # request id plus a per-attempt suffix: JetStream dedup then drops a partial this aggregator published
            # twice, but never a client's retry that reuses its request id.
            batch = await self._publish_batch(f"{rid}.{uuid.uuid4().hex[:8]}", txs, split_bounds(n, size), ctx)
            published = time.perf_counter()
            timings["split_publish_ms"] = round((published - started) * 1000.0, 3)
            try:
                await asyncio.wait_for(batch.done.wait(), timeout=max(0.0, ctx.remaining_s() - REPLY_MARGIN_S))
            except TimeoutError:
                pass
            finally:
                self._finish(batch)
            timings["collect_ms"] = round((time.perf_counter() - published) * 1000.0, 3)
            scores, infos = batch.scores(n), batch.infos()
        reply = self._reply(rid, txs, scores, infos, started)
        reply.timings_ms = timings
        final = apply_policy(reply, self.settings.degraded_policy)
        # what the caller was told is what enters the ledger; a refused (policy `fail`) batch is not ingested:
        # the caller retries it
        if self.ingest is not None and req.ingest and isinstance(final, ScoreReply):
            self.ingest.publish_scored(txs, final.results)
        return final

    def _reply(
        self,
        rid: str,
        txs: list[Transaction],
        scores: list[TransactionScore | None],
        infos: list[PartialInfo],
        started: float,
    ) -> ScoreReply:
        missing = [tx.transaction_id or "" for tx, s in zip(txs, scores, strict=True) if s is None]
        complete = not missing
        ages = [s.feature_freshness_sec for s in scores if s is not None and s.feature_freshness_sec is not None]
        self.m.requests.labels("complete" if complete else "incomplete").inc()
        if not complete:
            self.log.warning(
                "answering incomplete",
                extra=log_fields(
                    missing=len(missing),
                    total=len(txs),
                    unscored_partials=[i.index for i in infos if not i.scored],
                ),
            )
        return ScoreReply(
            request_id=rid,
            complete=complete,
            results=scores,
            partials=infos,
            missing_transaction_ids=missing,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            features_computed=sum(s.features_computed for s in scores if s is not None),
            oldest_feature_age_s=max(ages) if ages else None,
        )

    @staticmethod
    def _coalesced_info(batch: PendingBatch, n: int) -> PartialInfo:
        info = batch.infos()[0]
        info.size = n
        return info

    # ----------------------------------------------------------------------------------- publishing
    async def _publish_batch(
        self, batch_id: str, txs: list[Transaction], bounds: list[tuple[int, int]], ctx: Context
    ) -> PendingBatch:
        assert self.js is not None
        batch = PendingBatch(batch_id, bounds)
        self.pending[batch_id] = batch
        count = len(bounds)
        with self.span("aggregator split", **{"fraudmesh.partials": count, "fraudmesh.transactions": len(txs)}):
            acks = []
            enqueued = now_ms()
            for i, (start, end) in enumerate(bounds):
                msg_id = f"{batch_id}:{i}"
                attrs = {"fraudmesh.partial": i, MODEL_FAMILY: "fraud"}
                with self.producer_span(subjects.PARTIALS_SUBJECT, msg_id, **attrs):
                    payload = self.codec.encode(
                        Partial(
                            request_id=batch_id,
                            index=i,
                            count=count,
                            transactions=txs[start:end],
                            enqueued_at=enqueued,
                            family="fraud",
                        )
                    )
                    headers = self.outgoing_headers(
                        ctx, **{subjects.HDR_MSG_ID: msg_id, subjects.HDR_REPLY_TO: self.inbox}
                    )
                    acks.append(await self.js.publish_async(subjects.PARTIALS_SUBJECT, payload, headers=headers))
            try:
                await asyncio.wait_for(asyncio.gather(*acks), timeout=max(0.001, min(5.0, ctx.remaining_s())))
            except Exception as exc:
                self._finish(batch)
                raise ServiceError(
                    "unavailable",
                    f"JetStream did not accept the partials of request {batch_id} ({type(exc).__name__}). "
                    f"Is the {subjects.PARTIALS_STREAM} stream available?",
                    retryable=True,
                ) from None
        self.m.published.inc(count)
        self.m.in_flight.inc(count)
        return batch

    async def _publish_coalesced(self, txs: list[Transaction], ctxs: list[Context]) -> PendingBatch:
        # One partial for many small requests. It carries the LATEST member deadline, so no member is dropped
        # while its own deadline still runs (each member times out on its own in `score`), and the trace of
        # the member that set it.
        last = max(ctxs, key=lambda c: c.deadline_ms)
        return await self._publish_batch(f"co-{uuid.uuid4().hex}", txs, [(0, len(txs))], last)

    def _finish(self, batch: PendingBatch) -> None:
        if self.pending.pop(batch.batch_id, None) is not None:
            self.m.in_flight.dec(batch.outstanding)

    # -------------------------------------------------------------------------------------- results
    async def _on_result(self, outcome: PartialOutcome, _ctx: Context) -> None:
        batch = self.pending.get(outcome.request_id)
        if batch is None:
            self.m.late.inc()
            return
        if batch.accept(outcome):
            self.m.in_flight.dec()
            if isinstance(outcome, PartialResult) and outcome.deliveries > 1:
                self.m.redeliveries.inc()
        else:
            self.m.duplicates.inc()

    async def _on_max_deliveries(self, data: bytes, _ctx: Context) -> None:
        """A partial reached max_deliver without an ack (its workers kept dying or timing out): dead-letter it
        (which tells its owner), then remove it from the work queue."""
        assert self.js is not None
        advisory = json.loads(data)
        seq = int(advisory["stream_seq"])
        raw = await self.js.get_msg(subjects.PARTIALS_STREAM, seq)
        await self.dead_letters.send(
            consumer=subjects.INFERENCE_CONSUMER,
            data=raw.data or b"",
            headers=dict(raw.headers or {}),
            reason=f"not acked after {advisory.get('deliveries')} deliveries (workers crashed or timed out)",
            kind="max_deliveries",
            notice=partials_owner_notice(),
        )
        await self.js.delete_msg(subjects.PARTIALS_STREAM, seq)
