"""Refresh a GNN model's entity embeddings from the live ledger, without torch, as a new model version.

Embeddings are part of a model version (inference workers hold them in memory, loaded with the model), so a refresh
makes a new version: the active version's files (head, encoder, metadata) with an `embeddings.parquet` recomputed
from the ledger (PostgreSQL, ingested traffic included): the trainer's numpy graph snapshot as of now through the
model's exported encoder (`encoder.onnx`, onnxruntime). Activating it (`fraudmesh model activate`, which
`fraudmesh embeddings refresh` does for you) makes every worker hot-swap to it without a restart. Until then an
entity that appeared since the last refresh gets the per-type default embedding.

    fraudmesh embeddings refresh            # new version <active>-emb<UTC time>, published and activated
"""

from __future__ import annotations

import hashlib
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from inference_svc.artifact import active_version, read_metadata
from trainer.data import NEVER, Ledger, to_us
from trainer.embed import NODE_TYPES, embeddings_parquet, onnx_embeddings
from trainer.snapshot import edge_table, snapshot

_COLUMNS = {"card": "card_id", "merchant": "merchant_id", "device": "device_id", "ip": "ip_address"}


class EmbeddingRefreshError(RuntimeError):
    """The model cannot be refreshed (no encoder, no embeddings); the message says which and why."""


async def ledger_from_postgres(pool: asyncpg.Pool) -> Ledger:
    """Every ledger transaction, time-ordered, with its fraud label time, as the trainer's `Ledger`. Entity ids
    come from the transactions themselves, so entities first seen by live ingestion are nodes too."""
    rows = await pool.fetch(
        """SELECT t.transaction_id, t."timestamp", t.card_id, t.merchant_id, t.device_id, t.ip_address, t.amount,
                  coalesce(l.is_fraud, false) AS is_fraud, coalesce(l.fraud_kind, '') AS kind, l.label_time
           FROM transactions t LEFT JOIN labels l ON l.transaction_id = t.transaction_id
           ORDER BY t."timestamp", t.transaction_id"""
    )
    ids: dict[str, np.ndarray] = {}
    ent: dict[str, np.ndarray] = {}
    for etype, col in _COLUMNS.items():
        values = [r[col] for r in rows]
        uniq = sorted({v for v in values if v is not None})
        index = {v: k for k, v in enumerate(uniq)}
        ids[etype] = np.asarray(uniq, dtype=object)
        ent[etype] = np.asarray([index.get(v, -1) if v is not None else -1 for v in values], dtype=np.int64)
    ts = np.asarray([to_us(r["timestamp"]) for r in rows], dtype=np.int64)
    is_fraud = np.asarray([bool(r["is_fraud"]) for r in rows], dtype=bool)
    label_time = np.asarray(
        [to_us(r["label_time"]) if r["is_fraud"] and r["label_time"] is not None else NEVER for r in rows],
        dtype=np.int64,
    )
    start = int(ts[0]) if len(ts) else 0
    return Ledger(
        tx_id=np.asarray([r["transaction_id"] for r in rows], dtype=object),
        ts=ts,
        ent=ent,
        ids=ids,
        amount=np.asarray([float(r["amount"]) for r in rows], dtype=np.float64),
        is_fraud=is_fraud,
        kind=np.asarray([r["kind"] for r in rows], dtype=object),
        label_time=label_time,
        start_us=start,
        days=int((int(ts[-1]) - start) // 86_400_000_000) + 1 if len(ts) else 0,
        data_hash="sha256:" + hashlib.sha256(str(len(rows)).encode()).hexdigest()[:16],
        tx_rows=pa.table({"transaction_id": pa.array([], pa.string())}),
    )


async def refresh_embeddings(
    pool: asyncpg.Pool, model_dir: Path, version: str = "", as_of: datetime | None = None
) -> dict[str, object]:
    """Write the refreshed copy of `version` (default: the active one) as a new version; returns a summary with
    its name (`new_version`). Nothing is activated here."""
    started = time.perf_counter()
    version = version or active_version(model_dir)
    base = model_dir / version
    meta = read_metadata(base / "metadata.json")
    spec = meta.embedding_spec()
    if spec is None:
        raise EmbeddingRefreshError(f"model {version} takes no embeddings: nothing to refresh")
    encoder = base / (spec.encoder or "encoder.onnx")
    if not encoder.exists():
        raise EmbeddingRefreshError(f"model {version} has no exported encoder ({encoder} is missing)")
    ledger = await ledger_from_postgres(pool)
    when = as_of or datetime.now(UTC)
    snap = snapshot(ledger, edge_table(ledger), to_us(when))
    table = embeddings_parquet(ledger, snap, onnx_embeddings(encoder, snap))
    root = version.split("-emb", 1)[0][:100]
    new_version = f"{root}-emb{when:%Y%m%d%H%M%S}"
    for n in range(2, 1000):  # never overwrite a version (the source itself, refreshed within the same second)
        if not (model_dir / new_version).exists():
            break
        new_version = f"{root}-emb{when:%Y%m%d%H%M%S}.{n}"
    target = model_dir / new_version
    shutil.copytree(base, target, ignore=shutil.ignore_patterns(spec.file, "metadata.json"))
    pq.write_table(table, target / spec.file, compression="zstd")
    new_spec = msgspec.structs.replace(spec, as_of=when.isoformat())
    new_meta = msgspec.structs.replace(meta, version=new_version, embeddings=new_spec)
    (target / "metadata.json").write_bytes(msgspec.json.format(msgspec.json.encode(new_meta), indent=2))
    return {
        "version": version,
        "new_version": new_version,
        "as_of": when.isoformat(),
        "entities": table.num_rows - len(NODE_TYPES),
        "transactions": len(ledger),
        "seconds": round(time.perf_counter() - started, 2),
    }
