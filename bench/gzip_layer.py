"""What a compression layer costs a small reply (the `/score/fraud` case), in process, without the network.

Three Litestar apps answer the same ~700-byte JSON body (a /score/fraud reply) to a client that accepts gzip:
`none` (no compression anywhere), `app` (Litestar's app-wide `CompressionConfig`, which wraps every route) and
`route` (the gateway's choice: `middleware=[GZIP]` on other routes only, so this one has no layer). Each request
is one ASGI call timed with `time.perf_counter_ns`; the figures are per request, p50 and mean over `--n` calls
after a warm-up. Writes `bench/results/gzip-layer-<date>.json` and `.md`.

    python -m bench.gzip_layer --n 20000
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import time
from typing import Any

from litestar import Litestar, get
from litestar.config.compression import CompressionConfig

from bench.report import RESULTS_DIR
from gateway.compression import COMPRESSION, GZIP

BODY: dict[str, Any] = {
    "request_id": "3f2c9a0e5d7b4c1a3f2c9a0e5d7b4c1a",
    "transaction_id": "3f2c9a0e5d7b4c1a3f2c9a0e5d7b4c1a-0",
    "fraud_score": 0.0734,
    "risk_level": "low",
    "recommended_action": "approve",
    "confidence": 0.8532,
    "explanation": "Amount far above this card's usual; merchant category often seen in fraud",
    "top_risk_factors": [
        {
            "code": "amount_high",
            "description": "Amount far above this card's usual",
            "weight": 0.41,
            "source": "features",
        },
        {"code": "mcc_high_risk", "description": "Merchant category often seen in fraud", "weight": 0.22},
    ],
    "features_used": 24,
    "model_version": "gnn-20261130-120000",
    "feature_freshness_sec": 12.5,
    "features_computed": 0,
    "latency_ms": 3.91,
}


def build(kind: str) -> Litestar:
    @get("/score", sync_to_thread=False)
    def score() -> dict[str, Any]:
        return BODY

    @get("/big", sync_to_thread=False, middleware=[GZIP] if kind == "route" else None)
    def big() -> list[dict[str, Any]]:
        return [BODY] * 20

    compression = CompressionConfig(backend="gzip", minimum_size=COMPRESSION.minimum_size) if kind == "app" else None
    return Litestar([score, big], compression_config=compression, logging_config=None)


async def run(app: Litestar, n: int) -> list[int]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/score",
        "raw_path": b"/score",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench"), (b"accept-encoding", b"gzip, deflate")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    times = []
    for i in range(n + n // 10):
        sent.clear()
        t0 = time.perf_counter_ns()
        await app(dict(scope), receive, send)  # type: ignore[arg-type]
        dt_ns = time.perf_counter_ns() - t0
        if i >= n // 10:
            times.append(dt_ns)
    start = sent[0]
    assert start["status"] == 200 and all(k != b"content-encoding" for k, _ in start["headers"])
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    args = parser.parse_args()
    rows = {}
    for kind in ("none", "app", "route", "none"):  # `none` twice: the spread between its runs is the noise
        times = asyncio.run(run(build(kind), args.n))
        key = kind if kind not in rows else f"{kind} (again)"
        rows[key] = {"p50_us": statistics.median(times) / 1000, "mean_us": statistics.fmean(times) / 1000}
    stamp = dt.datetime.now(dt.UTC)
    name = f"gzip-layer-{stamp:%Y%m%d}"
    result = {
        "when": stamp.isoformat(),
        "requests_per_kind": args.n,
        "reply_bytes": len(json.dumps(BODY)),
        "kinds": rows,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Cost of a compression layer on a small reply (in process)",
        "",
        f"{args.n:,} ASGI calls per kind (after a 10% warm-up), reply {result['reply_bytes']} bytes, client "
        "accepts gzip. `none`: no compression anywhere; `app`: Litestar's app-wide CompressionConfig; `route`: "
        "gzip on another route only (the gateway's way).",
        "",
        "| kind | p50 µs | mean µs |",
        "|---|---|---|",
        *(f"| {k} | {v['p50_us']:.1f} | {v['mean_us']:.1f} |" for k, v in rows.items()),
        "",
        "`route` is what the gateway does: `/score/fraud` has no compression layer, so it costs what `none` costs.",
    ]
    (RESULTS_DIR / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
