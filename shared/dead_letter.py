"""The one way a message is dead-lettered, and the one counter of it.

`DeadLetters.send` publishes the message, unchanged, to the dead-letter stream with the reason in the
`Fraudmesh-Dead-Letter-Reason` header (its `Nats-Msg-Id` removed, so the DLQ does not deduplicate it away),
then tells its owner (the `Fraudmesh-Reply-To` header, when the policy knows how to say it), then counts it in
`fraudmesh_dead_lettered_total{service, consumer, reason}`. Consumers call it for poison messages; the
aggregator calls it for partials the server stopped redelivering (max-deliveries advisory).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from prometheus_client import Counter

from shared import subjects
from shared.logs import log_fields
from shared.policy import OwnerNotice

if TYPE_CHECKING:
    from shared.service import Service

log = logging.getLogger("fraudmesh.dead_letter")

REASONS = ("undecodable", "poison", "dead_lettered", "max_deliveries")


class DeadLetters:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.counter = Counter(
            "fraudmesh_dead_lettered",
            "Messages moved to a dead-letter stream, by consumer and reason (undecodable, poison, dead_lettered: "
            "failed on its last delivery, max_deliveries: never acked).",
            ["service", "consumer", "reason"],
            registry=service.registry,
        )

    def expose(self, consumer: str) -> None:
        """Show the series at 0 from the start, so that increase() sees the first one."""
        for reason in REASONS:
            self.counter.labels(self.service.name, consumer, reason)

    async def send(
        self,
        *,
        consumer: str,
        data: bytes,
        headers: Mapping[str, str],
        reason: str,
        kind: str,
        subject: str = subjects.DLQ_SUBJECT,
        notice: OwnerNotice | None = None,
    ) -> None:
        """Dead-letter one message. Raises when the DLQ publish fails (then the caller must not drop the
        message: it naks it instead, and it comes back)."""
        svc = self.service
        dlq_headers = {k: v for k, v in headers.items() if k != subjects.HDR_MSG_ID}
        dlq_headers[subjects.HDR_DLQ_REASON] = reason[:500]
        await svc.nc.jetstream().publish(subject, data, headers=dlq_headers)
        log.error(
            "dead-lettered",
            extra=log_fields(consumer=consumer, reason=reason[:500], dead_letter_subject=subject),
        )
        await self.tell_owner(consumer=consumer, data=data, headers=headers, reason=reason, notice=notice)
        self.counter.labels(svc.name, consumer, kind).inc()

    async def tell_owner(
        self, *, consumer: str, data: bytes, headers: Mapping[str, str], reason: str, notice: OwnerNotice | None
    ) -> None:
        """Tell the message's owner (its `Fraudmesh-Reply-To`) that it will not be handled. Never raises."""
        reply_to = headers.get(subjects.HDR_REPLY_TO)
        if not reply_to or notice is None:
            return
        svc = self.service
        try:
            message = notice(data, reason)
        except Exception as exc:
            log.warning("owner notice not built", extra=log_fields(consumer=consumer, error=repr(exc)))
            return
        if message is not None:
            try:
                await svc.nc.publish(reply_to, svc.codec.encode(message), headers=svc.outgoing_headers())
            except Exception as exc:
                log.warning("owner not told", extra=log_fields(consumer=consumer, error=repr(exc)))
