"""The benchmark's report writer, on a small synthetic result: no stack, no timing assertions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.compare import BAR
from bench.hops import breakdown
from bench.report import write_report
from bench.stats import histogram_quantile, percentile, summarize


def _single(label: str, conns: int, rps: float, lat: list[float]) -> dict[str, Any]:
    return {
        "label": label,
        "kind": "single",
        "transport": "http",
        "requests": len(lat),
        "rps": rps,
        "errors": {"connect": 0, "read": 0, "write": 0, "status": 2, "timeout": 0, "total": 2},
        "latency_ms": summarize(lat),
        "cdf": [(x, float(i)) for i, x in enumerate(sorted(lat))],
        "client": {"tool": "wrk", "cpu_cores": 0.1},
        "params": {"connections": conns, "threads": 1, "duration_s": 1.0},
        "hops": [
            {"hop": "gateway POST /score/fraud", "count": 10, "mean_ms": 3.0, "p50_ms": 2.5, "p99_ms": 9.0,
             "per_instance": {"gateway-0": 10}},
            {"hop": "aggregator score", "count": 10, "mean_ms": 2.0, "p50_ms": 1.5, "p99_ms": 5.0,
             "per_instance": {"aggregator-0": 10}},
            {"hop": "partial queue", "count": 5, "mean_ms": 0.5, "p50_ms": 0.4, "p99_ms": 1.0,
             "per_instance": {"inference-0": 3, "inference-1": 2}},
            {"hop": "partial compute", "count": 5, "mean_ms": 0.3, "p50_ms": 0.3, "p99_ms": 0.6,
             "per_instance": {"inference-0": 3, "inference-1": 2}},
        ],
        "cpu_cores": {"gateway-0": 0.5},
    }  # fmt: skip


def _result() -> dict[str, Any]:
    single4 = _single("POST /score/fraud, 4 connections", 4, 900.0, [1.0, 2.0, 3.0, 4.0, 50.0])
    single32 = _single("POST /score/fraud, 32 connections", 32, 2500.0, [5.0, 6.0, 7.0, 8.0, 90.0])
    single32["breakdown"] = breakdown(single32["hops"], 4.0, "gateway POST /score/fraud")
    batch = {
        "label": "POST /predict, 1000 transactions",
        "kind": "batch",
        "transport": "http",
        "batch_size": 1000,
        "requests": 3,
        "errors": {"total": 0},
        "latency_ms": summarize([40.0, 45.0, 60.0]),
        "tx_per_s": 22222.0,
        "partials_per_request": 5.0,
        "partials_by_worker": {"inference-0": 8, "inference-1": 7},
    }
    return {
        "name": "synthetic",
        "machine": {"cpu_model": "Test CPU", "cores": 2, "ram_gib": 4.0, "kernel": "6.1", "python": "3.11.7",
                    "packages": {"nats-py": "2.9.0", "litestar": "2.12.0"}},
        "settings": {"replicas": {"gateway": 1, "inference": 2}, "effective": {"partial_size": 200}},
        "params": {"duration_s": 1.0},
        "phases": {"http_single_4": single4, "http_single_32": single32, "http_batch": batch},
        "slowest_hop": {**single32["breakdown"]["slowest"], "phase": single32["label"]},
        "notes": ["synthetic note"],
    }  # fmt: skip


def test_report_json_and_markdown(tmp_path: Path) -> None:
    json_path, md_path = write_report(_result(), tmp_path, plot=False)
    doc = json.loads(json_path.read_text())
    lat = doc["phases"]["http_single_32"]["latency_ms"]
    for key in ("p50", "p95", "p99", "p99.9", "max", "mean"):
        assert key in lat
    rows = {r["key"]: r for r in doc["comparison"]}
    assert set(rows) == {b[0] for b in BAR}
    assert rows["rps_32"]["seed001"] == 1100.0
    assert rows["rps_32"]["ours"] == 2500.0
    assert rows["rps_32"]["met"] is True  # 2500 >= 2 x 1100
    assert rows["batch"]["ours"] == 45.0

    md = md_path.read_text()
    assert "| figure | seed 001 | fraudmesh |" in md
    assert "1000-transaction batch" in md
    for col in ("p50 ms", "p95 ms", "p99 ms"):
        assert col in md
    assert "Slowest hop" in md
    assert "gateway (HTTP, validation, NATS round trip)" in md
    assert "Test CPU" in md
    assert "inference-0: 8" in md


def test_missing_phases_are_dashes(tmp_path: Path) -> None:
    res = _result()
    del res["phases"]["http_batch"]
    _, md_path = write_report(res, tmp_path, plot=False)
    line = next(ln for ln in md_path.read_text().splitlines() if ln.startswith("| 1000-transaction batch"))
    assert "- ms" in line


def test_plot_written_when_matplotlib_present(tmp_path: Path) -> None:
    _, md_path = write_report(_result(), tmp_path, plot=True)
    pngs = list(tmp_path.glob("*.png"))
    if pngs:  # matplotlib is optional
        assert pngs[0].name in md_path.read_text()


def test_stats_helpers() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert summarize([])["count"] == 0.0
    buckets = [(0.001, 0.0), (0.01, 50.0), (0.1, 100.0), (float("inf"), 100.0)]
    assert 0.001 < histogram_quantile(0.5, buckets) <= 0.0100001
    assert histogram_quantile(0.99, buckets) <= 0.1


def test_breakdown_names_the_slowest_hop() -> None:
    hops = _result()["phases"]["http_single_32"]["hops"]
    bd = breakdown(hops, 4.0, "gateway POST /score/fraud")
    assert bd["slowest"]["hop"].startswith("aggregator")  # 2.0 - 0.5 - 0.3 = 1.2 ms is the largest share
