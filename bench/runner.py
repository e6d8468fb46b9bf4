"""The phases of one benchmark run, each bracketed by metric scrapes and CPU snapshots."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import hops, httpbatch, natsload, procs
from bench.machine import machine, stack_settings
from bench.wrk import WrkParams, run_wrk, write_bodies


@dataclass
class BenchConfig:
    name: str
    run_dir: Path = Path("var")
    duration_s: float = 15.0
    warmup_s: float = 3.0
    baseline_duration_s: float = 8.0
    threads: int = 1
    connections: tuple[int, ...] = (4, 32)
    nats_concurrency: tuple[int, ...] = (4, 32)
    batch_size: int = 1000
    batch_iterations: int = 30
    batch_warmup: int = 3
    distinct_bodies: int = 1000
    seed: int = 7
    api_key: str = ""
    skip: tuple[str, ...] = field(default_factory=tuple)


class StackUnavailable(RuntimeError):
    pass


def _bodies(cfg: BenchConfig) -> list[dict[str, Any]]:
    from deploy.demo import sample_batch

    txs = sample_batch(max(cfg.distinct_bodies, cfg.batch_size), cfg.seed)
    for tx in txs:
        tx.pop("transaction_id", None)  # a fresh id per request, as a real client would send
    return txs


def _endpoints(state: Any) -> dict[str, str]:
    out = {}
    for s in state.services:
        if s.name == "gateway":
            out[f"gateway-{s.index}"] = f"{state.gateway_url}/metrics"
        elif s.metrics_port:
            out[f"{s.name}-{s.index}"] = f"http://127.0.0.1:{s.metrics_port}/metrics"
    return out


def _pids(state: Any) -> dict[str, int]:
    pids = {f"{s.name}-{s.index}": s.pid for s in state.services}
    for name, info in state.servers.items():
        pids[name] = int(str(info["pid"]))
    return pids


def _wait_ready(url: str, timeout_s: float = 15.0) -> None:
    end = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < end:
        try:
            r = httpx.get(f"{url}/ready", timeout=3.0)
            if r.status_code == 200:
                return
            last = r.text
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise StackUnavailable(f"the gateway at {url} is not ready ({last}); start the stack with `fraudmesh up`")


class Bench:
    def __init__(self, cfg: BenchConfig, state: Any) -> None:
        self.cfg, self.state = cfg, state
        self.endpoints, self.pids = _endpoints(state), _pids(state)
        self.phases: dict[str, dict[str, Any]] = {}
        self.cores = os.cpu_count() or 0

    def phase(
        self,
        key: str,
        label: str,
        kind: str,
        transport: str,
        run: Callable[[], dict[str, Any]],
        warmup: Callable[[], object] | None = None,
        outer_hop: str | None = None,
    ) -> None:
        """Warm up, then run with metric scrapes and CPU snapshots around the measured part only."""
        if key in self.cfg.skip or kind in self.cfg.skip or transport in self.cfg.skip:
            return
        print(f"[bench] {label} ...", flush=True)
        if warmup is not None:
            warmup()
        before, cpu0, t0 = hops.scrape_all(self.endpoints), procs.snapshot(self.pids), time.monotonic()
        out = run()
        wall = time.monotonic() - t0
        cpu = procs.diff(cpu0, procs.snapshot(self.pids), wall)
        hop_list = hops.hop_stats(before, hops.scrape_all(self.endpoints))
        out.update(
            label=label,
            kind=kind,
            transport=transport,
            hops=hop_list,
            cpu_cores=cpu,
            machine_cores=self.cores,
        )
        partials = next((h["count"] for h in hop_list if h["hop"] == "partial compute"), 0)
        handled = next((h["count"] for h in hop_list if h["hop"] == "aggregator score"), 0)
        out["requests_per_partial"] = handled / partials if partials else None
        if kind == "single":
            out["breakdown"] = hops.breakdown(hop_list, out["latency_ms"].get("mean"), outer_hop)
        self.phases[key] = out
        lat = out.get("latency_ms", {})
        rate = f"{out['rps']:.0f} req/s" if "rps" in out else f"{out.get('tx_per_s', 0):.0f} tx/s"
        print(
            f"[bench]   p50 {lat.get('p50', float('nan')):.2f} ms  p99 {lat.get('p99', float('nan')):.2f} ms"
            f"  {rate}  errors {out.get('errors', {}).get('total', 0)}",
            flush=True,
        )

    def _wrk(self, url: str, conns: int, seconds: float, bodies: Path | None) -> dict[str, Any]:
        return run_wrk(url, WrkParams(conns, self.cfg.threads, seconds), bodies, self.cfg.api_key)

    def _wrk_warmup(self, url: str, conns: int, bodies: Path | None) -> Callable[[], object] | None:
        if self.cfg.warmup_s <= 0:
            return None
        return lambda: self._wrk(url, conns, self.cfg.warmup_s, bodies)

    def run(self) -> dict[str, Any]:
        cfg, gw = self.cfg, self.state.gateway_url
        _wait_ready(gw)
        txs = _bodies(cfg)
        singles = txs[: cfg.distinct_bodies]
        batch = txs[: cfg.batch_size]
        with tempfile.TemporaryDirectory(prefix="fraudmesh-bench-") as tmp:
            body_file = write_bodies(Path(tmp) / "singles.jsonl", [json.dumps(t) for t in singles])
            top = max(cfg.connections)
            self.phase(
                f"baseline_ready_{top}",
                f"GET /ready, {top} connections",
                "baseline",
                "http",
                lambda: self._wrk(f"{gw}/ready", top, cfg.baseline_duration_s, None),
                warmup=self._wrk_warmup(f"{gw}/ready", top, None),
            )
            self.phase(
                f"baseline_openapi_{top}",
                f"GET /docs/openapi.json, {top} connections",
                "baseline",
                "http",
                lambda: self._wrk(f"{gw}/docs/openapi.json", top, cfg.baseline_duration_s, None),
                warmup=self._wrk_warmup(f"{gw}/docs/openapi.json", top, None),
            )
            for c in cfg.connections:
                self.phase(
                    f"http_single_{c}",
                    f"POST /score/fraud, {c} connections",
                    "single",
                    "http",
                    lambda c=c: self._wrk(f"{gw}/score/fraud", c, cfg.duration_s, body_file),
                    warmup=self._wrk_warmup(f"{gw}/score/fraud", c, body_file),
                    outer_hop="gateway POST /score/fraud",
                )
        nats_bodies = natsload.encode_requests(singles, 1)
        for c in cfg.nats_concurrency:
            self.phase(
                f"nats_single_{c}",
                f"fraud.score over NATS, {c} in flight",
                "single",
                "nats",
                lambda c=c: asyncio.run(natsload.singles(self.state.nats_url, nats_bodies, c, cfg.duration_s)),
                warmup=lambda c=c: asyncio.run(natsload.singles(self.state.nats_url, nats_bodies, c, cfg.warmup_s)),
            )
        batch_json = json.dumps({"transactions": batch}).encode()
        batch_msgpack = natsload.encode_requests(batch, len(batch))[0]
        self.phase(
            "http_batch",
            f"POST /predict, {len(batch)} transactions",
            "batch",
            "http",
            lambda: httpbatch.batches(gw, batch_json, cfg.batch_iterations, cfg.api_key),
            warmup=lambda: httpbatch.batches(gw, batch_json, cfg.batch_warmup, cfg.api_key),
        )
        self.phase(
            "nats_batch",
            f"fraud.score over NATS, {len(batch)} transactions",
            "batch",
            "nats",
            lambda: asyncio.run(natsload.batches(self.state.nats_url, batch_msgpack, cfg.batch_iterations)),
            warmup=lambda: asyncio.run(natsload.batches(self.state.nats_url, batch_msgpack, cfg.batch_warmup)),
        )
        return self.phases


def observations(phases: dict[str, dict[str, Any]]) -> list[str]:
    """Things a reader should not miss, derived from the figures (errors, imbalance, a busy client)."""
    notes = []
    for key, ph in phases.items():
        errs = ph.get("errors", {})
        if errs.get("total"):
            notes.append(f"{ph.get('label', key)}: {errs['total']} errors ({json.dumps(errs)}).")
        cpu = ph.get("client", {}).get("cpu_cores")
        if isinstance(cpu, float) and cpu > 0.8:
            notes.append(f"{ph.get('label', key)}: the load client used {cpu:.2f} cores; it may have been a limit.")
        for h in ph.get("hops", []):
            per = h.get("per_instance", {})
            if h["hop"] == "partial compute" and len(per) > 1:
                lo, hi = min(per.values()), max(per.values())
                if lo and hi / lo > 1.5:
                    notes.append(
                        f"{ph.get('label', key)}: partials split unevenly between inference workers "
                        f"({', '.join(f'{i} {int(n)}' for i, n in sorted(per.items()))})."
                    )
            if h["hop"] == "partial compute" and len(per) == 1:
                notes.append(f"{ph.get('label', key)}: only {next(iter(per))} scored partials.")
        if ph.get("redelivered_partials"):
            notes.append(f"{ph.get('label', key)}: {ph['redelivered_partials']} partials were redelivered.")
    return notes


def slowest_hop(phases: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The slowest hop of the busiest HTTP single-score phase (the headline one)."""
    cands = [k for k, ph in phases.items() if ph.get("kind") == "single" and ph.get("transport") == "http"]
    for key in sorted(cands, key=lambda k: -int(phases[k].get("params", {}).get("connections", 0))):
        s = (phases[key].get("breakdown") or {}).get("slowest")
        if s:
            return {**s, "phase": phases[key].get("label", key)}
    return None


def run_bench(cfg: BenchConfig, state: Any) -> dict[str, Any]:
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    settings = stack_settings(state)
    phases = Bench(cfg, state).run()
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k != "api_key"}
    return {
        "name": cfg.name,
        "started_at": started,
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": settings,
        "params": params,
        "phases": phases,
        "slowest_hop": slowest_hop(phases),
        "notes": observations(phases),
    }
