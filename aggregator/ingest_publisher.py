"""Publish every scored transaction to FRAUD_TXNS once its score is known, without ever failing the reply.

The aggregator calls `publish_scored(transactions, results)` after it built a reply (and only when the request
did not say `ingest: false`). Publishing runs in the background: the reply never waits for it. Each transaction
is one message (`Nats-Msg-Id` = its transaction id, msgpack), with the score and model version it got. A publish
that JetStream does not acknowledge is retried with backoff (`BACKOFF_S`); what still fails is counted in
`fraudmesh_ingest_publish_failed_total` and shown in the aggregator's health (`ingest_publish`), and logged with
the transaction ids, so an operator can re-send them (POST /transactions is idempotent on the id).
Unscored transactions (null result) are published too, without a score: the ledger must see every transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry, Counter

from shared import subjects
from shared.ingest_messages import MSGPACK, TxnIngest, encode_for_stream, stream_msg_id
from shared.messages import Transaction, TransactionScore

log = logging.getLogger("fraudmesh.aggregator.ingest")

BACKOFF_S = (0.1, 0.5, 2.0, 5.0)
"""Waits before each retry (so 4 retries)."""
MAX_IN_FLIGHT = 64
"""Background publish tasks at once; beyond it new batches wait for a slot (never dropped)."""
ACK_TIMEOUT_S = 5.0


def to_ingest(tx: Transaction, score: TransactionScore | None, received: datetime) -> TxnIngest:
    return TxnIngest(
        transaction_id=tx.transaction_id or "",
        timestamp=tx.timestamp or received,
        card_id=tx.card_id,
        transaction_amount=tx.transaction_amount,
        merchant_id=tx.merchant_id,
        mcc_code=tx.mcc_code,
        country_code=tx.country_code,
        device_id=tx.device_id,
        ip_address=tx.ip_address,
        currency=tx.currency,
        channel=tx.channel,
        fraud_score=score.fraud_score if score is not None else None,
        model_version=score.model_version if score is not None else "",
        source="score",
        published_at=time.time(),
    )


class IngestPublisher:
    def __init__(
        self, js: JetStreamContext, registry: CollectorRegistry, *, backoff_s: Sequence[float] = BACKOFF_S
    ) -> None:
        self.js = js
        self.backoff_s = tuple(backoff_s)
        self.published = Counter(
            "fraudmesh_ingest_published", "Scored transactions published to FRAUD_TXNS.", registry=registry
        )
        self.retried = Counter(
            "fraudmesh_ingest_publish_retries", "Publishes to FRAUD_TXNS retried after a failure.", registry=registry
        )
        self.failed = Counter(
            "fraudmesh_ingest_publish_failed",
            "Scored transactions NOT published to FRAUD_TXNS after every retry (re-send them; see the log).",
            registry=registry,
        )
        self.duplicates = Counter(
            "fraudmesh_ingest_publish_duplicates",
            "Publishes JetStream dropped as a duplicate transaction id (within its dedupe window).",
            registry=registry,
        )
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()
        self.failures = 0
        self.last_error = ""

    def publish_scored(self, txs: Sequence[Transaction], results: Sequence[TransactionScore | None]) -> None:
        """Schedule the publish of a scored batch and return at once."""
        received = datetime.now(UTC)
        msgs = [to_ingest(tx, s, received) for tx, s in zip(txs, results, strict=True) if tx.transaction_id]
        if not msgs:
            return
        task = asyncio.create_task(self._publish(msgs))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, msgs: list[TxnIngest]) -> None:
        async with self._slots:
            todo = msgs
            for attempt in range(len(self.backoff_s) + 1):
                todo = await self._try(todo)
                if not todo:
                    return
                if attempt < len(self.backoff_s):
                    self.retried.inc(len(todo))
                    await asyncio.sleep(self.backoff_s[attempt])
            self.failed.inc(len(todo))
            self.failures += len(todo)
            log.error(
                "scored transactions not ingested after %d retries (re-send them with POST /transactions): %s",
                len(self.backoff_s),
                [m.transaction_id for m in todo][:100],
            )

    async def _try(self, msgs: list[TxnIngest]) -> list[TxnIngest]:
        """Publish all; return those JetStream did not acknowledge."""
        futures = []
        failed: list[TxnIngest] = []
        for m in msgs:
            headers = {subjects.HDR_MSG_ID: stream_msg_id(m.transaction_id), subjects.HDR_CONTENT_TYPE: MSGPACK}
            try:
                futures.append(
                    (m, await self.js.publish_async(subjects.TXNS_SUBJECT, encode_for_stream(m), headers=headers))
                )
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                failed.append(m)
        for m, fut in futures:
            try:
                ack = await asyncio.wait_for(fut, ACK_TIMEOUT_S)
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                failed.append(m)
                continue
            self.published.inc()
            if ack.duplicate:
                self.duplicates.inc()
        return failed

    def health(self) -> dict[str, str]:
        state = "ok" if not self.failures else f"{self.failures} failed"
        out = {"ingest_publish": state, "ingest_publish_in_flight": str(len(self._tasks))}
        if self.last_error:
            out["ingest_publish_last_error"] = self.last_error[:200]
        return out

    async def drain(self, timeout: float = 10.0) -> None:
        """On stop: let the publishes in flight finish."""
        if self._tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait(set(self._tasks), timeout=timeout)
