"""Gateway settings on real gateway processes: API keys, admin keys, the rate limit shared by replicas (Redis),
trusted proxies, and card ids that are tokens."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from litestar import get
from litestar.testing import create_test_client
from prometheus_client.parser import text_string_to_metric_families

from deploy.servers import free_port
from deploy.stack import ServiceProc
from gateway.auth import admin_key_guard, key_matches, parse_keys
from gateway.errors import EXCEPTION_HANDLERS
from tests.stacks import Stack

TX = {"card_id": "card_1", "transaction_amount": 12.5}


@pytest.fixture
def gateways(stack: Stack, tmp_path: Path) -> Iterator[Stack]:
    """Extra gateway processes on the suite's stack (its aggregator and workers score for them)."""
    s = stack.state
    extra = Stack(tmp_path / "gateways", s.nats_url, s.redis_url, s.postgres_dsn, stack.model_dir)
    try:
        yield extra
    finally:
        extra.stop()


def start(gws: Stack, env: dict[str, str], n: int = 1) -> list[str]:
    procs = gws.start("gateway", n, env=env)
    urls = [f"http://127.0.0.1:{p.http_port}" for p in procs]
    for url in urls:
        gws.gateway_url = url
        gws.wait_ready()
    return urls


def score(url: str, key: str | None = None, forwarded_for: str | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["X-API-Key"] = key
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    return httpx.post(f"{url}/score/fraud?ingest=false", content=json.dumps(TX), headers=headers, timeout=10)


def log_lines(proc: ServiceProc) -> list[dict[str, object]]:
    out = []
    for line in Path(proc.log).read_text(errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_api_keys_are_required_and_failures_logged_without_the_key(gateways: Stack) -> None:
    (url,) = start(gateways, {"FRAUDMESH_API_KEYS": "key-one-SECRET,key-two-SECRET"})
    assert score(url, "key-two-SECRET").status_code == 200
    assert score(url, "key-one-SECRET").status_code == 200
    for key in (None, "key-one-SECRE", "wrong-SECRET-guess"):
        r = score(url, key)
        assert r.status_code == 401, r.text
        doc = r.json()
        assert doc["code"] == "unauthorized" and "X-API-Key" in doc["message"]
    assert httpx.get(f"{url}/health", timeout=5).status_code == 200  # probes need no key
    lines = [d for d in log_lines(gateways.procs[0]) if d["event"] == "authentication failed"]
    assert [d["reason"] for d in lines] == ["missing key", "unknown key", "unknown key"]
    assert all(d["path"] == "/score/fraud" and d["client"] == "127.0.0.1" and d["request_id"] for d in lines)
    text = Path(gateways.procs[0].log).read_text()
    assert "SECRET" not in text


def test_rate_limit_is_shared_by_replicas_and_says_when_to_retry(gateways: Stack) -> None:
    limit = 5
    urls = start(gateways, {"FRAUDMESH_API_KEYS": "rl-key", "FRAUDMESH_RATE_LIMIT_PER_SECOND": str(limit)}, n=2)
    statuses: list[int] = []
    refused: list[httpx.Response] = []
    first = time.time()
    for i in range(40):
        r = score(urls[i % 2], "rl-key")
        statuses.append(r.status_code)
        if r.status_code == 429:
            refused.append(r)
    windows = int(time.time()) - int(first) + 1
    assert set(statuses) <= {200, 429}
    # one budget for both replicas: a per-process limit would let through up to 2 * limit per window
    assert statuses.count(200) <= limit * windows, (statuses, windows)
    assert refused, statuses
    doc = refused[0].json()
    assert doc["code"] == "rate_limited" and "5 requests per second" in doc["message"]
    assert refused[0].headers["Retry-After"] == "1" and doc["retryable"] is True
    counted = sum(http_requests(url, "/score/fraud", "429") for url in urls)
    assert counted == len(refused)  # each 429 is in the metrics as a 429, not as a 200


def http_requests(url: str, path: str, status: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "fraudmesh_http_requests_total"
        and sample.labels.get("path") == path
        and sample.labels.get("status_code") == status
    )


def test_forwarded_for_counts_only_from_a_trusted_proxy(gateways: Stack) -> None:
    (direct,) = start(gateways, {"FRAUDMESH_RATE_LIMIT_PER_SECOND": "3"})
    statuses = [score(direct, forwarded_for=f"10.9.0.{i}").status_code for i in range(20)]
    assert 429 in statuses, statuses  # rotating X-Forwarded-For buys nothing from an untrusted peer
    (behind_proxy,) = start(
        gateways, {"FRAUDMESH_RATE_LIMIT_PER_SECOND": "3", "FRAUDMESH_TRUSTED_PROXIES": "127.0.0.1"}
    )
    statuses = [score(behind_proxy, forwarded_for=f"10.8.{i}.1").status_code for i in range(20)]
    assert statuses == [200] * 20  # each forwarded address is its own client


def test_rate_limit_fails_open_when_redis_is_unreachable(gateways: Stack) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    (url,) = start(gateways, {"FRAUDMESH_RATE_LIMIT_PER_SECOND": "1", "FRAUDMESH_REDIS_URL": dead_redis})
    assert [score(url, forwarded_for="x").status_code for _ in range(5)] == [200] * 5
    warnings = [d for d in log_lines(gateways.procs[0]) if d["logger"] == "fraudmesh.gateway.ratelimit"]
    assert warnings and warnings[0]["level"] == "warning"
    assert "rate limit not applied: Redis unreachable" in str(warnings[0]["event"])
    assert len(warnings) == 1  # at most one every 10 s


def test_card_ids_are_tokens_setting_accepts_luhn_valid_ids(gateways: Stack) -> None:
    (url,) = start(gateways, {"FRAUDMESH_CARD_IDS_ARE_TOKENS": "true"})
    r = httpx.post(
        f"{url}/score/fraud?ingest=false",
        content=json.dumps({**TX, "card_id": "4111111111111111"}),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 200, r.text


# ------------------------------------------------------------------------------ the guards in process
def test_key_comparison_matches_whole_keys_only() -> None:
    keys = parse_keys(" alpha , beta,,")
    assert keys == (b"alpha", b"beta")
    assert key_matches(b"beta", keys) and key_matches(b"alpha", keys)
    assert not key_matches(b"alph", keys) and not key_matches(b"alphaa", keys) and not key_matches(b"", keys)
    assert not key_matches(b"alpha", ())


@get("/admin/thing", sync_to_thread=False)
def admin_thing() -> dict[str, str]:
    return {"ok": "yes"}


@pytest.mark.parametrize(
    ("admin_keys", "api_keys", "sent", "status"),
    [
        ("adm", "api", "adm", 200),
        ("adm", "api", "api", 401),  # an API key is not an admin key
        ("adm", "api", None, 401),
        ("", "api", "api", 401),  # admin routes closed when only API keys are set
        ("", "", None, 200),  # local development: everything open
    ],
)
def test_admin_guard(admin_keys: str, api_keys: str, sent: str | None, status: int) -> None:
    with create_test_client(
        route_handlers=[admin_thing],
        guards=admin_key_guard(admin_keys, api_keys),  # type: ignore[arg-type]
        exception_handlers=EXCEPTION_HANDLERS,
    ) as client:
        r = client.get("/admin/thing", headers={"X-API-Key": sent} if sent else {})
        assert r.status_code == status, r.text
        if status == 401:
            assert r.json()["code"] == "unauthorized"
