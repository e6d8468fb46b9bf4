"""Latency CDF of single scores, as a PNG next to the report (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SERIES = ("http_single_4", "http_single_32", "nats_single_4", "nats_single_32")


def cdf_plot(phases: dict[str, dict[str, Any]], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    drawn = 0
    for key in SERIES:
        ph = phases.get(key)
        if not ph or not ph.get("cdf"):
            continue
        xs = [max(ms, 1e-3) for ms, _ in ph["cdf"]]
        ys = [q for _, q in ph["cdf"]]
        ax.plot(xs, ys, label=ph.get("label", key))
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("percentile")
    ax.set_title("fraudmesh single scores: latency CDF")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
