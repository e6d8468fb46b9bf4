"""Sequential batches over HTTP with httpx (concurrency 1, so the client cannot be the limit)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx

from bench.natsload import batch_summary


def batches(
    gateway_url: str,
    body: bytes,
    iterations: int,
    api_key: str = "",
    warmup: int = 0,
    timeout_s: float = 60.0,
    path: str = "/predict",
) -> dict[str, Any]:
    headers = {"Content-Type": "application/json", **({"X-API-Key": api_key} if api_key else {})}
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    partials: list[dict[str, Any]] = []
    server_ms: list[float] = []
    size = 0
    with httpx.Client(base_url=gateway_url, timeout=timeout_s, headers=headers) as client:
        for k in range(warmup + iterations):
            t0 = time.perf_counter()
            try:
                r = client.post(path, content=body)
            except httpx.HTTPError as exc:
                if k >= warmup:
                    outcomes[type(exc).__name__] += 1
                continue
            ms = (time.perf_counter() - t0) * 1000.0
            if k < warmup:
                continue
            if r.status_code != 200:
                outcomes[f"http_{r.status_code}"] += 1
                continue
            doc = r.json()
            outcomes["ok" if doc.get("complete", True) else "incomplete"] += 1
            latencies.append(ms)
            server_ms.append(float(doc.get("latency_ms", 0.0)))
            size = len(doc.get("results", []))
            partials.extend(doc.get("partials", []))
    return batch_summary(latencies, outcomes, size, partials, server_ms, tool="httpx (sequential)")
