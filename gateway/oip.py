"""The Open Inference Protocol v2 (KServe, Triton) for the model `fraud`: its bodies, and the mapping of named
input tensors onto transactions and of scores onto output tensors.

Inputs are the transaction fields, one tensor each, one element per transaction (shape `[n]` or `[n, 1]`): BYTES
for ids and codes (an empty string is an absent optional field), FP64 for `transaction_amount`. Tensor data comes
as JSON (`data`) or, as `tritonclient` sends it by default, in the binary tensor extension (the JSON header's
length in `Inference-Header-Content-Length`, then each input's bytes in order). Replies are JSON.
"""

from __future__ import annotations

import struct
from typing import Annotated, Any, Generic, Literal, TypeVar, Union

import msgspec
from msgspec import Meta, Struct

from gateway.envelope import decode_transactions
from gateway.validation import BodyError, echo
from shared.messages import FieldError, Transaction, TransactionScore

MODEL_NAME = "fraud"
PLATFORM = "onnxruntime_onnx"
BINARY_HEADER = "inference-header-content-length"
Datatype = Literal["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
                   "FP64", "BYTES"]  # fmt: skip
INPUTS: tuple[tuple[str, Datatype], ...] = tuple(
    (f.name, "FP64" if f.name == "transaction_amount" else "BYTES") for f in msgspec.structs.fields(Transaction)
)
INPUT_TYPES = dict(INPUTS)
REQUIRED_INPUTS = tuple(f.name for f in msgspec.structs.fields(Transaction) if f.required)
OUTPUTS: tuple[tuple[str, Datatype], ...] = (
    ("fraud_score", "FP64"),
    ("risk_level", "BYTES"),
    ("recommended_action", "BYTES"),
)
_OUTPUT_NAMES = tuple(n for n, _ in OUTPUTS)


class OipError(Struct, kw_only=True):
    """The Open Inference Protocol's error body."""

    error: Annotated[str, Meta(description="What was wrong and what to do.", examples=["Unknown model 'x'."])]


class ServerMetadata(Struct, kw_only=True):
    name: Annotated[str, Meta(description="Server name.", examples=["fraudmesh"])]
    version: Annotated[str, Meta(description="Server version.", examples=["0.1.0"])]
    extensions: Annotated[
        list[str], Meta(description="Protocol extensions supported.", examples=[["binary_tensor_data"]])
    ]


class LiveResponse(Struct, kw_only=True):
    live: Annotated[bool, Meta(description="True while the process answers.")]


class ReadyResponse(Struct, kw_only=True):
    ready: Annotated[bool, Meta(description="True when inference requests can be served.")]


class TensorMetadata(Struct, kw_only=True):
    name: Annotated[str, Meta(description="Tensor name: a transaction field, or an output.", examples=["card_id"])]
    datatype: Annotated[Datatype, Meta(description="Element type: BYTES (strings) or FP64.")]
    shape: Annotated[list[int], Meta(description="`[-1]`: one element per transaction.", examples=[[-1]])]


class ModelMetadataResponse(Struct, kw_only=True):
    name: Annotated[str, Meta(description="Model name.", examples=[MODEL_NAME])]
    versions: Annotated[list[str], Meta(description="Versions served: the active one, then any A/B candidate.")]
    platform: Annotated[str, Meta(description="Runtime.", examples=[PLATFORM])]
    inputs: Annotated[
        list[TensorMetadata],
        Meta(description="The transaction fields; `card_id` and `transaction_amount` are required, the rest optional."),
    ]
    outputs: Annotated[list[TensorMetadata], Meta(description="fraud_score, risk_level, recommended_action.")]


class InferInput(Struct, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, Meta(description="A transaction field (see the model metadata).", examples=["card_id"])]
    shape: Annotated[list[Annotated[int, Meta(ge=0)]], Meta(min_length=1, max_length=2, examples=[[2]])]
    datatype: Annotated[Datatype, Meta(description="As the metadata lists it for this input.")]
    parameters: Annotated[dict[str, Any], Meta(description="`binary_data_size` for binary tensor data.")] | None = None
    data: (
        Annotated[
            list[Any],
            Meta(description="Row-major elements (flat or nested); absent with binary data.", examples=[["c1", "c2"]]),
        ]
        | None
    ) = None


class InferRequestedOutput(Struct, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[Literal["fraud_score", "risk_level", "recommended_action"], Meta(description="An output.")]
    parameters: Annotated[dict[str, Any], Meta(description="Accepted and ignored (replies are JSON).")] | None = None


def _documented_input(name: str, datatype: str) -> Any:
    """The exact shape of one input, for the OpenAPI document: its name (the tag) and its one datatype."""
    element: Any = float if datatype == "FP64" else str
    return msgspec.defstruct(
        "".join(w.capitalize() for w in name.split("_")) + "Input",
        [
            ("shape", Annotated[list[Annotated[int, Meta(ge=0)]], Meta(min_length=1, max_length=2)]),
            ("datatype", Literal[datatype]),
            ("parameters", dict[str, Any] | None, None),
            ("data", list[element | list[element]] | None, None),
        ],
        tag=name,
        tag_field="name",
        kw_only=True,
        forbid_unknown_fields=True,
    )


_DOCUMENTED_INPUTS: Any = Union[tuple(_documented_input(n, t) for n, t in INPUTS)]  # noqa: UP007


IN = TypeVar("IN")


# Decoded as `InferRequest[InferInput]` (any name and datatype, so that a mistake gets a precise message);
# documented as `InferRequest[DocumentedInput]` (one Struct per input, with its name and its one datatype).
class InferRequest(Struct, Generic[IN], kw_only=True, forbid_unknown_fields=True):
    """An inference request: the transactions as one tensor per field (see the model metadata)."""

    id: Annotated[str, Meta(max_length=128, description="Echoed in the reply.", examples=["req-1"])] | None = None
    parameters: Annotated[dict[str, Any], Meta(description="Request parameters (accepted, not used).")] | None = None
    inputs: Annotated[list[IN], Meta(min_length=1, description="One tensor per transaction field.")]
    outputs: Annotated[list[InferRequestedOutput], Meta(description="Outputs wanted (default: all three).")] | None = (
        None
    )


DocumentedInferRequest: Any = InferRequest.__class_getitem__(_DOCUMENTED_INPUTS)  # type: ignore[attr-defined]  # a generic Struct parametrised at run time
"""`InferRequest[<one Struct per input>]`: the request body as the OpenAPI document gives it."""


class InferOutput(Struct, kw_only=True):
    name: Annotated[str, Meta(description="Output name.", examples=["fraud_score"])]
    datatype: Annotated[Datatype, Meta(description="FP64 for fraud_score, BYTES for the others.")]
    shape: Annotated[list[int], Meta(description="`[n]`: one element per transaction.", examples=[[2]])]
    data: Annotated[list[float | str], Meta(description="One element per transaction, in order.")]


class InferResponse(Struct, kw_only=True):
    model_name: Annotated[str, Meta(examples=[MODEL_NAME], description="The model that answered.")]
    model_version: Annotated[
        str, Meta(description="The version that scored (comma-separated if an A/B split used two).")
    ]
    id: Annotated[str, Meta(description="The request's `id`, or the request id.")]
    outputs: Annotated[list[InferOutput], Meta(description="The outputs asked for, in the order asked.")]


INFER_EXAMPLE = {
    "id": "req-1",
    "inputs": [
        {"name": "card_id", "shape": [2], "datatype": "BYTES", "data": ["card_1", "card_2"]},
        {"name": "transaction_amount", "shape": [2], "datatype": "FP64", "data": [100.0, 500.0]},
        {"name": "mcc_code", "shape": [2], "datatype": "BYTES", "data": ["5411", ""]},
    ],
}


def model_metadata(versions: list[str]) -> ModelMetadataResponse:
    return ModelMetadataResponse(
        name=MODEL_NAME,
        versions=versions,
        platform=PLATFORM,
        inputs=[TensorMetadata(name=n, datatype=t, shape=[-1]) for n, t in INPUTS],
        outputs=[TensorMetadata(name=n, datatype=t, shape=[-1]) for n, t in OUTPUTS],
    )


def _bad(path: str, message: str) -> BodyError:
    return BodyError([FieldError(path=path, message=message)], "The inference request is invalid.")


def split_binary(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON part and the binary part of a body in the binary tensor extension."""
    if header_length is None:
        return body, b""
    if not header_length.isdigit() or int(header_length) > len(body):
        raise _bad("header.Inference-Header-Content-Length", f"Not a length within the body: {echo(header_length)}.")
    n = int(header_length)
    return body[:n], body[n:]


def _flatten(data: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in data:
        out.extend(_flatten(v) if isinstance(v, list) else [v])
    return out


def _binary_elements(raw: bytes, datatype: str, path: str) -> list[Any]:
    if datatype == "FP64":
        if len(raw) % 8:
            raise _bad(path, f"{len(raw)} bytes is not a whole number of FP64 elements.")
        return list(struct.unpack(f"<{len(raw) // 8}d", raw))
    out, i = [], 0
    while i < len(raw):
        if i + 4 > len(raw):
            raise _bad(path, "BYTES data ends inside an element's 4-byte length.")
        (n,) = struct.unpack_from("<I", raw, i)
        if i + 4 + n > len(raw):
            raise _bad(path, "BYTES data ends inside an element.")
        out.append(raw[i + 4 : i + 4 + n].decode("utf-8", errors="replace"))
        i += 4 + n
    return out


def tensors(req: InferRequest[InferInput], binary: bytes) -> dict[str, list[Any]]:
    """Each input's elements, checked against the model's inputs (name, datatype, shape, count)."""
    columns: dict[str, list[Any]] = {}
    offset = 0
    for k, t in enumerate(req.inputs):
        path = f"$.inputs[{k}]"
        if t.name not in INPUT_TYPES:
            raise _bad(f"{path}.name", f"Unknown input {echo(t.name)}; the inputs are {', '.join(INPUT_TYPES)}.")
        if t.name in columns:
            raise _bad(f"{path}.name", f"Input {t.name!r} is given twice.")
        if t.datatype != INPUT_TYPES[t.name]:
            raise _bad(f"{path}.datatype", f"Input {t.name!r} is {INPUT_TYPES[t.name]}, got {t.datatype}.")
        if len(t.shape) == 2 and t.shape[1] != 1:
            raise _bad(f"{path}.shape", f"Shape must be [n] or [n, 1], got {t.shape}.")
        size = (t.parameters or {}).get("binary_data_size")
        if t.data is not None:
            values = _flatten(t.data)
        elif isinstance(size, int) and not isinstance(size, bool) and 0 <= size <= len(binary) - offset:
            values = _binary_elements(binary[offset : offset + size], t.datatype, f"{path}.parameters")
            offset += size
        else:
            raise _bad(path, f"Input {t.name!r} has no `data` (and no binary data of a valid `binary_data_size`).")
        if len(values) != t.shape[0]:
            raise _bad(f"{path}.shape", f"Shape {t.shape} says {t.shape[0]} elements; the data has {len(values)}.")
        columns[t.name] = values
    missing = [n for n in REQUIRED_INPUTS if n not in columns]
    if missing:
        raise _bad("$.inputs", f"Missing required input(s): {', '.join(missing)}.")
    sizes = {len(v) for v in columns.values()}
    if len(sizes) != 1 or 0 in sizes:
        raise _bad("$.inputs", f"Every input needs the same number (>= 1) of elements; got {sorted(sizes)}.")
    return columns


def to_transactions(req: InferRequest[InferInput], columns: dict[str, list[Any]], tokens: bool) -> list[Transaction]:
    n = len(next(iter(columns.values())))
    where = {t.name: k for k, t in enumerate(req.inputs)}
    encode = msgspec.json.Encoder().encode
    rows = [
        encode({name: v[i] for name, v in columns.items() if not (v[i] == "" and name not in REQUIRED_INPUTS)})
        for i in range(n)
    ]

    def locate(i: int, rest: str) -> str:
        name = rest[1:].split(".", 1)[0] if rest.startswith(".") else ""
        return f"$.inputs[{where[name]}].data[{i}]" if name in where else "$.inputs"

    return decode_transactions(rows, locate, tokens)


def outputs(req: InferRequest[Any], scores: list[TransactionScore]) -> list[InferOutput]:
    wanted = [o.name for o in req.outputs] if req.outputs else list(_OUTPUT_NAMES)
    types = dict(OUTPUTS)
    columns: dict[str, list[float | str]] = {
        "fraud_score": [s.fraud_score for s in scores],
        "risk_level": [s.risk_level for s in scores],
        "recommended_action": [s.recommended_action for s in scores],
    }
    return [InferOutput(name=n, datatype=types[n], shape=[len(scores)], data=columns[n]) for n in wanted]


def error_text(exc: BodyError) -> str:
    """A BodyError as OIP's one string: the problems with their places."""
    listed = "; ".join(f"{e.path}: {e.message}" for e in exc.errors[:10])
    more = f" (and {exc.total - 10} more)" if exc.total > 10 else ""
    return f"{exc.message} {listed}{more}".strip()
