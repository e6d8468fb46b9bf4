"""The messages of the live path: transactions and labels entering the FRAUD_TXNS and FRAUD_LABELS streams.

One message is one transaction (`fraud.txns.ingest`) or one label (`fraud.labels.ingest`), msgpack or JSON
(by the `Content-Type` header: `application/json`, else msgpack), with `Nats-Msg-Id` = the transaction id so
JetStream drops a re-publish within the dedupe window. The ledger write is idempotent on the transaction id as
well, so a replay outside the window never counts twice. Schema rules as in shared/messages.py.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from shared.messages import Transaction, TransactionId, encode_key

JSON = "application/json"
MSGPACK = "application/msgpack"
MAX_INGEST_BATCH = 10_000
"""Most transactions (or labels) in one POST /transactions (POST /labels)."""

IngestSource = Literal["score", "api", "nats"]


class TxnIngest(Transaction, kw_only=True, omit_defaults=True):
    """A transaction for the ledger: the scoring fields, with `transaction_id` and `timestamp` required, and the
    score it got when it was scored live (absent for transactions ingested without scoring)."""

    transaction_id: TransactionId
    timestamp: datetime
    fraud_score: Annotated[float, Meta(ge=0, le=1)] | None = None
    model_version: str = ""
    source: IngestSource = "nats"
    published_at: float = 0.0
    """Epoch seconds when the producer published it (for the freshness histogram); 0 when unknown."""


class Label(Struct, kw_only=True, omit_defaults=True):
    """A verdict on a past transaction: a chargeback (`fraud`) or a confirmation (`legit`)."""

    transaction_id: TransactionId
    label: Literal["fraud", "legit"]
    fraud_kind: Annotated[str, Meta(max_length=64, pattern=r"^[A-Za-z0-9_\-]*$")] = ""
    label_time: datetime | None = None
    """When the verdict became known; the ingestor uses the time it takes the label when absent."""
    published_at: float = 0.0


class TxnIngestBatch(Struct, kw_only=True):
    """Body of POST /transactions."""

    transactions: Annotated[list[TxnIngest], Meta(min_length=1, max_length=MAX_INGEST_BATCH)]


class LabelBatch(Struct, kw_only=True):
    """Body of POST /labels."""

    labels: Annotated[list[Label], Meta(min_length=1, max_length=MAX_INGEST_BATCH)]


class IngestAccepted(Struct, kw_only=True):
    """Reply of POST /transactions and POST /labels (202): what JetStream took, and what it dropped as a
    duplicate id within its dedupe window."""

    accepted: int
    duplicates: int
    stream: str


_json_encoder = msgspec.json.Encoder()
_msgpack_encoder = msgspec.msgpack.Encoder()


def encode_for_stream(msg: TxnIngest | Label, content_type: str = MSGPACK) -> bytes:
    return _json_encoder.encode(msg) if content_type == JSON else _msgpack_encoder.encode(msg)


def decode_from_stream(
    data: bytes, content_type: str | None, type_: type[TxnIngest] | type[Label]
) -> TxnIngest | Label:
    """Decode one stream message by its Content-Type (JSON when it says so, msgpack otherwise)."""
    if content_type is not None and content_type.split(";")[0].strip().lower() == JSON:
        return msgspec.json.decode(data, type=type_)
    return msgspec.msgpack.decode(data, type=type_)


_PLAIN_ID = re.compile(r"^[A-Za-z0-9_.:@\-]{1,128}$")


def stream_msg_id(transaction_id: str) -> str:
    """The `Nats-Msg-Id` of a transaction or label on the ingest streams: the transaction id itself when it is a
    plain identifier (what other systems send, docs/nats-api.md), else `b64:` + its URL-safe base64, because an
    opaque client id (any printable Unicode) is not always a valid header value."""
    if _PLAIN_ID.match(transaction_id):
        return transaction_id
    return "b64:" + encode_key(transaction_id)
