"""`fraudmesh demo`: score a sample batch through the running stack and print what happened, then one
personalization score (`POST /score/personalization`)."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections import Counter
from pathlib import Path

import httpx
import msgspec

from inference_svc.bootstrap import synthetic_sample


def sample_batch(n: int, seed: int = 42) -> list[dict[str, object]]:
    txs, _ = synthetic_sample(n, seed)
    for i, tx in enumerate(txs):
        # the seed and size name the sample: a transaction id names one transaction (the gateway answers a known
        # id with its stored decision, and refuses it with another body: docs/http-api.md "Idempotency")
        tx.transaction_id = f"demo-{seed}-{n}-{i:05d}"
        tx.timestamp = dt.datetime(2026, 11, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=37 * i)
    return msgspec.to_builtins(txs)  # type: ignore[no-any-return]


SEED_001_PAIR = {"user_id": "user_00005678", "item_id": "item_electronics_001", "item_category": "electronics"}
"""Seed 001's personalization example: ids no world knows, so it is scored as a cold start."""


def personalization_pair(model_dir: Path | None) -> dict[str, object]:
    """A (user, item) pair the active personalization model knows (its first user and an item of its catalogue),
    else seed 001's example."""
    try:
        version = (model_dir / "active").read_text().strip() if model_dir else ""
        ids = json.loads((model_dir / version / "ids.json").read_text()) if model_dir and version else {}
    except (OSError, ValueError):
        ids = {}
    if not ids.get("users") or not ids.get("items"):
        return dict(SEED_001_PAIR)
    return {"user_id": ids["users"][0], "item_id": ids["items"][len(ids["items"]) // 2]}


def personalization_demo(gateway_url: str, pair: dict[str, object], headers: dict[str, str]) -> int:
    """One `POST /score/personalization`, printed."""
    r = httpx.post(f"{gateway_url}/score/personalization", json=pair, headers=headers, timeout=30.0)
    if r.status_code != 200:
        print(f"\nPOST /score/personalization failed: {r.status_code} {r.text}", file=sys.stderr)
        return 1
    x = r.json()
    print(f"\npersonalization: POST /score/personalization {json.dumps(pair)}")
    print(
        f"  relevance {x['relevance_score']:.3f}  conversion {x['conversion_probability']:.3f}  "
        f"engagement {x['engagement_score']:.3f}  segment {x['user_segment']}  model {x['model_version']}"
    )
    print(f"  signals: {', '.join(x['behavioral_signals']) or '-'}")
    return 0


def run_demo(gateway_url: str, n: int = 1000, api_key: str = "", personalization_dir: Path | None = None) -> int:
    body = {"transactions": sample_batch(n)}
    headers = {"X-API-Key": api_key} if api_key else {}
    # the same 1,000 transactions each run: `rescore` so that every run scores them (a repeat would otherwise get
    # the stored decisions back, with no partial and no worker to show)
    r = httpx.post(f"{gateway_url}/predict", params={"rescore": "true"}, json=body, headers=headers, timeout=30.0)
    if r.status_code != 200:
        print(f"POST /predict failed: {r.status_code} {r.text}", file=sys.stderr)
        return 1
    doc = r.json()
    results = doc["results"]
    print(
        f"\nscored {sum(1 for x in results if x)} of {n} transactions in {doc['latency_ms']:.1f} ms "
        f"(complete={doc['complete']}, request {doc['request_id']})"
    )
    print(
        f"split into {len(doc['partials'])} partials, scored by {len(doc['inference_workers'])} inference "
        f"process(es): {', '.join(doc['inference_workers'])}"
    )
    print("\n  partial  size  worker           deliveries  queue ms  compute ms")
    for p in doc["partials"]:
        print(
            f"  {p['index']:>7}  {p['size']:>4}  {p.get('worker_id', '-'):<16} {p.get('deliveries', 1):>10}"
            f"  {p.get('queue_ms', 0):>8.2f}  {p.get('compute_ms', 0):>10.2f}"
        )
    levels = Counter(x["risk_level"] for x in results if x)
    print("\nrisk levels: " + ", ".join(f"{k} {levels.get(k, 0)}" for k in ("low", "medium", "high", "critical")))
    print("\nriskiest transactions:")
    for x in sorted((x for x in results if x), key=lambda x: -x["fraud_score"])[:5]:
        reasons = "; ".join(f["description"] for f in x.get("top_risk_factors", []))
        print(
            f"  {x['transaction_id']}  score {x['fraud_score']:.3f}  {x['risk_level']:<8} "
            f"{x['recommended_action']:<7}  {reasons}"
        )
    if personalization_demo(gateway_url, personalization_pair(personalization_dir), headers) != 0:
        return 1
    print(f"\nAPI docs:   {gateway_url}/docs  (Swagger UI; the document: {gateway_url}/docs/openapi.json)")
    print(f"metrics:    {gateway_url}/metrics")
    print(f"health:     {gateway_url}/health")
    return 0
