"""Issue 12: the fast GNN scoring path (one bulk-string Redis read decoded by numpy, embeddings looked up by fancy
index, one stacked ONNX run for every occlusion group) gives exactly what the straightforward path gives
(`bench/partial_reference.py`: per-entity decode, per-entity copies, one ONNX run per group), on a tiny trained GNN
and a real Redis holding fresh, stale, too old, broken and missing entries: scores, levels, confidences, reasons and
their weights, freshness, degraded flags, and the entity counts."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("torch_geometric")

from bench.partial_reference import reference_scorer
from feature_svc.online import FeatureRecord, OnlineStore
from feature_svc.world import World
from inference_svc.entity_features import ENTITY_ORDER, EntityFeatureSource, EntityStats
from inference_svc.model import OnnxModel, load_model
from inference_svc.scorer import Scorer
from shared.entities import ENTITY_ID_FIELD
from shared.messages import Transaction
from tests.test_gnn_serving import gnn_dir  # noqa: F401  (a module fixture: the GNN of the tiny world, conftest's gnn_world)
from tests.worlds import world_requests

VERSION = "fs-test"
MAX_AGE_S = 3600.0


@pytest.fixture(scope="module")
def model(gnn_dir: Path) -> OnnxModel:  # noqa: F811
    return load_model(gnn_dir)


def transactions(world: World) -> list[Transaction]:
    """World transactions, some without a device or IP, some with entities nobody has seen (no embedding row)."""
    rows = world_requests(world.transactions.slice(0, 600).to_pylist(), "fp")
    for i, r in enumerate(rows):
        if i % 17 == 0:
            r["device_id"] = None
        if i % 23 == 0:
            r["ip_address"] = None
        if i % 29 == 0:
            r["card_id"] = f"card_new_{i}"
    return msgspec.convert(rows, list[Transaction])


async def fill(url: str, prefix: str, txs: list[Transaction], now: float) -> dict[str, int]:
    """Every entity of `txs` written, then spoiled by kind: missing, another version, too old, a short `_vec`."""
    store = OnlineStore.from_url(url, version=VERSION, prefix=prefix)
    other = OnlineStore.from_url(url, version="fs-older", prefix=prefix)
    rng = np.random.default_rng(5)
    kinds = {"fresh": 0, "missing": 0, "other_version": 0, "too_old": 0, "broken": 0}
    try:
        for etype in ENTITY_ORDER:
            names = list(store.layout[etype])
            ids = sorted({i for t in txs if (i := getattr(t, ENTITY_ID_FIELD[etype])) is not None})
            for n, eid in enumerate(ids):
                values = rng.exponential(3.0, len(names))
                values[rng.random(len(names)) < 0.1] = np.nan
                at = now - float(rng.uniform(0, 600))
                kind = ("fresh",) * 8 + ("missing", "other_version", "too_old", "broken")
                k = kind[n % len(kind)]
                kinds[k] += 1
                rec = FeatureRecord(
                    entity_type=etype,
                    entity_id=eid,
                    values=dict(zip(names, values.tolist(), strict=True)),
                    computed_at=at - 2 * MAX_AGE_S if k == "too_old" else at,
                )
                if k == "missing":
                    continue
                await (other if k == "other_version" else store).write([rec])
                if k == "broken":
                    await store.redis.hset(store.key(etype, eid), "_vec", b"\x00" * 8)
    finally:
        await store.close()
        await other.close()
    return kinds


def stats_tuple(s: EntityStats | None) -> tuple[Any, ...]:
    assert s is not None
    return (
        s.entities,
        s.cache_hits,
        s.cache_misses,
        s.cache_stale,
        s.computed,
        s.unavailable,
        s.row_age_s.tobytes(),
        s.row_computed.tolist(),
        s.row_degraded.tolist(),
        s.reasons,
    )


def test_the_fast_path_scores_and_explains_exactly_as_the_reference(
    model: OnnxModel,
    gnn_world: World,
    redis_url: str,
) -> None:
    txs = transactions(gnn_world)
    now = time.time()
    prefix = f"fm:fastpath:{int(now)}"

    async def run() -> None:
        kinds = await fill(redis_url, prefix, txs, now)
        assert all(kinds.values()), kinds  # every kind of entry is there
        store = OnlineStore.from_url(redis_url, version=VERSION, prefix=prefix)
        try:
            # no NATS connection: the entities Redis cannot serve are unavailable (degraded) on both paths
            clock = lambda: now + 1.0  # noqa: E731  (one clock: both paths measure the same ages)
            source = EntityFeatureSource(store, None, max_age_s=MAX_AGE_S, clock=clock)  # type: ignore[arg-type]
            # the worker's source reads only the model's columns
            lean = EntityFeatureSource(
                store,
                None,  # type: ignore[arg-type]
                max_age_s=MAX_AGE_S,
                clock=clock,
                wanted=model.meta.feature_names,
            )
            assert len(lean.names) < len(source.names)
            ref = reference_scorer(model, source)
            degraded = 0
            for fast in (Scorer(model, source), Scorer(model, lean)):
                assert fast.occlusion is not None and len(fast.occlusion.groups) > 5
                for lo, hi in ((0, 1), (1, 4), (4, 204), (204, 600)):
                    part = txs[lo:hi]
                    got, p_got, s_got = await fast.score(part)
                    want, p_want, s_want = await ref.score(part)
                    assert np.array_equal(p_got, p_want)
                    assert msgspec.msgpack.encode(got) == msgspec.msgpack.encode(want), (lo, hi)
                    assert stats_tuple(s_got) == stats_tuple(s_want)
                    degraded += sum(1 for x in got if x.degraded)
            # the comparison covered reasons and degraded rows, not only clean scores
            assert degraded > 0
            assert any(f.source == "graph" for x in got for f in x.top_risk_factors)
        finally:
            await store.close()

    asyncio.run(run())


def test_read_blocks_returns_only_the_columns_asked(redis_url: str) -> None:
    """A column subset (non-adjacent columns included) reads the same values as the whole vector, in its order."""
    now = time.time()
    prefix = f"fm:fastpath-cols:{int(now)}"

    async def run() -> None:
        store = OnlineStore.from_url(redis_url, version=VERSION, prefix=prefix)
        try:
            names = list(store.layout["card"])
            values = np.arange(len(names), dtype=np.float64) + 0.5
            values[3] = np.nan
            await store.write(
                [
                    FeatureRecord(
                        entity_type="card",
                        entity_id="c1",
                        values=dict(zip(names, values, strict=True)),
                        computed_at=now,
                    )
                ]
            )
            ids = {"card": ["c1", "nope"], "ip": ["9.9.9.9"]}
            whole = await store.read_blocks(ids, now=now + 2)
            cols = [0, 1, 2, 3, 7, len(names) - 1]
            some = await store.read_blocks(ids, {"card": cols}, now=now + 2)
            assert np.array_equal(whole["card"].values[0], values, equal_nan=True)
            assert np.array_equal(some["card"].values[0], values[cols], equal_nan=True)
            assert whole["card"].fresh.tolist() == [True, False] and whole["card"].present.tolist() == [True, False]
            assert np.isnan(some["card"].values[1]).all() and np.isnan(whole["card"].age_s[1])
            assert whole["card"].age_s[0] == pytest.approx(2.0)
            assert whole["ip"].values.shape == (1, len(store.layout["ip"])) and not whole["ip"].present.any()
        finally:
            await store.close()

    asyncio.run(run())
