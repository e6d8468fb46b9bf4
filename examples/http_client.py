#!/usr/bin/env python3
"""Score a batch of transactions over HTTP: `POST /predict` on the fraudmesh gateway, with httpx only.

The same batch as examples/nats_client.py (same --count and --seed, or the same --file) gets the same scores.

    python examples/http_client.py                       # a generated batch of 10 transactions
    python examples/http_client.py --count 1000
    python examples/http_client.py --file batch.json     # a JSON list, or {"transactions": [...]}
    python examples/http_client.py --file batch.json --json > response.json

Without --json, stdout gets one JSON line per transaction (transaction_id, fraud_score, risk_level) and
stderr a summary. With --json, stdout gets the whole response body as one JSON document and nothing else.

Exit status: 0 complete response; 1 an error response (4xx/5xx), no gateway, or unreadable input; 3 the
response came back incomplete (the deadline passed before every transaction was scored).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import httpx


def generate_batch(count: int, seed: int) -> list[dict[str, Any]]:
    """The same reproducible batch as examples/nats_client.py generates for the same --count and --seed."""
    rng = random.Random(seed)
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    countries = {"US": "USD", "GB": "GBP", "DE": "EUR", "FR": "EUR", "BR": "BRL", "NG": "USD"}
    mccs = ["5411", "5812", "5541", "5311", "5999", "4111", "7995", "6051"]
    txs = []
    for i in range(count):
        country = rng.choice(list(countries))
        txs.append(
            {
                "transaction_id": f"ex-{seed}-{i:05d}",
                "card_id": f"card_{rng.randrange(5000):06d}",
                "transaction_amount": round(rng.lognormvariate(3.6, 1.2), 2),
                "merchant_id": f"m_{rng.randrange(800):05d}",
                "mcc_code": rng.choice(mccs),
                "country_code": country,
                "currency": countries[country] if rng.random() > 0.1 else "USD",
                "channel": rng.choice(["pos", "pos", "ecom", "ecom", "atm", "moto", "p2p"]),
                "timestamp": (start + dt.timedelta(seconds=rng.randrange(86400))).isoformat(),
                "device_id": f"dev_{rng.randrange(20000):07d}",
                "ip_address": f"10.{rng.randrange(250)}.{rng.randrange(250)}.{rng.randrange(1, 250)}",
            }
        )
    return txs


def load_batch(path: str) -> list[dict[str, Any]]:
    """A JSON list of transactions, or an object with a `transactions` list (the body of POST /predict)."""
    doc = json.loads(Path(path).read_bytes())
    if isinstance(doc, dict):
        doc = doc.get("transactions")
    if not isinstance(doc, list) or not doc or not all(isinstance(t, dict) for t in doc):
        raise ValueError('expected a non-empty JSON list of transaction objects, or {"transactions": [...]}')
    return doc


def fail(message: str) -> int:
    print(f"http_client: {message}", file=sys.stderr)
    return 1


def print_error(status: int, body: dict[str, Any]) -> None:
    print(f"HTTP {status}: {body.get('code')}: {body.get('message')}", file=sys.stderr)
    if body.get("request_id"):
        print(f"  request_id: {body['request_id']}", file=sys.stderr)
    for err in body.get("errors") or []:
        print(f"  {err.get('path')}: {err.get('message')}", file=sys.stderr)
    if body.get("retryable"):
        print("  (retryable)", file=sys.stderr)


def print_scores(doc: dict[str, Any]) -> None:
    missing = iter(doc.get("missing_transaction_ids") or [])
    for result in doc["results"]:
        if result is None:
            line = {"transaction_id": next(missing, None), "fraud_score": None, "risk_level": None}
        else:
            line = {k: result.get(k) for k in ("transaction_id", "fraud_score", "risk_level")}
        sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def print_summary(doc: dict[str, Any], elapsed_ms: float) -> None:
    results = doc["results"]
    scored = [r for r in results if r is not None]
    levels: dict[str, int] = {}
    for r in scored:
        levels[r["risk_level"]] = levels.get(r["risk_level"], 0) + 1
    print(
        f"request {doc['request_id']}: scored {len(scored)} of {len(results)} "
        f"(complete={str(doc['complete']).lower()}) in {elapsed_ms:.1f} ms round trip "
        f"({doc.get('latency_ms', 0.0):.1f} ms in the gateway)",
        file=sys.stderr,
    )
    workers = doc.get("inference_workers") or []
    models = ", ".join(doc.get("model_versions") or []) or "-"
    print(
        f"  partials: {len(doc.get('partials') or [])}, inference workers: {len(workers)}, model: {models}",
        file=sys.stderr,
    )
    print(
        "  risk levels: " + ", ".join(f"{k} {levels.get(k, 0)}" for k in ("low", "medium", "high", "critical")),
        file=sys.stderr,
    )
    if not doc["complete"]:
        n = len(doc.get("missing_transaction_ids") or [])
        print(f"  INCOMPLETE: {n} transaction(s) not scored before the deadline", file=sys.stderr)


def score(args: argparse.Namespace, transactions: list[dict[str, Any]]) -> int:
    body: dict[str, Any] = {"transactions": transactions}
    if args.partial_size:
        body["partial_size"] = args.partial_size
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    url = args.url.rstrip("/") + "/predict"
    try:
        with httpx.Client(timeout=args.timeout_ms / 1000 + 2.0) as client:  # built before the clock starts
            started = time.perf_counter()
            r = client.post(url, json=body, params={"timeout_ms": args.timeout_ms}, headers=headers)
            elapsed_ms = (time.perf_counter() - started) * 1000
    except httpx.TimeoutException:
        return fail(f"no response from {url} within {args.timeout_ms} ms (+2 s). Retry with a larger --timeout-ms.")
    except httpx.TransportError as exc:
        return fail(
            f"cannot reach the gateway at {args.url} ({type(exc).__name__}). Is fraudmesh up "
            f"(`fraudmesh up`, `fraudmesh status`)?"
        )
    try:
        doc = r.json()
    except ValueError:
        return fail(f"HTTP {r.status_code} with a body that is not JSON: {r.text[:300]}")
    if r.status_code != 200:
        if args.json:
            sys.stdout.write(json.dumps(doc) + "\n")
        print_error(r.status_code, doc if isinstance(doc, dict) else {"message": str(doc)})
        return 1
    if args.json:
        sys.stdout.write(json.dumps(doc) + "\n")
    else:
        print_scores(doc)
    print_summary(doc, elapsed_ms)
    return 0 if doc["complete"] else 3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Score transactions on fraudmesh over HTTP (POST /predict).")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="gateway base URL (default: %(default)s)")
    p.add_argument(
        "--file",
        help='JSON file: a list of transactions or {"transactions": [...]}; without it a batch is generated',
    )
    p.add_argument("--count", type=int, default=10, help="size of the generated batch (default: %(default)s)")
    p.add_argument("--seed", type=int, default=7, help="seed of the generated batch (default: %(default)s)")
    p.add_argument("--timeout-ms", type=int, default=5000, help="request deadline in ms (default: %(default)s)")
    p.add_argument("--partial-size", type=int, help="transactions per partial (server default: 200)")
    p.add_argument("--api-key", default="", help="sent as X-API-Key; needed when the gateway has FRAUDMESH_API_KEYS")
    p.add_argument("--json", action="store_true", help="print the whole response body as JSON, nothing else")
    args = p.parse_args(argv)
    if args.timeout_ms < 1:
        p.error("--timeout-ms must be at least 1")
    if args.count < 1:
        p.error("--count must be at least 1")
    try:
        transactions = load_batch(args.file) if args.file else generate_batch(args.count, args.seed)
    except (OSError, ValueError) as exc:
        return fail(f"cannot read {args.file}: {exc}")
    return score(args, transactions)


if __name__ == "__main__":
    sys.exit(main())
