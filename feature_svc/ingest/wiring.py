"""The ingest consumers of one feature worker on the service base (`Service.consumer`, micro-batch form), and the
ingestor's background passes, started and stopped together."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import asyncpg
from nats.js import JetStreamContext

from feature_svc.graph import GraphStore
from feature_svc.ingest.decoding import StreamDecoder
from feature_svc.ingest.ingestor import Ingestor
from feature_svc.online import OnlineStore
from shared import subjects
from shared.consumer import Consumer
from shared.ingest_messages import Label, TxnIngest
from shared.jetstream import ensure_ingest_consumers, ensure_ingest_streams, ingest_policy

if TYPE_CHECKING:
    from shared.service import Service

TXNS = "ingest_txns"
LABELS = "ingest_labels"


class IngestWiring:
    def __init__(self, service: Service, pool: asyncpg.Pool, graph: GraphStore, online: OnlineStore) -> None:
        self.service = service
        settings = service.settings
        self.ingestor = Ingestor(
            pool,
            graph,
            online,
            service.registry,
            check_interval_s=settings.consistency_check_interval_s,
            refresh_interval_s=settings.ingest_refresh_interval_ms / 1000.0,
            entity_refresh_interval_s=settings.ingest_entity_refresh_interval_ms / 1000.0,
        )
        self._started = False

    async def start(self, js: JetStreamContext) -> None:
        """Declare the streams and durable consumers, register both consumers on the service (they start with
        it), and start the background passes. Call from `on_start`."""
        settings = self.service.settings
        await ensure_ingest_streams(js, settings)
        await ensure_ingest_consumers(js)
        common: dict[str, Any] = {
            "batch_size": settings.ingest_batch_size,
            "max_wait_s": settings.ingest_max_wait_ms / 1000.0,
            "linger_s": settings.ingest_linger_ms / 1000.0,
            "policy": ingest_policy(),
        }
        self.service.consumer(
            name=TXNS,
            stream=subjects.TXNS_STREAM,
            durable=subjects.TXNS_CONSUMER,
            message_type=TxnIngest,
            batch_handler=self.ingestor.on_txns,
            concurrency=settings.ingest_concurrency,
            **common,
        )
        self.service.consumer(
            name=LABELS,
            stream=subjects.LABELS_STREAM,
            durable=subjects.LABELS_CONSUMER,
            message_type=Label,
            batch_handler=self.ingestor.on_labels,
            **common,
        )
        decoders: dict[str, Any] = {TXNS: StreamDecoder(TxnIngest), LABELS: StreamDecoder(Label)}
        for route in self.service.routes:
            if isinstance(route, Consumer) and route.name in decoders:
                route.decoder = decoders[route.name]  # JSON or msgpack (feature_svc/ingest/decoding.py)
        self.ingestor.start_background(js)
        self._started = True

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self.ingestor.stop_background()

    def health(self) -> dict[str, str]:
        return {"ingest": "on", **self.ingestor.health()}
