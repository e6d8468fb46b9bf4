"""Refresh the entity embeddings without torch: the snapshot of the graph as of a time (numpy) through the
exported encoder (onnxruntime), written as `embeddings.parquet` in the artifact's layout.

    python -m trainer.embed --model-dir var/models --world var/world [--as-of 2026-10-13T00:00:00+00:00]

The feature workers load the Parquet into Redis. Run it daily: the model was trained with embeddings at most
one day old (each transaction saw the snapshot at the start of its day).
"""

from __future__ import annotations

import argparse
import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from inference_svc.artifact import active_version, read_metadata
from trainer.data import Ledger, ledger_from_world, to_us
from trainer.snapshot import LINKS, Snapshot, edge_table, snapshot

NODE_TYPES = ("card", "merchant", "device", "ip")


def onnx_embeddings(encoder_path: Path, snap: Snapshot) -> dict[str, np.ndarray]:
    """Per-type embeddings of every node of the snapshot plus, last, the type's default ('unseen') embedding."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(encoder_path), providers=["CPUExecutionProvider"])
    feeds: dict[str, np.ndarray] = {}
    for t in NODE_TYPES:
        x = snap.x[t]
        feeds[f"x_{t}"] = np.vstack([x, np.zeros((1, x.shape[1]), np.float32)])
    for link in LINKS:
        feeds[f"edges_{link}"] = snap.edges[link].astype(np.int64)
    wanted = {i.name for i in sess.get_inputs()}
    outs = sess.run(None, {k: v for k, v in feeds.items() if k in wanted})
    return dict(zip(NODE_TYPES, outs, strict=True))


def embeddings_parquet(ledger: Ledger, snap: Snapshot, emb: dict[str, np.ndarray]) -> pa.Table:
    types, ids, vecs = [], [], []
    for t in NODE_TYPES:
        seen = np.flatnonzero(snap.x[t][:, 0] > 0)
        types += [t] * (len(seen) + 1)
        ids += [*ledger.ids[t][seen].tolist(), ""]
        vecs.append(np.vstack([emb[t][seen], emb[t][-1:]]))
    mat = np.vstack(vecs).astype(np.float32)
    return pa.table(
        {
            "entity_type": pa.array(types, pa.string()),
            "entity_id": pa.array(ids, pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), mat.shape[1]),
        }
    )


def main(argv: list[str] | None = None) -> int:
    from feature_svc.world import read_world

    ap = argparse.ArgumentParser(prog="python -m trainer.embed", description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", type=Path, default=Path(os.environ.get("FRAUDMESH_MODEL_DIR", "var/models")))
    ap.add_argument("--version", default="")
    ap.add_argument("--world", type=Path, required=True, help="the ledger as a world directory")
    ap.add_argument("--as-of", type=datetime.fromisoformat, help="default: now")
    ap.add_argument("--out", type=Path, help="default: <model-dir>/<version>/embeddings.parquet")
    args = ap.parse_args(argv)
    version = args.version or active_version(args.model_dir)
    base = args.model_dir / version
    meta = read_metadata(base / "metadata.json")
    ledger = ledger_from_world(read_world(args.world))
    as_of = to_us(args.as_of) if args.as_of else int(np.iinfo(np.int64).max // 2)
    snap = snapshot(ledger, edge_table(ledger), as_of)
    declared = meta.training.get("embeddings")
    encoder = str(declared.get("encoder", "encoder.onnx")) if isinstance(declared, dict) else "encoder.onnx"
    emb = onnx_embeddings(base / encoder, snap)
    out = args.out or base / "embeddings.parquet"
    pq.write_table(embeddings_parquet(ledger, snap, emb), out, compression="zstd")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
