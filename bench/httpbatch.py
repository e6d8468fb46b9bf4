"""Sequential batches over HTTP with httpx (concurrency 1, so the client cannot be the limit)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx

from bench.natsload import batch_summary


def _fraudmesh_reply(doc: dict[str, Any]) -> tuple[str, int, float, list[dict[str, Any]]]:
    """fraudmesh's `/predict` reply: outcome, size, server latency, partials."""
    ok = "ok" if doc.get("complete", True) else "incomplete"
    return ok, len(doc.get("results", [])), float(doc.get("latency_ms", 0.0)), list(doc.get("partials", []))


def _peer_reply(doc: dict[str, Any]) -> tuple[str, int, float, list[dict[str, Any]]]:
    """Seed 001's `/score/batch` reply (`successful_responses`, `failed_responses`, `processing_time_ms`)."""
    ok = "ok" if not doc.get("failed_responses") else "failed_items"
    return ok, int(doc.get("successful_responses", 0)), float(doc.get("processing_time_ms", 0.0)), []


REPLIES = {"fraudmesh": _fraudmesh_reply, "peer": _peer_reply}


def batches(
    base_url: str,
    body: bytes | list[bytes],
    iterations: int,
    api_key: str = "",
    warmup: int = 0,
    timeout_s: float = 60.0,
    path: str = "/predict",
    reply: str = "fraudmesh",
) -> dict[str, Any]:
    """`iterations` POSTs of `body`, one at a time; with a list of bodies, each request sends the next one
    (a cold phase gives every batch entities of its own)."""
    read = REPLIES[reply]
    bodies = body if isinstance(body, list) else [body]
    headers = {"Content-Type": "application/json", **({"X-API-Key": api_key} if api_key else {})}
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    partials: list[dict[str, Any]] = []
    server_ms: list[float] = []
    size = 0
    with httpx.Client(base_url=base_url, timeout=timeout_s, headers=headers) as client:
        for k in range(warmup + iterations):
            content = bodies[k % len(bodies)]
            t0 = time.perf_counter()
            try:
                r = client.post(path, content=content)
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
            outcome, size, server, parts = read(r.json())
            outcomes[outcome] += 1
            latencies.append(ms)
            server_ms.append(server)
            partials.extend(parts)
    out = batch_summary(latencies, outcomes, size, partials, server_ms, tool="httpx (sequential)")
    out["distinct_bodies"] = len(bodies)
    return out
