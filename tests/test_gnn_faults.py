"""Issue 10, done-when 1: the GNN's decisions survive a Redis restart. 200 world transactions are scored, Redis is
restarted (the servers API `fraudmesh restart redis` uses), and they are scored again: every decision is identical,
or flagged degraded (never silently different)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("torch")
pytest.importorskip("torch_geometric")

from deploy.servers import Server, start_redis
from feature_svc.world import World
from tests.stacks import Stack
from tests.test_gnn_serving import gnn_dir  # noqa: F401  (a module fixture: the GNN of the tiny world)
from tests.worlds import gnn_stack, world_requests

N = 200


@pytest.fixture(scope="module")
def own_redis(run_dir: Path) -> Iterator[dict[str, Server]]:
    holder = {"redis": start_redis(run_dir / "gnn-faults-redis")}
    yield holder
    holder["redis"].stop()


@pytest.fixture(scope="module")
def rstack(
    tmp_path_factory: pytest.TempPathFactory,
    gnn_world: World,
    gnn_dir: Path,  # noqa: F811
    own_redis: dict[str, Server],
    postgres_dsn: str,
) -> Iterator[Stack]:
    with gnn_stack(tmp_path_factory.mktemp("rstack"), own_redis["redis"].extra["url"], postgres_dsn, gnn_dir) as s:
        yield s


def world_batch(world: World, n: int) -> list[dict[str, Any]]:
    return world_requests(world.transactions.slice(0, n).to_pylist(), "w")


def decisions(stack: Stack, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    r = httpx.post(f"{stack.gateway_url}/predict?ingest=false", json={"transactions": batch}, timeout=60)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["complete"], doc["missing_transaction_ids"][:5]
    return list(doc["results"])


def test_a_redis_restart_changes_no_gnn_decision(
    rstack: Stack,
    gnn_world: World,
    own_redis: dict[str, Server],
    run_dir: Path,
) -> None:
    batch = world_batch(gnn_world, N)
    before = decisions(rstack, batch)
    assert before[0]["model_version"].startswith("gnn-")
    assert not any(x["degraded"] for x in before)

    port = own_redis["redis"].port
    own_redis["redis"].stop()
    during = decisions(rstack, batch)  # Redis down: features come from the ledger, or the score says it is degraded
    own_redis["redis"] = start_redis(run_dir / "gnn-faults-redis", port=port)
    after = decisions(rstack, batch)

    def key(x: dict[str, Any]) -> tuple[Any, ...]:
        return (x["transaction_id"], x["risk_level"], x["recommended_action"], round(x["fraud_score"], 4))

    for b, d, a in zip(before, during, after, strict=True):
        assert key(a) == key(b), (b, a)
        assert d["degraded"] or key(d) == key(b), (b, d)
        if d["degraded"]:
            assert d["degraded_reasons"] and d["feature_freshness_sec"] is None
