"""Seed 004's operations routes through a real gateway, NATS, aggregator and two inference workers (a stack of this
module's own: loads and deletes change what it serves): `POST /models/load`, `DELETE /models/{version}`,
`POST /validate`, `POST /restart` (admin key) and `POST /feature-importance` (API key)."""

from __future__ import annotations

import asyncio
import math
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import pytest

from deploy.model_registry import RegistryAdmin, broadcast
from deploy.servers import start_nats
from inference_svc.artifact import read_metadata
from inference_svc.registry import local_active
from inference_svc.tx_features import featurize
from shared.messages import Transaction
from shared.model_messages import ClearCandidate, SetCandidate
from tests.stacks import Stack
from tests.test_model_registry import add_version

ADMIN, API = "ops-admin-key", "ops-api-key"
V2, V3, NO_SAMPLE = "ops-v2", "ops-v3", "ops-no-sample"
SEED_TX = {
    "card_id": "card_00001234",
    "transaction_amount": 150.0,
    "merchant_id": "merchant_12345",
    "mcc_code": "5411",
    "country_code": "US",
}


@pytest.fixture(scope="module")
def ops_models(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    """The session's bootstrap model (active) plus ops-v2, ops-v3 and a copy of the bootstrap that ships no
    validation sample (as models exported before the sample existed)."""
    d = tmp_path_factory.mktemp("ops") / "models"
    shutil.copytree(model_dir, d)
    add_version(d, V2, seed=2024)
    add_version(d, V3, seed=2025)
    v1 = local_active(d)
    shutil.copytree(d / v1, d / NO_SAMPLE)
    meta = read_metadata(d / NO_SAMPLE / "metadata.json")
    old = msgspec.structs.replace(meta, version=NO_SAMPLE, validation=None)
    (d / NO_SAMPLE / "metadata.json").write_bytes(msgspec.json.encode(old))
    (d / NO_SAMPLE / "validation.parquet").unlink()
    return d


@pytest.fixture(scope="module")
def ops(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, postgres_dsn: str, ops_models: Path
) -> Iterator[Stack]:
    run = tmp_path_factory.mktemp("ops-stack")
    srv = start_nats(run / "nats")
    env = {"FRAUDMESH_API_KEYS": API, "FRAUDMESH_ADMIN_API_KEYS": ADMIN}
    s = Stack(run / "stack", srv.extra["url"], redis_url, postgres_dsn, ops_models, env)
    try:
        s.start("aggregator")
        s.start("inference", 2)
        s.start("gateway")
        s.wait_ready()
        s.wait_health("inference", 2)
        yield s
    finally:
        s.stop()
        srv.stop()


@pytest.fixture(scope="module")
def v1(ops_models: Path) -> str:
    return local_active(ops_models)


def call(s: Stack, method: str, path: str, body: Any = None, key: str | None = ADMIN, **kw: Any) -> httpx.Response:
    headers = {"X-API-Key": key} if key else {}
    return httpx.request(method, f"{s.gateway_url}{path}", json=body, headers=headers, timeout=60, **kw)


def score(s: Stack, tx: dict[str, Any]) -> httpx.Response:
    return call(s, "POST", "/score/fraud", tx, key=API, params={"ingest": "false"})


def load(s: Stack, version: str) -> dict[str, Any]:
    r = call(s, "POST", "/models/load", {"version": version})
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


def logit(p: float) -> float:
    return math.log(p / (1 - p))


# ------------------------------------------------------------------------------------------------- keys
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/models/load", {"version": "x"}),
        ("DELETE", "/models/x", None),
        ("POST", "/validate", None),
        ("POST", "/restart", None),
    ],
)
def test_admin_routes_need_an_admin_key_not_an_api_key(ops: Stack, method: str, path: str, body: Any) -> None:
    for key in (None, API, "wrong"):
        r = call(ops, method, path, body, key=key)
        assert r.status_code == 401, (key, r.text)
        assert r.json()["code"] == "unauthorized" and "admin" in r.json()["message"]
    assert call(ops, method, path, body, key=ADMIN).status_code != 401


def test_feature_importance_is_an_api_route(ops: Stack) -> None:
    assert call(ops, "POST", "/feature-importance", {"features": [SEED_TX]}, key=None).status_code == 401
    assert call(ops, "POST", "/feature-importance", {"features": [SEED_TX]}, key=API).status_code == 200


# ------------------------------------------------------------------------------------------------- load
def test_load_with_seed_004_body_hot_swaps_every_worker_and_scores_show_it(ops: Stack, v1: str) -> None:
    body = {"model_path": f"models/{V2}", "model_type": "logistic_regression", "compile_model": True}
    r = call(ops, "POST", "/models/load", body)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["success"] is True and doc["version"] == V2 and doc["previous_version"] == v1
    assert doc["model_type"] == "logistic_regression" and doc["model_info"]["input_features"] > 0
    assert len(doc["workers"]) == 2 and {w["active"] for w in doc["workers"]} == {V2}
    for i in range(6):  # both workers: every partial now meets v2
        assert score(ops, {**SEED_TX, "transaction_id": f"after-load-{i}"}).json()["model_version"] == V2
    models = call(ops, "GET", "/models", key=API).json()
    assert models["families"][0]["active"]["version"] == V2
    back = load(ops, v1)
    assert back["previous_version"] == V2 and {w["active"] for w in back["workers"]} == {v1}
    assert score(ops, SEED_TX).json()["model_version"] == v1


@pytest.mark.parametrize(
    ("body", "status", "path"),
    [
        ({"version": "no-such-version"}, 404, None),
        ({"model_path": "models/no-such-version"}, 404, None),
        ({"version": V2, "model_type": "xgboost"}, 400, "$.model_type"),
        ({}, 400, "$"),
        ({"version": V2, "model_path": V2}, 400, "$"),
        ({"version": "../etc"}, 400, "$.version"),
        ({"version": V2, "colour": "red"}, 400, "$"),  # "unknown field `colour`"
        ({"model_path": "models/../"}, 400, "$.model_path"),
    ],
)
def test_load_refuses_unknown_versions_and_bad_bodies_and_changes_nothing(
    ops: Stack, v1: str, body: dict[str, Any], status: int, path: str | None
) -> None:
    r = call(ops, "POST", "/models/load", body)
    assert r.status_code == status, r.text
    doc = r.json()
    if status == 404:
        assert doc["code"] == "not_found" and "no-such-version" in doc["message"] and "GET /models" in doc["message"]
    else:
        assert doc["errors"][0]["path"] == path, doc
        assert "colour" in doc["errors"][0]["message"] or "colour" not in body
    assert score(ops, SEED_TX).json()["model_version"] == v1


# ----------------------------------------------------------------------------------------------- delete
async def _set_candidate(s: Stack, models: Path, version: str | None) -> None:
    nc = await nats.connect(s.state.nats_url)
    try:
        reg = RegistryAdmin(nc.jetstream(), models)
        if version is None:
            await reg.clear_candidate()
            await broadcast(nc, ClearCandidate(), expect=2, timeout_s=20)
        else:
            await reg.publish(version)
            await reg.set_candidate(version, 0.1)
            await broadcast(nc, SetCandidate(version=version, share=0.1), expect=2, timeout_s=20)
    finally:
        await nc.close()


def test_delete_refuses_the_active_version_and_the_candidate_and_removes_others(
    ops: Stack, v1: str, ops_models: Path
) -> None:
    r = call(ops, "DELETE", f"/models/{v1}")
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "conflict" and "active" in r.json()["message"]

    asyncio.run(_set_candidate(ops, ops_models, V3))
    try:
        r = call(ops, "DELETE", f"/models/{V3}")
        assert r.status_code == 409, r.text
        assert "candidate" in r.json()["message"]
    finally:
        asyncio.run(_set_candidate(ops, ops_models, None))

    r = call(ops, "DELETE", f"/models/{V3}")
    assert r.status_code == 200, r.text
    assert r.json()["version"] == V3 and set(r.json()["removed_from"]) == {"object_store", "model_dir"}
    assert not (ops_models / V3).exists()
    versions = call(ops, "GET", "/models", key=API).json()["families"][0]["versions"]
    assert V3 not in versions and v1 in versions and V2 in versions
    again = call(ops, "DELETE", f"/models/{V3}")
    assert again.status_code == 404 and V3 in again.json()["message"]
    assert call(ops, "POST", "/models/load", {"version": V3}).status_code == 404
    bad = call(ops, "DELETE", "/models/..x")
    assert bad.status_code == 400, bad.text
    assert score(ops, SEED_TX).json()["model_version"] == v1


# --------------------------------------------------------------------------------------------- validate
def test_validate_reproduces_the_shipped_models_report(ops: Stack, v1: str) -> None:
    r = call(ops, "POST", "/validate")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["model_version"] == v1 and doc["sample_available"] is True
    assert doc["success"] is True and doc["agrees"] is True, doc["message"]
    assert doc["rows"] > 1000 and 0 < doc["positives"] < doc["rows"]
    assert {c["name"] for c in doc["checks"]} == {"roc_auc", "pr_auc"}
    for c in doc["checks"]:
        assert c["difference"] <= doc["tolerance"] and c["observed"] == doc["observed"][c["name"]]
    # the bootstrap ships its whole validation split: the sample's metrics are the model report's (at the API's 6
    # decimals of a score, a few tied scores may move the last digits)
    assert abs(doc["reported"]["roc_auc"] - doc["model_report"]["val_roc_auc"]) <= 1e-3
    assert abs(doc["reported"]["pr_auc"] - doc["model_report"]["val_pr_auc"]) <= 1e-3
    bad = call(ops, "POST", "/validate", params={"tolerance": "2"})
    assert bad.status_code == 400, bad.text


def test_validate_says_clearly_when_the_model_ships_no_sample(ops: Stack, v1: str) -> None:
    load(ops, NO_SAMPLE)
    try:
        r = call(ops, "POST", "/validate")
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["model_version"] == NO_SAMPLE
        assert doc["success"] is False and doc["sample_available"] is False and doc["checks"] == []
        assert "ships no validation sample" in doc["message"]
    finally:
        load(ops, v1)


# ---------------------------------------------------------------------------------------------- restart
def test_restart_during_a_load_reloads_every_worker_and_loses_no_request(ops: Stack, v1: str) -> None:
    stop = threading.Event()
    statuses: list[int] = []
    versions: set[str] = set()

    def traffic(k: int) -> None:
        i = 0
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                r = client.post(
                    f"{ops.gateway_url}/score/fraud",
                    json={**SEED_TX, "transaction_id": f"rolling-{k}-{i}"},
                    params={"ingest": "false"},
                    headers={"X-API-Key": API},
                )
                statuses.append(r.status_code)
                if r.status_code == 200:
                    versions.add(r.json()["model_version"])
                i += 1

    with ThreadPoolExecutor(4) as pool:
        senders = [pool.submit(traffic, k) for k in range(2)]
        loading = pool.submit(call, ops, "POST", "/models/load", {"version": V2})
        restart = call(ops, "POST", "/restart")
        loaded = loading.result()
        stop.set()
        for f in senders:
            f.result()
    assert loaded.status_code == 200, loaded.text
    assert restart.status_code == 200, restart.text
    doc = restart.json()
    assert doc["success"] is True and doc["state"] == "READY", doc
    assert len(doc["reloaded"]) == 2 and len({w["instance_id"] for w in doc["reloaded"]}) == 2
    assert all(w["reloaded"] and not w["error"] and w["reload_ms"] > 0 for w in doc["reloaded"])
    assert statuses and set(statuses) == {200}, f"{len([s for s in statuses if s != 200])} of {len(statuses)} failed"
    assert V2 in versions
    load(ops, v1)


# ----------------------------------------------------------------------------------- feature importance
def test_feature_importance_attributions_and_baseline_add_up_to_the_score(ops: Stack, v1: str) -> None:
    r = call(ops, "POST", "/feature-importance", {"features": [SEED_TX]}, key=API)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["model_version"] == v1 and doc["explainer"] == "linear" and doc["units"] == "log_odds"
    (one,) = doc["inputs"]
    names = call(ops, "GET", "/model/features", key=API).json()["feature_names"]
    assert set(one["attributions"]) == set(names) and doc["feature_importance"] == {
        k: pytest.approx(v, abs=1e-6) for k, v in one["attributions"].items()
    }
    # the linear explainer's definition: logit(score) = logit(baseline) + sum of the attributions
    total = sum(one["attributions"].values())
    assert logit(one["prediction"]) == pytest.approx(logit(one["baseline_prediction"]) + total, abs=1e-3)
    assert doc["predictions"] == [one["prediction"]] and doc["baseline_prediction"] == [one["baseline_prediction"]]
    scored = score(ops, SEED_TX).json()
    assert one["prediction"] == pytest.approx(scored["fraud_score"], abs=1e-6)
    # seed 004's rows of numbers: the same transaction's model inputs give the same attributions
    row = featurize([msgspec.convert(SEED_TX, Transaction)])[0]
    as_row = call(ops, "POST", "/feature-importance", {"features": [row.tolist()]}, key=API)
    assert as_row.status_code == 200, as_row.text
    (same,) = as_row.json()["inputs"]
    assert same["prediction"] == pytest.approx(one["prediction"], abs=1e-6)
    for k, v in one["attributions"].items():
        assert same["attributions"][k] == pytest.approx(v, abs=1e-5)


@pytest.mark.parametrize(
    ("body", "path", "words"),
    [
        ({"features": [[0.1, 0.2, 0.3, 0.4]]}, "$.features[0]", "4 values"),  # seed 004's own example
        ({"features": [{"card_id": "c1"}]}, "$.features[0].transaction_amount", ""),
        ({"features": [{"card_id": "c1", "transaction_amount": "ten"}]}, "$.features[0].transaction_amount", ""),
        ({"features": []}, "$.features", ""),
        ({"features": [SEED_TX, [0.1]]}, "$.features", "one kind"),
        ({"features": [[0.1, "x"]]}, "$.features[0][1]", ""),
        ({"transactions": [SEED_TX]}, "$", ""),
        ({"features": [SEED_TX] * 101}, "$.features", ""),
    ],
)
def test_feature_importance_bad_input_is_a_400_naming_the_field(
    ops: Stack, body: dict[str, Any], path: str, words: str
) -> None:
    r = call(ops, "POST", "/feature-importance", body, key=API)
    assert r.status_code == 400, r.text
    err = r.json()["errors"][0]
    assert err["path"] == path, r.json()
    assert words in err["message"]


def test_feature_importance_refuses_unknown_inputs_for_a_linear_model(ops: Stack) -> None:
    n = len(call(ops, "GET", "/model/features", key=API).json()["feature_names"])
    row: list[float | None] = [0.0] * n
    row[2] = None
    r = call(ops, "POST", "/feature-importance", {"features": [row]}, key=API)
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["path"] == "$.features[0][2]"
