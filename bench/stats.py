"""Percentiles from raw samples and from Prometheus histogram buckets. No timing assertions live here."""

from __future__ import annotations

import math
from collections.abc import Sequence

SUMMARY_QUANTILES = (50.0, 90.0, 95.0, 99.0, 99.9)


def qkey(q: float) -> str:
    """`p50`, `p99`, `p99.9`: the key a quantile gets in every report."""
    return f"p{q:g}"


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of already sorted values, interpolating linearly between ranks."""
    if not sorted_values:
        return math.nan
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    rank = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(rank)
    hi = min(lo + 1, len(sorted_values) - 1)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (rank - lo))


def summarize(values_ms: Sequence[float]) -> dict[str, float]:
    """count, min, mean, the summary percentiles and max of latencies in ms."""
    vals = sorted(values_ms)
    out: dict[str, float] = {"count": float(len(vals))}
    if not vals:
        return out
    out["min"] = vals[0]
    out["mean"] = sum(vals) / len(vals)
    for q in SUMMARY_QUANTILES:
        out[qkey(q)] = percentile(vals, q)
    out["max"] = vals[-1]
    return out


def cdf_points(values_ms: Sequence[float], points: int = 200) -> list[tuple[float, float]]:
    """(latency ms, percentile) pairs for a CDF plot, at most `points` of them plus the tail."""
    vals = sorted(values_ms)
    if not vals:
        return []
    qs = [100.0 * i / points for i in range(points + 1)] + [99.5, 99.9, 99.99]
    return [(percentile(vals, q), q) for q in sorted(set(qs))]


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Prometheus-style quantile (0..1) from cumulative (upper bound, count) buckets, +Inf last.

    Interpolates linearly inside the bucket that holds the rank, so the answer is only as fine as the buckets.
    """
    if not buckets:
        return math.nan
    total = buckets[-1][1]
    if total <= 0:
        return math.nan
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le  # beyond the last finite bucket: its bound is all we know
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return buckets[-1][0]
