"""What idempotency costs the scoring hot path, against a running gateway (`fraudmesh up`, or any stack).

One client sends `POST /score/fraud` requests one after another (keep-alive), in rounds that interleave the
modes, so that drift on a shared machine hits every mode alike:
- `no id`: no `transaction_id`: no Redis call at all (what the main benchmark's bodies do);
- `new id`: a fresh id per request: one Redis MGET (a miss) before scoring, the decision written in the background;
- `new id, idempotency off`: the same with `idempotency_enabled=false` set through `POST /config` for the round;
- `replay`: an id scored before: one MGET (a hit), no NATS request at all.
Figures are client-side latency per request (p50, p90, mean), in ms. Writes `bench/results/idempotency-<date>.json`
and `.md`. Needs an admin key when the gateway has keys (`--api-key`, used for both).

    python -m bench.idempotency --url http://127.0.0.1:8000 --rounds 10 --per-round 100
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time
import uuid
from typing import Any

import httpx

from bench.report import RESULTS_DIR

MODES = ("no id", "new id", "new id, idempotency off", "replay")


def _tx(i: int, tx_id: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "card_id": f"card_bench_{i % 500}",
        "transaction_amount": 10.0 + i % 97,
        "merchant_id": f"m_bench_{i % 50}",
        "device_id": f"d_bench_{i % 300}",
    }
    if tx_id is not None:
        body["transaction_id"] = tx_id
    return body


def _set(client: httpx.Client, enabled: bool | None) -> None:
    r = client.post("/config", json={"idempotency_enabled": enabled})
    r.raise_for_status()


def run(url: str, rounds: int, per_round: int, api_key: str) -> dict[str, list[float]]:
    headers = {"X-API-Key": api_key} if api_key else {}
    times: dict[str, list[float]] = {m: [] for m in MODES}
    run_id = uuid.uuid4().hex[:8]
    with httpx.Client(base_url=url, headers=headers, timeout=30.0) as client:
        replayable = [f"bench-{run_id}-replay-{i}" for i in range(per_round)]
        for i, tx_id in enumerate(replayable):  # stored once, replayed in every round
            client.post("/score/fraud", json=_tx(i, tx_id)).raise_for_status()
        n = 0
        for r in range(rounds):
            for mode in MODES if r % 2 == 0 else tuple(reversed(MODES)):
                if mode == "new id, idempotency off":
                    _set(client, False)
                for k in range(per_round):
                    n += 1
                    tx_id = {
                        "no id": None,
                        "replay": replayable[k],
                    }.get(mode, f"bench-{run_id}-{n}")
                    body = _tx(k if mode == "replay" else n, tx_id)
                    t0 = time.perf_counter()
                    resp = client.post("/score/fraud", json=body)
                    elapsed = (time.perf_counter() - t0) * 1000.0
                    resp.raise_for_status()
                    if mode == "replay":
                        assert resp.headers.get("Idempotency-Status") == "replayed", resp.headers
                    times[mode].append(elapsed)
                if mode == "new id, idempotency off":
                    _set(client, None)
    return times


def summary(values: list[float]) -> dict[str, float]:
    q = statistics.quantiles(values, n=10)
    return {"p50_ms": statistics.median(values), "p90_ms": q[8], "mean_ms": statistics.fmean(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=100)
    parser.add_argument("--api-key", default="", help="an admin key when the gateway has keys")
    parser.add_argument("--note", default="", help="a line about the machine and what else ran (shared boxes)")
    args = parser.parse_args()
    times = run(args.url, args.rounds, args.per_round, args.api_key)
    rows = {m: summary(v) for m, v in times.items()}
    stamp = dt.datetime.now(dt.UTC)
    name = f"idempotency-{stamp:%Y%m%d}"
    result = {
        "when": stamp.isoformat(),
        "url": args.url,
        "rounds": args.rounds,
        "per_round": args.per_round,
        "note": args.note,
        "modes": rows,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# What idempotency costs `POST /score/fraud` (client-side latency, sequential)",
        "",
        f"{args.rounds} rounds x {args.per_round} requests per mode, modes interleaved per round. {args.note}",
        "",
        "| mode | p50 ms | p90 ms | mean ms |",
        "|---|---|---|---|",
        *(f"| {m} | {v['p50_ms']:.2f} | {v['p90_ms']:.2f} | {v['mean_ms']:.2f} |" for m, v in rows.items()),
        "",
        "`new id` minus `new id, idempotency off` is the cost of the lookup (one Redis MGET) on the hot path; the "
        "write happens after the reply is formed. `replay` answers from Redis without any NATS request.",
    ]
    (RESULTS_DIR / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
