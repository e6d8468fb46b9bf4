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

from bench import bodies, features, hops, httpbatch, models, natsload, peer, procs
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
    ingest: bool = True
    """False: every request says ingest=false (what-if scoring), so nothing scored enters FRAUD_TXNS."""
    skip: tuple[str, ...] = field(default_factory=tuple)
    features_entities: int = 4000
    features_request_size: int = 200
    features_concurrency: int = 4
    features_reads: int = 200
    peer_url: str = ""
    """Seed 001's service (or any with its API), driven phase by phase beside fraudmesh; empty: none."""
    model: str = "gnn"
    """`gnn`: the trained GNN with world transactions (the default); `bootstrap`: the bootstrap model only."""
    bootstrap_row: bool = True
    """Also measure the bootstrap model (single scores and a batch) as a second row."""
    cold_duration_s: float = 5.0
    cold_bodies: int = 20000
    """Distinct cold transactions for the cold single-score phase (each a new card, device and IP)."""


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
        if s.metrics_port:  # every instance on its own port (gateways sharing the HTTP port included)
            out[f"{s.name}-{s.index}"] = f"http://127.0.0.1:{s.metrics_port}/metrics"
        elif s.name == "gateway":  # a stack started before gateways had a metrics port
            out[f"gateway-{s.index}"] = f"{state.gateway_url}/metrics"
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
        self.features: dict[str, Any] | None = None
        """The features phase's summary (workload, scaling, what was restarted), or why it was skipped."""
        self.peer: peer.Peer | None = None
        """A peer this run started (`--peer auto`): its processes' CPU is reported."""
        self.path = "gnn" if cfg.model == "gnn" else "bootstrap"
        self.models: dict[str, Any] = {}
        self.path_check: dict[str, Any] = {}

    def peer_pids(self) -> dict[str, int]:
        if self.peer is None or len(self.peer.procs) < 2:
            return {}
        redis_proc, uvicorn = self.peer.procs[0], self.peer.procs[1]
        out = {"peer redis": redis_proc.pid, "peer uvicorn": uvicorn.pid}
        for i, pid in enumerate(sorted(procs.children(uvicorn.pid))):
            out[f"peer worker-{i}"] = pid
        return out

    def skipped(self, key: str, kind: str, transport: str) -> bool:
        return key in self.cfg.skip or kind in self.cfg.skip or transport in self.cfg.skip

    def refresh(self) -> None:
        """Metrics endpoints and pids again, after services were restarted."""
        self.endpoints, self.pids = _endpoints(self.state), _pids(self.state)

    def phase(
        self,
        key: str,
        label: str,
        kind: str,
        transport: str,
        run: Callable[[], dict[str, Any]],
        warmup: Callable[[], object] | None = None,
        outer_hop: str | None = None,
        system: str = "fraudmesh",
        path: str = "",
    ) -> None:
        """Warm up, then run with metric scrapes and CPU snapshots around the measured part only.

        `system`: `fraudmesh` (the GNN unless `path` says otherwise) or `peer` (no hops; the peer's processes'
        CPU instead of the stack's)."""
        if self.skipped(key, kind, transport) or (system == "peer" and "peer" in self.cfg.skip):
            return
        print(f"[bench] {label} ...", flush=True)
        if warmup is not None:
            warmup()
        is_peer = system == "peer"
        pids = self.peer_pids() if is_peer else self.pids
        endpoints = {} if is_peer else self.endpoints
        pg = None if is_peer else self.pids.get("postgres")
        backends0 = procs.children(pg) if pg else {}
        before, cpu0, t0 = hops.scrape_all(endpoints), procs.snapshot(pids), time.monotonic()
        out = run()
        wall = time.monotonic() - t0
        cpu = procs.diff(cpu0, procs.snapshot(pids), wall)
        if pg:  # the postmaster's own figure leaves out the backends, where the queries run
            used = sum(s - backends0.get(k, 0.0) for k, s in procs.children(pg).items())
            cpu["postgres backends"] = round(used / wall, 3) if wall > 0 else 0.0
        hop_list = hops.hop_stats(before, hops.scrape_all(endpoints)) if endpoints else []
        out.update(
            label=label,
            kind=kind,
            transport=transport,
            system=system,
            path=path or ("seed 001" if is_peer else self.path),
            hops=hop_list,
            cpu_cores=cpu,
            machine_cores=self.cores,
            load_avg_1m=round(os.getloadavg()[0], 2),
        )
        partials = next((h["count"] for h in hop_list if h["hop"] == "partial compute"), 0)
        handled = next((h["count"] for h in hop_list if h["hop"] == "aggregator score"), 0)
        out["requests_per_partial"] = handled / partials if partials else None
        if kind == "single":
            out["breakdown"] = hops.breakdown(hop_list, out["latency_ms"].get("mean"), outer_hop)
        self.phases[key] = out
        lat = out.get("latency_ms", {})
        if "rps" in out:
            rate = f"{out['rps']:.0f} req/s"
        elif "entities_per_s" in out:
            rate = f"{out['entities_per_s']:.0f} entities/s"
        elif "tx_per_s" in out:
            rate = f"{out['tx_per_s']:.0f} tx/s"
        else:
            rate = f"{out.get('entities', 0)} entities"
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

    def _models(self) -> tuple[str | None, str | None]:
        """The GNN and bootstrap versions in the stack's model dir; raises when the GNN path has no GNN."""
        model_dir = Path(self.state.run_dir) / "models"
        found = models.local_models(model_dir)
        gnn = models.newest(found, models.GNN_KIND, model_dir)
        boot = models.newest(found, models.BOOTSTRAP_KIND, model_dir)
        self.models = {"dir": str(model_dir), "gnn": gnn, "bootstrap": boot, "before": models.serving(
            self.state.gateway_url)}  # fmt: skip
        if self.cfg.model == "gnn" and gnn is None:
            raise StackUnavailable(models.NO_GNN.format(model_dir=model_dir))
        return gnn, boot

    def _activate(self, version: str | None) -> None:
        if version:
            print(f"[bench] serving model {version} ...", flush=True)
            models.activate(Path(self.state.run_dir), self.state.gateway_url, version)

    def _transactions(self) -> list[dict[str, Any]]:
        cfg = self.cfg
        n = max(cfg.distinct_bodies, cfg.batch_size)
        if cfg.model == "bootstrap":
            return _bodies(cfg)
        txs = asyncio.run(bodies.world_transactions(self.state.postgres_dsn, n, cfg.seed))
        if txs is None:
            raise StackUnavailable(bodies.NO_WORLD)
        return txs

    def _prewarm(self, txs: list[dict[str, Any]]) -> None:
        """Score the world transactions once (ingest=false) so their entities' features are in Redis, then record
        what one warm and one cold score say about their inputs (model, features computed on the fly)."""
        gw, size = self.state.gateway_url, self.cfg.batch_size
        headers = {"X-API-Key": self.cfg.api_key} if self.cfg.api_key else {}
        print(f"[bench] warming the features of {len(txs)} world transactions ...", flush=True)
        with httpx.Client(base_url=gw, timeout=120.0, headers=headers) as client:
            for i in range(0, len(txs), size):
                client.post("/predict?ingest=false", json={"transactions": txs[i : i + size]})
            for name, tx in (("warm", txs[0]), ("cold", bodies.cold(txs[:1])[0])):
                r = client.post("/score/fraud?ingest=false", json=tx)
                doc = r.json() if r.status_code == 200 else {"status": r.status_code}
                keep = ("model_version", "features_used", "features_computed", "feature_freshness_sec", "degraded")
                self.path_check[name] = {k: doc.get(k) for k in keep}

    def _peer_singles(self, c: int, body_file: Path | None) -> None:
        url = f"{self.cfg.peer_url}/score/fraud"
        self.phase(
            f"peer_single_{c}",
            f"seed 001 POST /score/fraud, {c} connections",
            "single",
            "http",
            lambda: self._wrk(url, c, self.cfg.duration_s, body_file),
            warmup=self._wrk_warmup(url, c, body_file),
            system="peer",
        )

    def run(self) -> dict[str, Any]:
        cfg, gw = self.cfg, self.state.gateway_url
        query = "" if cfg.ingest else "?ingest=false"
        _wait_ready(gw)
        gnn, boot = self._models()
        txs = self._transactions()
        if cfg.model == "gnn":
            self._activate(gnn)
            self._prewarm(txs)
        singles = txs[: cfg.distinct_bodies]
        batch = txs[: cfg.batch_size]
        with_peer = bool(cfg.peer_url) and "peer" not in cfg.skip
        peer_singles = peer.single_bodies(cfg.distinct_bodies, cfg.seed)
        peer_batch = json.dumps(peer.batch_body(peer.single_bodies(min(cfg.batch_size, 1000), cfg.seed))).encode()
        with tempfile.TemporaryDirectory(prefix="fraudmesh-bench-") as tmp:
            body_file = write_bodies(Path(tmp) / "singles.jsonl", [json.dumps(t) for t in singles])
            peer_file = write_bodies(Path(tmp) / "peer.jsonl", [json.dumps(t) for t in peer_singles])
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
            for c in cfg.connections:  # interleaved: fraudmesh, then the peer, at each connection count
                self.phase(
                    f"http_single_{c}",
                    f"POST /score/fraud, {c} connections",
                    "single",
                    "http",
                    lambda c=c: self._wrk(f"{gw}/score/fraud{query}", c, cfg.duration_s, body_file),
                    warmup=self._wrk_warmup(f"{gw}/score/fraud{query}", c, body_file),
                    outer_hop="gateway POST /score/fraud",
                )
                if with_peer:
                    self._peer_singles(c, peer_file)
            self._cold_singles(Path(tmp), singles, query)
            if with_peer:
                self._peer_cold_singles(Path(tmp))
        nats_bodies = natsload.encode_requests(singles, 1, ingest=cfg.ingest)
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
        batch_msgpack = natsload.encode_requests(batch, len(batch), ingest=cfg.ingest)[0]
        self.phase(
            "http_batch",
            f"POST /predict, {len(batch)} transactions",
            "batch",
            "http",
            lambda: httpbatch.batches(gw, batch_json, cfg.batch_iterations, cfg.api_key, path=f"/predict{query}"),
            warmup=lambda: httpbatch.batches(gw, batch_json, cfg.batch_warmup, cfg.api_key, path=f"/predict{query}"),
        )
        if with_peer:
            self.phase(
                "peer_batch",
                f"seed 001 POST /score/batch, {min(len(batch), 1000)} requests",
                "batch",
                "http",
                lambda: httpbatch.batches(
                    cfg.peer_url, peer_batch, cfg.batch_iterations, path="/score/batch", reply="peer"
                ),
                warmup=lambda: httpbatch.batches(
                    cfg.peer_url, peer_batch, cfg.batch_warmup, path="/score/batch", reply="peer"
                ),
                system="peer",
            )
        self._cold_batches(batch, query)
        self.phase(
            "nats_batch",
            f"fraud.score over NATS, {len(batch)} transactions",
            "batch",
            "nats",
            lambda: asyncio.run(natsload.batches(self.state.nats_url, batch_msgpack, cfg.batch_iterations)),
            warmup=lambda: asyncio.run(natsload.batches(self.state.nats_url, batch_msgpack, cfg.batch_warmup)),
        )
        if cfg.model == "gnn" and cfg.bootstrap_row and boot and "bootstrap" not in cfg.skip:
            self._bootstrap_row(boot, gnn, body_file_bodies=singles, batch_json=batch_json, query=query)
        self.run_features()
        return self.phases

    def _cold_singles(self, tmp: Path, singles: list[dict[str, Any]], query: str) -> None:
        """Single scores whose card, device and IP are new: features computed on the fly, no embedding."""
        cfg, gw = self.cfg, self.state.gateway_url
        if cfg.model != "gnn" or cfg.cold_duration_s <= 0:
            return
        c = min(cfg.connections)
        base = (singles * (cfg.cold_bodies // max(len(singles), 1) + 1))[: cfg.cold_bodies]
        cold_file = write_bodies(tmp / "cold.jsonl", [json.dumps(t) for t in bodies.cold(base)])
        self.phase(
            f"http_single_cold_{c}",
            f"POST /score/fraud, cold entities, {c} connections",
            "single",
            "http",
            lambda: {
                **self._wrk(f"{gw}/score/fraud{query}", c, cfg.cold_duration_s, cold_file),
                "distinct_bodies": cfg.cold_bodies,
            },
            outer_hop="gateway POST /score/fraud",
            path="gnn, cold",
        )

    def _peer_cold_singles(self, tmp: Path) -> None:
        """The peer's cards it has not read yet this run (its per-process cache misses, one Redis HGETALL each)."""
        cfg = self.cfg
        if cfg.model != "gnn" or cfg.cold_duration_s <= 0:
            return
        c = min(cfg.connections)
        n = peer.CARDS - cfg.distinct_bodies
        cold = peer.single_bodies(n, cfg.seed + 1, cfg.distinct_bodies)
        cold_file = write_bodies(tmp / "peer-cold.jsonl", [json.dumps(t) for t in cold])
        self.phase(
            f"peer_single_cold_{c}",
            f"seed 001 POST /score/fraud, cards not read before, {c} connections",
            "single",
            "http",
            lambda: {
                **self._wrk(f"{cfg.peer_url}/score/fraud", c, cfg.cold_duration_s, cold_file),
                "distinct_bodies": n,
            },
            system="peer",
            path="seed 001, cold",
        )

    def _cold_batches(self, batch: list[dict[str, Any]], query: str) -> None:
        cfg, gw = self.cfg, self.state.gateway_url
        if cfg.model != "gnn" or cfg.cold_duration_s <= 0:
            return
        n = max(3, cfg.batch_iterations // 3)  # each brings 1,000 new cards, devices and IPs into the stores
        docs = [json.dumps({"transactions": bodies.cold(batch)}).encode() for _ in range(n)]
        self.phase(
            "http_batch_cold",
            f"POST /predict, {len(batch)} transactions with cold entities",
            "batch",
            "http",
            lambda: httpbatch.batches(gw, docs, n, cfg.api_key, path=f"/predict{query}"),
            path="gnn, cold",
        )

    def _bootstrap_row(
        self, boot: str, gnn: str | None, body_file_bodies: list[dict[str, Any]], batch_json: bytes, query: str
    ) -> None:
        """The same single-score and batch phases on the bootstrap model, then the GNN back."""
        cfg, gw = self.cfg, self.state.gateway_url
        self._activate(boot)
        try:
            with tempfile.TemporaryDirectory(prefix="fraudmesh-bench-") as tmp:
                body_file = write_bodies(Path(tmp) / "singles.jsonl", [json.dumps(t) for t in body_file_bodies])
                for c in cfg.connections:
                    self.phase(
                        f"boot_http_single_{c}",
                        f"bootstrap model: POST /score/fraud, {c} connections",
                        "single",
                        "http",
                        lambda c=c: self._wrk(f"{gw}/score/fraud{query}", c, cfg.duration_s, body_file),
                        warmup=self._wrk_warmup(f"{gw}/score/fraud{query}", c, body_file),
                        outer_hop="gateway POST /score/fraud",
                        path="bootstrap",
                    )
            self.phase(
                "boot_http_batch",
                f"bootstrap model: POST /predict, {cfg.batch_size} transactions",
                "batch",
                "http",
                lambda: httpbatch.batches(gw, batch_json, cfg.batch_iterations, cfg.api_key, path=f"/predict{query}"),
                warmup=lambda: httpbatch.batches(
                    gw, batch_json, cfg.batch_warmup, cfg.api_key, path=f"/predict{query}"
                ),
                path="bootstrap",
            )
        finally:
            self._activate(gnn)

    def run_features(self) -> None:
        """features.compute throughput with 1 and 2 feature workers, then the Redis read of a partial's entities.

        Last, because it restarts the feature workers (the stack is left with as many as it had)."""
        cfg = self.cfg
        p = features.FeatureBenchParams(
            entities=cfg.features_entities,
            request_size=cfg.features_request_size,
            concurrency=cfg.features_concurrency,
            reads=cfg.features_reads,
            seed=cfg.seed,
        )
        compute_keys = {n: f"features_compute_{n}w" for n in p.workers}
        run_compute = [n for n, k in compute_keys.items() if not self.skipped(k, "features", "nats")]
        run_read = not self.skipped("features_redis_read", "features", "redis")
        if not run_compute and not run_read:
            return
        print("[bench] features: sampling entities from the world in PostgreSQL ...", flush=True)
        world = asyncio.run(features.load_world(self.state.postgres_dsn, p))
        if world is None:
            self.features = {"skipped": features.NO_WORLD}
            print(f"[bench] features: {features.NO_WORLD}", flush=True)
            return
        summary: dict[str, Any] = {
            "world": {"transactions": world.transactions, "first": world.first_ts, "last": world.last_ts},
            "selection": (
                "distinct entities of world transactions taken in a seeded hash order; each compute run has its own "
                "entities (none shared between runs or with the partial), with the same mix of types. "
                "features.compute recomputes every entity (it does not read Redis), as of now, and writes to Redis."
            ),
            "pool_sizes": [len(x) for x in world.pools],
        }
        self.features = summary
        if run_compute:
            warm = p.warmup_requests * p.request_size
            workers = features.FeatureWorkers(self.state)
            summary["stack_workers_before"] = workers.original
            restore = workers.original or 2
            try:
                print(f"[bench] features: stopping the stack's {workers.original} feature workers ...", flush=True)
                workers.stop_all()
                for n, pool in zip(p.workers, world.pools, strict=True):
                    if n not in run_compute:
                        continue
                    ids = workers.scale(n)
                    self.refresh()
                    self.phase(
                        compute_keys[n],
                        f"features.compute, {n} feature worker{'s' if n > 1 else ''}, "
                        f"{p.request_size} entities x {p.concurrency} in flight",
                        "features",
                        "nats",
                        lambda pool=pool, ids=ids: asyncio.run(
                            features.compute_run(self.state.nats_url, pool[warm:], ids, p)
                        ),
                        warmup=lambda pool=pool: asyncio.run(
                            features.compute_warmup(self.state.nats_url, pool[:warm], p)
                        ),
                    )
            finally:
                summary["stack_workers_after"] = workers.scale(restore)
                summary["started"] = workers.started
                self.refresh()
                print(f"[bench] features: stack restored to {restore} feature workers", flush=True)
            one, two = (self.phases.get(compute_keys[n], {}).get("entities_per_s") for n in (1, 2))
            if one and two:
                summary["scaling_2_over_1"] = two / one
        if run_read:
            prepared: dict[str, Any] = {}
            self.phase(
                "features_redis_read",
                f"Redis read of a {p.partial_transactions}-transaction partial's {len(world.partial)} entities",
                "features",
                "redis",
                lambda: {
                    **asyncio.run(features.redis_read(self.state.redis_url, world.partial, p)),
                    "prepare": prepared,
                },
                warmup=lambda: prepared.update(
                    asyncio.run(features.redis_prepare(self.state.nats_url, world.partial, p))
                ),
            )


def observations(phases: dict[str, dict[str, Any]], feature_summary: dict[str, Any] | None = None) -> list[str]:
    """Things a reader should not miss, derived from the figures (errors, imbalance, a busy client)."""
    notes = []
    loads = [float(ph["load_avg_1m"]) for ph in phases.values() if "load_avg_1m" in ph]
    cores = next((int(ph["machine_cores"]) for ph in phases.values() if ph.get("machine_cores")), 0)
    if loads and cores and max(loads) > cores:
        notes.append(
            f"The machine was busy: the 1-minute load average reached {max(loads):.1f} on {cores} cores during the "
            "phases, so every figure here (fraudmesh's and the peer's alike) is noisy; compare within this run only."
        )
    if feature_summary and feature_summary.get("skipped"):
        notes.append(f"Features phase {feature_summary['skipped']}")
    for key, ph in phases.items():
        errs = ph.get("errors", {})
        if errs.get("total"):
            notes.append(f"{ph.get('label', key)}: {errs['total']} errors ({json.dumps(errs)}).")
        cpu = ph.get("client", {}).get("cpu_cores")
        if ph.get("transport") == "redis":  # the read's own CPU is what is measured, see _feature_notes
            pass
        elif isinstance(cpu, float) and cpu > 0.8:
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
        notes += _feature_notes(key, ph)
    return notes


def _feature_notes(key: str, ph: dict[str, Any]) -> list[str]:
    label = ph.get("label", key)
    notes = []
    by_worker = ph.get("requests_by_worker")
    want = ph.get("params", {}).get("workers")
    if by_worker is not None and want and len(by_worker) != want:
        notes.append(f"{label}: requests were answered by {', '.join(by_worker) or 'no worker'}, not {want} workers.")
    cpu = ph.get("client", {}).get("cpu_cores")
    if ph.get("transport") == "redis" and isinstance(cpu, float) and cpu > 0.5:
        notes.append(
            f"{label}: the reading process was busy {cpu:.2f} of the time it waited for the reads: the read is "
            "bound by client CPU (redis-py packing 4-field HMGETs and parsing their replies), not by Redis."
        )
    if "fresh" in ph and ph["fresh"] < ph.get("entities", 0):
        notes.append(f"{label}: only {ph['fresh']} of {ph['entities']} entities were fresh in Redis when read.")
    return notes


def slowest_hop(phases: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The slowest hop of the busiest HTTP single-score phase (the headline one)."""
    cands = [
        k
        for k, ph in phases.items()
        if ph.get("kind") == "single"
        and ph.get("transport") == "http"
        and not k.startswith(("boot_", "peer_"))
        and "cold" not in k
    ]
    for key in sorted(cands, key=lambda k: -int(phases[k].get("params", {}).get("connections", 0))):
        s = (phases[key].get("breakdown") or {}).get("slowest")
        if s:
            return {**s, "phase": phases[key].get("label", key)}
    return None


def run_bench(cfg: BenchConfig, state: Any, peer_proc: peer.Peer | None = None) -> dict[str, Any]:
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    settings = stack_settings(state)
    bench = Bench(cfg, state)
    bench.peer = peer_proc
    phases = bench.run()
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
        "features": bench.features,
        "models": bench.models,
        "path_check": bench.path_check,
        "peer": peer_proc.describe() if peer_proc else ({"url": cfg.peer_url} if cfg.peer_url else None),
        "notes": observations(phases, bench.features),
    }
