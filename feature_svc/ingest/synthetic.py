"""Synthetic live transactions for tests and benchmarks: a seeded stream over a fixed population of cards,
merchants, devices and IPs, timestamped around now (so they count in the 1-hour windows).

Shaped like payments: a card pays from its own one or two devices and its household's IP (three cards per
household), at merchants drawn from a shared pool; one transaction in `shared_every` uses a device and IP from a
small shared pool (cafes, rings), so the graph has some sharing without being one dense blob."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from shared.ingest_messages import TxnIngest


def synthetic_transactions(
    n: int,
    *,
    seed: int = 0,
    prefix: str = "syn",
    cards: int = 2000,
    merchants: int = 100,
    shared_every: int = 20,
    now: datetime | None = None,
    spread_s: float = 600.0,
) -> list[TxnIngest]:
    """`n` transactions with ids `{prefix}-{k}`, spread over the `spread_s` seconds before `now`."""
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    out = []
    for k in range(n):
        card = rng.randrange(cards)
        if rng.randrange(shared_every):
            device, ip = f"{prefix}_dev_{card}_{rng.randrange(2)}", f"10.1.{card // 3 // 250}.{card // 3 % 250}"
        else:
            device, ip = f"{prefix}_shared_dev_{rng.randrange(50)}", f"10.2.0.{rng.randrange(50)}"
        out.append(
            _txn(
                rng,
                f"{prefix}-{k}",
                f"{prefix}_card_{card}",
                f"{prefix}_m_{rng.randrange(merchants)}",
                device,
                ip,
                now - timedelta(seconds=rng.uniform(0.5, spread_s)),
            )
        )
    return out


def _txn(rng: random.Random, tid: str, card: str, merchant: str, device: str, ip: str, ts: datetime) -> TxnIngest:
    return TxnIngest(
        transaction_id=tid,
        timestamp=ts,
        card_id=card,
        merchant_id=merchant,
        device_id=device,
        ip_address=ip,
        transaction_amount=round(rng.lognormvariate(3.0, 1.0), 2),
        currency="EUR",
        country_code="DE",
        mcc_code="5411",
        channel="ecom",
        source="nats",
    )
