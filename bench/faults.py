"""The fault suite as a report: `python -m bench.faults [--out reports/faults]`.

Starts its own nats-server, Redis and PostgreSQL (loopback, free ports) and a stack (2 aggregators, 2 inference
workers, 1 feature worker, 1 gateway, the bootstrap model with entity features on), then for each scenario runs a
steady load of /predict requests (20 transactions each, unique transaction ids, `ingest=false`, one in five from a
card never seen before, whose features must come from the ledger) while the fault
happens, and counts what the clients saw:

- `requests`, `ok` (200), `degraded` (200s with degraded scores), `refused` (429/503 with Retry-After),
  `5xx` (any other 5xx), `lost` (no HTTP answer at all: a timeout or a dropped connection),
- `duplicated`: transaction ids answered twice within one reply (a partial counted twice),
- `recover_s`: seconds from the end of the fault (the server restarted, the process killed) to the first request
  answered 200 after which every answer was 200.

The `overload` scenario drives /score/fraud with wrk at 512 connections (a 1 s timeout: a slower answer counts as
lost) and reports the statuses and the latency distribution; `batch_overload` runs 128 closed-loop clients sending
200-transaction batches and 32 sending single ones (wrk, bench/wrk_mix.lua: one client per connection, a refused
client waits its Retry-After) and reports the share of the capacity the same mix gets without overload that is still
delivered as 200s; both need wrk and record the machine's load average. `hostile` sends hostile bodies and counts
5xx. `--only NAME...` runs some scenarios, `--update` keeps the others' rows. Writes `<out>/README.md` and
`<out>/faults.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.wrk import wrk_binary
from deploy.servers import start_nats, start_postgres, start_redis, stop_postgres
from gateway.admission import REQUEST_COST
from tests.stacks import Stack

LOAD_CLIENTS = 8
BATCH = 20


@dataclass
class Outcome:
    scenario: str
    fault: str
    requests: int = 0
    ok: int = 0
    degraded: int = 0
    refused: int = 0
    server_errors: int = 0
    lost: int = 0
    duplicated: int = 0
    recover_s: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    run_at: str = ""
    """When this scenario ran (UTC): an `--update` report mixes runs."""


@dataclass
class Load:
    """A steady load of /predict batches; every answer is recorded with its time."""

    url: str
    answers: list[tuple[float, int, bool]] = field(default_factory=list)
    """(monotonic time, status (-1: no answer), any degraded score)."""
    duplicated: int = 0
    stop: bool = False
    messages: dict[int, list[str]] = field(default_factory=dict)
    """The first few error messages per status."""
    _seq: int = 0

    async def _client(self, client: httpx.AsyncClient, k: int) -> None:
        while not self.stop:
            self._seq += 1
            txs = [
                {
                    # one transaction in 5 from a card never seen (its features must be computed from the ledger)
                    "card_id": f"new_{k}_{self._seq}" if i % 5 == 0 else f"card_{(self._seq * 7 + i) % 300}",
                    "transaction_amount": 10.0 + i,
                    "merchant_id": f"m_{i % 13}",
                    "device_id": f"d_{i % 17}",
                    "transaction_id": f"f{k}-{self._seq}-{i}",
                }
                for i in range(BATCH)
            ]
            status, degraded = -1, False
            try:
                r = await client.post(f"{self.url}/predict?ingest=false&timeout_ms=5000", json={"transactions": txs})
                status = r.status_code
                if status == 200:
                    doc = r.json()
                    ids = [x["transaction_id"] for x in doc["results"] if x is not None]
                    self.duplicated += len(ids) - len(set(ids))
                    degraded = any(x is not None and x.get("degraded") for x in doc["results"])
                else:
                    seen = self.messages.setdefault(status, [])
                    if len(seen) < 3:
                        seen.append(str(r.json().get("message", ""))[:300])
                    if status in (429, 503) and not r.headers.get("Retry-After"):
                        status = 599  # a refusal without Retry-After counts as an error
            except httpx.HTTPError:
                await asyncio.sleep(0.05)
            self.answers.append((time.monotonic(), status, degraded))

    async def run(self, seconds_before: float, fault: Callable[[], float], seconds_after: float) -> float:
        """Load, then `fault()` (in a thread; returns when the fault is over), then load. Returns when it ended."""
        async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as client:
            tasks = [asyncio.create_task(self._client(client, k)) for k in range(LOAD_CLIENTS)]
            await asyncio.sleep(seconds_before)
            ended = await asyncio.to_thread(fault)
            await asyncio.sleep(seconds_after)
            self.stop = True
            await asyncio.gather(*tasks)
        return ended


def summarize(name: str, fault: str, load: Load, ended: float) -> Outcome:
    out = Outcome(name, fault, duplicated=load.duplicated)
    statuses = Counter(s for _, s, _ in load.answers)
    out.requests = len(load.answers)
    out.ok = statuses[200]
    out.degraded = sum(1 for _, s, d in load.answers if s == 200 and d)
    out.refused = statuses[429] + statuses[503]
    out.server_errors = sum(n for s, n in statuses.items() if s >= 500 and s not in (503,))
    out.lost = statuses[-1]
    bad = [t for t, s, _ in load.answers if s != 200]
    last_bad = max(bad) if bad else None
    if last_bad is None or last_bad < ended:
        out.recover_s = 0.0
    else:
        after = [t for t, s, _ in load.answers if s == 200 and t > last_bad]
        out.recover_s = round(after[0] - ended, 2) if after else None
    out.notes["statuses"] = {str(k): v for k, v in sorted(statuses.items())}
    if load.messages:
        out.notes["messages"] = {str(k): v for k, v in load.messages.items()}
    return out


def run_wrk_status(url: str, body: str, *, connections: int, seconds: float) -> dict[str, Any]:
    """wrk with bench/wrk_status.lua and a 1 s timeout: an answer slower than 1 s counts as a timeout."""
    cmd = [
        wrk_binary(),
        "-t",
        "2",
        "-c",
        str(connections),
        "-d",
        f"{seconds:g}s",
        "--timeout",
        "1s",
        "-s",
        str(Path(__file__).with_name("wrk_status.lua")),
        url,
        "--",
        body,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRK_STATUS ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no WRK_STATUS line (exit {proc.returncode}): {proc.stderr[-1000:]}")
    doc: dict[str, Any] = json.loads(line.removeprefix("WRK_STATUS "))
    return doc


BATCH_SIZE = 200


def mix_bodies(directory: Path) -> tuple[Path, Path]:
    """The batch-overload bodies: a 200-transaction /predict batch and one /score/fraud transaction."""
    batch = directory / "mix_batch.json"
    single = directory / "mix_single.json"
    txs = [{"card_id": f"cap{i}", "transaction_amount": 12.5, "merchant_id": "m_cap"} for i in range(BATCH_SIZE)]
    batch.write_text(json.dumps({"transactions": txs}))
    single.write_text(json.dumps({"card_id": "cap_single", "transaction_amount": 3.5}))
    return batch, single


def wrk_mix_delivery(url: str, batch_clients: int, single_clients: int, seconds: float) -> dict[str, Any]:
    """Closed-loop clients driven by wrk (bench/wrk_mix.lua: one connection per thread, a refused client waits its
    Retry-After plus a random 0-50%), so that the load generator is not what limits the measure (a Python client
    with 160 connections is, on a shared 2-core box). Returns wrk's WRK_MIX document plus `work_per_s` (transactions
    plus REQUEST_COST per answered request) and `tx_per_s`, both of 200 answers."""
    with tempfile.TemporaryDirectory(prefix="fraudmesh-mix-") as tmp:
        batch, single = mix_bodies(Path(tmp))
        n = batch_clients + single_clients
        cmd = [
            wrk_binary(),
            "-t",
            str(n),
            "-c",
            str(n),
            "-d",
            f"{seconds:g}s",
            "--timeout",
            "10s",
            "-s",
            str(Path(__file__).with_name("wrk_mix.lua")),
            url,
            "--",
            str(batch_clients),
            "/predict?ingest=false",
            str(batch),
            str(BATCH_SIZE),
            "/score/fraud?ingest=false",
            str(single),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRK_MIX ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no WRK_MIX line (exit {proc.returncode}): {proc.stderr[-1000:]}")
    doc: dict[str, Any] = json.loads(line.removeprefix("WRK_MIX "))
    elapsed = doc["duration_us"] / 1e6
    tx = doc["ok_batch"] * BATCH_SIZE + doc["ok_single"]
    doc["tx_per_s"] = tx / elapsed
    doc["work_per_s"] = (tx + REQUEST_COST * (doc["ok_batch"] + doc["ok_single"])) / elapsed
    return doc


class Bench:
    def __init__(self, root: Path, model_dir: Path) -> None:
        self.root = root
        self.model_dir = model_dir
        self.nats = start_nats(root / "nats")
        self.redis = start_redis(root / "redis")
        self.pg = start_postgres(root / "pg")
        self.stack = Stack(
            root / "stack",
            self.nats.extra["url"],
            self.redis.extra["url"],
            self.pg.extra["dsn"],
            model_dir,
            env={"FRAUDMESH_ENTITY_FEATURES": "always"},
        )
        s = self.stack
        s.start("aggregator", 2)
        s.start("inference", 2)
        s.start("feature")
        s.start("gateway")
        s.wait_ready(timeout=90)
        s.wait_health("inference", 2)
        s.wait_health("feature", 1)

    def close(self) -> list[str]:
        """Stops everything; returns the NATS refusals the services logged (e.g. a reply to a request received
        before a NATS restart is refused by the new server, which never saw the request)."""
        try:
            self.stack.stop()
            return []
        except AssertionError as exc:
            return str(exc).splitlines()[1:6]
        finally:
            self.nats.stop()
            self.redis.stop()
            stop_postgres(self.pg)

    def scenario(
        self, name: str, fault: str, action: Callable[[], None], before: float = 3.0, after: float = 8.0
    ) -> Outcome:
        load = Load(self.stack.gateway_url)

        def run_fault() -> float:
            action()
            return time.monotonic()

        ended = asyncio.run(load.run(before, run_fault, after))
        out = summarize(name, fault, load, ended)
        print(json.dumps(asdict(out)), flush=True)
        return out

    # ------------------------------------------------------------------------------------------- faults
    def restart_redis(self, down_s: float) -> None:
        port = self.redis.port
        self.redis.stop()
        time.sleep(down_s)
        self.redis = start_redis(self.root / "redis", port=port)

    def restart_postgres(self, down_s: float) -> None:
        stop_postgres(self.pg)
        time.sleep(down_s)
        self.pg = start_postgres(self.root / "pg", port=self.pg.port)

    def restart_nats(self) -> None:
        port, monitor = self.nats.port, int(self.nats.extra["monitor"])
        self.nats.stop()
        time.sleep(1.0)
        self.nats = start_nats(self.root / "nats", port=port, monitor_port=monitor)

    def kill_one(self, service: str) -> None:
        from deploy.servers import alive

        victim = next(p for p in self.stack.procs if p.label.startswith(service) and alive(p.pid))
        self.stack.kill(victim, signal.SIGKILL)
        self.stack.start(service)

    def overload(self) -> Outcome:
        out = Outcome("overload", "wrk, 512 connections, 10 s on /score/fraud")
        if shutil.which("wrk") is None:
            out.notes["skipped"] = "wrk is not installed (apt-get install wrk)"
            return out
        body = json.dumps({"card_id": "card_wrk", "transaction_amount": 12.5, "merchant_id": "m_1"})
        load_before = os.getloadavg()[0]
        doc = run_wrk_status(f"{self.stack.gateway_url}/score/fraud?ingest=false", body, connections=512, seconds=10)
        st = doc["status"]
        out.requests = int(doc["requests"])
        out.ok = int(st["200"])
        out.refused = int(st["429"]) + int(st["503"]) - int(doc["refused_without_retry_after"])
        out.server_errors = int(st["504"]) + int(st["other_5xx"]) + int(doc["refused_without_retry_after"])
        out.lost = int(doc["errors"]["timeout"]) + int(doc["errors"]["connect"]) + int(doc["errors"]["read"])
        out.notes = {k: doc[k] for k in ("status", "errors", "latency_ms", "refused_without_retry_after")}
        out.notes["wrk_timeout_s"] = 1.0
        out.notes["load_average_1m"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
        print(json.dumps(asdict(out)), flush=True)
        return out

    def batch_overload(self) -> Outcome:
        """Capacity with the mix of 4 batch clients (200 transactions) to 1 single, then 128 batch + 32 single
        clients: the share of the capacity still delivered as 200s (wrk, bench/wrk_mix.lua)."""
        out = Outcome("batch_overload", "128 clients x 200-transaction batches + 32 single clients, 10 s")
        if shutil.which("wrk") is None:
            out.notes["skipped"] = "wrk is not installed (apt-get install wrk)"
            return out
        url = self.stack.gateway_url
        load_before = os.getloadavg()[0]
        wrk_mix_delivery(url, 2, 0, 2.0)  # warm up
        base = wrk_mix_delivery(url, 4, 1, 10.0)
        doc = wrk_mix_delivery(url, 128, 32, 10.0)
        out.requests = int(doc["requests"])
        out.ok = int(doc["ok_batch"]) + int(doc["ok_single"])
        out.refused = int(doc["refused"]) - int(doc["refused_without_retry_after"])
        out.server_errors = int(doc["504"]) + int(doc["other_5xx"]) + int(doc["refused_without_retry_after"])
        out.lost = sum(int(v) for v in doc["errors"].values())
        out.notes = {
            "capacity_tx_per_s": round(base["tx_per_s"]),
            "delivered_tx_per_s": round(doc["tx_per_s"]),
            "share_of_capacity_tx": round(doc["tx_per_s"] / base["tx_per_s"], 3) if base["tx_per_s"] else None,
            "capacity_work_per_s": round(base["work_per_s"]),
            "delivered_work_per_s": round(doc["work_per_s"]),
            "share_of_capacity_work": round(doc["work_per_s"] / base["work_per_s"], 3) if base["work_per_s"] else None,
            "work": f"transactions + {REQUEST_COST:g} per request (gateway/admission.py REQUEST_COST)",
            "capacity_run": {k: base[k] for k in ("ok_batch", "ok_single", "refused", "504", "errors")},
            "overload_run": {k: doc[k] for k in ("ok_batch", "ok_single", "refused", "504", "other_5xx", "errors")},
            "load_average_1m": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        }
        print(json.dumps(asdict(out)), flush=True)
        return out

    def hostile(self) -> Outcome:
        url = self.stack.gateway_url
        deep = "[" * 5000 + "]" * 5000
        cases: list[tuple[str, dict[str, Any]]] = [
            ("/predict", {"content": deep, "headers": {"Content-Type": "application/json"}}),
            ("/predict", {"content": b"\xff\xfe garbage", "headers": {"Content-Type": "application/json"}}),
            ("/predict", {"content": "{}", "headers": {"Content-Type": "text/plain"}}),
            ("/predict", {"json": {"transactions": [{"card_id": "c", "transaction_amount": 1}], "partial_size": 0}}),
            (
                "/score/fraud",
                {"json": {"card_id": "c", "transaction_amount": 1}, "headers": {"X-Request-Id": "a/b c+"}},
            ),
            ("/score/fraud", {"json": {"card_id": "4111111111111111", "transaction_amount": 1}}),
            ("/score/fraud", {"json": {"card_id": "c", "transaction_amount": -1}}),
            ("/score/fraud", {"json": {"card_id": "c", "transaction_amount": 1, "devce_id": "x"}}),
            (
                "/score/fraud",
                {
                    "content": '{"card_id":"c","card_id":"d","transaction_amount":1}',
                    "headers": {"Content-Type": "application/json"},
                },
            ),
            ("/predict", {"json": {"transactions": [{"card_id": "c", "transaction_amount": 1}] * 10_001}}),
        ]
        out = Outcome("hostile", f"{len(cases)} hostile bodies")
        statuses: Counter[int] = Counter()
        with httpx.Client(timeout=30) as client:
            for path, kw in cases:
                r = client.post(f"{url}{path}", **kw)
                statuses[r.status_code] += 1
        out.requests = len(cases)
        out.ok = statuses[200]
        out.server_errors = sum(n for s, n in statuses.items() if s >= 500)
        out.notes["statuses"] = {str(k): v for k, v in sorted(statuses.items())}
        print(json.dumps(asdict(out)), flush=True)
        return out


SCENARIOS: dict[str, tuple[str, Callable[[Bench], None]]] = {
    "redis_restart": ("redis-server stopped and started again at once", lambda b: b.restart_redis(0.0)),
    "redis_down": ("redis-server down for 5 s", lambda b: b.restart_redis(5.0)),
    "postgres_down": ("PostgreSQL down for 5 s", lambda b: b.restart_postgres(5.0)),
    "nats_restart": ("nats-server stopped, started 1 s later (same store)", lambda b: b.restart_nats()),
    "inference_sigkill": ("one of 2 inference workers SIGKILLed, a new one started", lambda b: b.kill_one("inference")),
    "aggregator_sigkill": ("one of 2 aggregators SIGKILLed, a new one started", lambda b: b.kill_one("aggregator")),
}


def run_all(root: Path, model_dir: Path, only: list[str]) -> tuple[list[Outcome], list[str]]:
    b = Bench(root, model_dir)
    outcomes: list[Outcome] = []
    try:
        for name, (fault, action) in SCENARIOS.items():
            if not only or name in only:
                outcomes.append(b.scenario(name, fault, lambda action=action: action(b)))  # type: ignore[misc]
        if not only or "overload" in only:
            outcomes.append(b.overload())
        if not only or "batch_overload" in only:
            outcomes.append(b.batch_overload())
        if not only or "hostile" in only:
            outcomes.append(b.hostile())
    finally:
        refusals = b.close()
    for o in outcomes:
        o.run_at = o.run_at or time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return outcomes, refusals


def write_report(outcomes: list[Outcome], refusals: list[str], out_dir: Path, reading: str = "") -> None:
    """`reading`: the report's hand-written `## Reading` section, kept across `--update` runs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "faults.json").write_text(json.dumps([asdict(o) for o in outcomes], indent=2) + "\n")
    lines = [
        "# Fault report",
        "",
        f"Written by `python -m bench.faults` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, on this "
        f"machine ({os.cpu_count()} cores, shared). Every server and service is a real process on loopback. Load: "
        f"{LOAD_CLIENTS} clients sending /predict batches of {BATCH} transactions (deadline 5 s) before, during and "
        "after the fault. `refused` are 429/503 answers with Retry-After (retryable by design); `5xx` counts every "
        "other 5xx; `lost` are requests with no HTTP answer at all; `recover` is the time from the end of the fault "
        "to the first 200 after which every answer was 200 (0: no request failed after the fault ended).",
        "",
        "| scenario | fault | requests | 200 | degraded | refused | 5xx | lost | duplicated | recover (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for o in outcomes:
        rec = "-" if o.recover_s is None else f"{o.recover_s:.2f}"
        lines.append(
            f"| {o.scenario} | {o.fault} | {o.requests} | {o.ok} | {o.degraded} | {o.refused} | {o.server_errors} "
            f"| {o.lost} | {o.duplicated} | {rec} |"
        )
    if reading:
        lines += ["", reading.strip()]
    lines += ["", "## Details", ""]
    for o in outcomes:
        when = f" (run {o.run_at})" if o.run_at else ""
        lines.append(f"- **{o.scenario}**{when}: `{json.dumps(o.notes)}`")
    if refusals:
        lines += ["", "NATS refusals logged by the services (first lines):", ""]
        lines += [f"    {line[:300]}" for line in refusals]
    lines.append("")
    (out_dir / "README.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="reports/faults", help="directory of README.md and faults.json")
    parser.add_argument(
        "--update", action="store_true", help="keep the other scenarios of an existing <out>/faults.json"
    )
    parser.add_argument(
        "--only",
        nargs="*",
        default=[],
        help=f"scenarios to run: {', '.join(SCENARIOS)}, overload, batch_overload, hostile",
    )
    args = parser.parse_args(argv)
    from inference_svc.bootstrap import train_bootstrap

    root = Path(tempfile.mkdtemp(prefix="fraudmesh-faults-"))
    os.chmod(root, 0o755)  # PostgreSQL runs as its own user
    try:
        model_dir = root / "models"
        train_bootstrap(model_dir, n=20_000)
        outcomes, refusals = run_all(root, model_dir, args.only)
        previous = Path(args.out) / "faults.json"
        if args.update and previous.exists():
            rerun = {o.scenario for o in outcomes}
            kept = [Outcome(**d) for d in json.loads(previous.read_text()) if d["scenario"] not in rerun]
            order = [*SCENARIOS, "overload", "batch_overload", "hostile"]
            outcomes = sorted(kept + outcomes, key=lambda o: order.index(o.scenario) if o.scenario in order else 99)
        old = Path(args.out) / "README.md"
        reading = ""
        if args.update and old.exists() and "## Reading" in (text := old.read_text()):
            reading = "## Reading" + text.split("## Reading", 1)[1].split("## Details", 1)[0]
        write_report(outcomes, refusals, Path(args.out), reading)
        print(f"wrote {args.out}/README.md and {args.out}/faults.json")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
