"""Bulk-load a simulated world into the ledger with COPY.

Loading replaces the ledger's contents (TRUNCATE, then COPY, in one transaction): the world is a complete
snapshot, so re-running the load gives the same rows instead of duplicates, and a failed load leaves the
previous contents untouched. Secondary indexes are dropped for the COPY and rebuilt from their own
definitions afterwards, which is about twice as fast as maintaining them row by row, while the migrations
stay the only place that defines them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import asyncpg
import pyarrow as pa
from tqdm import tqdm

from feature_svc.world import World

CHUNK_ROWS = 50_000

# ledger table -> its columns, in COPY order (the world's tables use the same names)
LEDGER_TABLES: dict[str, tuple[str, ...]] = {
    "cards": (
        "card_id",
        "customer_id",
        "home_country",
        "currency",
        "typical_amount",
        "home_ip",
        "usual_device_ids",
    ),
    "merchants": ("merchant_id", "mcc_code", "country_code"),
    "devices": ("device_id", "device_type"),
    "ips": ("ip_address", "country_code"),
    "transactions": (
        "transaction_id",
        "timestamp",
        "card_id",
        "merchant_id",
        "device_id",
        "ip_address",
        "amount",
        "currency",
        "country_code",
        "mcc_code",
        "channel",
    ),
    "labels": (
        "transaction_id",
        "card_id",
        "merchant_id",
        "transaction_time",
        "is_fraud",
        "fraud_kind",
        "label_time",
    ),
}


def _source(world: World, table: str) -> pa.Table:
    if table == "labels":
        tx = world.transactions
        fraud = tx.filter(tx["is_fraud"])
        return fraud.rename_columns(["transaction_time" if c == "timestamp" else c for c in fraud.column_names])
    return world.table(table)


async def _drop_secondary_indexes(conn: asyncpg.Connection, table: str) -> list[str]:
    """Drop the indexes of `table` that back no constraint; return the statements that recreate them."""
    rows = await conn.fetch(
        """SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition
           FROM pg_index i
           WHERE i.indrelid = $1::regclass
             AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)""",
        table,
    )
    for row in rows:
        await conn.execute(f"DROP INDEX {row['name']}")
    return [row["definition"] for row in rows]


def _records(table: pa.Table, columns: Sequence[str]) -> Iterator[list[tuple[Any, ...]]]:
    for batch in table.select(list(columns)).to_batches(max_chunksize=CHUNK_ROWS):
        yield list(zip(*(col.to_pylist() for col in batch.columns), strict=True))


async def copy_table(
    conn: asyncpg.Connection, table: str, source: pa.Table, columns: Sequence[str], bar: tqdm | None = None
) -> int:
    """COPY `source`'s `columns` into `table` (same column names), with its secondary indexes dropped for
    the COPY and rebuilt after it. Run it inside a transaction, so readers never see the table without
    its indexes. Returns the number of rows copied."""
    recreate = await _drop_secondary_indexes(conn, table)
    for records in _records(source, columns):
        await conn.copy_records_to_table(table, records=records, columns=list(columns))
        if bar is not None:
            bar.update(len(records))
    if bar is not None:
        bar.set_postfix_str(f"{table} indexes")
    for statement in recreate:
        await conn.execute(statement)
    return int(source.num_rows)


async def load_world(pool: asyncpg.Pool, world: World, progress: bool = True) -> dict[str, int]:
    """Replace the ledger's transactions, labels and entities with `world`'s; return rows per table.

    The ledger must be migrated first (`migrate`)."""
    sources = {name: _source(world, name) for name in LEDGER_TABLES}
    total = sum(t.num_rows for t in sources.values())
    counts: dict[str, int] = {}
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(f"TRUNCATE {', '.join(LEDGER_TABLES)}")
        await conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
        bar = tqdm(total=total, desc="loading ledger", unit="row", unit_scale=True, disable=not progress)
        with bar:
            for name, columns in LEDGER_TABLES.items():
                bar.set_postfix_str(name)
                counts[name] = await copy_table(conn, name, sources[name], columns, bar)
    return counts
