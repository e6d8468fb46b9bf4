"""Request-body validation with an error for every bad field, each at its JSON path.

The fast path is one strict msgspec decode. Only when it fails do we walk the body field by field, so a
client gets all of its mistakes in one 400 (msgspec stops at the first), including NaN and Infinity, which
Python's json module emits but JSON does not allow.
"""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

import msgspec

from shared.messages import FieldError, Transaction, field_error_of

T = TypeVar("T", bound=msgspec.Struct)

MAX_ERRORS = 100
_TX_FIELDS = msgspec.structs.fields(Transaction)


class BodyError(Exception):
    def __init__(self, errors: list[FieldError], message: str = "The request body is invalid.") -> None:
        super().__init__(message)
        self.errors = errors
        self.message = message


def decode_body(body: bytes, type_: type[T], decoder: msgspec.json.Decoder[T]) -> T:
    """Decode strictly, or raise BodyError listing every problem found."""
    try:
        return decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as first:
        raise BodyError(_collect(body, type_, first)) from None


def _collect(body: bytes, type_: type[Any], first: Exception) -> list[FieldError]:
    if not body.strip():
        return [FieldError(path="$", message="The request body is empty; send a JSON object.")]
    try:
        doc = json.loads(body, parse_constant=_constant)
    except ValueError as exc:
        return [FieldError(path="$", message=f"The body is not valid JSON: {exc}.")]
    if not isinstance(doc, dict):
        return [FieldError(path="$", message=f"Expected a JSON object, got {_kind(doc)}.")]
    errors: list[FieldError] = []
    if "transactions" in {f.name for f in msgspec.structs.fields(type_)}:
        errors.extend(_check_transactions(doc))
        rest = {k: v for k, v in doc.items() if k != "transactions"}
        rest["transactions"] = [{"card_id": "x", "transaction_amount": 0}]
        errors.extend(_struct_errors(rest, type_, "$"))
    else:
        errors.extend(_transaction_errors(doc, "$"))
    return errors[:MAX_ERRORS] or [field_error_of(first)]


def _check_transactions(doc: dict[str, Any]) -> list[FieldError]:
    if "transactions" not in doc:
        return [FieldError(path="$.transactions", message="Object missing required field `transactions`.")]
    txs = doc["transactions"]
    if not isinstance(txs, list):
        return [FieldError(path="$.transactions", message=f"Expected an array of transactions, got {_kind(txs)}.")]
    if not txs:
        return [FieldError(path="$.transactions", message="The batch is empty; send at least one transaction.")]
    errors: list[FieldError] = []
    for i, tx in enumerate(txs):
        errors.extend(_transaction_errors(tx, f"$.transactions[{i}]"))
        if len(errors) >= MAX_ERRORS:
            break
    return errors


def _transaction_errors(tx: Any, path: str) -> list[FieldError]:
    if not isinstance(tx, dict):
        return [FieldError(path=path, message=f"Expected a transaction object, got {_kind(tx)}.")]
    errors = []
    for f in _TX_FIELDS:
        fpath = f"{path}.{f.name}"
        if f.name not in tx:
            if f.required:
                errors.append(FieldError(path=fpath, message=f"Object missing required field `{f.name}`."))
            continue
        value = tx[f.name]
        if isinstance(value, float) and not math.isfinite(value):
            errors.append(FieldError(path=fpath, message=f"Must be a finite number, got {value}."))
            continue
        try:
            msgspec.convert(value, f.type, strict=True)
        except msgspec.ValidationError as exc:
            errors.append(FieldError(path=fpath, message=field_error_of(exc).message))
    return errors


def _struct_errors(doc: dict[str, Any], type_: type[Any], path: str) -> list[FieldError]:
    try:
        msgspec.convert(doc, type_, strict=True)
    except msgspec.ValidationError as exc:
        e = field_error_of(exc)
        return [FieldError(path=e.path.replace("$", path, 1), message=e.message)]
    return []


def _constant(name: str) -> float:
    return float(name)  # NaN, Infinity, -Infinity: kept so that we can name the field


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )
