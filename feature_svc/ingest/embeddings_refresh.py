"""Refresh a GNN model's entity embeddings from the live ledger, without torch, and swap them in without a restart.

The ledger (PostgreSQL, ingested traffic included) becomes the trainer's numpy `Ledger`; its graph snapshot as of
now goes through the model's exported encoder (`encoder.onnx`, onnxruntime), and every entity the snapshot has seen
gets its embedding written to Redis under the key the inference workers read (`fm:emb:{version}:{type}:{id}`), so
the next partial uses it. An entity that appeared since the last refresh has no key until then, and the workers
give it the per-type default embedding (what the model saw in training for a new entity).

    fraudmesh embeddings refresh [--version V]            # once
    FRAUDMESH_EMBEDDINGS_REFRESH_S=3600                   # feature workers: every hour
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import numpy as np
import pyarrow as pa
from redis.asyncio import Redis

from inference_svc.artifact import active_version, read_metadata
from inference_svc.embeddings import key
from trainer.data import NEVER, Ledger, to_us
from trainer.embed import NODE_TYPES, onnx_embeddings
from trainer.snapshot import edge_table, snapshot

_COLUMNS = {"card": "card_id", "merchant": "merchant_id", "device": "device_id", "ip": "ip_address"}
CHUNK = 5000


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
    pool: asyncpg.Pool, redis: Redis, model_dir: Path, version: str = "", as_of: datetime | None = None
) -> dict[str, object]:
    """Recompute and write the embeddings of `version` (default: the active one). Returns a summary."""
    started = time.perf_counter()
    version = version or active_version(model_dir)
    meta = read_metadata(model_dir / version / "metadata.json")
    spec = meta.embedding_spec()
    if spec is None:
        raise EmbeddingRefreshError(f"model {version} takes no embeddings: nothing to refresh")
    encoder = model_dir / version / (spec.encoder or "encoder.onnx")
    if not encoder.exists():
        raise EmbeddingRefreshError(f"model {version} has no exported encoder ({encoder} is missing)")
    ledger = await ledger_from_postgres(pool)
    when = as_of or datetime.now(UTC)
    snap = snapshot(ledger, edge_table(ledger), to_us(when))
    emb = onnx_embeddings(encoder, snap)
    written = 0
    for t in NODE_TYPES:
        seen = np.flatnonzero(snap.x[t][:, 0] > 0)
        vectors = np.asarray(emb[t][seen], dtype="<f4")
        for start in range(0, len(seen), CHUNK):
            async with redis.pipeline(transaction=False) as pipe:
                for k in range(start, min(start + CHUNK, len(seen))):
                    pipe.set(key(version, t, str(ledger.ids[t][seen[k]])), vectors[k].tobytes())
                await pipe.execute()
        written += len(seen)
    return {
        "version": version,
        "as_of": when.isoformat(),
        "written": written,
        "transactions": len(ledger),
        "seconds": round(time.perf_counter() - started, 2),
    }
