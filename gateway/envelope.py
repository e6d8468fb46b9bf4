"""Bodies that carry transactions inside another shape (`{"requests": [...]}`, `{"records": [...]}`, MLflow's
dataframes, OIP tensors): the envelope is decoded strictly, then the transactions go through the very rules of
`/predict` (`decode_body` on a `{"transactions": [...]}` built from their raw bytes), and every error path is moved
back to where the client put the transaction (`$.requests[3].card_id`, `$.dataframe_split.data[3]`, ...)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import msgspec
from litestar import Request
from litestar.exceptions import HTTPException

from gateway.controllers.score import is_json
from gateway.schemas import PredictRequest
from gateway.validation import BodyError, TooManyTransactions, decode_body, echo
from shared.messages import FieldError, Transaction, field_error_of

T = TypeVar("T")
_predict_decoder = msgspec.json.Decoder(PredictRequest)
_TX_PATH = re.compile(r"^\$\.transactions\[(\d+)\](.*)$")
Locate = Callable[[int, str], str]
"""(index of the transaction, rest of the path such as `.card_id`) -> the path in the client's body."""


async def json_body(request: Request[Any, Any, Any], *, require_type: bool = True) -> bytes:
    """The raw body; 415 unless it is declared JSON (`require_type=False` also takes a body sent with no type)."""
    media_type = request.content_type[0]
    if not is_json(media_type) and (require_type or media_type):
        raise HTTPException(
            status_code=415,
            detail=f"The body must be JSON: send Content-Type: application/json (got {media_type or 'none'!r}).",
        )
    return await request.body()


def decode_envelope(body: bytes, decoder: msgspec.json.Decoder[T]) -> T:
    """Strict decode of the outer shape (the first problem only; the transactions are checked in full later)."""
    if not body.strip():
        raise BodyError([FieldError(path="$", message="The request body is empty; send a JSON object.")])
    try:
        value = decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
        raise BodyError([field_error_of(exc)], "The request body is invalid: 1 problem; see `errors`.") from None
    try:
        json.loads(body, object_pairs_hook=_no_duplicates)
    except _Duplicate as dup:
        raise BodyError(
            [FieldError(path="$", message=f"Duplicate key {echo(dup.key)}: each key may appear once.")],
            "The request body is invalid: 1 problem; see `errors`.",
        ) from None
    return value


class _Duplicate(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _Duplicate(k)
            seen.add(k)
    return d


def check_count(n: int, limit: int) -> None:
    if n > limit:
        raise TooManyTransactions(n, limit)


def decode_transactions(
    raws: Sequence[bytes | msgspec.Raw], locate: Locate, card_ids_are_tokens: bool
) -> list[Transaction]:
    """Validate transactions given as raw JSON with the `/predict` rules; errors at the client's paths."""
    body = b'{"transactions":[' + b",".join(bytes(r) for r in raws) + b"]}"
    try:
        value = decode_body(body, PredictRequest, _predict_decoder, card_ids_are_tokens)
    except BodyError as exc:
        exc.errors = [FieldError(path=_moved(e.path, locate), message=e.message) for e in exc.errors]
        raise
    return list(value.transactions)


def _moved(path: str, locate: Locate) -> str:
    if m := _TX_PATH.match(path):
        return locate(int(m.group(1)), m.group(2))
    return locate(0, "") if path.startswith("$.transactions") else path


def at(prefix: str) -> Locate:
    """The usual place: `prefix[i]` followed by the rest of the path."""
    return lambda i, rest: f"{prefix}[{i}]{rest}"
