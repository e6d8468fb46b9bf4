"""Entity embeddings of a GNN model version, in Redis: loaded once per version, read with the features.

Key `fm:emb:{model version}:{type}:{id}`, value: the embedding as little-endian float32 bytes. The Parquet
beside the model (`EmbeddingSpec.file`) is loaded by the first worker that needs it (a Redis lock makes the
others wait for it instead of loading it again); a marker key says the version is complete. Entities without a
row get the spec's default embedding for their type.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from redis.asyncio import Redis

from inference_svc.artifact import EmbeddingSpec, ModelMetadata

PREFIX = "fm:emb"
LOAD_CHUNK = 5000


def key(version: str, entity_type: str, entity_id: str) -> str:
    return f"{PREFIX}:{version}:{entity_type}:{entity_id}"


class EmbeddingLoadError(RuntimeError):
    pass


async def ensure_embeddings_loaded(
    redis_url: str, model_dir: Path, meta: ModelMetadata, *, wait_s: float = 180.0
) -> int:
    """Load the version's embeddings into Redis unless already there. Returns how many this call wrote."""
    spec = meta.embedding_spec()
    if spec is None:
        return 0
    redis = Redis.from_url(redis_url)
    done, lock = f"{PREFIX}:{meta.version}:_loaded", f"{PREFIX}:{meta.version}:_loading"
    acquired = False
    try:
        if await redis.exists(done):
            return 0
        acquired = bool(await redis.set(lock, "1", nx=True, ex=int(wait_s)))
        if not acquired:
            end = time.monotonic() + wait_s
            while time.monotonic() < end:  # another worker is loading this version
                if await redis.exists(done):
                    return 0
                await asyncio.sleep(0.2)
            raise EmbeddingLoadError(f"embeddings of {meta.version} were not loaded within {wait_s:.0f}s")
        path = model_dir / meta.version / spec.file
        if not path.exists():
            raise EmbeddingLoadError(f"model {meta.version} declares embeddings but {path} is missing")
        import pyarrow.parquet as pq

        table = pq.read_table(path, columns=["entity_type", "entity_id", "embedding"])
        types = table.column("entity_type").to_pylist()
        ids = table.column("entity_id").to_pylist()
        matrix = np.asarray(table.column("embedding").combine_chunks().flatten(), dtype="<f4").reshape(-1, spec.dim)
        written = 0
        for start in range(0, len(ids), LOAD_CHUNK):
            async with redis.pipeline(transaction=False) as pipe:
                for i in range(start, min(start + LOAD_CHUNK, len(ids))):
                    if ids[i]:  # the "" rows are the defaults, kept in the metadata
                        pipe.set(key(meta.version, types[i], ids[i]), matrix[i].tobytes())
                        written += 1
                await pipe.execute()
        await redis.set(done, str(written))
        return written
    finally:
        if acquired:
            await redis.delete(lock)
        await redis.aclose()


class EmbeddingBlock:
    """The `emb_*` columns of a partial for one model version."""

    def __init__(self, spec: EmbeddingSpec, version: str) -> None:
        self.spec = spec
        self.version = version
        self.defaults = {t: np.asarray(spec.default.get(t, [0.0] * spec.dim), dtype=np.float64) for t in spec.types}

    def keys(self, entities: Sequence[tuple[str, str]]) -> list[str]:
        return [key(self.version, t, i) for t, i in entities]

    def vectors(self, entities: Sequence[tuple[str, str]], raw: Sequence[bytes | None]) -> list[np.ndarray]:
        out = []
        for (etype, _), value in zip(entities, raw, strict=True):
            if value is not None and len(value) == 4 * self.spec.dim:
                out.append(np.frombuffer(value, dtype="<f4").astype(np.float64))
            else:
                out.append(self.defaults.get(etype, np.zeros(self.spec.dim)))
        return out
