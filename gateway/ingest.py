"""POST /transactions, POST /labels and POST /events: ingestion over HTTP for systems without NATS.

Each item becomes one message on FRAUD_TXNS (FRAUD_LABELS) with `Nats-Msg-Id` = its transaction id (on FRAUD_CLICKS
with `Nats-Msg-Id` = its event id), exactly as a NATS publisher would send it (docs/nats-api.md). The answer is 202
once JetStream has stored every message: `accepted` counts the messages stored, `duplicates` those JetStream dropped
because the same id came within its dedupe window (the ledger and the event log are idempotent on the id as well, so
re-sending a whole batch is safe).
If JetStream fails part-way the answer is 503 and the batch can be re-sent as it is.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import msgspec
from litestar import Controller, Request, Response, post

from gateway.bridge import BridgeError, NatsBridge
from gateway.openapi import body_operation
from gateway.openapi_spec import error_responses
from gateway.validation import BodyError
from shared import subjects
from shared.click_messages import ClickBatch
from shared.ingest_messages import (
    MAX_INGEST_BATCH,
    MSGPACK,
    IngestAccepted,
    Label,
    LabelBatch,
    TxnIngest,
    TxnIngestBatch,
    encode_for_stream,
    stream_msg_id,
)
from shared.messages import ErrorReply, field_error_of

B = TypeVar("B", TxnIngestBatch, LabelBatch, ClickBatch)
ACK_TIMEOUT_S = 10.0
_txn_decoder = msgspec.json.Decoder(TxnIngestBatch)
_label_decoder = msgspec.json.Decoder(LabelBatch)
_click_decoder = msgspec.json.Decoder(ClickBatch)
_msgpack = msgspec.msgpack.Encoder()


def _decode(body: bytes, decoder: msgspec.json.Decoder[B], what: str) -> B:
    if not body.strip():
        raise BodyError([field_error_of(ValueError("The request body is empty; send a JSON object."))])
    try:
        return decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise BodyError(
            [field_error_of(exc)],
            f"The {what} batch is invalid (1 to {MAX_INGEST_BATCH} items; see docs/nats-api.md for the fields).",
        ) from None


async def publish_all(
    bridge: NatsBridge, subject: str, stream: str, items: list[TxnIngest] | list[Label], request_id: str
) -> IngestAccepted:
    keyed = [(stream_msg_id(item.transaction_id), encode_for_stream(item)) for item in items]
    return await publish_keyed(bridge, subject, stream, keyed, request_id, "transaction_id")


async def publish_keyed(
    bridge: NatsBridge, subject: str, stream: str, keyed: list[tuple[str, bytes]], request_id: str, key: str
) -> IngestAccepted:
    """Publish each (Nats-Msg-Id, msgpack body) and wait for every ack; `key` names the id field for the client."""
    js = bridge.require_nc(request_id).jetstream(timeout=ACK_TIMEOUT_S)
    futures = []
    try:
        for msg_id, body in keyed:
            headers = {subjects.HDR_MSG_ID: msg_id, subjects.HDR_CONTENT_TYPE: MSGPACK}
            futures.append(await js.publish_async(subject, body, headers=headers))
        acks = await asyncio.wait_for(asyncio.gather(*futures), ACK_TIMEOUT_S)
    except Exception as exc:
        for f in futures:
            f.cancel()
        raise BridgeError(
            ErrorReply(
                code="unavailable",
                request_id=request_id,
                retryable=True,
                message=f"JetStream did not store the batch ({type(exc).__name__}); is the {stream} stream up? "
                f"Re-send the same batch: it is idempotent on {key}.",
            )
        ) from None
    duplicates = sum(1 for a in acks if a.duplicate)
    return IngestAccepted(accepted=len(acks) - duplicates, duplicates=duplicates, stream=stream)


class IngestController(Controller):
    path = "/"
    tags = ["ingestion"]

    @post(
        "/transactions",
        operation_class=body_operation(TxnIngestBatch),
        summary="Ingest 1 to 10,000 transactions without scoring them",
        status_code=202,
        responses=error_responses(503),
    )
    async def transactions(
        self, request: Request[Any, Any, Any], bridge: NatsBridge, request_id: str
    ) -> Response[IngestAccepted]:
        """Each transaction (with `transaction_id` and `timestamp`) enters FRAUD_TXNS; the feature workers write it
        to the ledger and the graph and update the online features of its card, merchant, device and IP."""
        rid = request_id
        body = _decode(await request.body(), _txn_decoder, "transactions")
        for t in body.transactions:
            t.source = "api"
        out = await publish_all(bridge, subjects.TXNS_SUBJECT, subjects.TXNS_STREAM, body.transactions, rid)
        return Response(out, status_code=202, headers={"X-Request-Id": rid})

    @post(
        "/labels",
        operation_class=body_operation(LabelBatch),
        summary="Ingest 1 to 10,000 labels (chargebacks, confirmations)",
        status_code=202,
        responses=error_responses(503),
    )
    async def labels(
        self, request: Request[Any, Any, Any], bridge: NatsBridge, request_id: str
    ) -> Response[IngestAccepted]:
        """Each label (`transaction_id`, `label` fraud|legit, optional `fraud_kind`, `label_time`) enters
        FRAUD_LABELS; a fraud label updates the features of the card, its merchant, and its devices, IPs and
        2-hop neighbours. A label for a transaction not ingested yet waits for it."""
        rid = request_id
        body = _decode(await request.body(), _label_decoder, "labels")
        out = await publish_all(bridge, subjects.LABELS_SUBJECT, subjects.LABELS_STREAM, body.labels, rid)
        return Response(out, status_code=202, headers={"X-Request-Id": rid})

    @post(
        "/events",
        operation_class=body_operation(ClickBatch),
        summary="Ingest 1 to 10,000 clickstream events (views, add-to-carts, purchases) for personalization",
        status_code=202,
        responses=error_responses(503),
    )
    async def events(
        self, request: Request[Any, Any, Any], bridge: NatsBridge, request_id: str
    ) -> Response[IngestAccepted]:
        """Each event (`event_id`, `user_id`, `item_id`, `session_id`, `event_type`, `timestamp`, `item_category`,
        `item_price`) enters FRAUD_CLICKS; the feature workers add it to the event log and bring the user, item and
        session features that `/score/personalization` reads up to date. Re-sending a batch is safe (idempotent on
        `event_id`)."""
        rid = request_id
        body = _decode(await request.body(), _click_decoder, "events")
        keyed = [(e.event_id, _msgpack.encode(e)) for e in body.events]
        out = await publish_keyed(bridge, subjects.CLICKS_SUBJECT, subjects.CLICKS_STREAM, keyed, rid, "event_id")
        return Response(out, status_code=202, headers={"X-Request-Id": rid})
