"""`fraudmesh traffic`: continue the simulated world in real time through POST /score/fraud, as an acquirer would.

Legit payments replay the ledger's own card/merchant/device/IP combinations at `rate` per second, stamped now.
Three fraud episodes are injected at fixed points of the run (a quarter, a half and three quarters in), each one's
transactions spread evenly over a fifth of the run (6 s of a 30 s run), as a bot or a fraudster paces them rather
than all in the same instant, so the live features (visible within about a second) can move while it unfolds:
- card testing: a brand-new card probing one merchant with ~20 amounts below 5 within a few seconds;
- ring: four new cards paying from one new shared phone and proxy IP;
- account takeover: an existing card from a new device and country, with amounts far above its usual ones.
Every scored transaction is ingested (the live path), so velocity and graph features move as the episode unfolds.
A summary line is printed every second; at the end, each episode's verdict: detected or not, and the detection
latency from its first transaction to its first `high` or `critical` decision.

    fraudmesh traffic --rate 50 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

DETECTED = ("high", "critical")


EPISODE_SPAN = 0.2
"""Share of the run over which one episode's transactions are spread."""


@dataclass
class Episode:
    kind: str
    at_s: float
    txns: list[dict[str, Any]]
    every_s: float = 0.0  # seconds between two of its transactions
    started: float | None = None
    detected_after_s: float | None = None
    sent: int = 0


@dataclass
class Tally:
    scored: int = 0
    declined: int = 0
    errors: int = 0
    """Transactions not scored: a transport error, a non-200 answer, or a 503 still refused after its retries."""
    last_error: str = ""
    retried: int = 0
    """503s with Retry-After (admission control shedding) that were sent again after the wait, as an acquirer's
    client does; a transaction is an error only when its last attempt failed."""
    episodes: list[Episode] = field(default_factory=list)


def episodes(rng: random.Random, duration: float, templates: list[dict[str, Any]]) -> list[Episode]:
    tag = uuid.uuid4().hex[:6]
    merchant = templates[0].get("merchant_id") or "m_00001"
    testing = [
        {
            "card_id": f"card_test_{tag}",
            "merchant_id": merchant,
            "transaction_amount": round(rng.uniform(0.5, 4.5), 2),
            "device_id": f"dev_test_{tag}",
            "channel": "ecom",
        }
        for _ in range(20)
    ]
    ring = [
        {
            "card_id": f"card_ring_{tag}_{k % 4}",
            "merchant_id": merchant,
            "transaction_amount": round(rng.uniform(150, 400), 2),
            "device_id": f"dev_ring_{tag}",
            "ip_address": f"203.0.113.{rng.randrange(1, 250)}",
            "channel": "ecom",
        }
        for k in range(12)
    ]
    victim = templates[-1]
    ato = [
        {
            "card_id": victim["card_id"],
            "merchant_id": merchant,
            "transaction_amount": round(rng.uniform(900, 2500), 2),
            "device_id": f"dev_ato_{tag}",
            "ip_address": f"198.51.100.{rng.randrange(1, 250)}",
            "country_code": "NG",
            "channel": "ecom",
        }
        for _ in range(6)
    ]
    span = duration * EPISODE_SPAN
    return [
        Episode("card_testing", duration * 0.25, testing, span / len(testing)),
        Episode("ring", duration * 0.5, ring, span / len(ring)),
        Episode("account_takeover", duration * 0.75, ato, span / len(ato)),
    ]


async def fetch_templates(gateway: httpx.AsyncClient, n: int) -> list[dict[str, Any]]:
    """Legit card/merchant/device/IP combinations from the ledger (PostgreSQL), or synthetic ones without it."""
    try:
        from feature_svc.ledger import connect
        from shared.settings import load_settings

        pool = await connect(load_settings().postgres_dsn, max_size=2)
        try:
            rows = await pool.fetch(
                """SELECT card_id, merchant_id, device_id, ip_address, amount, country_code, channel
                   FROM transactions TABLESAMPLE SYSTEM (5) LIMIT $1""",
                n,
            )
        finally:
            await pool.close()
        if rows:
            return [
                {
                    k: v
                    for k, v in {
                        "card_id": r["card_id"],
                        "merchant_id": r["merchant_id"],
                        "device_id": r["device_id"],
                        "ip_address": r["ip_address"],
                        "transaction_amount": float(r["amount"]),
                        "country_code": r["country_code"],
                        "channel": r["channel"],
                    }.items()
                    if v is not None
                }
                for r in rows
            ]
    except Exception as exc:
        print(f"fraudmesh traffic: no ledger sample ({type(exc).__name__}); using synthetic cards", file=sys.stderr)
    return [
        {"card_id": f"card_syn_{k}", "merchant_id": f"m_{k % 50:05d}", "transaction_amount": 25.0} for k in range(n)
    ]


RETRIES = 2
"""Times a transaction refused with 503 + Retry-After is sent again (the same transaction id: a refusal scored
nothing)."""
MAX_RETRY_WAIT_S = 1.0


async def send(client: httpx.AsyncClient, tx: dict[str, Any], tally: Tally, episode: Episode | None) -> None:
    body = {**tx, "transaction_id": f"live-{uuid.uuid4().hex}"}
    for attempt in range(RETRIES + 1):
        try:
            r = await client.post("/score/fraud", json=body)
        except httpx.HTTPError as exc:
            tally.errors += 1
            tally.last_error = type(exc).__name__
            return
        retry_after = r.headers.get("retry-after")
        if r.status_code != 503 or retry_after is None or attempt == RETRIES:
            break
        tally.retried += 1
        try:
            wait = float(retry_after)
        except ValueError:
            wait = MAX_RETRY_WAIT_S
        await asyncio.sleep(min(max(wait, 0.0), MAX_RETRY_WAIT_S))
    if r.status_code != 200:
        tally.errors += 1
        tally.last_error = f"HTTP {r.status_code}"
        return
    doc = r.json()
    tally.scored += 1
    tally.declined += doc.get("recommended_action") == "decline"
    if episode is not None and episode.detected_after_s is None and doc.get("risk_level") in DETECTED:
        assert episode.started is not None
        episode.detected_after_s = time.monotonic() - episode.started


def line(tally: Tally, elapsed: float) -> str:
    parts = [
        f"{elapsed:5.1f}s  rate {tally.scored / max(elapsed, 1e-9):6.1f}/s  scored {tally.scored}  "
        f"declined {tally.declined}  retried {tally.retried}  errors {tally.errors}"
    ]
    for e in tally.episodes:
        if e.started is None:
            parts.append(f"{e.kind}: pending")
        elif e.detected_after_s is not None:
            parts.append(f"{e.kind}: DETECTED in {e.detected_after_s:.2f}s")
        else:
            parts.append(f"{e.kind}: not yet ({e.sent} sent)")
    return " | ".join(parts)


async def run(url: str, rate: float, duration: float, seed: int, api_key: str) -> Tally:
    rng = random.Random(seed)
    headers = {"X-API-Key": api_key} if api_key else {}
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=url, timeout=10.0, headers=headers, limits=limits) as client:
        templates = await fetch_templates(client, 2000)
        tally = Tally(episodes=episodes(rng, duration, templates))
        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        next_line = 1.0
        k = 0
        while (elapsed := time.monotonic() - start) < duration:
            for e in tally.episodes:
                if e.sent < len(e.txns) and elapsed >= e.at_s + e.sent * e.every_s:
                    e.started = e.started or time.monotonic()
                    tasks.add(asyncio.create_task(send(client, e.txns[e.sent], tally, e)))
                    e.sent += 1
            tasks.add(asyncio.create_task(send(client, rng.choice(templates), tally, None)))
            k += 1
            if elapsed >= next_line:
                print(line(tally, elapsed), flush=True)
                next_line += 1.0
            tasks = {t for t in tasks if not t.done()}
            await asyncio.sleep(max(0.0, start + k / rate - time.monotonic()))
        if tasks:
            await asyncio.wait(tasks, timeout=10.0)
        print(line(tally, time.monotonic() - start), flush=True)
    return tally


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rate", type=float, default=50.0, help="legit transactions per second (default 50)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds (default 30)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--url", default="", help="gateway URL (default: the local stack's)")
    p.add_argument("--api-key", default="")


def main(args: argparse.Namespace, url: str) -> int:
    if args.rate <= 0 or args.duration <= 0:
        print("fraudmesh traffic: --rate and --duration must be positive", file=sys.stderr)
        return 2
    tally = asyncio.run(run(url, args.rate, args.duration, args.seed, args.api_key))
    print("\nlive run summary")
    for e in tally.episodes:
        verdict = f"detected after {e.detected_after_s:.2f} s" if e.detected_after_s is not None else "NOT detected"
        print(f"  {e.kind:<17} {e.sent:>3} transactions: {verdict}")
    print(
        f"  {tally.scored} scored, {tally.declined} declined, {tally.errors} errors"
        + (f" (last: {tally.last_error})" if tally.errors else "")
        + (
            f"; {tally.retried} refusal(s) by admission control (503, Retry-After) sent again after the wait"
            if tally.retried
            else ""
        )
    )
    return 0 if tally.scored else 1
