"""Load over NATS with nats-py: a fixed number of in-flight `fraud.score` requests, latency per request.

The client is an asyncio program, so it can become the bottleneck. It therefore measures its own CPU use
(resource.getrusage): a client near a full core makes the figures a floor on the system, not its ceiling.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections import Counter
from typing import Any

import msgspec
import nats

from bench.stats import cdf_points, summarize
from shared import subjects
from shared.messages import Codec, ErrorReply, ScoreAnswer, ScoreRequest, Transaction


class _Peek(msgspec.Struct):
    """Just enough of a reply to tell success from error without decoding every score."""

    type: str
    complete: bool = True
    code: str = ""


_peek = msgspec.msgpack.Decoder(_Peek)


def encode_requests(transactions: list[dict[str, Any]], per_request: int, *, ingest: bool = True) -> list[bytes]:
    """msgpack ScoreRequests of `per_request` transactions each, encoded once before the clock starts."""
    codec = Codec()
    txs = msgspec.convert(transactions, list[Transaction])
    return [
        codec.encode(ScoreRequest(transactions=txs[i : i + per_request], ingest=ingest))
        for i in range(0, len(txs), per_request)
    ]


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def _one(nc: Any, body: bytes, deadline_ms: int) -> tuple[float, str]:
    headers = {subjects.HDR_DEADLINE: str(int(time.time() * 1000) + deadline_ms)}
    t0 = time.perf_counter()
    try:
        msg = await nc.request(subjects.SCORE, body, timeout=deadline_ms / 1000.0 + 1.0, headers=headers)
    except Exception as exc:
        return (time.perf_counter() - t0) * 1000.0, type(exc).__name__
    ms = (time.perf_counter() - t0) * 1000.0
    rep = _peek.decode(msg.data)
    if rep.type == "error":
        return ms, f"error:{rep.code}"
    return ms, "ok" if rep.complete else "incomplete"


async def _closed_loop(
    nc: Any, bodies: list[bytes], concurrency: int, seconds: float, deadline_ms: int
) -> tuple[list[float], Counter[str], float]:
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    end = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        i = k * 997
        while time.perf_counter() < end:
            ms, outcome = await _one(nc, bodies[i % len(bodies)], deadline_ms)
            i += 1
            outcomes[outcome] += 1
            if outcome == "ok":
                latencies.append(ms)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return latencies, outcomes, time.perf_counter() - t0


async def singles(
    nats_url: str,
    bodies: list[bytes],
    concurrency: int,
    seconds: float,
    warmup_s: float = 0.0,
    deadline_ms: int = 5000,
) -> dict[str, Any]:
    nc = await nats.connect(nats_url, name="fraudmesh-bench")
    try:
        if warmup_s > 0:
            await _closed_loop(nc, bodies, concurrency, warmup_s, deadline_ms)
        cpu0 = _cpu_s()
        latencies, outcomes, wall = await _closed_loop(nc, bodies, concurrency, seconds, deadline_ms)
        cpu = _cpu_s() - cpu0
    finally:
        await nc.drain()
    requests = sum(outcomes.values())
    return {
        "requests": requests,
        "duration_s": wall,
        "rps": outcomes["ok"] / wall if wall > 0 else 0.0,
        "errors": {**{k: v for k, v in outcomes.items() if k != "ok"}, "total": requests - outcomes["ok"]},
        "latency_ms": summarize(latencies),
        "cdf": cdf_points(latencies),
        "client": {"tool": "nats-py asyncio", "cpu_s": cpu, "cpu_cores": cpu / wall if wall > 0 else 0.0},
        "params": {
            "concurrency": concurrency,
            "duration_s": seconds,
            "warmup_s": warmup_s,
            "deadline_ms": deadline_ms,
            "distinct_bodies": len(bodies),
        },
    }


async def batches(
    nats_url: str, body: bytes, iterations: int, warmup: int = 0, deadline_ms: int = 30000
) -> dict[str, Any]:
    """Sequential batches; decodes each reply fully to record the partials (worker, queue and compute ms)."""
    codec = Codec()
    nc = await nats.connect(nats_url, name="fraudmesh-bench")
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    partials: list[dict[str, Any]] = []
    server_ms: list[float] = []
    size = 0
    try:
        for k in range(warmup + iterations):
            headers = {subjects.HDR_DEADLINE: str(int(time.time() * 1000) + deadline_ms)}
            t0 = time.perf_counter()
            try:
                msg = await nc.request(subjects.SCORE, body, timeout=deadline_ms / 1000.0 + 1.0, headers=headers)
            except Exception as exc:
                if k >= warmup:
                    outcomes[type(exc).__name__] += 1
                continue
            ms = (time.perf_counter() - t0) * 1000.0
            rep = codec.decode(msg.data, ScoreAnswer)  # type: ignore[arg-type]
            if k < warmup:
                continue
            if isinstance(rep, ErrorReply):
                outcomes[f"error:{rep.code}"] += 1
                continue
            outcomes["ok" if rep.complete else "incomplete"] += 1
            latencies.append(ms)
            server_ms.append(rep.latency_ms)
            size = len(rep.results)
            partials.extend(msgspec.to_builtins(rep.partials))
    finally:
        await nc.drain()
    return batch_summary(latencies, outcomes, size, partials, server_ms, tool="nats-py asyncio")


def batch_summary(
    latencies: list[float],
    outcomes: Counter[str],
    size: int,
    partials: list[dict[str, Any]],
    server_ms: list[float],
    tool: str,
) -> dict[str, Any]:
    lat = summarize(latencies)
    requests = sum(outcomes.values())
    workers = Counter(str(p.get("worker_id", "")) for p in partials)
    return {
        "requests": requests,
        "batch_size": size,
        "errors": {**{k: v for k, v in outcomes.items() if k != "ok"}, "total": requests - outcomes["ok"]},
        "latency_ms": lat,
        "server_latency_ms": summarize(server_ms),
        "tx_per_s": size / (lat["p50"] / 1000.0) if latencies and lat["p50"] > 0 else 0.0,
        "tx_per_s_mean": size * len(latencies) / (sum(latencies) / 1000.0) if latencies else 0.0,
        "partials_per_request": len(partials) / len(latencies) if latencies else 0.0,
        "partials_by_worker": dict(sorted(workers.items())),
        "partial_queue_ms": summarize([float(p.get("queue_ms", 0.0)) for p in partials]),
        "partial_compute_ms": summarize([float(p.get("compute_ms", 0.0)) for p in partials]),
        "redelivered_partials": sum(1 for p in partials if int(p.get("deliveries", 1)) > 1),
        "client": {"tool": tool},
    }
