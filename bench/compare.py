"""The bar to beat: seed 001's own service, measured on this machine with wrk."""

from __future__ import annotations

from typing import Any

# (key, what, their figure, unit, phase, path into the phase, higher is better, target factor)
BAR: tuple[tuple[str, str, float, str, str, tuple[str, ...], bool, float], ...] = (
    (
        "rps_32",
        "single scores/s, HTTP, 32 connections",
        1100.0,
        "req/s",
        "http_single_32",
        ("rps",),
        True,
        2.0,
    ),
    (
        "p99_32",
        "single p99, HTTP, 32 connections",
        130.0,
        "ms",
        "http_single_32",
        ("latency_ms", "p99"),
        False,
        1.0,
    ),
    (
        "p50_4",
        "single p50, HTTP, 4 connections",
        3.1,
        "ms",
        "http_single_4",
        ("latency_ms", "p50"),
        False,
        1.0,
    ),
    (
        "p99_4",
        "single p99, HTTP, 4 connections",
        40.0,
        "ms",
        "http_single_4",
        ("latency_ms", "p99"),
        False,
        1.0,
    ),
    (
        "batch",
        "1000-transaction batch, HTTP, p50",
        554.0,
        "ms",
        "http_batch",
        ("latency_ms", "p50"),
        False,
        6.0,
    ),
)


def _get(doc: dict[str, Any], path: tuple[str, ...]) -> float | None:
    cur: Any = doc
    for k in path:
        if not isinstance(cur, dict) or k not in cur:
            return None
        cur = cur[k]
    return float(cur) if isinstance(cur, int | float) else None


def comparison(phases: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per bar: their figure, ours, the ratio (>1 means fraudmesh is better) and the target."""
    rows = []
    for key, what, theirs, unit, phase, path, higher_better, factor in BAR:
        ours = _get(phases.get(phase, {}), path)
        ratio = None
        if ours is not None and ours > 0:
            ratio = ours / theirs if higher_better else theirs / ours
        target = (
            f"≥ {theirs * factor:g} {unit}"
            if higher_better
            else (f"< {theirs:g} {unit}" if factor == 1.0 else f"≤ {theirs / factor:.0f} {unit} ({factor:g}x faster)")
        )
        met = None if ratio is None else (ratio >= factor if factor != 1.0 else ratio > 1.0)
        rows.append(
            {
                "key": key,
                "what": what,
                "seed001": theirs,
                "ours": ours,
                "unit": unit,
                "ratio": ratio,
                "target": target,
                "met": met,
            }
        )
    return rows
