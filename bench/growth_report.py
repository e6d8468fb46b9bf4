"""The growth report (`python -m bench.growth`): batch time against size and inference workers, and the offline
steps against the world's size, each with how it grows (the exponent between two sizes: 1 is linear)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

STEPS = ("simulate", "features export", "train")


def _f(x: Any, nd: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:,.{nd}f}" if isinstance(x, int | float) else str(x)


def exponent(x0: float, y0: float | None, x1: float, y1: float | None) -> float | None:
    """k in y ~ x^k between two points (1: linear, 2: quadratic), or None."""
    if not y0 or not y1 or x0 <= 0 or x1 <= 0 or x0 == x1:
        return None
    return math.log(y1 / y0) / math.log(x1 / x0)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return [*out, *("| " + " | ".join(r) + " |" for r in rows), ""]


def growth_markdown(g: dict[str, Any], level: int = 2) -> list[str]:
    h = "#" * level
    out: list[str] = []
    if g.get("reports"):
        out += ["From " + ", ".join(f"[{n}]({n}.md)" for n in g["reports"]) + ".", ""]
    batches = (g.get("batches") or {}).get("rows") or []
    if batches:
        out += [f"{h} Batch time against batch size and inference workers (GNN `{g['batches'].get('model')}`, "
                "world transactions, ingestion on)", ""]  # fmt: skip
        rows = []
        prev: dict[int, dict[str, Any]] = {}
        for r in batches:
            lat = r["latency_ms"]
            p = prev.get(r["inference_workers"])
            k = exponent(p["batch_size"], p["latency_ms"].get("p50"), r["batch_size"], lat.get("p50")) if p else None
            prev[r["inference_workers"]] = r
            rows.append([
                str(r["inference_workers"]), f"{r['batch_size']:,}", _f(r.get("requests"), 0), _f(lat.get("p50")),
                _f(lat.get("p95")), _f(lat.get("p99")), _f(r.get("ms_per_1000_tx"), 1), _f(r.get("tx_per_s"), 0),
                _f(k, 2), ", ".join(f"{w}: {n}" for w, n in (r.get("partials_by_worker") or {}).items()),
                _f((r.get("errors") or {}).get("total"), 0),
            ])  # fmt: skip
        head = ["inference workers", "batch", "n", "p50 ms", "p95 ms", "p99 ms", "ms per 1,000 tx", "tx/s at p50",
                "growth exponent vs previous size", "partials by worker", "errors"]  # fmt: skip
        out += _table(head, rows)
        by = {(r["inference_workers"], r["batch_size"]): r for r in batches}
        speedups = []
        for (w, size), r in sorted(by.items()):
            one = by.get((1, size))
            if w > 1 and one and one["latency_ms"].get("p50") and r["latency_ms"].get("p50"):
                speedups.append(f"{size:,}: {one['latency_ms']['p50'] / r['latency_ms']['p50']:.2f}x with {w}")
        if speedups:
            out += ["Speed-up of the batch p50 over one inference worker: " + "; ".join(speedups) + ".", ""]
        for r in batches:
            errs = {k: v for k, v in (r.get("errors") or {}).items() if k != "total" and v}
            if errs:
                out += [
                    f"**{r['inference_workers']} worker(s), batch of {r['batch_size']:,}: {sum(errs.values())} of "
                    f"{r.get('requests', '?')} batches did not complete** ("
                    + ", ".join(f"{k} {v}" for k, v in errs.items())
                    + "): they hit the request deadline, so the row's latencies are the time to the deadline, "
                    "a lower bound.",
                    "",
                ]
    worlds = (g.get("worlds") or {}).get("rows") or []
    if worlds:
        out += [f"{h} Offline steps against the world's size", ""]
        rows = []
        for i, r in enumerate(worlds):
            for step in STEPS:
                s = r.get(step) or {}
                p = (worlds[i - 1].get(step) or {}) if i else {}
                k = exponent(worlds[i - 1]["transactions"], p.get("seconds"), r["transactions"], s.get("seconds")) \
                    if i else None  # fmt: skip
                per = s["seconds"] / r["transactions"] * 1e6 if s.get("seconds") else None
                rows.append([f"{r['transactions']:,}", f"{r['cards']:,}", step, _f(s.get("seconds")),
                             _f(per, 0), _f(s.get("max_rss_mib"), 0), _f(k, 2)])  # fmt: skip
            if r.get("error"):
                rows.append([f"{r['transactions']:,}", f"{r['cards']:,}", "error", r["error"][:200], "", "", ""])
        out += _table(["transactions", "cards", "step", "seconds", "µs per transaction", "peak RSS MiB",
                       "growth exponent vs previous size"], rows)  # fmt: skip
        out += [f"`train` ran {g.get('params', {}).get('epochs', '?')} epochs and simulates its world in-process "
                "before reading the offline store; each world lived in a PostgreSQL schema of its own, dropped "
                "afterwards.", ""]  # fmt: skip
    for note in g.get("notes") or []:
        out += [f"- {note}"]
    if g.get("notes"):
        out += [""]
    return out


def render_growth(g: dict[str, Any]) -> str:
    m = g.get("machine", {})
    lines = [
        f"# fraudmesh growth: {g.get('name', '')}",
        "",
        f"Run {g.get('started_at', '')} → {g.get('finished_at', '')} on {m.get('cpu_model', '?')}, "
        f"{m.get('cores', '?')} cores; 1-minute load average {g.get('load_avg_1m_start', '?')} at the start, "
        f"{g.get('load_avg_1m_end', '?')} at the end.",
        "",
        *growth_markdown(g),
        "Parameters:",
        "",
        "```json",
        json.dumps(g.get("params", {}), indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)


def write_growth(g: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    name = g.get("name") or "growth"
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    json_path.write_text(json.dumps(g, indent=2, default=str) + "\n")
    md_path.write_text(render_growth(g))
    return json_path, md_path
