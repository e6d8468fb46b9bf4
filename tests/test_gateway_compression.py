"""GZip on a real gateway: replies over 1 KB are compressed when the client accepts gzip, smaller ones and
clients that do not accept it get plain JSON; `/score/fraud` (always under 1 KB) has no compression layer at all."""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
from litestar.middleware.compression import CompressionMiddleware

from deploy.demo import sample_batch
from gateway.app import create_app
from shared.settings import load_settings
from tests.stacks import Stack


def raw_post(url: str, body: object, encoding: str) -> httpx.Response:
    """The reply as sent (httpx would decode gzip on read: stream it instead)."""
    with httpx.Client(timeout=30) as client:
        req = client.build_request(
            "POST",
            url,
            content=json.dumps(body),
            headers={"Content-Type": "application/json", "Accept-Encoding": encoding},
        )
        resp = client.send(req, stream=True)
        resp.read_raw = b"".join(resp.iter_raw())  # type: ignore[attr-defined]
        resp.close()
        return resp


def test_big_replies_are_gzipped_only_for_clients_that_accept_it(stack: Stack) -> None:
    url = f"{stack.gateway_url}/predict?ingest=false"
    body = {"transactions": sample_batch(40, seed=5)}
    zipped = raw_post(url, body, "gzip")
    assert zipped.status_code == 200
    assert zipped.headers["content-encoding"] == "gzip"
    doc = json.loads(gzip.decompress(zipped.read_raw))  # type: ignore[attr-defined]
    assert len(doc["results"]) == 40
    plain = raw_post(url, body, "identity")
    assert "content-encoding" not in plain.headers
    assert len(json.loads(plain.read_raw)["results"]) == 40  # type: ignore[attr-defined]
    assert len(zipped.read_raw) < len(plain.read_raw) / 3  # type: ignore[attr-defined]


def test_small_replies_and_the_single_score_route_stay_plain(stack: Stack) -> None:
    r = raw_post(f"{stack.gateway_url}/score/fraud?ingest=false", {"card_id": "c1", "transaction_amount": 5.0}, "gzip")
    assert r.status_code == 200 and "content-encoding" not in r.headers
    small = raw_post(
        f"{stack.gateway_url}/batch-predict?ingest=false",
        {"records": [{"card_id": "c1", "transaction_amount": 5.0}]},
        "gzip",
    )
    assert small.status_code == 200 and "content-encoding" not in small.headers
    app = create_app(load_settings({}))
    assert app.compression_config is None  # no app-wide layer: it would wrap /score/fraud too
    handlers = {h.handler_name: h for route in app.routes for h in getattr(route, "route_handlers", [])}
    assert not gzips(handlers["score_fraud"]) and gzips(handlers["predict"]) and gzips(handlers["score_batch"])


def gzips(handler: Any) -> bool:
    return any(getattr(m, "middleware", None) is CompressionMiddleware for m in handler.resolve_middleware())


def test_docs_and_metrics_are_gzipped(stack: Stack) -> None:
    for path in ("/docs/openapi.json", "/metrics"):
        r = httpx.get(f"{stack.gateway_url}{path}", headers={"Accept-Encoding": "gzip"}, timeout=10)
        assert r.status_code == 200 and r.headers.get("content-encoding") == "gzip", path
