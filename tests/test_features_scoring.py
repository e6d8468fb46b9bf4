"""Route 1 in the scoring path and GET /features, through real processes: gateway, aggregator, inference
(entity features always on), feature service, over real NATS, Redis and PostgreSQL with a simulated world."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from feature_svc.world import World, WorldParams
from tests.stacks import Stack, own_stack
from tests.worlds import loaded_world


@pytest.fixture(scope="module")
def world(postgres_dsn: str) -> World:
    """A small world loaded into the ledger and the graph store of the default schema (the services' one)."""
    return loaded_world(postgres_dsn, WorldParams(n_cards=400, n_transactions=6000, seed=23))


@pytest.fixture(scope="module")
def fstack(
    tmp_path_factory: pytest.TempPathFactory, world: World, redis_url: str, postgres_dsn: str, model_dir: Path
) -> Iterator[Stack]:
    env = {"FRAUDMESH_ENTITY_FEATURES": "always"}
    with own_stack(tmp_path_factory.mktemp("fstack"), redis_url, postgres_dsn, model_dir, env=env) as s:
        yield s


def tx_of(world: World, row: int) -> dict[str, object]:
    t = world.transactions.slice(row, 1).to_pylist()[0]
    return {
        "card_id": t["card_id"],
        "transaction_amount": float(t["amount"]),
        "merchant_id": t["merchant_id"],
        "mcc_code": t["mcc_code"],
        "country_code": t["country_code"],
        "device_id": t["device_id"],
        "ip_address": t["ip_address"],
        "channel": t["channel"],
        "transaction_id": f"ft-{row}",
    }


def forget(redis_url: str, tx: dict[str, object]) -> None:
    r = redis.Redis.from_url(redis_url)
    keys = [
        f"fm:feat:{t}:{tx[f]}"
        for t, f in (("card", "card_id"), ("merchant", "merchant_id"), ("device", "device_id"), ("ip", "ip_address"))
        if tx.get(f)
    ]
    r.delete(*keys)


def test_missing_features_are_computed_then_read_from_redis(fstack: Stack, world: World, redis_url: str) -> None:
    tx = tx_of(world, 5000)
    forget(redis_url, tx)
    first = httpx.post(f"{fstack.gateway_url}/score/fraud", json=tx, timeout=20).json()
    assert first["features_computed"] > 0, first
    assert first["feature_freshness_sec"] == 0.0  # computed just now
    second = httpx.post(f"{fstack.gateway_url}/score/fraud", json=tx, timeout=20).json()
    assert second["features_computed"] == 0, second
    assert second["feature_freshness_sec"] is not None and second["feature_freshness_sec"] >= 0.0
    assert second["fraud_score"] == first["fraud_score"]

    batch = [tx_of(world, 5100 + i) for i in range(50)]
    for t in batch:
        forget(redis_url, t)
    one = httpx.post(f"{fstack.gateway_url}/predict", json={"transactions": batch}, timeout=30).json()
    assert one["complete"] and one["features_computed"] > 0
    assert one["partials"][0]["entities_computed"] > 0
    two = httpx.post(f"{fstack.gateway_url}/predict", json={"transactions": batch}, timeout=30).json()
    assert two["features_computed"] == 0 and two["partials"][0]["entities_computed"] == 0
    assert two["partials"][0]["entities_from_cache"] == two["partials"][0]["entities"]
    assert two["oldest_feature_age_s"] is not None


def test_get_features_returns_values_with_computed_at_and_version(fstack: Stack, world: World) -> None:
    card = world.transactions.column("card_id")[0].as_py()
    r = httpx.get(f"{fstack.gateway_url}/features", params={"entity_type": "card", "entity_id": card}, timeout=20)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["entity_id"] == card and doc["version"].startswith("fs-") and doc["computed_at"] > 0
    assert len(doc["values"]) >= 10
    name = next(iter(doc["values"]))
    r = httpx.get(
        f"{fstack.gateway_url}/features", params={"entity_type": "card", "entity_id": card, "names": name}, timeout=20
    )
    assert r.status_code == 200 and list(r.json()["values"]) == [name]


@pytest.mark.parametrize(
    ("params", "status", "path", "fragment"),
    [
        ({"entity_type": "user", "entity_id": "u1"}, 400, "query.entity_type", "Unknown entity type 'user'"),
        ({"entity_type": "card", "entity_id": "card 1/.."}, 400, "query.entity_id", "Malformed id"),
        (
            {"entity_type": "card", "entity_id": "card_1", "names": "card_txn_count_1h,no_such_feature"},
            400,
            "query.names[1]",
            "no_such_feature",
        ),
        ({"entity_type": "card", "entity_id": "card_1", "names": ","}, 400, "query.names", "Empty feature name"),
        ({"entity_id": "card_1"}, 400, "query.entity_type", ""),
    ],
)
def test_get_features_bad_parameters(
    fstack: Stack, params: dict[str, str], status: int, path: str, fragment: str
) -> None:
    r = httpx.get(f"{fstack.gateway_url}/features", params=params, timeout=20)
    assert r.status_code == status, r.text
    doc = r.json()
    assert doc["code"] == "bad_request"
    assert [e["path"] for e in doc["errors"]] == [path], doc
    assert fragment in doc["errors"][0]["message"] + doc["message"]


def test_get_features_unknown_entity_is_404(fstack: Stack) -> None:
    r = httpx.get(
        f"{fstack.gateway_url}/features", params={"entity_type": "card", "entity_id": "card_nobody"}, timeout=20
    )
    assert r.status_code == 404, r.text
    assert r.json()["code"] == "not_found" and "card_nobody" in r.json()["message"]


def test_feature_metrics_move_on_the_scoring_path(fstack: Stack, world: World, redis_url: str) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    inference = next(p for p in fstack.procs if p.name == "inference")

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"http://127.0.0.1:{inference.metrics_port}/metrics", timeout=5).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
        }

    batch = [tx_of(world, 5300 + i) for i in range(20)]
    for t in batch:
        forget(redis_url, t)
    before = scrape()
    for _ in range(2):  # first: misses and computation; second: hits
        assert httpx.post(f"{fstack.gateway_url}/predict", json={"transactions": batch}, timeout=30).status_code == 200
    after = scrape()

    def moved(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert moved("fraudmesh_inference_feature_reads_total", result="miss") > 0
    assert moved("fraudmesh_inference_feature_reads_total", result="hit") > 0
    assert moved("fraudmesh_features_computed_on_the_fly_total") > 0
    assert moved("fraudmesh_feature_age_seconds_count") == 2 * len(batch)
