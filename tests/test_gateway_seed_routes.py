"""The seeds' routes with the seeds' own example bodies, through a real gateway, NATS, aggregator and workers:
seed 001 `/score/batch`, seed 003 `/ping`, `/batch-predict`, `/invocations`, seed 004 `/` and `/predict/batch`."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.stacks import Stack

SEED_001_FRAUD = {
    "card_id": "card_00001234",
    "transaction_amount": 150.0,
    "merchant_id": "merchant_12345",
    "mcc_code": "5411",
    "country_code": "US",
}
SEED_001_BATCH = {
    "model_type": "fraud_detection",
    "requests": [{"card_id": "card_1", "transaction_amount": 100}, {"card_id": "card_2", "transaction_amount": 500}],
    "batch_id": "batch_20240902_001",
}
FRAUD_REPLY_KEYS = {
    "fraud_score",
    "risk_level",
    "confidence",
    "recommended_action",
    "explanation",
    "top_risk_factors",
    "features_used",
    "latency_ms",
    "model_version",
    "feature_freshness_sec",
}


def post(stack: Stack, path: str, body: Any, **kw: Any) -> httpx.Response:
    return httpx.post(f"{stack.gateway_url}{path}", json=body, params={"ingest": "false"}, timeout=30, **kw)


def test_score_batch_answers_seed_001_body_with_one_fraud_reply_per_request(stack: Stack) -> None:
    r = post(stack, "/score/batch", SEED_001_BATCH)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["batch_id"] == "batch_20240902_001"
    assert doc["model_type"] == "fraud_detection"
    assert (doc["total_requests"], doc["successful_responses"], doc["failed_responses"]) == (2, 2, 0)
    assert doc["failures"] == []
    assert [x["transaction_id"] for x in doc["responses"]] == ["batch_20240902_001-0", "batch_20240902_001-1"]
    for item in doc["responses"]:
        assert set(item) >= FRAUD_REPLY_KEYS
    single = post(stack, "/score/fraud", {**SEED_001_BATCH["requests"][1], "transaction_id": "batch_20240902_001-1"})
    assert single.json()["fraud_score"] == doc["responses"][1]["fraud_score"]


def test_score_batch_personalization_checks_its_own_bodies(stack: Stack) -> None:
    """Fraud bodies sent as personalization requests are a 400 naming the field; personalization bodies are scored
    by the session's tiny personalization model (tests/conftest.py; tests/test_personalization.py tests it)."""
    r = post(stack, "/score/batch", {**SEED_001_BATCH, "model_type": "personalization"})
    assert r.status_code == 400, r.text
    doc = r.json()
    assert doc["code"] == "bad_request"
    assert doc["errors"][0]["path"].startswith("$.requests[0]") and "card_id" in doc["errors"][0]["message"]
    pairs = [{"user_id": "user_00005678", "item_id": "item_electronics_001"}]
    r = post(stack, "/score/batch", {"model_type": "personalization", "requests": pairs})
    assert r.status_code == 200, r.text
    assert r.json()["responses"][0]["user_id"] == "user_00005678"


def test_score_batch_names_every_bad_transaction_at_its_place_in_requests(stack: Stack) -> None:
    body = {
        "model_type": "fraud_detection",
        "requests": [
            {"card_id": "card_1", "transaction_amount": "ten"},
            {"card_id": "c2"},
            {"card_id": "c3", "transaction_amount": 1},
        ],
    }
    r = post(stack, "/score/batch", body)
    assert r.status_code == 400, r.text
    paths = [e["path"] for e in r.json()["errors"]]
    assert paths == ["$.requests[0].transaction_amount", "$.requests[1].transaction_amount"]


def test_score_batch_refuses_more_than_the_batch_limit_with_413(stack: Stack) -> None:
    body = {"model_type": "fraud_detection", "requests": [{"card_id": "c", "transaction_amount": 1}] * 10_001}
    r = post(stack, "/score/batch", body)
    assert r.status_code == 413, r.text
    assert r.json()["code"] == "payload_too_large"


def test_ping_and_root_answer_like_seeds_003_and_004(stack: Stack) -> None:
    ping = httpx.get(f"{stack.gateway_url}/ping", timeout=10)
    assert ping.status_code == 200 and ping.json() == {"status": "ok"}
    root = httpx.get(f"{stack.gateway_url}/", timeout=10).json()
    assert root["name"] == "fraudmesh" and root["status"] == "running" and root["docs_url"] == "/docs"
    assert root["version"]
    assert httpx.get(f"{stack.gateway_url}{root['docs_url']}", timeout=10).status_code == 200


def test_batch_predict_takes_records_and_refuses_more_than_1000(stack: Stack) -> None:
    records = [SEED_001_FRAUD, {"card_id": "card_2", "transaction_amount": 500}]
    r = post(stack, "/batch-predict", {"records": records})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["count"] == 2 and doc["complete"] is True
    assert all(0.0 <= p["fraud_score"] <= 1.0 for p in doc["predictions"])
    too_many = post(stack, "/batch-predict", {"records": [SEED_001_FRAUD] * 1001})
    assert too_many.status_code == 413, too_many.text
    assert "1000" in too_many.json()["message"]
    empty = post(stack, "/batch-predict", {"records": []})
    assert empty.status_code == 400 and empty.json()["errors"][0]["path"] == "$.records"


@pytest.mark.parametrize(
    "body",
    [
        {
            "dataframe_split": {
                "columns": ["card_id", "transaction_amount", "mcc_code"],
                "data": [["card_1", 100.0, "5411"], ["card_2", 500.0, "5816"]],
            }
        },
        {
            "dataframe_records": [
                {"card_id": "card_1", "transaction_amount": 100.0, "mcc_code": "5411"},
                {"card_id": "card_2", "transaction_amount": 500.0, "mcc_code": "5816"},
            ]
        },
        {
            "instances": [
                {"card_id": "card_1", "transaction_amount": 100.0, "mcc_code": "5411"},
                {"card_id": "card_2", "transaction_amount": 500.0, "mcc_code": "5816"},
            ]
        },
        {
            "inputs": {
                "card_id": ["card_1", "card_2"],
                "transaction_amount": [100.0, 500.0],
                "mcc_code": ["5411", "5816"],
            }
        },
    ],
    ids=["dataframe_split", "dataframe_records", "instances", "inputs"],
)
def test_invocations_accepts_every_mlflow_format_with_the_same_scores(stack: Stack, body: dict[str, Any]) -> None:
    r = post(stack, "/invocations", body)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 2
    direct = post(
        stack,
        "/predict",
        {
            "transactions": [
                {"card_id": "card_1", "transaction_amount": 100.0, "mcc_code": "5411"},
                {"card_id": "card_2", "transaction_amount": 500.0, "mcc_code": "5816"},
            ]
        },
    ).json()
    assert [p["fraud_score"] for p in preds] == [x["fraud_score"] for x in direct["results"]]
    assert {"fraud_score", "risk_level", "recommended_action", "model_version", "transaction_id"} <= set(preds[0])


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (
            {"dataframe_split": {"columns": ["card_id", "transaction_amount"], "data": [["c1", "x"]]}},
            "$.dataframe_split.data[0][1]",
        ),
        ({"dataframe_split": {"columns": ["card_id"], "data": [["c1"]]}}, "$.dataframe_split.columns"),
        (
            {"dataframe_split": {"columns": ["card_id", "transaction_amount"], "data": [["c1"]]}},
            "$.dataframe_split.data[0]",
        ),
        ({"inputs": {"card_id": ["c1", "c2"], "transaction_amount": [1.0, -2.0]}}, "$.inputs.transaction_amount[1]"),
        ({"instances": [{"card_id": "c1", "transaction_amount": 1.0, "colour": "red"}]}, "$.instances[0].colour"),
        ({"inputs": [{"card_id": "c1", "transaction_amount": 1.0}], "instances": []}, "$"),
        ({"dataframe_records": [{"card_id": "c1", "transaction_amount": 1.0}], "params": {"x": 1}}, "$.params"),
        ({}, "$"),
    ],
)
def test_invocations_errors_name_the_place_in_the_mlflow_body(stack: Stack, body: dict[str, Any], path: str) -> None:
    r = post(stack, "/invocations", body)
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["path"] == path, r.json()


def test_invocations_refuses_csv_with_415(stack: Stack) -> None:
    r = httpx.post(
        f"{stack.gateway_url}/invocations",
        content=b"card_id,transaction_amount\nc1,1\n",
        headers={"Content-Type": "text/csv"},
        timeout=10,
    )
    assert r.status_code == 415, r.text


def test_predict_batch_answers_one_result_per_inner_batch(stack: Stack) -> None:
    body = {
        "batch": [
            [SEED_001_FRAUD],
            [{"card_id": "card_2", "transaction_amount": 500}, {"card_id": "card_3", "transaction_amount": 5}],
        ],
        "request_ids": ["id1", "id2"],
    }
    r = post(stack, "/predict/batch", body)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert [x["request_id"] for x in doc["results"]] == ["id1", "id2"]
    assert [len(x["predictions"]) for x in doc["results"]] == [1, 2]
    assert all(x["success"] and x["error"] is None for x in doc["results"])
    assert [p["transaction_id"] for p in doc["results"][1]["predictions"]] == ["id2-0", "id2-1"]
    assert doc["metadata"]["batch_size"] == 2 and doc["metadata"]["success_rate"] == 1.0
    mismatch = post(stack, "/predict/batch", {**body, "request_ids": ["only-one"]})
    assert mismatch.status_code == 400 and mismatch.json()["errors"][0]["path"] == "$.request_ids"
    bad = post(stack, "/predict/batch", {"batch": [[SEED_001_FRAUD], [{"card_id": "c"}]]})
    assert bad.status_code == 400 and bad.json()["errors"][0]["path"] == "$.batch[1][0].transaction_amount"


def test_models_lists_families_versions_active_and_metrics(stack: Stack) -> None:
    r = httpx.get(f"{stack.gateway_url}/models", timeout=10)
    assert r.status_code == 200, r.text
    families = {f["name"]: f for f in r.json()["families"]}
    fraud = families["fraud"]
    assert fraud["status"] == "serving"
    assert fraud["active"]["version"] in fraud["versions"]
    assert {"val_roc_auc", "val_pr_auc"} <= set(fraud["active"]["metrics"])
    assert set(fraud["active"]["thresholds"]) == {"medium", "high", "critical"}
    pers = families["personalization"]  # the session's tiny personalization model (tests/conftest.py)
    assert pers["status"] == "serving" and pers["active"]["version"] in pers["versions"]
    assert {"lightgcn.ndcg@10", "popularity.ndcg@10", "matrix_factorization.ndcg@10"} <= set(pers["active"]["metrics"])


def test_model_metadata_and_features_describe_the_active_model(stack: Stack) -> None:
    meta = httpx.get(f"{stack.gateway_url}/model/metadata", timeout=10).json()
    feats = httpx.get(f"{stack.gateway_url}/model/features", timeout=10).json()
    assert meta["name"] == "fraud" and meta["version"] == feats["model_version"]
    assert meta["feature_count"] == feats["feature_count"] == len(feats["feature_names"]) > 0
    assert meta["training"]["rows"] > 0 and "training_data_range" in meta
    fields = {f["name"]: f for f in feats["input_fields"]}
    assert fields["card_id"]["required"] and fields["transaction_amount"]["type"] == "number"
    assert not fields["mcc_code"]["required"]


def test_a_bad_request_id_is_refused_where_ids_are_built_from_it_and_replaced_on_reads(stack: Stack) -> None:
    bad = {"X-Request-Id": "not a usable id!"}
    r = httpx.get(f"{stack.gateway_url}/models", headers=bad, timeout=10)
    assert r.status_code == 200, r.text
    assert httpx.get(f"{stack.gateway_url}/ping", headers=bad, timeout=10).status_code == 200
    refused = post(stack, "/score/batch", SEED_001_BATCH, headers=bad)
    assert refused.status_code == 400 and refused.json()["errors"][0]["path"] == "header.X-Request-Id"
