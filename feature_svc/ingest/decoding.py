"""Decoding the ingest streams' messages: JSON (`Content-Type: application/json`) or msgpack.

The service base's consumer decodes a body with one decoder (`decode(data)`, no headers), so the two encodings
are told apart by the body itself: a JSON object starts with `{` (after optional whitespace), which as the first
byte of msgpack is the integer 123, never a valid message. So a JSON body is decoded as JSON whatever its
Content-Type says, and every other body as msgpack; publishers should still set the header (docs/nats-api.md).
"""

from __future__ import annotations

from typing import Generic, TypeVar

import msgspec

from shared.click_messages import ClickEvent
from shared.ingest_messages import Label, TxnIngest

M = TypeVar("M", TxnIngest, Label, ClickEvent)
_JSON_START = frozenset(b"{ \t\r\n")


class StreamDecoder(Generic[M]):
    def __init__(self, type_: type[M]) -> None:
        self._json: msgspec.json.Decoder[M] = msgspec.json.Decoder(type_)
        self._msgpack: msgspec.msgpack.Decoder[M] = msgspec.msgpack.Decoder(type_)

    def decode(self, data: bytes) -> M:
        if data[:1] and data[0] in _JSON_START:
            return self._json.decode(data)
        return self._msgpack.decode(data)
