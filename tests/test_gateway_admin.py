"""Idempotent scoring by transaction id, runtime settings (`/config`) reaching every instance, and the cache routes,
on real processes: a stack of its own (own nats-server and Redis, since caches are cleared; the session's PostgreSQL)
with two gateways, so that a change made through one gateway is seen by the other, the aggregator and the worker."""

from __future__ import annotations

import concurrent.futures
import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from deploy.servers import Server, free_port, start_nats, start_redis
from gateway.idempotency import KEY_PREFIX
from tests.stacks import Stack

IDEMPOTENCY_ON = {"FRAUDMESH_IDEMPOTENCY_ENABLED": "true"}
"""Test stacks turn it off by default (tests/stacks.py TEST_DEFAULTS); here it is what is tested."""
ADMIN_KEY = "admin-key-test"
API_KEY = "api-key-test"


def tx(tx_id: str, amount: float = 42.5, card: str = "card_idem_1", **extra: Any) -> dict[str, Any]:
    return {
        "transaction_id": tx_id,
        "card_id": card,
        "transaction_amount": amount,
        "merchant_id": "m_idem",
        "device_id": "d_idem",
        **extra,
    }


def new_id(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}"


def until(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy (a bound on waiting, never on speed)."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(0.1)


class Gateways:
    def __init__(self, stack: Stack, urls: list[str], redis_url: str) -> None:
        self.stack = stack
        self.a, self.b = urls
        self.redis = redis.Redis.from_url(redis_url)

    def score(self, url: str, body: dict[str, Any], query: str = "") -> httpx.Response:
        return httpx.post(f"{url}/score/fraud{query}", json=body, timeout=30)

    def stored(self, tx_id: str) -> bool:
        return bool(self.redis.exists(KEY_PREFIX + tx_id))

    def config(self, url: str, body: object) -> httpx.Response:
        return httpx.post(f"{url}/config", json=body, timeout=30)

    def health_revisions(self) -> dict[str, set[str]]:
        doc = httpx.get(f"{self.a}/health", timeout=5).json()
        out: dict[str, set[str]] = {}
        for service in ("aggregator", "inference", "feature"):
            details = doc["services"][service].get("details") or {}
            out[service] = {d.get("config_revision", "") for d in details.values()} if details else set()
        return out


@pytest.fixture(scope="module")
def gws(run_dir: Path, postgres_dsn: str, model_dir: Path) -> Iterator[Gateways]:
    root = run_dir / "admin"
    nats: Server = start_nats(root / "nats")
    own_redis = start_redis(root / "redis")
    redis_url = own_redis.extra["url"]
    s = Stack(root / "stack", nats.extra["url"], redis_url, postgres_dsn, model_dir, env=IDEMPOTENCY_ON)
    try:
        s.start("aggregator")
        s.start("inference")
        s.start("feature")
        urls = []
        for _ in range(2):
            s.start("gateway")
            urls.append(s.gateway_url)
        for url in urls:
            s.gateway_url = url
            s.wait_ready(timeout=60)
        s.wait_health("feature", 1)
        yield Gateways(s, urls, redis_url)
    finally:
        try:
            s.stop()
        finally:
            nats.stop()
            own_redis.stop()


@contextlib.contextmanager
def extra_gateway(gws: Gateways, env: dict[str, str]) -> Iterator[str]:
    """One more gateway on the module's stack, with settings of its own; stopped (and its log checked) after."""
    st = gws.stack.state
    extra = Stack(
        Path(st.run_dir) / f"extra-{uuid.uuid4().hex[:6]}",
        st.nats_url,
        st.redis_url,
        st.postgres_dsn,
        gws.stack.model_dir,
    )
    try:
        extra.start("gateway", env={**IDEMPOTENCY_ON, **env})
        extra.wait_ready(timeout=60)
        yield extra.gateway_url
    finally:
        extra.stop()


@pytest.fixture
def reset_config(gws: Gateways) -> Iterator[None]:
    yield
    from shared.runtime_config import RUNTIME_FIELDS

    r = gws.config(gws.a, dict.fromkeys(RUNTIME_FIELDS))
    assert r.status_code == 200, r.text


# ----------------------------------------------------------------------------------------------- idempotency
def test_the_same_transaction_id_twice_returns_the_stored_decision_on_every_gateway(gws: Gateways) -> None:
    tid = new_id("idem")
    first = gws.score(gws.a, tx(tid))
    assert first.status_code == 200, first.text
    assert first.headers["Idempotency-Status"] == "new"
    again = gws.score(gws.a, tx(tid))
    assert again.status_code == 200, again.text
    assert again.headers["Idempotency-Status"] == "replayed"
    keys = ("transaction_id", "fraud_score", "risk_level", "recommended_action", "model_version", "top_risk_factors")
    assert {k: again.json()[k] for k in keys} == {k: first.json()[k] for k in keys}
    # the other gateway reads the same store (once the first one's background write landed)
    until(lambda: gws.stored(tid), what="decision stored in Redis")
    other = gws.score(gws.b, {**tx(tid), "transaction_amount": 42.50})  # 42.5 == 42.50: the same body
    assert other.headers["Idempotency-Status"] == "replayed", other.text
    assert {k: other.json()[k] for k in keys} == {k: first.json()[k] for k in keys}


def test_a_different_body_under_a_known_id_is_refused_with_409_naming_the_id_and_fields(gws: Gateways) -> None:
    tid = new_id("conflict")
    first = gws.score(gws.a, tx(tid, 10.0))
    assert first.status_code == 200, first.text
    r = gws.score(gws.a, tx(tid, 9999.0, merchant_id="m_other"))
    assert r.status_code == 409, r.text
    doc = r.json()
    assert doc["code"] == "conflict" and tid in doc["message"] and "rescore=true" in doc["message"]
    assert doc["errors"][0]["path"] == "$.transaction_id"
    assert "transaction_amount" in doc["errors"][0]["message"] and "merchant_id" in doc["errors"][0]["message"]
    # the stored decision is untouched
    same = gws.score(gws.a, tx(tid, 10.0))
    assert same.headers["Idempotency-Status"] == "replayed"
    assert same.json()["fraud_score"] == first.json()["fraud_score"]


def test_rescore_scores_anew_and_replaces_the_stored_decision(gws: Gateways) -> None:
    tid = new_id("rescore")
    small = gws.score(gws.a, tx(tid, 5.0, card=f"card_{tid}"))
    assert small.status_code == 200
    big = gws.score(gws.a, tx(tid, 25000.0, card=f"card_{tid}", mcc_code="6051"), "?rescore=true")
    assert big.status_code == 200, big.text
    assert big.headers["Idempotency-Status"] == "rescored"
    assert big.json()["fraud_score"] != small.json()["fraud_score"]  # a new score of the new body
    until(lambda: gws.score(gws.b, tx(tid, 5.0, card=f"card_{tid}")).status_code == 409, what="old body refused")
    replay = gws.score(gws.b, tx(tid, 25000.0, card=f"card_{tid}", mcc_code="6051"))
    assert replay.headers["Idempotency-Status"] == "replayed"
    assert replay.json()["fraud_score"] == big.json()["fraud_score"]
    # the same body rescored: a new decision (the same model and inputs give the same score)
    again = gws.score(gws.a, tx(tid, 25000.0, card=f"card_{tid}", mcc_code="6051"), "?rescore=true")
    assert again.headers["Idempotency-Status"] == "rescored"


def test_a_batch_scores_only_the_ids_it_does_not_know_and_keeps_the_order(gws: Gateways) -> None:
    known, fresh = new_id("batch-known"), new_id("batch-new")
    first = gws.score(gws.a, tx(known))
    body = {"transactions": [tx(fresh, 77.0), tx(known), {"card_id": "card_noid", "transaction_amount": 3.0}]}
    r = httpx.post(f"{gws.a}/predict", json=body, timeout=30)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert r.headers["Idempotency-Status"] == "partly-replayed"
    assert [x["transaction_id"] for x in doc["results"][:2]] == [fresh, known]
    assert doc["results"][1]["fraud_score"] == first.json()["fraud_score"]
    assert sum(p["size"] for p in doc["partials"]) == 2  # the known one was not sent to the workers
    # a conflicting member refuses the whole batch, naming where it is
    bad = httpx.post(f"{gws.a}/predict", json={"transactions": [tx(fresh, 1.0), tx(known)]}, timeout=30)
    assert bad.status_code == 409, bad.text
    assert bad.json()["errors"][0]["path"] == "$.transactions[0].transaction_id"
    # seed 001's batch route replays too
    sb = httpx.post(f"{gws.a}/score/batch", json={"model_type": "fraud_detection", "requests": [tx(known)]}, timeout=30)
    assert sb.status_code == 200 and sb.headers["Idempotency-Status"] == "replayed", sb.text
    assert sb.json()["responses"][0]["fraud_score"] == first.json()["fraud_score"]
    # a transaction without an id, scored beside a replayed one, is named by its place in the whole batch
    mixed = httpx.post(
        f"{gws.a}/score/batch",
        json={
            "model_type": "fraud_detection",
            "requests": [tx(known), {"card_id": "c9", "transaction_amount": 1.0}],
            "batch_id": "b-mixed",
        },
        timeout=30,
    )
    assert mixed.status_code == 200 and mixed.headers["Idempotency-Status"] == "partly-replayed", mixed.text
    assert [r["transaction_id"] for r in mixed.json()["responses"]] == [known, "b-mixed-1"]
    clash = httpx.post(
        f"{gws.a}/score/batch", json={"model_type": "fraud_detection", "requests": [tx(known, 1.5)]}, timeout=30
    )
    assert clash.status_code == 409 and clash.json()["errors"][0]["path"] == "$.requests[0].transaction_id"


def test_what_if_scoring_neither_reads_nor_writes_decisions(gws: Gateways) -> None:
    tid = new_id("whatif")
    r = gws.score(gws.a, tx(tid), "?ingest=false")
    assert r.status_code == 200 and r.headers["Idempotency-Status"] == "off"
    assert not gws.stored(tid)
    real = gws.score(gws.a, tx(tid, 1.0))
    assert real.headers["Idempotency-Status"] == "new"


def test_the_window_expires_and_the_id_is_scored_anew(gws: Gateways, reset_config: None) -> None:
    r = gws.config(gws.a, {"idempotency_window_s": 1.0})
    assert r.status_code == 200, r.text
    until(lambda: httpx.get(f"{gws.b}/config").json()["settings"]["idempotency_window_s"] == 1.0, what="applied")
    tid = new_id("window")
    assert gws.score(gws.b, tx(tid)).headers["Idempotency-Status"] == "new"
    until(lambda: gws.stored(tid), what="decision stored")
    ttl_ms = gws.redis.pttl(KEY_PREFIX + tid)
    assert 0 < int(ttl_ms) <= 1000  # the window is the record's TTL
    until(lambda: not gws.stored(tid), what="decision expired")
    assert gws.score(gws.b, tx(tid, 2.0)).headers["Idempotency-Status"] == "new"  # a new body is no conflict now


def test_the_store_down_scores_anyway_and_says_unchecked(gws: Gateways) -> None:
    """A gateway whose Redis cannot be reached: scores, with `Idempotency-Status: unchecked` (documented choice)."""
    with extra_gateway(gws, {"FRAUDMESH_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}) as url:
        r = gws.score(url, tx(new_id("down")))
        assert r.status_code == 200, r.text
        assert r.headers["Idempotency-Status"] == "unchecked"
        metrics = httpx.get(f"{url}/metrics", timeout=5).text
        assert 'fraudmesh_idempotency_total{outcome="unchecked"} 1.0' in metrics
        stats = httpx.get(f"{url}/cache/stats", timeout=5)
        assert stats.status_code == 503 and "Redis" in stats.json()["message"]


# ----------------------------------------------------------------------------------------------- /config
def test_a_config_change_reaches_both_gateways_the_aggregator_and_the_worker(gws: Gateways, reset_config: None) -> None:
    body = {"transactions": [tx(new_id("cfg")) for _ in range(120)]}
    before = httpx.post(f"{gws.b}/predict?ingest=false", json=body, timeout=30).json()
    assert len(before["partials"]) == 1  # 120 < the default partial size
    r = gws.config(gws.a, {"partial_size": 50, "max_batch_size": 130, "feature_max_age_s": 60})
    assert r.status_code == 200, r.text
    doc = r.json()
    revision = doc["revision"]
    assert doc["overrides"] == {"partial_size": 50, "max_batch_size": 130, "feature_max_age_s": 60.0}
    assert doc["settings"]["partial_size"] == 50  # gateway A applied it before answering
    until(lambda: httpx.get(f"{gws.b}/config").json()["revision"] == revision, what="gateway B at the revision")
    until(
        lambda: all(revs == {str(revision)} for revs in gws.health_revisions().values()),
        what="every aggregator, inference and feature instance at the revision",
    )
    # the aggregator cuts by the new partial size; gateway B enforces the new batch limit
    after = httpx.post(f"{gws.b}/predict?ingest=false", json=body, timeout=30).json()
    assert [p["size"] for p in after["partials"]] == [50, 50, 20]
    too_many = {"transactions": [tx(new_id("cfg")) for _ in range(131)]}
    assert httpx.post(f"{gws.b}/predict?ingest=false", json=too_many, timeout=30).status_code == 413
    # null removes an override: back to each instance's own setting
    r = gws.config(gws.b, {"partial_size": None})
    assert r.status_code == 200 and "partial_size" not in r.json()["overrides"]
    assert r.json()["overrides"]["max_batch_size"] == 130  # the other overrides stay


def test_changes_made_at_once_through_two_gateways_both_land(gws: Gateways, reset_config: None) -> None:
    """Compare-and-set on the bucket's revision: neither change overwrites the other."""
    changes = [(gws.a, {"coalesce_window_ms": 1.0}), (gws.b, {"admission_max_queue_ms": 400.0})] * 3
    with concurrent.futures.ThreadPoolExecutor(len(changes)) as pool:
        replies = list(pool.map(lambda c: gws.config(*c), changes))
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
    final = until(
        lambda: (
            (doc := httpx.get(f"{gws.a}/config").json())["revision"] == max(r.json()["revision"] for r in replies)
            and doc
        ),
        what="gateway A at the last revision",
    )
    assert final["overrides"] == {"coalesce_window_ms": 1.0, "admission_max_queue_ms": 400.0}


def test_bad_config_is_refused_with_400_naming_the_field_and_nothing_changes(gws: Gateways) -> None:
    revision = httpx.get(f"{gws.a}/config").json()["revision"]
    cases: list[tuple[object, str]] = [
        ({"partial_size": 0}, "$.partial_size"),
        ({"partial_size": "many"}, "$.partial_size"),
        ({"degraded_policy": "maybe"}, "$.degraded_policy"),
        ({"request_timeout_ms": 10**9}, "$.request_timeout_ms"),
        ({"nats_url": "nats://elsewhere"}, "$.nats_url"),
        ({"partial_size": 100, "coalesce_window_ms": -1}, "$.coalesce_window_ms"),
        ([1, 2], "$"),
        ({}, "$"),
    ]
    for body, path in cases:
        r = gws.config(gws.a, body)
        assert r.status_code == 400, (body, r.text)
        assert path in [e["path"] for e in r.json()["errors"]], (body, r.text)
    r = httpx.post(f"{gws.a}/config", content=b"{nope", headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 400 and r.json()["errors"][0]["path"] == "$"
    after = httpx.get(f"{gws.a}/config").json()
    assert after["revision"] == revision and "partial_size" not in after["overrides"]


def test_admin_routes_need_an_admin_key_when_keys_are_configured(gws: Gateways) -> None:
    env = {"FRAUDMESH_API_KEYS": API_KEY, "FRAUDMESH_ADMIN_API_KEYS": ADMIN_KEY}
    with extra_gateway(gws, env) as url:
        for key, status in ((None, 401), (API_KEY, 401), (ADMIN_KEY, 200)):
            headers = {"X-API-Key": key} if key else {}
            assert httpx.get(f"{url}/config", headers=headers, timeout=10).status_code == status, key
            clear = httpx.post(f"{url}/cache/clear", json={"caches": []}, headers=headers, timeout=10)
            assert clear.status_code == (400 if status == 200 else status), clear.text  # admin: then the body check
        stats = httpx.get(f"{url}/cache/stats", headers={"X-API-Key": API_KEY}, timeout=10)
        assert stats.status_code == 200, stats.text  # figures only: an API key reads them


# ----------------------------------------------------------------------------------------------- caches
def test_cache_stats_count_the_stores_and_clear_empties_them(gws: Gateways) -> None:
    tid = new_id("cache")
    gws.score(gws.a, tx(tid, card="card_cache_1"))
    assert gws.score(gws.a, tx(tid, card="card_cache_1")).headers["Idempotency-Status"] == "replayed"
    until(lambda: gws.stored(tid), what="decision stored")
    stats = httpx.get(f"{gws.a}/cache/stats", timeout=10)
    assert stats.status_code == 200, stats.text
    doc = stats.json()
    assert doc["decisions"]["stored"] >= 1 and doc["decisions"]["hits"] >= 1 and doc["decisions"]["enabled"]
    assert doc["online_store"]["total"] == sum(doc["online_store"]["entities"].values())
    assert doc["redis"]["total_keys"] >= doc["decisions"]["stored"]
    bad = httpx.post(f"{gws.a}/cache/clear", json={"caches": ["everything"]}, timeout=10)
    assert bad.status_code == 400 and bad.json()["errors"][0]["path"].startswith("$.caches"), bad.text
    r = httpx.post(f"{gws.a}/cache/clear", json={"caches": ["decisions"]}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["cleared"]["decisions"] >= 1
    assert not gws.stored(tid)
    assert httpx.get(f"{gws.a}/cache/stats", timeout=10).json()["decisions"]["stored"] == 0
    assert gws.score(gws.a, tx(tid, card="card_cache_1")).headers["Idempotency-Status"] == "new"

    def features_cleared_to_empty() -> bool:
        r = httpx.post(f"{gws.a}/cache/clear", json={"caches": ["features"]}, timeout=30)
        assert r.status_code == 200 and "features" in r.json()["cleared"], r.text
        return bool(httpx.get(f"{gws.a}/cache/stats", timeout=10).json()["online_store"]["total"] == 0)

    # This stack's feature worker ingests what the tests above scored (and its deferred pass recomputes cards
    # sharing a device) in the background, so a row may be written again between a clear and the read after it;
    # a clear that works is read back empty once those writers are idle. One that does not never is.
    until(features_cleared_to_empty, timeout=60.0, what="the online store read back empty after a clear")
