"""The personalization model family end to end, on real servers: a tiny model trained by the trainer's CLI (world,
time split, LightGCN and both baselines, ONNX export, report), the features of its world loaded into Redis, and a
stack of its own (own nats-server; the session's Redis and PostgreSQL) whose inference worker serves both families.

Seed 001's bodies (full and minimal) through `/score/personalization`, `/score/batch` with `model_type:
"personalization"` and `personalization.score` on NATS; bad input is a 400 naming the field; a version activated
while fraud and personalization requests flow affects no fraud request, and each personalization request is scored
by exactly one version."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from shared import subjects
from shared.messages import Codec
from shared.personalization_messages import (
    PersonalizationItem,
    PersonalizationScoreReply,
    PersonalizationScoreRequest,
)
from tests.personalization_control import control_personalization
from tests.stacks import Stack, own_stack

WORLD = ["--users", "300", "--items", "150", "--days", "30"]
SEED_001_FULL = {
    "user_id": "user_00005678",
    "item_id": "item_electronics_001",
    "item_category": "electronics",
    "item_price": 299.99,
    "session_id": "session_abc123",
}
SEED_001_MINIMAL = {"user_id": "user_00005678", "item_id": "item_electronics_001"}
REPLY_FIELDS = {
    "relevance_score",
    "conversion_probability",
    "engagement_score",
    "user_segment",
    "behavioral_signals",
    "features_used",
    "latency_ms",
    "model_version",
}
SEGMENTS = {"high_value_engaged", "engaged", "browser", "casual", "new_visitor"}


def _run(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> dict[str, Any]:
    """Two versions of a tiny model (the second not activated) and the features of their world in Redis."""
    d = tmp_path_factory.mktemp("personalization")
    models, report = d / "models", d / "report"
    _run("trainer.personalization", *WORLD, "--epochs", "3", "--out", str(models), "--report", str(report))
    first = (models / "active").read_text().strip()
    _run("trainer.personalization", *WORLD, "--epochs", "2", "--out", str(models), "--no-activate")
    second = next(p.name for p in models.iterdir() if p.is_dir() and p.name != first)
    _run("feature_svc.world.personalization", "--redis-url", redis_url, *WORLD)
    ids = json.loads((models / first / "ids.json").read_text())
    return {"models": models, "report": report, "first": first, "second": second, "ids": ids}


@pytest.fixture(scope="module")
def pstack(
    tmp_path_factory: pytest.TempPathFactory,
    trained: dict[str, Any],
    redis_url: str,
    postgres_dsn: str,
    model_dir: Path,
) -> Iterator[Stack]:
    env = {"FRAUDMESH_PERSONALIZATION_MODEL_DIR": str(trained["models"])}
    with own_stack(tmp_path_factory.mktemp("pstack"), redis_url, postgres_dsn, model_dir, inference=2, env=env) as s:
        yield s


def post(stack: Stack, path: str, body: Any) -> httpx.Response:
    return httpx.post(f"{stack.gateway_url}{path}", json=body, params={"ingest": "false"}, timeout=30)


def check_reply(doc: dict[str, Any], version: str) -> None:
    assert set(doc) >= REPLY_FIELDS
    for name in ("relevance_score", "conversion_probability", "engagement_score"):
        assert isinstance(doc[name], float) and 0.0 <= doc[name] <= 1.0, (name, doc[name])
    assert doc["user_segment"] in SEGMENTS
    assert isinstance(doc["behavioral_signals"], list) and len(doc["behavioral_signals"]) <= 5
    assert all(isinstance(x, str) and x for x in doc["behavioral_signals"])
    assert isinstance(doc["features_used"], int) and doc["features_used"] >= 2
    assert doc["latency_ms"] > 0
    assert doc["model_version"] == version


# ----------------------------------------------------------------------------------------- training
def test_the_trainer_reports_the_model_and_both_baselines_on_the_test_split(trained: dict[str, Any]) -> None:
    doc = json.loads((trained["report"] / "metrics.json").read_text())
    assert set(doc["metrics"]) == {"popularity", "matrix_factorization", "lightgcn"}
    for metrics in doc["metrics"].values():
        assert set(metrics) >= {"ndcg@10", "recall@10", "conversion_auc"}
        assert 0.0 <= metrics["ndcg@10"] <= 1.0 and 0.0 <= metrics["recall@10"] <= 1.0
    assert doc["split"]["history_days"] < doc["split"]["head_days"] < doc["world"]["days"]
    readme = (trained["report"] / "README.md").read_text()
    assert "NDCG@10" in readme and doc["version"] in readme
    meta = json.loads((trained["models"] / trained["first"] / "metadata.json").read_text())
    assert (
        meta["family"] == "personalization"
        and meta["metrics"]["lightgcn.ndcg@10"] == doc["metrics"]["lightgcn"]["ndcg@10"]
    )


# ------------------------------------------------------------------------------------------ scoring
def test_seed_001_full_and_minimal_bodies_answer_every_field(pstack: Stack, trained: dict[str, Any]) -> None:
    for body in (SEED_001_FULL, SEED_001_MINIMAL):
        r = post(pstack, "/score/personalization", body)
        assert r.status_code == 200, r.text
        doc = r.json()
        check_reply(doc, trained["first"])
        assert doc["user_segment"] == "new_visitor" and "cold_start_user" in doc["behavioral_signals"]
        assert doc["feature_freshness_sec"] is None  # nothing known about this user or item
        assert r.headers["X-Request-Id"] == doc["request_id"]


def test_a_known_user_is_scored_from_the_online_features(pstack: Stack, trained: dict[str, Any]) -> None:
    users, items = trained["ids"]["users"], trained["ids"]["items"]
    active = [post(pstack, "/score/personalization", {"user_id": u, "item_id": items[0]}).json() for u in users[:40]]
    for doc in active:
        check_reply(doc, trained["first"])
    known = [d for d in active if d["user_segment"] != "new_visitor"]
    assert known, "every user of the world scored as a new visitor: are the user rows in Redis?"
    assert all(d["feature_freshness_sec"] is not None for d in known)
    cold = post(pstack, "/score/personalization", SEED_001_MINIMAL).json()
    assert max(d["features_used"] for d in known) > cold["features_used"]
    # the model personalizes: users disagree about the same item
    assert len({d["relevance_score"] for d in active}) > 1
    with_session = post(
        pstack,
        "/score/personalization",
        {"user_id": users[0], "item_id": items[1], "session_id": "session_0000000", "item_price": 12.5},
    ).json()
    check_reply(with_session, trained["first"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": "user_1"}, "item_id"),
        ({"item_id": "item_1"}, "user_id"),
        ({"user_id": "customer_1", "item_id": "item_1"}, "$.user_id"),
        ({"user_id": "user_1", "item_id": "item_1", "item_price": -3}, "$.item_price"),
        ({"user_id": "user_1", "item_id": "item_1", "item_price": "cheap"}, "$.item_price"),
        ({"user_id": "user_1", "item_id": "item_1", "session_id": ""}, "$.session_id"),
        ({"user_id": "user_1", "item_id": "item_1", "page": 2}, "page"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(pstack: Stack, body: dict[str, Any], field: str) -> None:
    r = post(pstack, "/score/personalization", body)
    assert r.status_code == 400, r.text
    doc = r.json()
    assert doc["code"] == "bad_request"
    assert any(field in e["path"] or field in e["message"] for e in doc["errors"]), doc


def test_batch_with_model_type_personalization_answers_one_reply_per_request(
    pstack: Stack, trained: dict[str, Any]
) -> None:
    users, items = trained["ids"]["users"], trained["ids"]["items"]
    requests = [SEED_001_FULL, SEED_001_MINIMAL, {"user_id": users[3], "item_id": items[7]}]
    r = post(pstack, "/score/batch", {"model_type": "personalization", "requests": requests, "batch_id": "b-1"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert (doc["batch_id"], doc["model_type"], doc["total_requests"]) == ("b-1", "personalization", 3)
    assert (doc["successful_responses"], doc["failed_responses"]) == (3, 0)
    for req, reply in zip(requests, doc["responses"], strict=True):
        check_reply(reply, trained["first"])
        single = post(pstack, "/score/personalization", req).json()
        assert (reply["user_id"], reply["item_id"]) == (req["user_id"], req["item_id"])
        assert reply["relevance_score"] == single["relevance_score"]
        assert reply["conversion_probability"] == single["conversion_probability"]
    bad = post(
        pstack, "/score/batch", {"model_type": "personalization", "requests": [SEED_001_MINIMAL, {"user_id": 7}]}
    )
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["path"] == "$.requests[1].user_id"


def test_the_same_over_nats(pstack: Stack, trained: dict[str, Any]) -> None:
    async def ask() -> PersonalizationScoreReply:
        codec = Codec()
        nc = await nats.connect(pstack.state.nats_url)
        try:
            req = PersonalizationScoreRequest(items=[PersonalizationItem(**SEED_001_FULL)], request_id="over-nats")
            msg = await nc.request(subjects.PERSONALIZATION_SCORE, codec.encode(req), timeout=10)
            answer = codec.decoder(PersonalizationScoreReply).decode(msg.data)
            assert isinstance(answer, PersonalizationScoreReply)
            return answer
        finally:
            await nc.close()

    reply = asyncio.run(ask())
    http = post(pstack, "/score/personalization", SEED_001_FULL).json()
    assert reply.request_id == "over-nats" and reply.model_version == trained["first"]
    assert reply.scores[0].relevance_score == http["relevance_score"]
    assert reply.scores[0].user_segment == http["user_segment"]


def test_models_lists_both_families(pstack: Stack, trained: dict[str, Any]) -> None:
    doc = httpx.get(f"{pstack.gateway_url}/models", timeout=10).json()
    families = {f["name"]: f for f in doc["families"]}
    assert families["fraud"]["status"] == "serving"
    pers = families["personalization"]
    assert pers["status"] == "serving" and pers["active"]["version"] == trained["first"]
    assert set(pers["versions"]) == {trained["first"], trained["second"]}
    assert pers["active"]["kind"] == "lightgcn" and "lightgcn.ndcg@10" in pers["active"]["metrics"]


def test_workers_count_pairs_by_family_and_version(pstack: Stack, trained: dict[str, Any]) -> None:
    post(pstack, "/score/batch", {"model_type": "personalization", "requests": [SEED_001_MINIMAL] * 4})
    label = f'family="personalization",version="{trained["first"]}"'
    total = 0.0
    for proc in pstack.procs:
        if proc.name != "inference":
            continue
        text = httpx.get(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith("fraudmesh_family_scored_pairs_total{") and label in line:
                total += float(line.rsplit(" ", 1)[1])
        assert f"fraudmesh_family_active_info{{{label}}} 1.0" in text
    assert total >= 4


# ----------------------------------------------------------------------------------------- hot swap
def test_activating_a_version_mid_load_leaves_fraud_alone_and_scores_each_request_with_one_version(
    pstack: Stack, trained: dict[str, Any]
) -> None:
    first, second = trained["first"], trained["second"]
    stop = threading.Event()
    fraud: list[int] = []
    pers: list[tuple[int, str]] = []

    def fraud_load() -> None:
        with httpx.Client(base_url=pstack.gateway_url, timeout=30) as c:
            while not stop.is_set():
                r = c.post(
                    "/score/fraud", json={"card_id": "card_1", "transaction_amount": 10.0}, params={"ingest": "false"}
                )
                fraud.append(r.status_code)

    def pers_load() -> None:
        with httpx.Client(base_url=pstack.gateway_url, timeout=30) as c:
            while not stop.is_set():
                r = c.post("/score/batch", json={"model_type": "personalization", "requests": [SEED_001_FULL] * 5})
                doc = r.json()
                versions = {x["model_version"] for x in doc.get("responses", [])}
                pers.append((r.status_code, ",".join(sorted(versions))))

    threads = [threading.Thread(target=fraud_load), threading.Thread(target=pers_load)]
    for t in threads:
        t.start()
    try:
        while len(pers) < 3 or len(fraud) < 3:
            stop.wait(0.05)
        states = control_personalization(pstack.state.nats_url, 2, second)
        n_at_swap = len(pers)
        while len(pers) < n_at_swap + 3 or len(fraud) < 6:
            stop.wait(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    try:
        assert {s.version for s in states} == {second}, states
        assert all(not s.error for s in states)
        assert set(fraud) == {200}, fraud
        assert {code for code, _ in pers} == {200}, pers
        assert {v for _, v in pers} <= {first, second}  # one version per request, never a mix
        assert pers[-1][1] == second
        listed = httpx.get(f"{pstack.gateway_url}/models", timeout=10).json()["families"]
        assert {f["name"]: f for f in listed}["personalization"]["active"]["version"] == second
    finally:
        back = control_personalization(pstack.state.nats_url, 2, first)
        assert {s.version for s in back} == {first}
