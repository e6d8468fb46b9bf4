"""Idempotent ledger and graph writes for ingested transactions and labels.

Transactions: the graph edges are written first, for the ids the ledger does not know yet, then the rows
(`INSERT ... ON CONFLICT (transaction_id) DO NOTHING`). A transaction counts in the features only through its
ledger row (and its edges' first_seen, which an upsert keeps at the earliest), so a replay, a duplicate outside
the dedupe window or a batch redelivered after a crash never counts twice. The one thing a crash between the
two writes can over-count is the edges' `n` on Neo4j (a monitoring total that no feature reads; the PostgreSQL
store takes it from the ledger).

Labels: the card label of the graph store is upserted first (it keeps the earliest label time: idempotent),
then the label row, with the card, merchant and transaction time copied from the ledger's transaction. A label
whose transaction the ledger does not know yet is parked in `pending_labels` (and returned as `waiting`); it
is applied when that transaction is ingested (`take_pending_labels`). The first verdict on a transaction wins;
a label time before its transaction's time is raised to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from feature_svc.graph import CardLabel, GraphStore, edges_for_transaction
from shared.ingest_messages import Label, TxnIngest


@dataclass
class TxnWrite:
    """What one batch of transactions changed."""

    new: list[TxnIngest] = field(default_factory=list)
    duplicates: int = 0
    new_links: list[tuple[str, str]] = field(default_factory=list)
    """The devices and IPs that gained a card: a new transaction's (card, device) or (card, IP) pair the ledger
    had not seen before. Only these change the sharing counts, 2-hop counts and components of the OTHER cards on
    them (a card paying again from a device it used before adds no edge)."""


@dataclass
class LabelWrite:
    new: list[LabelRow] = field(default_factory=list)
    duplicates: int = 0
    waiting: list[str] = field(default_factory=list)
    """Transaction ids the ledger does not know (yet)."""


@dataclass(frozen=True)
class LabelRow:
    transaction_id: str
    card_id: str
    merchant_id: str | None
    is_fraud: bool
    label_time: datetime


_INSERT_TXNS = """
INSERT INTO transactions (transaction_id, "timestamp", card_id, merchant_id, device_id, ip_address, amount,
                          currency, country_code, mcc_code, channel, fraud_score, model_version, source)
SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::float8[], $8::text[], $9::text[], $10::text[], $11::text[], $12::float8[], $13::text[],
                     $14::text[])
ON CONFLICT (transaction_id) DO NOTHING
RETURNING transaction_id
"""


def _upper(value: str | None) -> str | None:
    return value.upper() if value is not None else None


async def write_transactions(pool: asyncpg.Pool, graph: GraphStore, txns: Sequence[TxnIngest]) -> TxnWrite:
    unique = list({t.transaction_id: t for t in txns}.values())
    ids = [t.transaction_id for t in unique]
    known = {r["transaction_id"] for r in await pool.fetch(_KNOWN, ids)}
    fresh = [t for t in unique if t.transaction_id not in known]
    if not fresh:
        return TxnWrite(duplicates=len(txns))
    edges = [
        e
        for t in fresh
        for e in edges_for_transaction(
            t.card_id, t.timestamp, device_id=t.device_id, ip_address=t.ip_address, merchant_id=t.merchant_id
        )
    ]
    new_links = await _new_links(pool, fresh)
    await graph.upsert_edges(edges)
    rows = await pool.fetch(
        _INSERT_TXNS,
        [t.transaction_id for t in fresh],
        [t.timestamp for t in fresh],
        [t.card_id for t in fresh],
        [t.merchant_id for t in fresh],
        [t.device_id for t in fresh],
        [t.ip_address for t in fresh],
        [t.transaction_amount for t in fresh],
        [_upper(t.currency) for t in fresh],
        [_upper(t.country_code) for t in fresh],
        [t.mcc_code for t in fresh],
        [t.channel for t in fresh],
        [t.fraud_score for t in fresh],
        [t.model_version for t in fresh],
        [t.source for t in fresh],
    )
    inserted = {r["transaction_id"] for r in rows}
    new = [t for t in fresh if t.transaction_id in inserted]
    return TxnWrite(new=new, duplicates=len(txns) - len(new), new_links=new_links)


# `OFFSET 0` keeps the NOT EXISTS a per-pair probe of the card's rows (transactions_card_time): without it the
# planner may turn it into a hash anti-join that reads the whole ledger for every micro-batch (seen with 50,000
# rows: 21 ms of a 30-transaction batch, bench/results/ingest-live-*.md).
_NEW_LINKS = """
SELECT DISTINCT x.entity_type, x.entity_id
FROM unnest($1::text[], $2::text[], $3::text[]) AS x(card_id, entity_type, entity_id)
WHERE NOT EXISTS (
    SELECT 1 FROM transactions t
    WHERE t.card_id = x.card_id
      AND CASE x.entity_type WHEN 'device' THEN t.device_id ELSE t.ip_address END = x.entity_id
    OFFSET 0)
"""


async def _new_links(pool: asyncpg.Pool, fresh: Sequence[TxnIngest]) -> list[tuple[str, str]]:
    """The devices and IPs of `fresh` (not yet in the ledger) used with a card that no ledger transaction used
    them with. Read from the ledger (the source of every graph store's edges) before the rows are inserted."""
    pairs = {
        (t.card_id, etype, eid) for t in fresh for etype, eid in (("device", t.device_id), ("ip", t.ip_address)) if eid
    }
    if not pairs:
        return []
    ordered = sorted(pairs)
    rows = await pool.fetch(_NEW_LINKS, [p[0] for p in ordered], [p[1] for p in ordered], [p[2] for p in ordered])
    return [(r["entity_type"], r["entity_id"]) for r in rows]


_KNOWN = "SELECT transaction_id FROM transactions WHERE transaction_id = ANY($1::text[])"

_LABEL_SOURCE = """
SELECT l.transaction_id, t.card_id, t.merchant_id, t."timestamp" AS transaction_time, l.is_fraud, l.fraud_kind,
       GREATEST(l.label_time, t."timestamp") AS label_time,
       EXISTS (SELECT 1 FROM labels x WHERE x.transaction_id = l.transaction_id) AS labelled
FROM unnest($1::text[], $2::bool[], $3::text[], $4::timestamptz[])
     AS l(transaction_id, is_fraud, fraud_kind, label_time)
JOIN transactions t ON t.transaction_id = l.transaction_id
"""

_INSERT_LABELS = """
INSERT INTO labels (transaction_id, card_id, merchant_id, transaction_time, is_fraud, fraud_kind, label_time)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::bool[], $6::text[],
                     $7::timestamptz[])
ON CONFLICT (transaction_id) DO NOTHING
RETURNING transaction_id
"""


async def write_labels(
    pool: asyncpg.Pool, graph: GraphStore, labels: Sequence[Label], now: datetime | None = None
) -> LabelWrite:
    now = now or datetime.now(UTC)
    unique = list({lb.transaction_id: lb for lb in labels}.values())
    found = await pool.fetch(
        _LABEL_SOURCE,
        [lb.transaction_id for lb in unique],
        [lb.label == "fraud" for lb in unique],
        [lb.fraud_kind for lb in unique],
        [lb.label_time or now for lb in unique],
    )
    by_id = {r["transaction_id"]: r for r in found}
    waiting = [lb.transaction_id for lb in unique if lb.transaction_id not in by_id]
    todo = [r for r in found if not r["labelled"]]
    fraud = [CardLabel(r["card_id"], r["label_time"]) for r in todo if r["is_fraud"]]
    if fraud:
        await graph.upsert_card_labels(fraud)
    inserted: set[str] = set()
    if todo:
        rows = await pool.fetch(
            _INSERT_LABELS,
            *(
                [r[c] for r in todo]
                for c in (
                    "transaction_id",
                    "card_id",
                    "merchant_id",
                    "transaction_time",
                    "is_fraud",
                    "fraud_kind",
                    "label_time",
                )
            ),
        )
        inserted = {r["transaction_id"] for r in rows}
    new = [
        LabelRow(r["transaction_id"], r["card_id"], r["merchant_id"], r["is_fraud"], r["label_time"])
        for r in todo
        if r["transaction_id"] in inserted
    ]
    if waiting:
        parked = [lb for lb in unique if lb.transaction_id in set(waiting)]
        await pool.execute(
            """INSERT INTO pending_labels (transaction_id, is_fraud, fraud_kind, label_time)
               SELECT * FROM unnest($1::text[], $2::bool[], $3::text[], $4::timestamptz[])
               ON CONFLICT (transaction_id) DO NOTHING""",
            [lb.transaction_id for lb in parked],
            [lb.label == "fraud" for lb in parked],
            [lb.fraud_kind for lb in parked],
            [lb.label_time or now for lb in parked],
        )
    return LabelWrite(new=new, duplicates=len(labels) - len(new) - len(waiting), waiting=waiting)


async def take_pending_labels(pool: asyncpg.Pool, transaction_ids: Sequence[str]) -> list[Label]:
    """The parked labels of these (just ingested) transactions. They stay parked until `drop_pending_labels`,
    after they were written, so a crash in between loses none."""
    rows = await pool.fetch(
        """SELECT transaction_id, is_fraud, fraud_kind, label_time FROM pending_labels
           WHERE transaction_id = ANY($1::text[])""",
        list(transaction_ids),
    )
    return [
        Label(
            transaction_id=r["transaction_id"],
            label="fraud" if r["is_fraud"] else "legit",
            fraud_kind=r["fraud_kind"],
            label_time=r["label_time"],
        )
        for r in rows
    ]


async def drop_pending_labels(pool: asyncpg.Pool, transaction_ids: Sequence[str]) -> None:
    await pool.execute("DELETE FROM pending_labels WHERE transaction_id = ANY($1::text[])", list(transaction_ids))
