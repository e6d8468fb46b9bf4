"""Hop timings from the services' own Prometheus histograms, diffed over one phase of the benchmark.

Hops nest: the gateway's HTTP time contains the aggregator's `score` handler, which contains the partials'
queue and compute time. `breakdown` subtracts the means to get each hop's own share.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.stats import histogram_quantile

Labels = frozenset[tuple[str, str]]
Samples = dict[tuple[str, Labels], float]


@dataclass(frozen=True)
class Hop:
    name: str
    service: str
    metric: str
    where: tuple[tuple[str, str], ...] = ()
    what: str = ""
    exclude: tuple[tuple[str, str], ...] = ()


HOPS = (
    Hop(
        "gateway POST /score/fraud",
        "gateway",
        "fraudmesh_http_request_duration_seconds",
        (("path", "/score/fraud"),),
        "Litestar middleware to response, incl. the NATS request",
    ),
    Hop(
        "gateway POST /predict",
        "gateway",
        "fraudmesh_http_request_duration_seconds",
        (("path", "/predict"),),
        "Litestar middleware to response, incl. the NATS request",
    ),
    Hop(
        "aggregator score",
        "aggregator",
        "fraudmesh_handler_duration_seconds",
        (("handler", "score"),),
        "receipt of fraud.score to reply: split, coalesce, publish, collect",
    ),
    Hop(
        "partial queue",
        "inference",
        "fraudmesh_partial_queue_seconds",
        (),
        "a partial waiting in the JetStream work queue",
    ),
    Hop(
        "partial compute",
        "inference",
        "fraudmesh_partial_compute_seconds",
        (("stage", "total"),),
        "features, ONNX and decisions for one partial",
    ),
    Hop(
        "feature handlers",
        "feature",
        "fraudmesh_handler_duration_seconds",
        (),
        "feature_svc request handlers (health pings excluded)",
        (("handler", "health"),),
    ),
)


def scrape(url: str, timeout: float = 5.0) -> Samples:
    text = httpx.get(url, timeout=timeout).text
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def scrape_all(endpoints: dict[str, str]) -> dict[str, Samples]:
    """instance name (e.g. `inference-1`) -> its samples; instances that do not answer are skipped."""
    out = {}
    for inst, url in endpoints.items():
        try:
            out[inst] = scrape(url)
        except httpx.HTTPError:
            continue
    return out


def _series(samples: Samples, hop: Hop) -> tuple[dict[float, float], float, float]:
    """Buckets (le -> count), sum and count of a hop in one instance, summed over its other labels."""
    buckets: dict[float, float] = defaultdict(float)
    total = count = 0.0
    want, unwanted = set(hop.where), set(hop.exclude)
    for (name, labels), v in samples.items():
        if not want <= labels or unwanted & labels:
            continue
        if name == hop.metric + "_bucket":
            buckets[float(dict(labels)["le"])] += v
        elif name == hop.metric + "_sum":
            total += v
        elif name == hop.metric + "_count":
            count += v
    return buckets, total, count


def hop_stats(before: dict[str, Samples], after: dict[str, Samples]) -> list[dict[str, Any]]:
    """Per hop: count, mean and histogram p50/p99 (ms) over the interval, and the count per instance."""
    out = []
    for hop in HOPS:
        buckets: dict[float, float] = defaultdict(float)
        total = count = 0.0
        per_instance: dict[str, float] = {}
        for inst, samples in after.items():
            if not inst.startswith(hop.service):
                continue
            b1, s1, c1 = _series(samples, hop)
            b0, s0, c0 = _series(before.get(inst, {}), hop)
            for le, v in b1.items():
                buckets[le] += v - b0.get(le, 0.0)
            total += s1 - s0
            count += c1 - c0
            if c1 - c0 > 0:
                per_instance[inst] = c1 - c0
        if count <= 0:
            continue
        cum = sorted(buckets.items())
        out.append(
            {
                "hop": hop.name,
                "service": hop.service,
                "metric": hop.metric,
                "what": hop.what,
                "count": int(count),
                "mean_ms": 1000.0 * total / count,
                "p50_ms": 1000.0 * histogram_quantile(0.50, cum),
                "p99_ms": 1000.0 * histogram_quantile(0.99, cum),
                "bucket_bounds_ms": [1000.0 * le for le, _ in cum if not math.isinf(le)],
                "per_instance": per_instance,
            }
        )
    return out


def breakdown(hops: list[dict[str, Any]], client_mean_ms: float | None, outer_hop: str | None) -> dict[str, Any]:
    """Each hop's own share of a mean request, from the nested means, and the slowest of them.

    `outer_hop` is the gateway hop for HTTP requests, None for requests sent straight to NATS. Valid for
    requests of one partial (single scores): a batch's partials run in parallel, so there the partial hops
    overlap and only their own figures mean something. The partial hops are means per partial; when the
    aggregator coalesces several single scores into one partial, each of them waits that partial's time.
    """
    by = {h["hop"]: h for h in hops}
    gw = by.get(outer_hop, {}).get("mean_ms") if outer_hop else None
    agg = by.get("aggregator score", {}).get("mean_ms")
    queue = by.get("partial queue", {}).get("mean_ms")
    comp = by.get("partial compute", {}).get("mean_ms")
    own: dict[str, float] = {}
    if outer_hop is None and client_mean_ms is not None and agg is not None:
        own["client and NATS transport (outside the aggregator)"] = client_mean_ms - agg
    if outer_hop and client_mean_ms is not None and gw is not None:
        own["client, TCP, uvicorn and event-loop wait (outside the gateway middleware)"] = client_mean_ms - gw
    if gw is not None and agg is not None:
        own["gateway (HTTP, validation, NATS round trip)"] = gw - agg
    if agg is not None and queue is not None and comp is not None:
        own["aggregator (coalesce, publish, collect, reply)"] = agg - queue - comp
    if queue is not None:
        own["partial queue (JetStream to worker)"] = queue
    if comp is not None:
        own["partial compute (features + ONNX)"] = comp
    slowest = max(own.items(), key=lambda kv: kv[1]) if own else None
    return {"own_ms": own, "slowest": {"hop": slowest[0], "mean_ms": slowest[1]} if slowest else None}
