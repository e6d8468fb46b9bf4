"""The Parquet offline store: point-in-time-correct feature snapshots for training.

One row per exported transaction: its fields, its label as eventually known (`is_fraud`, `fraud_kind`,
`label_time`, so training can keep only labels known at its split time), and the features of its card,
merchant, device and IP *as of that transaction's own timestamp* (nothing at or after it counts). The rows are
computed by `feature_svc.compute.compute_points`, the very code behind `features.compute`, with each row's
timestamp as its own as_of: online and offline values are identical by construction (tests prove it).

Exported: every labelled transaction, plus a deterministic sample (`legit_fraction`, by a hash of the id) of the
unlabelled ones as negatives; `legit_fraction=1` exports everything. Output: a pyarrow dataset partitioned by day,
`out_dir/day=YYYY-MM-DD/part-0.parquet`, plus `out_dir/_feature_set.json` (version and column names).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import pyarrow as pa
import pyarrow.dataset as ds
from tqdm import tqdm

from feature_svc.compute import Point, compute_points
from feature_svc.definitions import ENTITY_COLUMN, ENTITY_TYPES, FEATURE_SET_VERSION, FEATURES

if TYPE_CHECKING:
    from feature_svc.graph.base import GraphStore

TS = pa.timestamp("us", tz="UTC")
META_SCHEMA = pa.schema(
    [
        ("transaction_id", pa.string()),
        ("timestamp", TS),
        ("card_id", pa.string()),
        ("merchant_id", pa.string()),
        ("device_id", pa.string()),
        ("ip_address", pa.string()),
        ("amount", pa.float64()),
        ("country_code", pa.string()),
        ("mcc_code", pa.string()),
        ("channel", pa.string()),
        ("is_fraud", pa.bool_()),
        ("fraud_kind", pa.string()),
        ("label_time", TS),
    ]
)
SCHEMA = pa.schema([*META_SCHEMA, *(pa.field(n, pa.float64()) for n in FEATURES), ("day", pa.string())])

_SELECT = """
SELECT t.transaction_id, t."timestamp", t.card_id, t.merchant_id, t.device_id, t.ip_address, t.amount,
       t.country_code::text, t.mcc_code::text, t.channel,
       coalesce(l.is_fraud, false) AS is_fraud, coalesce(l.fraud_kind, '') AS fraud_kind, l.label_time
FROM transactions t LEFT JOIN labels l ON l.transaction_id = t.transaction_id
WHERE ($1::timestamptz IS NULL OR t."timestamp" >= $1) AND ($2::timestamptz IS NULL OR t."timestamp" < $2)
  AND (l.transaction_id IS NOT NULL
       OR ('x' || substr(md5($4 || t.transaction_id), 1, 8))::bit(32)::bigint / 4294967296.0 < $3)
ORDER BY t."timestamp", t.transaction_id
"""


async def select_transactions(
    pool: asyncpg.Pool,
    *,
    legit_fraction: float = 0.1,
    seed: int = 0,
    start: Any = None,
    end: Any = None,
) -> list[asyncpg.Record]:
    """The transactions to export, in time order: all labelled, plus the sampled unlabelled ones."""
    if not 0.0 <= legit_fraction <= 1.0:
        raise ValueError(f"legit_fraction must be in [0, 1], got {legit_fraction}")
    rows: list[asyncpg.Record] = await pool.fetch(
        _SELECT, start, end, legit_fraction + (1e-12 if legit_fraction >= 1 else 0), str(seed)
    )
    return rows


def _points(rows: list[asyncpg.Record]) -> tuple[list[Point], list[tuple[int, str]]]:
    """Every (entity, as_of) point of the rows, and for each point the row and entity type it belongs to."""
    points: list[Point] = []
    owners: list[tuple[int, str]] = []
    for k, row in enumerate(rows):
        for etype in ENTITY_TYPES:
            eid = row[ENTITY_COLUMN[etype]]
            if eid:
                points.append((etype, eid, row["timestamp"]))
                owners.append((k, etype))
    return points, owners


async def features_for_rows(
    pool: asyncpg.Pool, graph: GraphStore, rows: list[asyncpg.Record]
) -> list[dict[str, float]]:
    """Each row's feature columns, as of its own timestamp (NaN for the features of an absent entity)."""
    points, owners = _points(rows)
    values = await compute_points(pool, graph, points)
    out: list[dict[str, float]] = [dict.fromkeys(FEATURES, float("nan")) for _ in rows]
    for (k, _etype), v in zip(owners, values, strict=True):
        out[k].update(v)
    return out


def _table(rows: list[asyncpg.Record], feats: list[dict[str, float]]) -> pa.Table:
    cols: dict[str, list[Any]] = {name: [r[name] for r in rows] for name in META_SCHEMA.names}
    for name in FEATURES:
        cols[name] = [f[name] for f in feats]
    cols["day"] = [r["timestamp"].strftime("%Y-%m-%d") for r in rows]
    return pa.table(cols, schema=SCHEMA)


async def export_offline(
    pool: asyncpg.Pool,
    graph: GraphStore,
    out_dir: str | Path,
    *,
    legit_fraction: float = 0.1,
    seed: int = 0,
    batch_size: int = 1000,
    concurrency: int = 4,
    start: Any = None,
    end: Any = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the offline store (see the module docstring); returns a summary (rows, fraud rows, days, seconds)."""
    started = time.perf_counter()
    out = Path(out_dir)
    rows = await select_transactions(pool, legit_fraction=legit_fraction, seed=seed, start=start, end=end)
    batches = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    tables: list[pa.Table | None] = [None] * len(batches)
    sem = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(rows), desc="offline features", unit="tx", unit_scale=True, disable=not progress)

    async def run(k: int) -> None:
        async with sem:
            feats = await features_for_rows(pool, graph, batches[k])
            tables[k] = _table(batches[k], feats)
            bar.update(len(batches[k]))

    with bar:
        await asyncio.gather(*(run(k) for k in range(len(batches))))
    table = pa.concat_tables([t for t in tables if t is not None]) if rows else SCHEMA.empty_table()
    summary: dict[str, Any] = {
        "rows": table.num_rows,
        "fraud_rows": sum(1 for r in rows if r["is_fraud"]),
        "days": len(set(table["day"].to_pylist())),
        "feature_set_version": FEATURE_SET_VERSION,
        "features": list(FEATURES),
        "legit_fraction": legit_fraction,
        "seed": seed,
        "seconds": 0.0,
    }
    await asyncio.to_thread(_write, table, out, summary, started)
    return summary


def _write(table: pa.Table, out: Path, summary: dict[str, Any], started: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    ds.write_dataset(
        table,
        out,
        format="parquet",
        partitioning=ds.partitioning(pa.schema([("day", pa.string())]), flavor="hive"),
        existing_data_behavior="delete_matching",
        basename_template="part-{i}.parquet",
    )
    summary["seconds"] = round(time.perf_counter() - started, 3)
    (out / "_feature_set.json").write_text(json.dumps(summary, indent=2) + "\n")


def read_offline(out_dir: str | Path) -> pa.Table:
    """The whole offline store as one table (with its `day` partition column), sorted by time."""
    table = ds.dataset(Path(out_dir), format="parquet", partitioning="hive", schema=SCHEMA).to_table()
    return table.sort_by([("timestamp", "ascending"), ("transaction_id", "ascending")])
