"""The embeddings+GBM head served end to end: trained on a tiny world (the `train` extra), exported by hand to ONNX
(trainer/gbm_onnx.py) with the GNN's embeddings table, activated with `served_head="gbm"`, served by real
inference processes; its scores are scikit-learn's on the same inputs, and transactions get scored and explained
by occlusion like the GNN's."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pyarrow.compute as pc
import pytest

pytest.importorskip("torch")
pytest.importorskip("torch_geometric")

from feature_svc.world import World
from inference_svc.artifact import active_version, read_metadata
from inference_svc.validation import read_sample
from tests.stacks import Stack
from tests.worlds import gnn_stack, train_tiny_gnn, world_requests


@pytest.fixture(scope="module")
def gbm_dir(gnn_world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_gnn(gnn_world, tmp_path_factory.mktemp("gbm-models"), served_head="gbm")


@pytest.fixture(scope="module")
def gstack(
    tmp_path_factory: pytest.TempPathFactory, gnn_world: World, gbm_dir: Path, redis_url: str, postgres_dsn: str
) -> Iterator[Stack]:
    with gnn_stack(tmp_path_factory.mktemp("gbmstack"), redis_url, postgres_dsn, gbm_dir) as s:
        yield s


def test_the_gbm_head_is_the_active_artifact_with_the_gnn_embeddings(gbm_dir: Path) -> None:
    version = active_version(gbm_dir)
    assert version.startswith("embgbm-")
    meta = read_metadata(gbm_dir / version / "metadata.json")
    gnn = read_metadata(gbm_dir / meta.training["gbm"]["encoder_version"] / "metadata.json")  # type: ignore[index]
    assert meta.feature_names == gnn.feature_names and meta.embeddings == gnn.embeddings
    assert (gbm_dir / version / "embeddings.parquet").read_bytes() == (
        gbm_dir / gnn.version / "embeddings.parquet"
    ).read_bytes()


def test_served_scores_equal_scikit_learn_on_the_same_inputs(gstack: Stack, gbm_dir: Path) -> None:
    version = active_version(gbm_dir)
    base = gbm_dir / version
    meta = read_metadata(base / "metadata.json")
    assert meta.validation is not None
    x, y = read_sample(base, meta.validation, meta.feature_names)  # real test-split inputs, fraud rows kept
    rng = np.random.default_rng(0)
    rows = np.concatenate([np.flatnonzero(y)[:30], rng.choice(np.flatnonzero(~y), 30, replace=False)])
    x_nan = x[rng.choice(len(x), 40, replace=False)].copy()
    assert meta.embeddings is not None
    n_raw = len(meta.feature_names) - len(meta.embeddings.column_names())
    unknown = rng.random((20, n_raw - 13)) < 0.5
    x_nan[:20, 13:n_raw] = np.where(unknown, np.nan, x_nan[:20, 13:n_raw])  # registry features unknown
    x_nan[20:, -meta.embeddings.dim :] = np.nan  # an entity's embedding unknown
    inputs = np.vstack([x[rows], x_nan]).astype(np.float32)
    with (base / "gbm.pkl").open("rb") as fh:
        clf = pickle.load(fh)["model"]
    expected = clf.predict_proba(inputs.astype(np.float64))[:, 1]
    body = {"features": [[None if np.isnan(v) else float(v) for v in row] for row in inputs.tolist()]}
    r = httpx.post(f"{gstack.gateway_url}/feature-importance", json=body, timeout=120)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["model_version"] == version and doc["explainer"] == "occlusion"
    served = np.asarray(doc["predictions"])
    assert served.shape == expected.shape
    assert np.max(np.abs(served - expected)) <= 1e-6  # the answer is rounded to 6 decimals
    assert np.std(expected) > 1e-3  # not a constant model


def test_transactions_are_scored_and_explained_by_the_gbm_head(gstack: Stack, gnn_world: World, gbm_dir: Path) -> None:
    t = gnn_world.transactions
    batch = world_requests(t.filter(pc.equal(t["fraud_kind"], "ring")).slice(0, 20).to_pylist(), "gbm-ring")
    doc = httpx.post(f"{gstack.gateway_url}/predict", json={"transactions": batch}, timeout=60).json()
    assert doc["complete"], doc
    assert doc["model_versions"] == [active_version(gbm_dir)]
    for x in doc["results"]:
        assert 0.0 <= x["fraud_score"] <= 1.0
        assert x["risk_level"] in ("low", "medium", "high", "critical")
        assert x["features_used"] > 100  # 13 fields + registry features + 4 x 16 embeddings
        weights = [f["weight"] for f in x["top_risk_factors"]]
        assert weights == sorted(weights, reverse=True)
    assert any(x["top_risk_factors"] for x in doc["results"])
