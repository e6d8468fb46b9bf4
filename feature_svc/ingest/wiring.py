"""The ingest streams' consumers of one feature worker, and the background passes, started and stopped together."""

from __future__ import annotations

import asyncpg
from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry

from feature_svc.graph import GraphStore
from feature_svc.ingest.consumer import PullLoop
from feature_svc.ingest.ingestor import Ingestor
from feature_svc.online import OnlineStore
from shared import subjects
from shared.ingest_messages import Label, TxnIngest
from shared.jetstream import ensure_ingest_streams
from shared.settings import Settings


class IngestWiring:
    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        graph: GraphStore,
        online: OnlineStore,
        registry: CollectorRegistry,
    ) -> None:
        self.settings = settings
        self.ingestor = Ingestor(pool, graph, online, registry, check_interval_s=settings.consistency_check_interval_s)
        self.loops: list[PullLoop[TxnIngest] | PullLoop[Label]] = []
        self._stopped = False

    async def start(self, js: JetStreamContext) -> None:
        await ensure_ingest_streams(js, self.settings)
        size, wait = self.settings.ingest_batch_size, self.settings.ingest_max_wait_ms / 1000.0
        txns: PullLoop[TxnIngest] = PullLoop(
            js,
            stream=subjects.TXNS_STREAM,
            subject=subjects.TXNS_SUBJECT,
            durable=subjects.TXNS_CONSUMER,
            message_type=TxnIngest,
            batch_handler=self.ingestor.on_txns,
            batch_size=size,
            max_wait_s=wait,
            concurrency=self.settings.ingest_concurrency,
        )
        labels: PullLoop[Label] = PullLoop(
            js,
            stream=subjects.LABELS_STREAM,
            subject=subjects.LABELS_SUBJECT,
            durable=subjects.LABELS_CONSUMER,
            message_type=Label,
            batch_handler=self.ingestor.on_labels,
            batch_size=size,
            max_wait_s=wait,
        )
        self.loops = [txns, labels]
        for loop in self.loops:
            await loop.start()
        self.ingestor.start_background(js)

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for loop in self.loops:
            await loop.stop()
        await self.ingestor.stop_background()

    def health(self) -> dict[str, str]:
        return {"ingest": "on", **self.ingestor.health()}
