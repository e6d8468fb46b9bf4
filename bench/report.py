"""Write a run's result as `bench/results/<name>.json` and a readable `<name>.md`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.compare import comparison

RESULTS_DIR = Path(__file__).with_name("results")

TRUST = (
    "**HTTP load: wrk** (C, one epoll event loop per thread, keep-alive connections, a fixed number of "
    "connections each with one request in flight: a closed loop). Its per-request cost is microseconds, "
    "so at these rates the gateway, not wrk, is what is measured; its CPU share is in the table. Latency "
    "is from the request's write to its response (wrk 4, not wrk2: no coordinated-omission correction, so"
    " tails under overload are understated rather than inflated).\n\n**NATS load: nats-py asyncio client** "
    "with a fixed number of in-flight requests, timed with `time.perf_counter`. Requests are msgpack-"
    "encoded before the clock starts and replies are only peeked at (`type`, `complete`). Its own CPU use"
    " (getrusage) is reported: a client near 1.0 core is saturated, and then the NATS figures are a lower"
    " bound on the system's capacity.\n\n**Batches**: one request at a time (concurrency 1) with httpx and "
    "nats-py, after warm-up iterations; the client is idle most of the time, so it cannot be the "
    "limit.\n\n**Hops**: the services' own Prometheus histograms, scraped before and after each phase and "
    "diffed. Their p50/p99 are interpolated inside buckets and are only as fine as the bucket bounds; the"
    " means are exact."
)


def _f(x: Any, nd: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, int | float):
        return f"{x:,.{nd}f}"
    return str(x)


def _quantiles(latency: dict[str, Any], nd: int, *names: str) -> list[str]:
    """The cells of `names` (p50, p95, ..., max) of a latency summary, `nd` decimals each."""
    return [_f(latency.get(q), nd) for q in names]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return [*out, ""]


def _conc(ph: dict[str, Any]) -> str:
    p = ph.get("params", {})
    return str(p.get("connections", p.get("concurrency", 1)))


def _system(ph: dict[str, Any]) -> str:
    if ph.get("system") == "peer":
        return "seed 001" + (", cold" if "cold" in str(ph.get("path", "")) else "")
    if ph.get("kind") == "baseline":
        return "fraudmesh"
    return f"fraudmesh {ph.get('path', '')}".strip()


def _single_rows(phases: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = []
    for key, ph in phases.items():
        if ph.get("kind") not in ("single", "baseline"):
            continue
        lat = ph.get("latency_ms", {})
        client = ph.get("client", {})
        rows.append(
            [
                ph.get("label", key),
                _system(ph),
                ph.get("transport", ""),
                _conc(ph),
                _f(ph.get("requests"), 0),
                _f(ph.get("rps"), 0),
                *_quantiles(lat, 2, "p50", "p95", "p99", "p99.9"),
                _f(lat.get("max"), 1),
                _f(ph.get("errors", {}).get("total"), 0),
                f"{client.get('tool', '')} {_f(client.get('cpu_cores'), 2)}",
            ]
        )
    return rows


def _batch_rows(phases: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = []
    for key, ph in phases.items():
        if ph.get("kind") != "batch":
            continue
        lat = ph.get("latency_ms", {})
        rows.append(
            [
                ph.get("label", key),
                _system(ph),
                ph.get("transport", ""),
                _f(ph.get("batch_size"), 0),
                _f(lat.get("count"), 0),
                *_quantiles(lat, 1, "p50", "p95", "p99", "max"),
                _f(ph.get("tx_per_s"), 0),
                _f(ph.get("server_latency_ms", {}).get("p50"), 1),
                _f(ph.get("partials_per_request"), 1),
                ", ".join(f"{w}: {n}" for w, n in ph.get("partials_by_worker", {}).items()),
                _f(ph.get("errors", {}).get("total"), 0),
            ]
        )
    return rows


def _dist(counts: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {_f(v, 0)}" for k, v in counts.items())


def _feature_lines(result: dict[str, Any]) -> list[str]:
    """Feature computation throughput (1 and 2 workers) and the Redis read of a partial's entities."""
    phases: dict[str, dict[str, Any]] = result.get("phases", {})
    summary = result.get("features") or {}
    compute = {k: ph for k, ph in phases.items() if ph.get("kind") == "features" and "entities_per_s" in ph}
    read = next((ph for ph in phases.values() if ph.get("kind") == "features" and "hgetall" in ph), None)
    if not compute and read is None and not summary:
        return []
    out = ["## Features: computation throughput and the Redis read of a partial", ""]
    if summary.get("skipped"):
        return [*out, f"**Features phase {summary['skipped']}**", ""]
    world = summary.get("world") or {}
    if world:
        out += [
            f"World in PostgreSQL: {_f(world.get('transactions'), 0)} transactions, "
            f"{world.get('first', '?')} to {world.get('last', '?')}.",
            "",
        ]
    if compute:
        out += ["### features.compute throughput", ""]
        rows = []
        for ph in compute.values():
            lat = ph.get("latency_ms", {})
            prm = ph.get("params", {})
            rows.append(
                [
                    _f(prm.get("workers"), 0),
                    f"{_f(prm.get('request_size'), 0)} x {_f(prm.get('concurrency'), 0)}",
                    _f(ph.get("requests"), 0),
                    _f(ph.get("entities"), 0),
                    f"**{_f(ph.get('entities_per_s'), 0)}**",
                    *_quantiles(lat, 0, "p50", "p95", "p99"),
                    _f(ph.get("server_compute_ms", {}).get("p50"), 0),
                    _dist(ph.get("requests_by_worker", {})),
                    _f(ph.get("errors", {}).get("total"), 0),
                ]
            )
        out += _table(
            [
                "feature workers",
                "entities x in flight",
                "requests",
                "entities",
                "entities/s",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "worker compute p50 ms",
                "requests by worker",
                "errors",
            ],
            rows,
        )
        if summary.get("scaling_2_over_1"):
            out += [f"2 workers vs 1: **{_f(summary['scaling_2_over_1'], 2)}x** the entities/s.", ""]
        mixes = [f"{ph.get('params', {}).get('workers', '?')} worker(s): {_dist(ph.get('entity_types', {}))}"
                 for ph in compute.values()]  # fmt: skip
        out += [f"Entity types per run: {'; '.join(mixes)}.", ""]
        if summary.get("selection"):
            out += [f"Workload: {summary['selection']}", ""]
        if summary.get("stack_workers_after"):
            out += [
                f"The stack had {summary.get('stack_workers_before', '?')} feature workers; the bench ran its own "
                f"and left {', '.join(summary['stack_workers_after'])} running (in stack.json).",
                "",
            ]
    if read is not None:
        lat, hg = read.get("latency_ms", {}), read.get("hgetall", {})
        hl = hg.get("latency_ms", {})
        raw = read.get("raw_hmget", {})
        rl = raw.get("latency_ms", {})
        pk = read.get("packed_script", {})
        pl = pk.get("latency_ms", {})
        out += [f"### Redis read of a {read.get('transactions', '?')}-transaction partial's entities", ""]

        def read_row(
            label: str, fields: str, reply_bytes: Any, requests: Any, latency: dict[str, Any], bold: bool = False
        ) -> list[str]:
            p50 = _f(latency.get("p50"), 2)
            return [
                label,
                _f(read.get("entities"), 0),
                fields,
                _f(reply_bytes, 0),
                _f(requests, 0),
                f"**{p50}**" if bold else p50,
                *_quantiles(latency, 2, "p95", "p99", "max"),
            ]

        fields = _f(read.get("fields_per_entity"), 0)
        packed_label = "`read_packed`: the same fields, one Lua script, one reply (scoring path)"
        out += _table(
            ["read", "entities", "fields/entity", "reply bytes", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"],
            [
                *(
                    [read_row(packed_label, fields, read.get("reply_bytes"), pk.get("requests"), pl, True)]
                    if pk
                    else []
                ),
                read_row(
                    "`read_vectors`: packed `_vec` + metadata, pipelined HMGET",
                    fields,
                    read.get("reply_bytes"),
                    read.get("requests"),
                    lat,
                    True,
                ),
                read_row(
                    "the same HMGET pipeline in redis-py alone (no decoding)",
                    fields,
                    read.get("reply_bytes"),
                    raw.get("requests"),
                    rl,
                ),
                read_row(
                    "`read`: every field, pipelined HGETALL (for comparison)",
                    _f(hg.get("fields_per_entity"), 1),
                    hg.get("reply_bytes"),
                    hg.get("requests"),
                    hl,
                ),
            ],
        )
        extra = [f"Entities by type: {_dist(read.get('entity_types', {}))}"]
        if read.get("fresh") is not None:
            extra.append(f"fresh in Redis: {_f(read['fresh'], 0)}")
        if read.get("vector_bytes"):
            extra.append(f"packed vectors: {_f(read['vector_bytes'], 0)} bytes")
        if read.get("ping_ms", {}).get("p50") is not None:
            extra.append(f"a Redis PING round trip: p50 {_f(read['ping_ms']['p50'], 3)} ms")
        prep = read.get("prepare") or {}
        if prep.get("compute_ms"):
            extra.append(
                f"put in Redis first by one features.compute ({_f(prep['compute_ms'], 0)} ms, "
                f"{prep.get('chunks', '?')} chunks on {', '.join(prep.get('workers', []))})"
            )
        out += ["; ".join(extra) + ".", ""]
        if lat.get("p50") and hl.get("p50"):
            out += [f"HGETALL takes {_f(hl['p50'] / lat['p50'], 1)}x as long as the packed read at p50.", ""]
    return out


def _unit(x: Any, unit: str, bold: bool = False) -> str:
    if x is None:
        return "-"
    return f"**{_f(x, 1)}** {unit}" if bold else f"{_f(x, 1)} {unit}"


def _comparison_lines(rows: list[dict[str, Any]], peer_url: str | None, ours: str = "fraudmesh GNN") -> list[str]:
    body = []
    for r in rows:
        met = {True: "yes", False: "**no**", None: "-"}[r["met"]]
        u = r["unit"]
        body.append(
            [
                r["what"],
                _unit(r.get("peer"), u),
                _unit(r["ours"], u, bold=True),
                "-" if r["ratio"] is None else f"{_f(r['ratio'], 2)}x",
                _unit(r.get("bootstrap"), u),
                "-" if r.get("bootstrap_ratio") is None else f"{_f(r['bootstrap_ratio'], 2)}x",
                r["target"],
                met,
            ]
        )
    head = [
        f"Seed 001's service {'at ' + peer_url if peer_url else '(not measured in this run: pass --peer)'} and "
        "fraudmesh were driven by the same tools, phase by phase. Ratio: how many times better fraudmesh is "
        f"(>1: better; for latency the peer's over ours). Met: {ours} against the goal.",
        "",
    ]
    return head + _table(["figure", "seed 001", ours, "ratio", "fraudmesh bootstrap", "ratio", "goal", "met"], body)


def _path_lines(result: dict[str, Any]) -> list[str]:
    """Which model served, what one warm and one cold score said about their inputs, and the peer's setup."""
    out: list[str] = []
    mdl = result.get("models") or {}
    if mdl:
        out += [
            f"Models in {mdl.get('dir', '?')}: GNN `{mdl.get('gnn') or '-'}`, bootstrap `{mdl.get('bootstrap') or '-'}`"
            f" (serving `{mdl.get('before') or '?'}` before the run).",
            "",
        ]
    check = result.get("path_check") or {}
    if check:
        out += _table(
            ["one score", "model", "features used", "computed on the fly", "freshness s", "degraded"],
            [
                [
                    name,
                    str(c.get("model_version", "-")),
                    _f(c.get("features_used"), 0),
                    _f(c.get("features_computed"), 0),
                    _f(c.get("feature_freshness_sec"), 1),
                    str(c.get("degraded", "-")),
                ]
                for name, c in check.items()
            ],
        )
    peer = result.get("peer") or {}
    if peer.get("command"):
        out += [
            f"Seed 001's service: `{peer['command']}`, {_f(peer.get('cards'), 0)} cards in its own Redis "
            f"(port {peer.get('redis_port')}), started by `bench/peer.py`.",
            "",
        ]
    elif peer.get("url"):
        out += [f"Peer: {peer['url']} (started outside this run).", ""]
    return out


def _growth_lines(growth: dict[str, Any] | None) -> list[str]:
    if not growth:
        return []
    from bench.growth_report import growth_markdown

    return ["## Cost as work grows", "", *growth_markdown(growth, level=3)]


def _hop_lines(phases: dict[str, dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for key, ph in phases.items():
        hops = ph.get("hops")
        if not hops and not (ph.get("kind") == "features" and ph.get("cpu_cores")):
            continue
        out += [f"### {ph.get('label', key)}", ""]
        if hops:
            out += _table(
                ["hop", "count", "mean ms", "p50 ms", "p99 ms", "by instance"],
                [
                    [
                        h["hop"],
                        _f(h["count"], 0),
                        _f(h["mean_ms"], 2),
                        _f(h["p50_ms"], 2),
                        _f(h["p99_ms"], 2),
                        ", ".join(f"{i}: {int(n)}" for i, n in sorted(h.get("per_instance", {}).items())),
                    ]
                    for h in hops
                ],
            )
        bd = ph.get("breakdown") or {}
        if bd.get("own_ms"):
            out += ["Own share of the mean request (nested means subtracted):", ""]
            out += _table(["part", "mean ms"], [[k, _f(v, 2)] for k, v in bd["own_ms"].items()])
            if bd.get("slowest"):
                out += [
                    f"Slowest hop: **{bd['slowest']['hop']}** ({_f(bd['slowest']['mean_ms'], 2)} ms).",
                    "",
                ]
        if ph.get("kind") == "single" and ph.get("requests_per_partial"):
            out += [f"Requests per partial (aggregator coalescing): {_f(ph['requests_per_partial'], 1)}.", ""]
        cpu = ph.get("cpu_cores")
        if cpu:
            load = f"; 1-minute load average at the end: {ph['load_avg_1m']:.2f}" if "load_avg_1m" in ph else ""
            out += [
                "CPU during the phase (cores; the machine has "
                f"{ph.get('machine_cores', '?')}): " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()) + load,
                "",
            ]
    return out


def render_markdown(result: dict[str, Any], plot_name: str | None = None) -> str:
    phases: dict[str, dict[str, Any]] = result.get("phases", {})
    m = result.get("machine", {})
    st = result.get("settings", {})
    lines = [
        f"# fraudmesh benchmark: {result.get('name', '')}",
        "",
        f"Run {result.get('started_at', '')} → {result.get('finished_at', '')} against "
        f"{st.get('gateway_url', '?')} and {st.get('nats_url', '?')}.",
        "",
    ]
    if st.get("replicas"):
        lines += ["Processes: " + ", ".join(f"{n} x{k}" for n, k in st["replicas"].items()) + ".", ""]
    if result.get("slowest_hop"):
        s = result["slowest_hop"]
        lines += [
            f"**Slowest hop** (single scores, HTTP, {s.get('phase', '')}): **{s['hop']}**, "
            f"{_f(s['mean_ms'], 2)} ms of the mean request, measured from the services' histograms.",
            "",
        ]
    lines += ["## Against issue 12's goals, with seed 001 measured in the same run", ""]
    ours = "fraudmesh bootstrap (--bootstrap-only)" if result.get("params", {}).get("model") == "bootstrap" else None
    lines += _comparison_lines(
        result.get("comparison") or comparison(phases), (result.get("peer") or {}).get("url"), ours or "fraudmesh GNN"
    )
    lines += _path_lines(result)
    lines += ["## Single scores (one transaction per request)", ""]
    lines += _table(
        [
            "scenario",
            "system, path",
            "transport",
            "conc.",
            "requests",
            "req/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "errors",
            "client, CPU cores",
        ],
        _single_rows(phases),
    )
    if plot_name:
        lines += [f"![latency CDF of single scores]({plot_name})", ""]
    lines += [
        "Cold phases: every request brings a card, device and IP nobody has seen (fraudmesh computes their "
        "features on the fly and has no embedding for them); for seed 001, cards its processes have not read yet "
        "this run (a Redis read instead of its in-process cache). With more requests than distinct bodies, the "
        "bodies repeat and are no longer cold (the `distinct` figure in the JSON).",
        "",
        "## Batches (sequential)",
        "",
    ]
    lines += _table(
        [
            "scenario",
            "system, path",
            "transport",
            "size",
            "n",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "tx/s at p50",
            "server p50 ms",
            "partials/req",
            "partials by worker",
            "errors",
        ],
        _batch_rows(phases),
    )
    lines += _feature_lines(result)
    errors = {k: ph["errors"] for k, ph in phases.items() if ph.get("errors", {}).get("total")}
    if errors:
        lines += ["Errors by class: " + "; ".join(f"{k}: {json.dumps(v)}" for k, v in errors.items()), ""]
    lines += _growth_lines(result.get("growth"))
    lines += ["## Hops (Prometheus histograms, diffed per phase)", "", *_hop_lines(phases)]
    if result.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in result["notes"]] + [""]
    lines += ["## Load tools, and why the figures can be trusted", "", TRUST, ""]
    lines += ["## Machine", ""]
    lines += _table(
        ["", ""],
        [
            ["CPU", str(m.get("cpu_model", ""))],
            ["cores", str(m.get("cores", ""))],
            ["RAM", f"{m.get('ram_gib', '')} GiB"],
            ["kernel", str(m.get("kernel", ""))],
            ["Python", str(m.get("python", ""))],
        ]
        + [[p, v] for p, v in m.get("packages", {}).items()],
    )
    lines += [
        "## Settings",
        "",
        "```json",
        json.dumps({k: v for k, v in st.items()}, indent=2),
        "```",
        "",
        "Bench parameters:",
        "",
        "```json",
        json.dumps(result.get("params", {}), indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)


def write_report(result: dict[str, Any], out_dir: Path = RESULTS_DIR, plot: bool = True) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    name = result.get("name") or "bench"
    result.setdefault("comparison", comparison(result.get("phases", {})))
    plot_name = None
    if plot:
        from bench.plot import cdf_plot

        png = cdf_plot(result.get("phases", {}), out_dir / f"{name}-cdf.png")
        plot_name = png.name if png else None
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    json_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    md_path.write_text(render_markdown(result, plot_name))
    return json_path, md_path
