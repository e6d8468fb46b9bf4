"""Issue 12's goals, checked against the figures of one run: fraudmesh's phases and the peer's, measured side by
side (seed 001's service, or any with its API, driven with the same tools; see bench/peer.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Goal:
    key: str
    what: str
    unit: str
    ours: str
    """fraudmesh's phase (the GNN path); the bootstrap row reads `boot_` + this phase."""
    theirs: str
    """The peer's phase measured in the same run."""
    path: tuple[str, ...]
    higher_better: bool
    factor: float | None = None
    """Goal relative to the peer: ours >= factor x theirs (higher is better) or ours < theirs (factor 1)."""
    limit: float | None = None
    """Absolute goal: ours <= limit."""

    def target(self) -> str:
        if self.limit is not None:
            return f"≤ {self.limit:g} {self.unit}"
        if self.higher_better:
            return f"≥ {self.factor:g}x the peer's"
        return "below the peer's"


GOALS: tuple[Goal, ...] = (
    Goal("p50_4", "single p50, HTTP, 4 connections", "ms", "http_single_4", "peer_single_4",
         ("latency_ms", "p50"), False, factor=1.0),
    Goal("p99_4", "single p99, HTTP, 4 connections", "ms", "http_single_4", "peer_single_4",
         ("latency_ms", "p99"), False, limit=10.0),
    Goal("rps_32", "single req/s, HTTP, 32 connections", "req/s", "http_single_32", "peer_single_32",
         ("rps",), True, factor=2.5),
    Goal("p99_32", "single p99, HTTP, 32 connections", "ms", "http_single_32", "peer_single_32",
         ("latency_ms", "p99"), False, limit=30.0),
    Goal("batch_p50", "batch of 1,000, HTTP, p50", "ms", "http_batch", "peer_batch",
         ("latency_ms", "p50"), False, limit=30.0),
    Goal("batch_p99", "batch of 1,000, HTTP, p99", "ms", "http_batch", "peer_batch",
         ("latency_ms", "p99"), False, limit=50.0),
)  # fmt: skip


def _get(doc: dict[str, Any] | None, path: tuple[str, ...]) -> float | None:
    cur: Any = doc or {}
    for k in path:
        if not isinstance(cur, dict) or k not in cur:
            return None
        cur = cur[k]
    return float(cur) if isinstance(cur, int | float) else None


def ratio(ours: float | None, theirs: float | None, higher_better: bool) -> float | None:
    """How many times better fraudmesh is (>1: better), or None when a figure is missing."""
    if ours is None or theirs is None or ours <= 0 or theirs <= 0:
        return None
    return ours / theirs if higher_better else theirs / ours


def met(goal: Goal, ours: float | None, theirs: float | None) -> bool | None:
    """The goal met (True), missed (False) or not decidable from this run (None: a figure is missing)."""
    if ours is None:
        return None
    if goal.limit is not None:
        return ours <= goal.limit
    r = ratio(ours, theirs, goal.higher_better)
    if r is None or goal.factor is None:
        return None
    return r >= goal.factor if goal.higher_better else r > 1.0


def comparison(phases: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per goal: the peer's figure, fraudmesh's (GNN and bootstrap), the ratios and whether it is met."""
    rows = []
    for g in GOALS:
        ours = _get(phases.get(g.ours), g.path)
        theirs = _get(phases.get(g.theirs), g.path)
        boot = _get(phases.get(f"boot_{g.ours}"), g.path)
        rows.append(
            {
                "key": g.key,
                "what": g.what,
                "unit": g.unit,
                "peer": theirs,
                "ours": ours,
                "bootstrap": boot,
                "ratio": ratio(ours, theirs, g.higher_better),
                "bootstrap_ratio": ratio(boot, theirs, g.higher_better),
                "target": g.target(),
                "met": met(g, ours, theirs),
            }
        )
    return rows
