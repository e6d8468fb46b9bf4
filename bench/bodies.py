"""Request bodies for the benchmark: world transactions (entities known, features and embeddings warm) and cold
ones (the same transactions with a card, device and IP nobody has seen)."""

from __future__ import annotations

import secrets
from typing import Any

NO_WORLD = (
    "there are no transactions in the stack's PostgreSQL, so the GNN path has no world to score. Prepare it with "
    "`fraudmesh simulate && fraudmesh features export && fraudmesh train --epochs 3 --baseline-iter 30` "
    "(or run `python -m bench --up "
    "--prepare`), then run the benchmark again."
)


def request_of(row: Any) -> dict[str, Any]:
    """A ledger row as a `POST /score/fraud` transaction (no id: the gateway gives each request a fresh one)."""
    tx: dict[str, Any] = {
        "card_id": row["card_id"],
        "transaction_amount": float(row["amount"]),
        "merchant_id": row["merchant_id"],
        "mcc_code": row["mcc_code"],
        "country_code": row["country_code"],
        "channel": row["channel"],
    }
    if row["device_id"]:
        tx["device_id"] = row["device_id"]
    if row["ip_address"]:
        tx["ip_address"] = row["ip_address"]
    return tx


async def world_transactions(dsn: str, n: int, seed: int) -> list[dict[str, Any]] | None:
    """`n` ledger transactions in a seeded hash order (spread over cards and time), or None without a world."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        try:
            rows = await conn.fetch(
                "SELECT card_id, amount, merchant_id, mcc_code, country_code, channel, device_id, ip_address "
                "FROM transactions ORDER BY md5(transaction_id || $1) LIMIT $2",
                f"bench-{seed}",
                n,
            )
        except asyncpg.UndefinedTableError:
            return None
    finally:
        await conn.close()
    if not rows:
        return None
    return [request_of(r) for r in rows]


def cold(txs: list[dict[str, Any]], token: str | None = None) -> list[dict[str, Any]]:
    """The same transactions with a new card, device and IP each (the merchant stays a world one): every entity
    but the merchant is seen for the first time. `token` makes the ids unique to one run."""
    token = token or secrets.token_hex(4)
    out = []
    for i, tx in enumerate(txs):
        c = dict(tx)
        c["card_id"] = f"cold-{token}-card-{i}"
        c["device_id"] = f"cold-{token}-dev-{i}"
        c["ip_address"] = f"fd{token[:2]}:{token[2:6]}:{token[6:8] or '0'}::{i:x}"  # a ULA IPv6 of this run
        out.append(c)
    return out
