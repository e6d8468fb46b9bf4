"""The Open Inference Protocol v2 (KServe, Triton) for the model families `fraud` and `personalization`: their
bodies, and the mapping of named input tensors onto each family's requests and of its scores onto output tensors.

Each family is an `OipModel` (its inputs and outputs as `TensorSpec`s): `FRAUD` takes the transaction fields,
`PERSONALIZATION` the fields of seed 001's (user, item) pair. One tensor per field, one element per row (shape `[n]`
or `[n, 1]`): BYTES for ids and codes (an empty string is an absent optional field), FP64 for numbers (an absent
optional one is `null` in JSON data, NaN in binary data). Tensor data comes as JSON (`data`) or, as `tritonclient`
sends it by default, in the binary tensor extension (the JSON header's length in `Inference-Header-Content-Length`,
then each input's bytes in order). Replies are JSON. A bad element is a 400 naming `$.inputs[k].data[i]`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Annotated, Any, Generic, Literal, TypeVar, Union

import msgspec
from msgspec import Meta, Struct

from gateway.envelope import decode_transactions
from gateway.validation import BodyError, echo
from shared.messages import FieldError, Transaction, TransactionScore, field_error_of
from shared.personalization_messages import PersonalizationItem, PersonalizationScore

PLATFORM = "onnxruntime_onnx"
BINARY_HEADER = "inference-header-content-length"
Datatype = Literal["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
                   "FP64", "BYTES"]  # fmt: skip


class TensorSpec(Struct, frozen=True, kw_only=True):
    """One input or output of a model: its name, element type and (inputs) whether every request must give it."""

    name: str
    datatype: Datatype
    required: bool = False


class OipModel(Struct, frozen=True, kw_only=True):
    """A model family as OIP v2 names it: `name` (the `{name}` of `/v2/models/{name}`), its inputs (one per field of
    the family's request row) and its outputs (one per scored field), in the order the metadata lists them."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    row: str
    """What one element of every tensor is, for messages: `transaction`, `(user, item) pair`."""

    def input_type(self, name: str) -> Datatype | None:
        return next((t.datatype for t in self.inputs if t.name == name), None)

    def output_type(self, name: str) -> Datatype | None:
        return next((t.datatype for t in self.outputs if t.name == name), None)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs if t.required)


def _fields_as_inputs(struct: type[Struct], fp64: frozenset[str]) -> tuple[TensorSpec, ...]:
    return tuple(
        TensorSpec(name=f.name, datatype="FP64" if f.name in fp64 else "BYTES", required=f.required)
        for f in msgspec.structs.fields(struct)
    )


FRAUD = OipModel(
    name="fraud",
    inputs=_fields_as_inputs(Transaction, frozenset({"transaction_amount"})),
    outputs=(
        TensorSpec(name="fraud_score", datatype="FP64"),
        TensorSpec(name="risk_level", datatype="BYTES"),
        TensorSpec(name="recommended_action", datatype="BYTES"),
    ),
    row="transaction",
)
PERSONALIZATION = OipModel(
    name="personalization",
    inputs=_fields_as_inputs(PersonalizationItem, frozenset({"item_price"})),
    outputs=(
        TensorSpec(name="relevance_score", datatype="FP64"),
        TensorSpec(name="conversion_probability", datatype="FP64"),
        TensorSpec(name="engagement_score", datatype="FP64"),
        TensorSpec(name="user_segment", datatype="BYTES"),
        TensorSpec(name="behavioral_signals", datatype="BYTES"),
        TensorSpec(name="features_used", datatype="INT64"),
    ),
    row="(user, item) pair",
)
MODELS: dict[str, OipModel] = {m.name: m for m in (FRAUD, PERSONALIZATION)}
"""The models this server serves, by OIP name (one per model family)."""
MODEL_NAME = FRAUD.name


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
    name: Annotated[
        str, Meta(description="Tensor name: a field of the model's request row, or an output.", examples=["card_id"])
    ]
    datatype: Annotated[Datatype, Meta(description="Element type: BYTES (strings), FP64 or INT64.")]
    shape: Annotated[list[int], Meta(description="`[-1]`: one element per row.", examples=[[-1]])]


class ModelMetadataResponse(Struct, kw_only=True):
    name: Annotated[str, Meta(description="Model name: `fraud` or `personalization`.", examples=[MODEL_NAME])]
    versions: Annotated[list[str], Meta(description="Versions served: the active one, then any A/B candidate.")]
    platform: Annotated[str, Meta(description="Runtime.", examples=[PLATFORM])]
    inputs: Annotated[
        list[TensorMetadata],
        Meta(
            description="The fields of the model's request row (fraud: a transaction, `card_id` and "
            "`transaction_amount` required; personalization: a (user, item) pair, `user_id` and `item_id` required)."
        ),
    ]
    outputs: Annotated[
        list[TensorMetadata],
        Meta(
            description="fraud: fraud_score, risk_level, recommended_action; personalization: relevance_score, "
            "conversion_probability, engagement_score, user_segment, behavioral_signals (comma-separated codes), "
            "features_used."
        ),
    ]


class InferInput(Struct, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[
        str, Meta(description="A field of the model's request row (see the model metadata).", examples=["card_id"])
    ]
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
    name: Annotated[str, Meta(description="An output of the model (see its metadata).", examples=["fraud_score"])]
    parameters: Annotated[dict[str, Any], Meta(description="Accepted and ignored (replies are JSON).")] | None = None


def _documented_input(name: str, datatype: str) -> Any:
    """The exact shape of one input, for the OpenAPI document: its name (the tag) and its one datatype."""
    element: Any = float | None if datatype == "FP64" else str
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


_DOCUMENTED_INPUTS: Any = Union[tuple(_documented_input(t.name, t.datatype) for m in MODELS.values() for t in m.inputs)]  # noqa: UP007


IN = TypeVar("IN")


# Decoded as `InferRequest[InferInput]` (any name and datatype, so that a mistake gets a precise message);
# documented as `InferRequest[DocumentedInput]` (one Struct per input, with its name and its one datatype).
class InferRequest(Struct, Generic[IN], kw_only=True, forbid_unknown_fields=True):
    """An inference request: the model's request rows as one tensor per field (see the model metadata)."""

    id: Annotated[str, Meta(max_length=128, description="Echoed in the reply.", examples=["req-1"])] | None = None
    parameters: Annotated[dict[str, Any], Meta(description="Request parameters (accepted, not used).")] | None = None
    inputs: Annotated[list[IN], Meta(min_length=1, description="One tensor per field of the request row.")]
    outputs: Annotated[list[InferRequestedOutput], Meta(description="Outputs wanted (default: all).")] | None = None


DocumentedInferRequest: Any = InferRequest.__class_getitem__(_DOCUMENTED_INPUTS)  # type: ignore[attr-defined]  # a generic Struct parametrised at run time
"""`InferRequest[<one Struct per input>]`: the request body as the OpenAPI document gives it."""


class InferOutput(Struct, kw_only=True):
    name: Annotated[str, Meta(description="Output name.", examples=["fraud_score"])]
    datatype: Annotated[Datatype, Meta(description="As the model metadata lists it: FP64, INT64 or BYTES.")]
    shape: Annotated[list[int], Meta(description="`[n]`: one element per row.", examples=[[2]])]
    data: Annotated[list[float | int | str], Meta(description="One element per row, in order.")]


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


def model_metadata(model: OipModel, versions: list[str]) -> ModelMetadataResponse:
    return ModelMetadataResponse(
        name=model.name,
        versions=versions,
        platform=PLATFORM,
        inputs=[TensorMetadata(name=t.name, datatype=t.datatype, shape=[-1]) for t in model.inputs],
        outputs=[TensorMetadata(name=t.name, datatype=t.datatype, shape=[-1]) for t in model.outputs],
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


def tensors(model: OipModel, req: InferRequest[InferInput], binary: bytes) -> dict[str, list[Any]]:
    """Each input's elements, checked against the model's inputs (name, datatype, shape, count)."""
    columns: dict[str, list[Any]] = {}
    offset = 0
    names = ", ".join(t.name for t in model.inputs)
    for k, t in enumerate(req.inputs):
        path = f"$.inputs[{k}]"
        want = model.input_type(t.name)
        if want is None:
            raise _bad(f"{path}.name", f"Unknown input {echo(t.name)} of model {model.name!r}; its inputs are {names}.")
        if t.name in columns:
            raise _bad(f"{path}.name", f"Input {t.name!r} is given twice.")
        if t.datatype != want:
            raise _bad(f"{path}.datatype", f"Input {t.name!r} is {want}, got {t.datatype}.")
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
    missing = [n for n in model.required if n not in columns]
    if missing:
        raise _bad("$.inputs", f"Missing required input(s) of model {model.name!r}: {', '.join(missing)}.")
    sizes = {len(v) for v in columns.values()}
    if len(sizes) != 1 or 0 in sizes:
        raise _bad("$.inputs", f"Every input needs the same number (>= 1) of elements; got {sorted(sizes)}.")
    if req.outputs:
        for k, o in enumerate(req.outputs):
            if model.output_type(o.name) is None:
                outs = ", ".join(t.name for t in model.outputs)
                raise _bad(f"$.outputs[{k}].name", f"Unknown output {echo(o.name)} of model {model.name!r}; its "
                           f"outputs are {outs}.")  # fmt: skip
    return columns


def _absent(model: OipModel, name: str, v: Any) -> bool:
    """An optional input's element that stands for "not given": "" (BYTES), null or NaN (FP64)."""
    if name in model.required:
        return False
    return v == "" or v is None or (isinstance(v, float) and v != v)


def _rows(model: OipModel, columns: dict[str, list[Any]]) -> list[bytes]:
    n = len(next(iter(columns.values())))
    encode = msgspec.json.Encoder().encode
    return [encode({name: v[i] for name, v in columns.items() if not _absent(model, name, v[i])}) for i in range(n)]


def _locator(req: InferRequest[InferInput]) -> Callable[[int, str], str]:
    """`(row, "$.<field>...")` -> the element's place in the client's body, `$.inputs[k].data[row]`."""
    where = {t.name: k for k, t in enumerate(req.inputs)}

    def locate(i: int, rest: str) -> str:
        name = rest[1:].split(".", 1)[0].split("[", 1)[0] if rest.startswith(".") else ""
        return f"$.inputs[{where[name]}].data[{i}]" if name in where else "$.inputs"

    return locate


def to_transactions(req: InferRequest[InferInput], columns: dict[str, list[Any]], tokens: bool) -> list[Transaction]:
    return decode_transactions(_rows(FRAUD, columns), _locator(req), tokens)


_item = msgspec.json.Decoder(PersonalizationItem)


def to_items(req: InferRequest[InferInput], columns: dict[str, list[Any]]) -> list[PersonalizationItem]:
    """The (user, item) pairs, each checked as `POST /score/personalization` checks its body."""
    locate = _locator(req)
    items, errors = [], []
    for i, row in enumerate(_rows(PERSONALIZATION, columns)):
        try:
            items.append(_item.decode(row))
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            e = field_error_of(exc)
            errors.append(FieldError(path=locate(i, e.path[1:]), message=e.message))
    if errors:
        raise BodyError(errors[:100], f"The inference request is invalid: {len(errors)} problem(s).")
    return items


def _select(model: OipModel, req: InferRequest[Any], n: int, columns: dict[str, list[Any]]) -> list[InferOutput]:
    wanted = [o.name for o in req.outputs] if req.outputs else [t.name for t in model.outputs]
    return [
        InferOutput(name=name, datatype=model.output_type(name) or "BYTES", shape=[n], data=columns[name])
        for name in wanted
    ]


def outputs(req: InferRequest[Any], scores: list[TransactionScore]) -> list[InferOutput]:
    columns: dict[str, list[Any]] = {
        "fraud_score": [s.fraud_score for s in scores],
        "risk_level": [s.risk_level for s in scores],
        "recommended_action": [s.recommended_action for s in scores],
    }
    return _select(FRAUD, req, len(scores), columns)


def personalization_outputs(req: InferRequest[Any], scores: list[PersonalizationScore]) -> list[InferOutput]:
    columns: dict[str, list[Any]] = {
        "relevance_score": [s.relevance_score for s in scores],
        "conversion_probability": [s.conversion_probability for s in scores],
        "engagement_score": [s.engagement_score for s in scores],
        "user_segment": [s.user_segment for s in scores],
        "behavioral_signals": [",".join(s.behavioral_signals) for s in scores],
        "features_used": [s.features_used for s in scores],
    }
    return _select(PERSONALIZATION, req, len(scores), columns)


def error_text(exc: BodyError) -> str:
    """A BodyError as OIP's one string: the problems with their places."""
    listed = "; ".join(f"{e.path}: {e.message}" for e in exc.errors[:10])
    more = f" (and {exc.total - 10} more)" if exc.total > 10 else ""
    return f"{exc.message} {listed}{more}".strip()
