"""The Parquet offline store of the personalization features: point-in-time snapshots of the user, item and session
rows, built from the clickstream's event log (PostgreSQL `click_events`, written by the FRAUD_CLICKS consumer) with
the definitions the online rows and the trainer use (feature_svc/world/personalization/features.py).

A snapshot at `as_of` holds, for every user, item and session with at least one event before it, the row computed
from the events before `as_of` only (nothing at or after it counts): a training example at time t joins the last
snapshot at or before t and never sees the future. Snapshots are taken every `every_s` (default a day) at multiples
of it (UTC midnights), from the first one after the first event to the first one after the last event.

Output: a pyarrow dataset `out_dir/entity_type=<user|item|session>/day=YYYY-MM-DD/part-0.parquet` (columns
`entity_id`, `as_of`, then the entity type's features, null where a value is undefined, e.g. a user's usual price
before any view) and `out_dir/_feature_set.json` (version, columns, snapshots, rows).

    fraudmesh features export --family personalization --out var/offline-personalization
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from feature_svc.ingest.clicks import event_log
from feature_svc.world.personalization.features import (
    FEATURE_SET_VERSION,
    ITEM_FEATURES,
    SESSION_FEATURES,
    USER_FEATURES,
    item_features,
    session_features,
    user_features,
)

TS = pa.timestamp("us", tz="UTC")
ENTITY_FEATURES: dict[str, tuple[str, ...]] = {
    "user": USER_FEATURES,
    "item": ITEM_FEATURES,
    "session": SESSION_FEATURES,
}
COUNTS = ("views", "carts", "purchases")
ACTIVITY: dict[str, tuple[str, ...]] = {"user": COUNTS, "item": COUNTS, "session": ("events",)}
"""A row is written once its entity has an event before the snapshot (any of these counts > 0)."""
PARTITIONS = pa.schema([("entity_type", pa.string()), ("day", pa.string())])

_ALL_EVENTS = """
SELECT user_id, item_id, session_id, event_type, extract(epoch FROM event_time)::float8 AS t, item_category, item_price
FROM click_events ORDER BY event_time, event_id
"""


def schema(entity_type: str) -> pa.Schema:
    names = ENTITY_FEATURES[entity_type]
    return pa.schema([("entity_id", pa.string()), ("as_of", TS), *(pa.field(n, pa.float64()) for n in names)])


def snapshot_times(first: float, last: float, every_s: float) -> list[float]:
    """Multiples of `every_s` (epoch seconds): the first after `first` up to the first after `last`."""
    k0, k1 = math.floor(first / every_s) + 1, math.floor(last / every_s) + 1
    return [k * every_s for k in range(k0, k1 + 1)]


def _tables(rows: Sequence[Sequence[Any]], times: list[float]) -> dict[str, list[pa.Table]]:
    log = event_log(rows)
    ids = {"user": log.users, "item": log.items, "session": log.sessions}
    compute = {"user": user_features, "item": item_features, "session": session_features}
    out: dict[str, list[pa.Table]] = {e: [] for e in ENTITY_FEATURES}
    for as_of in times:
        stamp = datetime.fromtimestamp(as_of, UTC)
        day = stamp.strftime("%Y-%m-%d")
        for etype, names in ENTITY_FEATURES.items():
            table = compute[etype](log, as_of)
            active = np.zeros(len(table), dtype=bool)
            for name in ACTIVITY[etype]:
                active |= table[:, names.index(name)] > 0
            keep = np.flatnonzero(active)
            cols: dict[str, Any] = {
                "entity_id": [ids[etype][k] for k in keep],
                "as_of": [stamp] * len(keep),
                **{n: pa.array(table[keep, j], mask=~np.isfinite(table[keep, j])) for j, n in enumerate(names)},
            }
            t = pa.table(cols, schema=schema(etype))
            out[etype].append(
                t.append_column("entity_type", pa.array([etype] * len(keep))).append_column(
                    "day", pa.array([day] * len(keep))
                )
            )
    return out


async def export_click_snapshots(pool: asyncpg.Pool, out_dir: str | Path, every_s: float = 86_400.0) -> dict[str, Any]:
    """Write the snapshots (see the module docstring); returns the summary also written to `_feature_set.json`."""
    started = time.perf_counter()
    rows = [tuple(r) for r in await pool.fetch(_ALL_EVENTS)]
    if not rows:
        raise ValueError("the event log (click_events) is empty: publish clickstream events first (FRAUD_CLICKS)")
    times = snapshot_times(float(rows[0][4]), float(rows[-1][4]), every_s)
    tables = await asyncio.to_thread(_tables, rows, times)
    summary: dict[str, Any] = {
        "feature_set_version": FEATURE_SET_VERSION,
        "events": len(rows),
        "every_s": every_s,
        "snapshots": [datetime.fromtimestamp(t, UTC).isoformat() for t in times],
        "rows": {e: sum(t.num_rows for t in ts) for e, ts in tables.items()},
        "columns": {e: list(names) for e, names in ENTITY_FEATURES.items()},
        "seconds": 0.0,
    }
    await asyncio.to_thread(_write, tables, Path(out_dir), summary, started)
    return summary


def _write(tables: dict[str, list[pa.Table]], out: Path, summary: dict[str, Any], started: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for parts in tables.values():
        if not parts:
            continue
        ds.write_dataset(
            pa.concat_tables(parts),
            out,
            format="parquet",
            partitioning=ds.partitioning(PARTITIONS, flavor="hive"),
            existing_data_behavior="delete_matching",
            basename_template="part-{i}.parquet",
        )
    summary["seconds"] = round(time.perf_counter() - started, 3)
    (out / "_feature_set.json").write_text(json.dumps(summary, indent=2) + "\n")


def read_click_snapshots(out_dir: str | Path, entity_type: str) -> pa.Table:
    """One entity type's snapshots, sorted by (as_of, entity_id)."""
    where = Path(out_dir) / f"entity_type={entity_type}"
    columns = pa.schema([*schema(entity_type), ("day", pa.string())])
    table = ds.dataset(where, format="parquet", partitioning="hive", schema=columns).to_table()
    return table.sort_by([("as_of", "ascending"), ("entity_id", "ascending")])
