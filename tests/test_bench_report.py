"""The benchmark's report writer, on a small synthetic result: no stack, no timing assertions."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from bench.compare import GOALS, comparison, met, ratio
from bench.features import NO_WORLD, sample_entities
from bench.hops import breakdown
from bench.report import write_report
from bench.runner import observations
from bench.stats import histogram_quantile, percentile, summarize


def _single(label: str, conns: int, rps: float, lat: list[float], system: str = "fraudmesh") -> dict[str, Any]:
    return {
        "label": label,
        "kind": "single",
        "transport": "http",
        "system": system,
        "path": "seed 001" if system == "peer" else "gnn",
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


def _batch(label: str, lat: list[float], system: str = "fraudmesh", path: str = "gnn") -> dict[str, Any]:
    return {
        "label": label,
        "kind": "batch",
        "transport": "http",
        "system": system,
        "path": path,
        "batch_size": 1000,
        "requests": len(lat),
        "errors": {"total": 0},
        "latency_ms": summarize(lat),
        "tx_per_s": 22222.0,
        "partials_per_request": 5.0,
        "partials_by_worker": {"inference-0": 8, "inference-1": 7} if system == "fraudmesh" else {},
    }


def _result() -> dict[str, Any]:
    single4 = _single("POST /score/fraud, 4 connections", 4, 900.0, [1.0, 2.0, 3.0, 4.0, 50.0])
    single32 = _single("POST /score/fraud, 32 connections", 32, 2500.0, [5.0, 6.0, 7.0, 8.0, 90.0])
    single32["breakdown"] = breakdown(single32["hops"], 4.0, "gateway POST /score/fraud")
    peer4 = _single("seed 001 POST /score/fraud, 4 connections", 4, 1100.0, [2.0, 3.0, 4.0, 5.0, 40.0], "peer")
    peer32 = _single("seed 001 POST /score/fraud, 32 connections", 32, 1000.0, [20.0, 25.0, 30.0, 35.0, 120.0], "peer")
    boot32 = _single("bootstrap model: POST /score/fraud, 32 connections", 32, 3400.0, [3.0, 4.0, 5.0, 6.0, 20.0])
    boot32["path"] = "bootstrap"
    for ph in (peer4, peer32):
        ph["hops"] = []
    return {
        "name": "synthetic",
        "machine": {"cpu_model": "Test CPU", "cores": 2, "ram_gib": 4.0, "kernel": "6.1", "python": "3.11.7",
                    "packages": {"nats-py": "2.9.0", "litestar": "2.12.0"}},
        "settings": {"replicas": {"gateway": 1, "inference": 2}, "effective": {"partial_size": 200}},
        "params": {"duration_s": 1.0},
        "phases": {
            "http_single_4": single4, "peer_single_4": peer4,
            "http_single_32": single32, "peer_single_32": peer32,
            "http_batch": _batch("POST /predict, 1000 transactions", [40.0, 45.0, 60.0]),
            "peer_batch": _batch("seed 001 POST /score/batch, 1000 requests", [500.0, 550.0, 700.0], "peer",
                                 "seed 001"),
            "boot_http_single_32": boot32,
            "boot_http_batch": _batch("bootstrap model: POST /predict, 1000 transactions", [10.0, 11.0, 12.0],
                                      path="bootstrap"),
        },
        "models": {"dir": "var/models", "gnn": "gnn-1", "bootstrap": "bootstrap-1", "before": "bootstrap-1"},
        "path_check": {"warm": {"model_version": "gnn-1", "features_used": 60, "features_computed": 0,
                                "feature_freshness_sec": 12.0, "degraded": False}},
        "peer": {"url": "http://127.0.0.1:9999", "command": "OMP_NUM_THREADS=1 uvicorn app:app", "cards": 10000,
                 "redis_port": 1234},
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
    assert set(rows) == {g.key for g in GOALS}
    # the peer's figures are the ones measured in the run, not constants
    assert rows["rps_32"]["peer"] == 1000.0 and rows["rps_32"]["ours"] == 2500.0
    assert rows["rps_32"]["ratio"] == 2.5 and rows["rps_32"]["met"] is True  # >= 2.5x the peer's
    assert rows["rps_32"]["bootstrap"] == 3400.0
    assert rows["p50_4"]["peer"] == 4.0 and rows["p50_4"]["ours"] == 3.0 and rows["p50_4"]["met"] is True
    assert rows["batch_p50"]["ours"] == 45.0 and rows["batch_p50"]["met"] is False  # the goal is <= 30 ms
    assert rows["batch_p50"]["peer"] == 550.0 and rows["batch_p50"]["bootstrap"] == 11.0
    assert doc["peer"]["url"] == "http://127.0.0.1:9999"

    md = md_path.read_text()
    assert "| figure | seed 001 | fraudmesh GNN | ratio | fraudmesh bootstrap | ratio | goal | met |" in md
    batch_row = next(ln for ln in md.splitlines() if ln.startswith("| batch of 1,000, HTTP, p50"))
    assert "550.0 ms" in batch_row and "**45.0** ms" in batch_row and "≤ 30 ms" in batch_row and "**no**" in batch_row
    assert "seed 001, cold" not in md  # no cold phase in this result
    peer_row = next(ln for ln in md.splitlines() if ln.startswith("| seed 001 POST /score/fraud, 32 connections"))
    assert "| seed 001 | http | 32 |" in peer_row
    assert "| fraudmesh bootstrap | http | 32 |" in md
    for col in ("p50 ms", "p95 ms", "p99 ms"):
        assert col in md
    assert "Slowest hop" in md
    assert "gateway (HTTP, validation, NATS round trip)" in md
    assert "Test CPU" in md
    assert "inference-0: 8" in md
    assert "`OMP_NUM_THREADS=1 uvicorn app:app`, 10,000 cards" in md
    assert "| warm | gnn-1 | 60 | 0 |" in md


def test_goals_without_a_peer_keep_the_absolute_ones() -> None:
    res = _result()
    phases = {k: v for k, v in res["phases"].items() if not k.startswith("peer_")}
    rows = {r["key"]: r for r in comparison(phases)}
    assert rows["rps_32"]["peer"] is None and rows["rps_32"]["met"] is None  # relative: undecidable
    assert rows["p99_32"]["met"] is False  # 90 ms against <= 30 ms, no peer needed
    assert ratio(10.0, 20.0, higher_better=False) == 2.0
    assert met(GOALS[0], 5.0, 4.0) is False  # p50 above the peer's


def test_missing_phases_are_dashes(tmp_path: Path) -> None:
    res = _result()
    del res["phases"]["http_batch"]
    _, md_path = write_report(res, tmp_path, plot=False)
    line = next(ln for ln in md_path.read_text().splitlines() if ln.startswith("| batch of 1,000, HTTP, p50"))
    assert "| 550.0 ms | - | - |" in line  # the peer measured, fraudmesh missing: no figure, no ratio


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


def _compute_phase(workers: int, rate: float, by_worker: dict[str, int]) -> dict[str, Any]:
    return {
        "label": f"features.compute, {workers} feature worker(s), 200 entities x 4 in flight",
        "kind": "features",
        "transport": "nats",
        "requests": 20,
        "entities": 4000,
        "duration_s": 4000 / rate,
        "entities_per_s": rate,
        "errors": {"total": 0},
        "latency_ms": summarize([800.0, 900.0, 1000.0, 1500.0]),
        "server_compute_ms": summarize([700.0, 800.0]),
        "requests_by_worker": by_worker,
        "entity_types": {"card": 1500, "merchant": 700, "device": 1200, "ip": 600},
        "feature_workers": sorted(by_worker),
        "client": {"tool": "nats-py asyncio", "cpu_cores": 0.05},
        "params": {"workers": workers, "concurrency": 4, "request_size": 200, "write": True},
        "hops": [
            {"hop": "feature handlers", "count": 20, "mean_ms": 850.0, "p50_ms": 800.0, "p99_ms": 2000.0,
             "per_instance": {f"feature-{i}": 20 // workers for i in range(workers)}},
        ],
        "cpu_cores": {"feature-0": 0.9, "postgres": 0.6},
    }  # fmt: skip


def _features_result() -> dict[str, Any]:
    res = _result()
    read = {
        "label": "Redis read of a 200-transaction partial's 716 entities",
        "kind": "features",
        "transport": "redis",
        "entities": 716,
        "entity_types": {"card": 200, "merchant": 150, "device": 196, "ip": 170},
        "transactions": 200,
        "fresh": 716,
        "requests": 200,
        "latency_ms": summarize([1.9, 2.0, 2.1, 2.4, 3.3]),
        "reply_bytes": 190123,
        "vector_bytes": 171840,
        "fields_per_entity": 4,
        "hgetall": {"requests": 50, "latency_ms": summarize([9.0, 10.0, 11.0]), "reply_bytes": 512000,
                    "fields_per_entity": 33.5},
        "raw_hmget": {"requests": 50, "latency_ms": summarize([1.5, 1.6, 1.7])},
        "ping_ms": summarize([0.08, 0.09, 0.1]),
        "prepare": {"compute_ms": 1234.0, "workers": ["feature-0", "feature-1"], "chunks": 4},
        "errors": {"total": 0},
        "cpu_cores": {"redis": 0.2, "postgres backends": 0.0},
        "hops": [],
        "load_avg_1m": 1.25,
    }  # fmt: skip
    res["phases"].update(
        features_compute_1w=_compute_phase(1, 500.0, {"feature-0": 20}),
        features_compute_2w=_compute_phase(2, 800.0, {"feature-0": 11, "feature-1": 9}),
        features_redis_read=read,
    )
    res["features"] = {
        "world": {"transactions": 200000, "first": "2026-09-01T00:01:50+00:00", "last": "2026-10-12T23:59:59+00:00"},
        "selection": "distinct entities, disjoint per run",
        "stack_workers_before": 2,
        "stack_workers_after": ["feature-0", "feature-1"],
        "scaling_2_over_1": 1.6,
    }
    return res


def test_report_features_section(tmp_path: Path) -> None:
    json_path, md_path = write_report(_features_result(), tmp_path, plot=False)
    doc = json.loads(json_path.read_text())
    assert doc["phases"]["features_compute_2w"]["entities_per_s"] == 800.0
    assert doc["phases"]["features_compute_2w"]["requests_by_worker"] == {"feature-0": 11, "feature-1": 9}
    assert doc["phases"]["features_redis_read"]["latency_ms"]["p99"] > 0
    assert doc["features"]["scaling_2_over_1"] == 1.6

    md = md_path.read_text()
    assert "## Features: computation throughput and the Redis read of a partial" in md
    rows = [ln for ln in md.splitlines() if ln.startswith("| 1 | 200 x 4") or ln.startswith("| 2 | 200 x 4")]
    assert len(rows) == 2
    assert "**500**" in rows[0] and "feature-0: 20" in rows[0]
    assert "**800**" in rows[1] and "feature-0: 11, feature-1: 9" in rows[1]
    assert "2 workers vs 1: **1.60x**" in md
    assert "200,000 transactions" in md
    packed = next(ln for ln in md.splitlines() if ln.startswith("| `read_vectors`"))
    assert "| 716 | 4 | 190,123 | 200 | **2.10** |" in packed
    hgetall = next(ln for ln in md.splitlines() if ln.startswith("| `read`"))
    assert "512,000" in hgetall and "| 10.00 |" in hgetall
    assert "HGETALL takes 4.8x as long" in md
    raw = next(ln for ln in md.splitlines() if ln.startswith("| the same HMGET pipeline"))
    assert "| 1.60 |" in raw
    assert "4 chunks on feature-0, feature-1" in md
    assert "postgres backends 0.00; 1-minute load average at the end: 1.25" in md
    assert "feature handlers" in md  # the phases' hops are listed with the others
    assert "left feature-0, feature-1 running" in md


def test_report_features_skipped_without_world(tmp_path: Path) -> None:
    res = _result()
    res["features"] = {"skipped": NO_WORLD}
    res["notes"] = observations(res["phases"], res["features"])
    json_path, md_path = write_report(res, tmp_path, plot=False)
    assert json.loads(json_path.read_text())["features"]["skipped"] == NO_WORLD
    md = md_path.read_text()
    assert "**Features phase skipped: there are no transactions in PostgreSQL." in md
    assert "`fraudmesh simulate`" in md
    assert not any(ln.startswith("| `read_vectors`") for ln in md.splitlines())


def test_report_without_features_phase_has_no_section(tmp_path: Path) -> None:
    _, md_path = write_report(_result(), tmp_path, plot=False)
    assert "## Features" not in md_path.read_text()


def test_feature_notes_flag_a_missing_worker() -> None:
    phases = {"features_compute_2w": _compute_phase(2, 800.0, {"feature-0": 20})}
    notes = observations(phases)
    assert any("answered by feature-0, not 2 workers" in n for n in notes)


def test_sample_entities_partial_and_disjoint_runs() -> None:
    rows = [(f"c{i}", f"m{i % 3}", f"d{i}" if i % 2 else None, f"ip{i % 5}") for i in range(40)]
    partial, pools = sample_entities(rows, 4, 2)
    # the partial: each distinct entity of its 4 transactions once, grouped by type as the inference worker does
    assert partial == [("card", "c0"), ("card", "c1"), ("card", "c2"), ("card", "c3"), ("merchant", "m0"),
                       ("merchant", "m1"), ("merchant", "m2"), ("device", "d1"), ("device", "d3"),
                       ("ip", "ip0"), ("ip", "ip1"), ("ip", "ip2"), ("ip", "ip3")]  # fmt: skip
    a, b = pools
    assert not set(a) & set(b)
    assert not (set(a) | set(b)) & set(partial)
    assert len(a) == len(set(a)) and len(b) == len(set(b))
    # every remaining entity is used once; per type, the two runs differ by at most one
    assert len(a) + len(b) == 36 + 18 + 1
    for etype in ("card", "device", "ip"):
        na, nb = (sum(1 for t, _ in pool if t == etype) for pool in pools)
        assert abs(na - nb) <= 1
    assert {t for t, _ in a[:3]} == {"card", "device", "ip"}  # a request mixes the types


def test_stack_settings_never_carry_a_password(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from bench.machine import stack_settings

    state = SimpleNamespace(
        nats_url="nats://admin:s3cret-pw@127.0.0.1:4222",
        gateway_url="http://127.0.0.1:8000",
        run_dir=tmp_path,
        services={},
    )
    out = json.dumps(stack_settings(state))
    assert "s3cret-pw" not in out and "nats://admin:***@127.0.0.1:4222" in out


def test_growth_report_tables_and_exponents(tmp_path: Path) -> None:
    from bench.growth_report import exponent, write_growth

    def row(workers: int, size: int, p50: float) -> dict[str, Any]:
        return {"inference_workers": workers, "batch_size": size, "requests": 5,
                "latency_ms": summarize([p50, p50 * 1.1, p50 * 1.2]), "tx_per_s": size / p50 * 1000,
                "ms_per_1000_tx": p50 / size * 1000, "partials_by_worker": {"inference-0": 5},
                "errors": {"total": 0}}  # fmt: skip

    g = {
        "name": "growth-synthetic",
        "machine": {"cpu_model": "Test CPU", "cores": 2},
        "params": {"epochs": 3},
        "batches": {"model": "gnn-1", "rows": [row(1, 100, 10.0), row(1, 1000, 100.0), row(2, 1000, 60.0)]},
        "worlds": {"rows": [
            {"transactions": 50_000, "cards": 5000, "simulate": {"seconds": 10.0}, "features export": {"seconds": 30.0},
             "train": {"seconds": 60.0, "max_rss_mib": 900.0}},
            {"transactions": 200_000, "cards": 20000, "simulate": {"seconds": 40.0},
             "features export": {"seconds": 480.0}, "train": {"seconds": 240.0}},
        ]},
    }  # fmt: skip
    assert exponent(1, 1.0, 10, 10.0) == 1.0
    assert exponent(50_000, 30.0, 200_000, 480.0) == 2.0  # 4x the world, 16x the time: quadratic
    assert exponent(1, None, 10, 10.0) is None
    json_path, md_path = write_growth(g, tmp_path)
    assert json.loads(json_path.read_text())["worlds"]["rows"][1]["transactions"] == 200_000
    md = md_path.read_text()
    export_row = next(ln for ln in md.splitlines() if ln.startswith("| 200,000 | 20,000 | features export"))
    assert "| 480.0 | 2,400 |" in export_row and export_row.endswith("| 2.00 |")
    assert "| 1 | 1,000 | 5 | 110.0 |" in md  # the median of 100, 110 and 120 ms
    assert "1,000: 1.67x with 2" in md  # 110 ms with one worker, 66 ms with two


def test_bench_bodies_are_valid_requests() -> None:
    import msgspec

    from bench import bodies, peer
    from gateway.schemas import StrictTransaction

    row = {"card_id": "c1", "amount": 12.5, "merchant_id": "m1", "mcc_code": "5411", "country_code": "US",
           "channel": "pos", "device_id": None, "ip_address": "203.0.113.7"}  # fmt: skip
    warm = bodies.request_of(row)
    assert "device_id" not in warm and warm["ip_address"] == "203.0.113.7"
    cold = bodies.cold([warm, warm], token="a1b2c3d4")
    assert len({c["card_id"] for c in cold}) == 2 and all(c["merchant_id"] == "m1" for c in cold)
    for tx in [warm, *cold]:  # the gateway would accept every body the bench sends
        msgspec.json.decode(json.dumps(tx), type=StrictTransaction)
    assert bodies.cold([warm], token="00000000")[0]["card_id"] != bodies.cold([warm], token="ffffffff")[0]["card_id"]

    singles = peer.single_bodies(3, offset=peer.CARDS - 1)
    assert [s["card_id"] for s in singles] == ["card_00010999", "card_00001000", "card_00001001"]  # wraps around
    names = ["txn_count_5m", "is_weekend", "amount_avg_5m", "velocity_score"]
    feats = peer.card_features(names, random.Random(1))
    assert (
        feats["is_weekend"] in ("true", "false") and feats["txn_count_5m"].isdigit() and "." in feats["amount_avg_5m"]
    )


def test_a_run_does_not_overwrite_an_earlier_report_of_the_same_name_unless_forced(tmp_path: Path, capsys: Any) -> None:
    from bench.cli import main

    (tmp_path / "mine.json").write_text("{}")
    # refused before anything is measured (no stack in the run dir is needed to get this far)
    code = main(["--name", "mine", "--out-dir", str(tmp_path), "--run-dir", str(tmp_path / "nostack")])
    assert code == 2
    err = capsys.readouterr().err
    assert "mine.json exists" in err and "--force" in err
    assert (tmp_path / "mine.json").read_text() == "{}"
    # --force gets past the guard (and then stops where a run without a stack stops)
    main(["--name", "mine", "--out-dir", str(tmp_path), "--run-dir", str(tmp_path / "nostack"), "--force"])
    captured = capsys.readouterr()
    assert "exists" not in captured.err and "no stack recorded" in captured.out + captured.err
