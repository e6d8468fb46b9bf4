"""End to end through real processes: gateway -> NATS -> aggregator -> JetStream -> inference workers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import msgspec
import nats

from deploy.demo import sample_batch
from shared import subjects
from shared.messages import Codec, ErrorReply, ScoreReply
from tests.stacks import Stack

ROOT = Path(__file__).resolve().parent.parent


def test_batch_of_1000_is_split_into_5_partials_and_scored_by_several_workers(stack: Stack) -> None:
    batch = sample_batch(1000, seed=1)
    seen_workers: set[str] = set()
    for _ in range(5):
        r = httpx.post(f"{stack.gateway_url}/predict", json={"transactions": batch}, timeout=30)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["complete"] is True
        assert [p["size"] for p in doc["partials"]] == [200] * 5
        assert [p["index"] for p in doc["partials"]] == list(range(5))
        # one result per transaction, in input order
        assert [x["transaction_id"] for x in doc["results"]] == [t["transaction_id"] for t in batch]
        assert all(0.0 <= x["fraud_score"] <= 1.0 for x in doc["results"])
        assert doc["missing_transaction_ids"] == []
        seen_workers |= set(doc["inference_workers"])
        if len(doc["inference_workers"]) >= 2:
            break
    assert len(seen_workers) >= 2, f"only {seen_workers} scored partials; expected both inference workers"


def test_scores_are_deterministic_for_the_same_batch(stack: Stack) -> None:
    batch = sample_batch(300, seed=2)
    a = httpx.post(f"{stack.gateway_url}/predict", json={"transactions": batch}, timeout=30).json()
    b = httpx.post(f"{stack.gateway_url}/predict", json={"transactions": batch, "partial_size": 7}, timeout=30).json()
    assert len(b["partials"]) == 43  # ceil(300 / 7)
    assert [x["fraud_score"] for x in a["results"]] == [x["fraud_score"] for x in b["results"]]


def test_missing_transaction_ids_are_generated_per_position(stack: Stack) -> None:
    txs = [
        {"card_id": "card_1", "transaction_amount": 10.0},
        {"card_id": "card_2", "transaction_amount": 20.0},
    ]
    r = httpx.post(f"{stack.gateway_url}/predict", json={"transactions": txs, "request_id": "req-abc"}, timeout=10)
    assert r.status_code == 200, r.text
    assert [x["transaction_id"] for x in r.json()["results"]] == ["req-abc-0", "req-abc-1"]


def test_single_score_accepts_seed_001_request_unchanged(stack: Stack) -> None:
    body = {
        "card_id": "card_00001234",
        "transaction_amount": 150.0,
        "merchant_id": "merchant_12345",
        "mcc_code": "5411",
        "country_code": "US",
    }
    r = httpx.post(f"{stack.gateway_url}/score/fraud", json=body, timeout=10)
    assert r.status_code == 200, r.text
    doc = r.json()
    for key in (
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
    ):
        assert key in doc
    assert doc["risk_level"] in ("low", "medium", "high", "critical")
    assert doc["recommended_action"] in ("approve", "review", "decline")
    assert doc["features_used"] > 0
    assert r.headers["x-request-id"] == doc["request_id"]


def test_risky_transaction_scores_higher_and_says_why(stack: Stack) -> None:
    safe = {
        "card_id": "c1",
        "transaction_amount": 42.0,
        "mcc_code": "5411",
        "country_code": "US",
        "currency": "USD",
        "channel": "pos",
        "device_id": "d1",
        "ip_address": "10.0.0.1",
        "timestamp": "2026-11-01T14:00:00Z",
    }
    risky = {
        "card_id": "c2",
        "transaction_amount": 1.5,
        "mcc_code": "5816",
        "country_code": "NG",
        "currency": "EUR",
        "channel": "ecom",
        "timestamp": "2026-11-01T03:00:00Z",
    }
    s = httpx.post(f"{stack.gateway_url}/score/fraud", json=safe, timeout=10).json()
    k = httpx.post(f"{stack.gateway_url}/score/fraud", json=risky, timeout=10).json()
    assert k["fraud_score"] > s["fraud_score"]
    assert k["risk_level"] in ("high", "critical")
    codes = {f["code"] for f in k["top_risk_factors"]}
    assert codes & {"mcc_high_risk", "amount_tiny", "cross_border"}


def test_plain_nats_client_gets_the_same_scores_as_http(stack: Stack, tmp_path: Path) -> None:
    batch = sample_batch(1000, seed=3)
    f = tmp_path / "batch.json"
    f.write_text(json.dumps(batch))
    http = httpx.post(f"{stack.gateway_url}/predict", json={"transactions": batch}, timeout=30).json()
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "nats_client.py"),
            "--nats-url",
            stack.state.nats_url,
            "--file",
            str(f),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)
    assert reply["complete"] is True
    assert [(x["transaction_id"], x["fraud_score"]) for x in reply["results"]] == [
        (x["transaction_id"], x["fraud_score"]) for x in http["results"]
    ]


async def test_bad_input_over_nats_gets_an_error_reply_with_the_field_path(stack: Stack) -> None:
    nc = await nats.connect(stack.state.nats_url)
    codec = Codec()
    try:
        body = msgspec.msgpack.encode(
            {
                "transactions": [
                    {"card_id": "c", "transaction_amount": 1.0},
                    {"card_id": "c", "transaction_amount": "ten"},
                ]
            }
        )
        msg = await nc.request(subjects.SCORE, body, timeout=5)
        reply = codec.decode(msg.data, ErrorReply | ScoreReply)  # type: ignore[arg-type]
        assert isinstance(reply, ErrorReply)
        assert reply.code == "bad_request"
        assert reply.errors[0].path == "$.transactions[1].transaction_amount"
        msg = await nc.request(subjects.SCORE, b"\xc1not msgpack", timeout=5)
        reply = codec.decode(msg.data, ErrorReply | ScoreReply)  # type: ignore[arg-type]
        assert isinstance(reply, ErrorReply) and reply.code == "bad_request"
    finally:
        await nc.close()


def test_one_millisecond_deadline_gets_504_not_a_hang(stack: Stack) -> None:
    batch = sample_batch(1000, seed=4)
    r = httpx.post(f"{stack.gateway_url}/predict?timeout_ms=1", json={"transactions": batch}, timeout=10)
    assert r.status_code == 504, r.text
    assert r.json()["code"] == "deadline_exceeded"
    r = httpx.post(
        f"{stack.gateway_url}/score/fraud?timeout_ms=1",
        json={"card_id": "c", "transaction_amount": 1.0},
        timeout=10,
    )
    assert r.status_code == 504


def test_health_reports_every_service(stack: Stack) -> None:
    # /health gathers replies for 0.3 s; on a loaded 2-core machine a reply can miss one window
    stack.wait_health("inference", 2)
    stack.wait_health("feature", 1)
    doc = httpx.get(f"{stack.gateway_url}/health", timeout=5).json()
    assert doc["nats"] == "connected"
    assert doc["services"]["aggregator"]["instances"] == 1
    assert doc["services"]["inference"]["instances"] == 2
    assert doc["services"]["feature"]["instances"] == 1
    assert httpx.get(f"{stack.gateway_url}/ready", timeout=5).status_code == 200
    metrics = httpx.get(f"{stack.gateway_url}/metrics", timeout=5).text
    assert "fraudmesh_http_requests_total" in metrics
    spec = httpx.get(f"{stack.gateway_url}/docs/openapi.json", timeout=5).json()
    assert "/predict" in spec["paths"]
    assert spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
