"""The OIP v2 model `personalization`, driven by the official Triton HTTP client against a real gateway whose
inference workers serve the torch-free bootstrap model (features of its world in Redis): metadata and readiness,
inference built from the metadata (JSON and binary tensors) equal to `POST /score/batch` of the same pairs,
absent optional inputs, and bad tensors as 400s naming the element (`$.inputs[k].data[i]`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from feature_svc.world.personalization.online import load, store
from feature_svc.world.personalization.world import generate, options_of
from tests.stacks import Stack, own_stack
from trainer.personalization.bootstrap import train_bootstrap


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> dict[str, Any]:
    """A bootstrap version, active, and its world's features in Redis; some pairs of that world to score."""
    d = tmp_path_factory.mktemp("pers-oip") / "models-personalization"
    meta = train_bootstrap(d)
    world = generate(options_of(meta))

    async def load_features() -> None:
        online = store(redis_url, 3600)
        try:
            await load(online, world)
        finally:
            await online.close()

    asyncio.run(load_features())
    pairs: list[dict[str, Any]] = [
        {"user_id": world.user_id(0), "item_id": world.item_id(0)},
        {"user_id": world.user_id(1), "item_id": world.item_id(5), "item_price": 12.5, "session_id": "session_0000001"},
        {"user_id": "user_nobody", "item_id": world.item_id(2), "item_category": "books"},
        {"user_id": world.user_id(2), "item_id": "item_unknown"},
    ]
    return {"dir": d, "version": str(meta["version"]), "pairs": pairs}


@pytest.fixture(scope="module")
def ostack(
    tmp_path_factory: pytest.TempPathFactory, model: dict[str, Any], redis_url: str, postgres_dsn: str, model_dir: Path
) -> Iterator[Stack]:
    run = tmp_path_factory.mktemp("oip-stack")
    with own_stack(
        run, redis_url, postgres_dsn, model_dir, env={"FRAUDMESH_PERSONALIZATION_MODEL_DIR": str(model["dir"])}
    ) as s:
        yield s


@pytest.fixture
def client(ostack: Stack) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=ostack.gateway_url.removeprefix("http://"), network_timeout=30.0)


def inputs_from_metadata(meta: dict[str, Any], rows: list[dict[str, Any]], binary: bool) -> list[triton.InferInput]:
    """What a Triton user does: one tensor per input the metadata lists ("" or, in binary data, NaN = absent; the
    client's JSON cannot carry NaN, so there a number not given in every row is left out)."""
    out = []
    for spec in meta["inputs"]:
        name, dtype = spec["name"], spec["datatype"]
        if dtype == "FP64" and not binary and not all(name in r for r in rows):
            continue
        if dtype == "FP64":
            arr = np.array([float(r.get(name, "nan")) for r in rows], dtype=np.float64)
        else:
            arr = np.array([str(r.get(name, "")).encode() for r in rows], dtype=np.object_)
        tensor = triton.InferInput(name, [len(rows)], dtype)
        tensor.set_data_from_numpy(arr, binary_data=binary)
        out.append(tensor)
    return out


def text(values: Any) -> list[str]:
    return [x.decode() if isinstance(x, bytes) else str(x) for x in values]


def test_metadata_and_readiness_of_the_personalization_model(
    client: triton.InferenceServerClient, model: dict[str, Any]
) -> None:
    assert client.is_model_ready("personalization") and client.is_model_ready("fraud")
    meta = client.get_model_metadata("personalization")
    assert meta["name"] == "personalization" and meta["versions"] == [model["version"]]
    types = {i["name"]: i["datatype"] for i in meta["inputs"]}
    assert types == {
        "user_id": "BYTES",
        "item_id": "BYTES",
        "item_category": "BYTES",
        "item_price": "FP64",
        "session_id": "BYTES",
    }
    outs = {o["name"]: o["datatype"] for o in meta["outputs"]}
    assert outs == {
        "relevance_score": "FP64",
        "conversion_probability": "FP64",
        "engagement_score": "FP64",
        "user_segment": "BYTES",
        "behavioral_signals": "BYTES",
        "features_used": "INT64",
    }
    one = client.get_model_metadata("personalization", model_version=model["version"])
    assert one["versions"] == [model["version"]]
    with pytest.raises(InferenceServerException, match="no version 'v999'"):
        client.get_model_metadata("personalization", model_version="v999")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_built_from_metadata_equals_the_rest_batch_pair_by_pair(
    client: triton.InferenceServerClient, ostack: Stack, model: dict[str, Any], binary: bool
) -> None:
    pairs = model["pairs"]
    meta = client.get_model_metadata("personalization")
    result = client.infer("personalization", inputs_from_metadata(meta, pairs, binary), request_id="oip-pers-1")
    response = result.get_response()
    assert response["model_name"] == "personalization" and response["model_version"] == model["version"]
    assert response["id"] == "oip-pers-1"
    relevance = result.as_numpy("relevance_score")
    conversion = result.as_numpy("conversion_probability")
    engagement = result.as_numpy("engagement_score")
    used = result.as_numpy("features_used")
    assert relevance is not None and conversion is not None and engagement is not None and used is not None
    segments = text(result.as_numpy("user_segment"))
    signals = text(result.as_numpy("behavioral_signals"))
    sent = pairs if binary else [{k: v for k, v in p.items() if k != "item_price"} for p in pairs]
    # The same pairs as one REST batch (one ONNX run over the same rows: a lone pair may differ in the last float bit)
    body = {"model_type": "personalization", "requests": sent}
    rest = httpx.post(f"{ostack.gateway_url}/score/batch", json=body, params={"ingest": "false"}, timeout=30)
    assert rest.status_code == 200, rest.text
    for k, doc in enumerate(rest.json()["responses"]):
        assert relevance[k] == doc["relevance_score"] and conversion[k] == doc["conversion_probability"]
        assert engagement[k] == doc["engagement_score"] and int(used[k]) == doc["features_used"]
        assert segments[k] == doc["user_segment"]
        assert signals[k] == ",".join(doc["behavioral_signals"])
    assert "cold_start_user" in signals[2].split(",")  # the unknown user
    assert segments[0] != "new_visitor"  # a user of the world, scored from their features


def test_requested_outputs_only_and_null_is_an_absent_price(ostack: Stack, model: dict[str, Any]) -> None:
    pair = model["pairs"][0]
    body = {
        "inputs": [
            {"name": "user_id", "shape": [2], "datatype": "BYTES", "data": [pair["user_id"]] * 2},
            {"name": "item_id", "shape": [2, 1], "datatype": "BYTES", "data": [[pair["item_id"]]] * 2},
            {"name": "item_price", "shape": [2], "datatype": "FP64", "data": [None, 9999.0]},
        ],
        "outputs": [{"name": "conversion_probability"}],
    }
    r = httpx.post(f"{ostack.gateway_url}/v2/models/personalization/infer", json=body, timeout=30)
    assert r.status_code == 200, r.text
    (out,) = r.json()["outputs"]
    assert out["name"] == "conversion_probability" and out["shape"] == [2]
    requests = [pair, {**pair, "item_price": 9999.0}]  # null: the catalogue's price, as when absent
    body = {"model_type": "personalization", "requests": requests}
    rest = httpx.post(f"{ostack.gateway_url}/score/batch", json=body, params={"ingest": "false"}, timeout=30)
    assert out["data"] == [d["conversion_probability"] for d in rest.json()["responses"]]
    assert out["data"][0] != out["data"][1]


def _tensor(name: str, datatype: str, data: list[Any]) -> dict[str, Any]:
    return {"name": name, "shape": [len(data)], "datatype": datatype, "data": data}


USERS = _tensor("user_id", "BYTES", ["user_1", "user_2"])
ITEMS = _tensor("item_id", "BYTES", ["item_1", "item_2"])


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"inputs": [USERS]}, "Missing required input(s) of model 'personalization': item_id"),
        ({"inputs": [_tensor("user_id", "BYTES", ["user_1", "customer_2"]), ITEMS]}, "$.inputs[0].data[1]"),
        ({"inputs": [USERS, ITEMS, _tensor("item_price", "FP64", [1.0, -3.0])]}, "$.inputs[2].data[1]"),
        ({"inputs": [USERS, ITEMS, _tensor("item_price", "BYTES", ["1", "2"])]}, "is FP64, got BYTES"),
        ({"inputs": [USERS, ITEMS, _tensor("session_id", "BYTES", ["s", "bad id!"])]}, "$.inputs[2].data[1]"),
        ({"inputs": [USERS, ITEMS, _tensor("card_id", "BYTES", ["c1", "c2"])]}, "Unknown input 'card_id'"),
        ({"inputs": [USERS, ITEMS], "outputs": [{"name": "fraud_score"}]}, "$.outputs[0].name"),
        ({"inputs": [USERS, _tensor("item_id", "BYTES", ["item_1"])]}, "same number"),
    ],
)
def test_bad_tensors_are_400s_naming_the_element(ostack: Stack, body: dict[str, Any], needle: str) -> None:
    r = httpx.post(f"{ostack.gateway_url}/v2/models/personalization/infer", json=body, timeout=10)
    assert r.status_code == 400, r.text
    doc = r.json()
    assert set(doc) == {"error"} and needle in doc["error"], doc


def test_an_unknown_model_is_a_404_naming_both(client: triton.InferenceServerClient, ostack: Stack) -> None:
    with pytest.raises(InferenceServerException, match=r"Unknown model 'recs'.*'fraud', 'personalization'"):
        client.get_model_metadata("recs")
    r = httpx.post(f"{ostack.gateway_url}/v2/models/recs/infer", json={"inputs": [USERS, ITEMS]}, timeout=10)
    assert r.status_code == 404 and set(r.json()) == {"error"}
