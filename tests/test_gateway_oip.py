"""The Open Inference Protocol v2 routes, driven by the official Triton HTTP client against a real gateway:
live, ready, metadata, inference of transactions built from the metadata (JSON and binary tensors), errors."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.stacks import Stack

TXS: list[dict[str, Any]] = [
    {"card_id": "card_1", "transaction_amount": 100.0, "mcc_code": "5411", "country_code": "US"},
    {"card_id": "card_2", "transaction_amount": 1.5, "mcc_code": "5816", "country_code": "NG", "channel": "ecom"},
    {"card_id": "card_3", "transaction_amount": 2500.0},
]


@pytest.fixture
def client(stack: Stack) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=stack.gateway_url.removeprefix("http://"), network_timeout=30.0)


def inputs_from_metadata(meta: dict[str, Any], txs: list[dict[str, Any]], binary: bool) -> list[triton.InferInput]:
    """What a Triton user does: one tensor per input the metadata lists, filled from the rows ("" = absent)."""
    out = []
    for spec in meta["inputs"]:
        name, dtype = spec["name"], spec["datatype"]
        if dtype == "FP64":
            arr = np.array([float(t.get(name, 0.0)) for t in txs], dtype=np.float64)
        else:
            arr = np.array([str(t.get(name, "")).encode() for t in txs], dtype=np.object_)
        tensor = triton.InferInput(name, [len(txs)], dtype)
        tensor.set_data_from_numpy(arr, binary_data=binary)
        out.append(tensor)
    return out


def test_live_ready_and_server_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("fraud")
    assert client.get_server_metadata()["name"] == "fraudmesh"


def test_model_metadata_lists_every_transaction_field_with_datatype_and_shape(
    client: triton.InferenceServerClient,
) -> None:
    meta = client.get_model_metadata("fraud")
    assert meta["name"] == "fraud" and meta["versions"]
    types = {i["name"]: i["datatype"] for i in meta["inputs"]}
    assert types["transaction_amount"] == "FP64"
    assert {types[n] for n in ("card_id", "merchant_id", "mcc_code", "country_code", "device_id")} == {"BYTES"}
    assert all(i["shape"] == [-1] for i in meta["inputs"])
    assert [o["name"] for o in meta["outputs"]] == ["fraud_score", "risk_level", "recommended_action"]
    version = meta["versions"][0]
    assert client.get_model_metadata("fraud", model_version=version)["versions"] == [version]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_built_from_metadata_matches_the_rest_api(
    client: triton.InferenceServerClient, stack: Stack, binary: bool
) -> None:
    meta = client.get_model_metadata("fraud")
    result = client.infer("fraud", inputs_from_metadata(meta, TXS, binary), request_id="oip-1")
    scores = result.as_numpy("fraud_score")
    levels = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("risk_level")]
    actions = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("recommended_action")]
    assert scores is not None and scores.shape == (3,)
    rest = httpx.post(
        f"{stack.gateway_url}/predict", params={"ingest": "false"}, json={"transactions": TXS}, timeout=30
    ).json()
    assert list(scores) == [r["fraud_score"] for r in rest["results"]]
    assert levels == [r["risk_level"] for r in rest["results"]]
    assert actions == [r["recommended_action"] for r in rest["results"]]
    response = result.get_response()
    assert response["id"] == "oip-1" and response["model_name"] == "fraud"
    versioned = client.infer(
        "fraud",
        inputs_from_metadata(meta, TXS, binary),
        model_version=response["model_version"],
        outputs=[triton.InferRequestedOutput("fraud_score", binary_data=False)],
    )
    assert list(versioned.as_numpy("fraud_score")) == list(scores)
    assert versioned.as_numpy("risk_level") is None


def test_unknown_model_and_version_are_clear_404s(client: triton.InferenceServerClient, stack: Stack) -> None:
    with pytest.raises(InferenceServerException, match=r"Unknown model 'nope'.*serves 'fraud'"):
        client.get_model_metadata("nope")
    assert not client.is_model_ready("nope")
    meta = client.get_model_metadata("fraud")
    with pytest.raises(InferenceServerException, match="Unknown model 'nope'"):
        client.infer("nope", inputs_from_metadata(meta, TXS, False))
    with pytest.raises(InferenceServerException, match="no version 'v999'"):
        client.infer("fraud", inputs_from_metadata(meta, TXS, False), model_version="v999")
    r = httpx.get(f"{stack.gateway_url}/v2/models/nope", timeout=10)
    assert r.status_code == 404 and set(r.json()) == {"error"}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"inputs": [{"name": "card_id", "shape": [1], "datatype": "BYTES", "data": ["c1"]}]}, "transaction_amount"),
        (
            {
                "inputs": [
                    {"name": "card_id", "shape": [1], "datatype": "BYTES", "data": ["c1"]},
                    {"name": "transaction_amount", "shape": [1], "datatype": "INT64", "data": [3]},
                ]
            },
            "is FP64, got INT64",
        ),
        (
            {
                "inputs": [
                    {"name": "card_id", "shape": [2], "datatype": "BYTES", "data": ["c1", "c2"]},
                    {"name": "transaction_amount", "shape": [2], "datatype": "FP64", "data": [3.0, -1.0]},
                ]
            },
            "$.inputs[1].data[1]",
        ),
        (
            {
                "inputs": [
                    {"name": "card_id", "shape": [3], "datatype": "BYTES", "data": ["c1"]},
                    {"name": "transaction_amount", "shape": [1], "datatype": "FP64", "data": [3.0]},
                ]
            },
            "says 3 elements",
        ),
        ({"inputs": [{"name": "colour", "shape": [1], "datatype": "BYTES", "data": ["red"]}]}, "Unknown input"),
        ({"inputs": []}, "$.inputs"),
    ],
)
def test_bad_infer_requests_get_400_in_oip_error_shape(stack: Stack, body: dict[str, Any], needle: str) -> None:
    r = httpx.post(f"{stack.gateway_url}/v2/models/fraud/infer", json=body, timeout=10)
    assert r.status_code == 400, r.text
    doc = r.json()
    assert set(doc) == {"error"} and needle in doc["error"], doc
