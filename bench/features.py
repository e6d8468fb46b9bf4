"""The `features` phase: feature computation through `features.compute` with 1 and 2 feature workers, and the
Redis read of the entities of a 200-transaction partial (route 1 of the scoring path).

Compute throughput. The stack's feature workers are stopped (SIGTERM: they drain) and the bench starts its own
with `deploy.stack.start_service`: one, measured, then a second, measured. Whatever happens, the stack is left
with as many feature workers as it had (2), recorded in stack.json, so `fraudmesh down` still stops them. A run
sends requests of `request_size` distinct entities (`write=True`: computed and written to Redis) with
`concurrency` of them in flight, after sequential warm-up requests. `features.compute` never reads Redis first
(feature_svc/service.py recomputes every entity it is given), yet the runs use disjoint entities with the same mix
of types, drawn from the loaded world, so that no run meets rows another run has just pulled into the caches.

Redis read. The distinct card, merchant, device and IP entities of 200 world transactions are computed once
(written to Redis), then `OnlineStore.read_vectors` (the packed `_vec` and 3 metadata fields, one pipelined HMGET
round trip, what the inference worker does) is timed after a warm-up, and `OnlineStore.read` (pipelined HGETALL
of every field) for comparison.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from bench import procs
from bench.stats import summarize

Entity = tuple[str, str]
ENTITY_ORDER: tuple[str, ...] = ("card", "merchant", "device", "ip")
"""Entity types in the order inference_svc/entity_features.py collects them from a partial."""

NO_WORLD = (
    "skipped: there are no transactions in PostgreSQL. Run `fraudmesh simulate` to load the default world "
    "into the stack, then run the benchmark again."
)
SERVICE = "feature"


@dataclass
class FeatureBenchParams:
    entities: int = 4000
    """Measured entities per compute run (plus the warm-up requests')."""
    request_size: int = 200
    concurrency: int = 4
    warmup_requests: int = 2
    workers: tuple[int, ...] = (1, 2)
    partial_transactions: int = 200
    reads: int = 200
    read_warmup: int = 20
    hgetall_reads: int = 50
    deadline_ms: int = 60000
    seed: int = 7


@dataclass
class WorldSample:
    transactions: int
    first_ts: str
    last_ts: str
    partial: list[Entity]
    """The distinct entities of `partial_transactions` transactions, in entity_features' order."""
    pools: list[list[Entity]]
    """One list per compute run: disjoint, none of them in `partial`, with the same mix of types."""


def sample_entities(
    rows: Sequence[Sequence[str | None]], partial_n: int, runs: int
) -> tuple[list[Entity], list[list[Entity]]]:
    """Split world transactions (card, merchant, device, ip per row) into a partial's entities and `runs`
    disjoint entity lists. Each type's distinct entities are dealt to the runs in turn (so the runs' counts per
    type differ by at most one), and each run's list interleaves the types, so every request holds a mix."""
    head, rest = rows[:partial_n], rows[partial_n:]
    partial: dict[Entity, None] = {}
    for k, etype in enumerate(ENTITY_ORDER):
        for row in head:
            if row[k]:
                partial.setdefault((etype, str(row[k])), None)
    by_type: dict[str, dict[Entity, None]] = {t: {} for t in ENTITY_ORDER}
    for row in rest:
        for k, etype in enumerate(ENTITY_ORDER):
            ent = (etype, str(row[k]))
            if row[k] and ent not in partial:
                by_type[etype].setdefault(ent, None)
    pools: list[list[Entity]] = []
    for r in range(max(1, runs)):
        dealt = [list(ents)[r :: max(1, runs)] for ents in by_type.values()]
        interleaved: list[Entity] = []
        for i in range(max((len(d) for d in dealt), default=0)):
            interleaved += [d[i] for d in dealt if i < len(d)]
        pools.append(interleaved)
    return list(partial), pools


async def load_world(dsn: str, p: FeatureBenchParams) -> WorldSample | None:
    """Entities drawn from the loaded world (a seeded, repeatable order), or None when there is no world."""
    import asyncpg

    runs = len(p.workers)
    need = runs * (p.entities + p.warmup_requests * p.request_size)
    conn = await asyncpg.connect(dsn)
    try:
        try:
            row = await conn.fetchrow(
                'SELECT count(*) AS n, min("timestamp") AS a, max("timestamp") AS b FROM transactions'
            )
        except asyncpg.UndefinedTableError:
            return None
        if row is None or not row["n"]:
            return None
        # each transaction brings at least one new entity; ordered by a hash of its id so the sample is spread
        # over the whole world and is the same from run to run
        rows = await conn.fetch(
            "SELECT card_id, merchant_id, device_id, ip_address FROM transactions ORDER BY md5(transaction_id || $1)"
            " LIMIT $2",
            str(p.seed),
            p.partial_transactions + need,
        )
    finally:
        await conn.close()
    partial, pools = sample_entities([tuple(r) for r in rows], p.partial_transactions, runs)
    per_run = p.entities + p.warmup_requests * p.request_size
    return WorldSample(
        transactions=int(row["n"]),
        first_ts=row["a"].isoformat(),
        last_ts=row["b"].isoformat(),
        partial=partial,
        pools=[pool[:per_run] for pool in pools],
    )


# ------------------------------------------------------------------------------------ feature workers
async def health(nats_url: str, wait_s: float = 0.4) -> dict[str, str]:
    """instance id -> status of every feature worker that answers `fraudmesh.health.feature` within `wait_s`."""
    import nats

    from shared import subjects

    nc = await nats.connect(nats_url, name="fraudmesh-bench")
    replies: dict[str, str] = {}

    async def on_reply(msg: Any) -> None:
        try:
            rep = msgspec.msgpack.decode(msg.data)
            replies[str(rep.get("instance_id", "?"))] = str(rep.get("status", "?"))
        except (msgspec.DecodeError, AttributeError):
            pass

    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, cb=on_reply)
        await nc.publish(subjects.health_subject(SERVICE), b"", reply=inbox)
        await nc.flush()
        await asyncio.sleep(wait_s)
        await sub.unsubscribe()
    finally:
        await nc.drain()
    return replies


class FeatureWorkers:
    """The stack's feature workers, scaled by stopping and starting processes; stack.json follows every change."""

    def __init__(self, state: Any) -> None:
        self.state = state
        mine = self.running()
        self.original = len(mine)
        # the stack's own FRAUDMESH_ settings (beyond the URLs every service gets), for the workers started here
        env = procs.environ(mine[0].pid) if mine else {}
        drop = {"FRAUDMESH_INSTANCE_ID", "FRAUDMESH_METRICS_PORT", "FRAUDMESH_HTTP_PORT"}
        self.extra_env = {k: v for k, v in env.items() if k not in drop}
        self.started: list[str] = []

    def running(self) -> list[Any]:
        from deploy.stack import alive

        return sorted((s for s in self.state.services if s.name == SERVICE and alive(s.pid)), key=lambda s: s.index)

    def _forget_dead(self) -> None:
        from deploy.stack import alive

        self.state.services = [s for s in self.state.services if s.name != SERVICE or alive(s.pid)]

    def stop_all(self) -> None:
        from deploy.stack import stop_service

        for svc in self.running():
            stop_service(svc)  # SIGTERM: the worker finishes what it holds, then exits
        self._forget_dead()
        self.state.save()

    def scale(self, n: int, timeout_s: float = 90.0) -> list[str]:
        """Exactly `n` feature workers (indices 0..n-1 preferred), each answering its health subject."""
        from deploy.stack import start_service, stop_service

        self._forget_dead()
        live = self.running()
        for svc in live[n:]:
            stop_service(svc)
        self._forget_dead()
        used = {s.index for s in self.running()}
        new = []
        index = 0
        while len(used) < n:
            if index not in used:
                svc = start_service(self.state, SERVICE, index, self.extra_env)
                self._insert(svc)
                used.add(index)
                new.append(svc)
                self.started.append(f"{SERVICE}-{index} (pid {svc.pid})")
            index += 1
        self.state.save()
        expected = {f"{SERVICE}-{s.index}" for s in self.running()}
        self.wait_healthy(expected, new, timeout_s)
        return sorted(expected)

    def _insert(self, svc: Any) -> None:
        services = self.state.services
        at = max((k + 1 for k, s in enumerate(services) if s.name == SERVICE), default=None)
        if at is None:  # where `fraudmesh up` puts them: before the gateway
            at = next((k for k, s in enumerate(services) if s.name == "gateway"), len(services))
        services.insert(at, svc)

    def wait_healthy(self, expected: set[str], new: list[Any], timeout_s: float) -> None:
        from deploy.stack import alive

        end = time.monotonic() + timeout_s
        seen: dict[str, str] = {}
        while time.monotonic() < end:
            for svc in new:
                if not alive(svc.pid):
                    tail = Path(svc.log).read_text(errors="replace")[-1500:] if Path(svc.log).exists() else ""
                    raise RuntimeError(f"{SERVICE}-{svc.index} exited during start; end of {svc.log}:\n{tail}")
            seen = asyncio.run(health(self.state.nats_url))
            if all(seen.get(i) == "ok" for i in expected):
                return
            time.sleep(0.5)
        raise RuntimeError(f"feature workers {sorted(expected)} did not answer their health subject: {seen}")


# ----------------------------------------------------------------------------------------- compute
def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def _compute_one(nc: Any, batch: list[Entity], deadline_ms: int) -> tuple[float, str, Any]:
    from feature_svc.client import FeatureServiceError, compute_remote
    from shared import subjects

    headers = {subjects.HDR_DEADLINE: str(int(time.time() * 1000) + deadline_ms)}
    t0 = time.perf_counter()
    try:
        reply = await compute_remote(nc, batch, write=True, timeout=deadline_ms / 1000.0 + 1.0, headers=headers)
    except FeatureServiceError as exc:
        return (time.perf_counter() - t0) * 1000.0, f"error:{exc.reply.code}", None
    except Exception as exc:
        return (time.perf_counter() - t0) * 1000.0, type(exc).__name__, None
    return (time.perf_counter() - t0) * 1000.0, "ok", reply


def _requests(entities: list[Entity], size: int) -> list[list[Entity]]:
    return [entities[i : i + size] for i in range(0, len(entities), size)]


async def compute_warmup(nats_url: str, entities: list[Entity], p: FeatureBenchParams) -> None:
    """Sequential requests that the measurement does not count (new workers open their pools, load code)."""
    import nats

    nc = await nats.connect(nats_url, name="fraudmesh-bench")
    try:
        for batch in _requests(entities, p.request_size):
            await _compute_one(nc, batch, p.deadline_ms)
    finally:
        await nc.drain()


async def compute_run(
    nats_url: str, entities: list[Entity], workers: list[str], p: FeatureBenchParams
) -> dict[str, Any]:
    """Requests of `request_size` entities, `concurrency` in flight, until the list is done."""
    import nats

    measured = _requests(entities, p.request_size)
    latencies: list[float] = []
    server_ms: list[float] = []
    outcomes: Counter[str] = Counter()
    by_worker: Counter[str] = Counter()
    done = 0
    nc = await nats.connect(nats_url, name="fraudmesh-bench")
    try:
        todo = iter(measured)

        async def lane() -> None:
            nonlocal done
            for batch in todo:  # one shared iterator: each request is taken by exactly one lane
                ms, outcome, reply = await _compute_one(nc, batch, p.deadline_ms)
                outcomes[outcome] += 1
                if reply is not None:
                    latencies.append(ms)
                    server_ms.append(float(reply.compute_ms))
                    by_worker[",".join(reply.workers) or "?"] += 1
                    done += len(reply.entities)

        cpu0, t0 = _cpu_s(), time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(p.concurrency)))
        wall = time.perf_counter() - t0
        cpu = _cpu_s() - cpu0
    finally:
        await nc.drain()
    requests = sum(outcomes.values())
    types = Counter(t for batch in measured for t, _ in batch)
    return {
        "requests": requests,
        "entities": done,
        "duration_s": wall,
        "entities_per_s": done / wall if wall > 0 else 0.0,
        "errors": {**{k: v for k, v in outcomes.items() if k != "ok"}, "total": requests - outcomes["ok"]},
        "latency_ms": summarize(latencies),
        "server_compute_ms": summarize(server_ms),
        "requests_by_worker": dict(sorted(by_worker.items())),
        "entity_types": {t: types[t] for t in ENTITY_ORDER if types[t]},
        "feature_workers": workers,
        "client": {"tool": "nats-py asyncio", "cpu_s": cpu, "cpu_cores": cpu / wall if wall > 0 else 0.0},
        "params": {
            "workers": len(workers),
            "concurrency": p.concurrency,
            "request_size": p.request_size,
            "warmup_requests": p.warmup_requests,
            "write": True,
            "deadline_ms": p.deadline_ms,
        },
    }


# -------------------------------------------------------------------------------------- redis read
async def _timed(fn: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


async def redis_prepare(nats_url: str, partial: list[Entity], p: FeatureBenchParams) -> dict[str, Any]:
    """Compute (and write to Redis) the partial's entities with one features.compute: the workers split it."""
    import nats

    nc = await nats.connect(nats_url, name="fraudmesh-bench")
    try:
        ms, outcome, reply = await _compute_one(nc, partial, p.deadline_ms)
    finally:
        await nc.drain()
    if reply is None:
        raise RuntimeError(f"features.compute of the partial's {len(partial)} entities failed: {outcome}")
    return {"compute_ms": ms, "workers": list(reply.workers), "chunks": reply.chunks, "written": reply.written}


async def redis_read(redis_url: str, partial: list[Entity], p: FeatureBenchParams) -> dict[str, Any]:
    """Time the scoring path's read of the partial's entities (already in Redis, see `redis_prepare`)."""
    from feature_svc.definitions import FEATURE_SET_VERSION
    from feature_svc.online import VECTOR_FIELDS, OnlineStore

    store = OnlineStore.from_url(redis_url, version=FEATURE_SET_VERSION, max_connections=4)
    keys = [store.key(etype, eid) for etype, eid in partial]
    try:
        first = await store.read_vectors(partial)

        async def raw_hmget() -> list[Any]:
            async with store.redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hmget(key, VECTOR_FIELDS)
                return await pipe.execute()  # type: ignore[no-any-return]

        async def raw_hgetall() -> list[Any]:
            async with store.redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hgetall(key)
                return await pipe.execute()  # type: ignore[no-any-return]

        raw_vec, raw_all = await raw_hmget(), await raw_hgetall()
        vec_bytes = sum(len(v or b"") for fields in raw_vec for v in fields)
        all_bytes = sum(len(k) + len(v) for h in raw_all for k, v in h.items())
        all_fields = sum(len(h) for h in raw_all)

        async def vectors() -> None:
            await store.read_vectors(partial)

        async def hashes() -> None:
            await store.read(partial)

        async def packed() -> None:
            await store.read_packed(partial)

        async def ping() -> None:
            await store.redis.ping()

        await _timed(vectors, p.read_warmup)
        cpu0 = _cpu_s()
        vec_ms = await _timed(vectors, p.reads)
        cpu = _cpu_s() - cpu0
        raw_ms = await _timed(raw_hmget, p.hgetall_reads)
        await _timed(packed, p.read_warmup)
        packed_ms = await _timed(packed, p.reads)
        await _timed(hashes, max(1, p.read_warmup // 4))
        all_ms = await _timed(hashes, p.hgetall_reads)
        await _timed(ping, 10)
        ping_ms = await _timed(ping, 100)
    finally:
        await store.close()
    types = Counter(t for t, _ in partial)
    return {
        "entities": len(partial),
        "entity_types": {t: types[t] for t in ENTITY_ORDER if types[t]},
        "transactions": p.partial_transactions,
        "fresh": sum(1 for r in first if r.fresh),
        "requests": len(vec_ms),
        "latency_ms": summarize(vec_ms),
        "reply_bytes": vec_bytes,
        "vector_bytes": sum(len(fields[3] or b"") for fields in raw_vec),
        "fields_per_entity": len(VECTOR_FIELDS),
        "raw_hmget": {"requests": len(raw_ms), "latency_ms": summarize(raw_ms)},
        "packed_script": {"requests": len(packed_ms), "latency_ms": summarize(packed_ms)},
        "hgetall": {
            "requests": len(all_ms),
            "latency_ms": summarize(all_ms),
            "reply_bytes": all_bytes,
            "fields_per_entity": all_fields / len(partial) if partial else 0.0,
        },
        "ping_ms": summarize(ping_ms),
        "errors": {"total": 0},
        "client": {"tool": "redis-py asyncio (OnlineStore)", "cpu_s": cpu, "cpu_cores": cpu / (sum(vec_ms) / 1000.0)},
        "params": {"reads": p.reads, "warmup": p.read_warmup, "hgetall_reads": p.hgetall_reads},
    }
