"""Entity embeddings of a GNN model version, in the inference worker's memory.

Embeddings are static per model version: they ship beside the model as Parquet (`EmbeddingSpec.file`, columns
`entity_type`, `entity_id`, `embedding`) and are loaded with it (inference_svc/model.py), never read from Redis,
so no Redis restart or eviction can change a decision. An entity without a row (new, or absent from the
transaction) gets the spec's default embedding for its type: what the model saw in training for an entity new
to the graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from inference_svc.artifact import ArtifactError, EmbeddingSpec


class EmbeddingBlock:
    """The `emb_*` columns of a partial for one model version."""

    def __init__(
        self,
        spec: EmbeddingSpec,
        version: str,
        rows: dict[tuple[str, str], int] | None = None,
        matrix: np.ndarray | None = None,
    ) -> None:
        self.spec = spec
        self.version = version
        self.defaults = {t: np.asarray(spec.default.get(t, [0.0] * spec.dim), dtype=np.float64) for t in spec.types}
        matrix = matrix if matrix is not None else np.zeros((0, spec.dim), dtype=np.float64)
        # one table: the embeddings, then each type's default (row `default_row[type]`), so that a partial's block
        # is one fancy index; per type, id -> row (a dict per type: the ids of a partial are looked up by type)
        self.table = np.vstack([matrix, *(self.defaults[t][None, :] for t in spec.types)])
        self.matrix = self.table[: len(matrix)]
        """The embeddings (a view of `table`, no copy)."""
        self.default_row = {t: len(matrix) + j for j, t in enumerate(spec.types)}
        self.type_rows: dict[str, dict[str, int]] = {t: {} for t in spec.types}
        for (etype, eid), row in (rows or {}).items():
            self.type_rows.setdefault(etype, {})[eid] = row

    @classmethod
    def load(cls, spec: EmbeddingSpec, version: str, version_dir: Path) -> EmbeddingBlock:
        """Read the version's Parquet file; raises ArtifactError (with the path) when it is missing or wrong."""
        path = version_dir / spec.file
        if not path.is_file():
            raise ArtifactError(f"model {version} declares embeddings but {path} is missing")
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path, columns=["entity_type", "entity_id", "embedding"])
            flat = np.asarray(table.column("embedding").combine_chunks().flatten(), dtype=np.float64)
            matrix = flat.reshape(-1, spec.dim)
        except Exception as exc:
            raise ArtifactError(f"embeddings of {version} in {path} cannot be read: {exc}") from None
        types = table.column("entity_type").to_pylist()
        ids = table.column("entity_id").to_pylist()
        rows = {(t, i): n for n, (t, i) in enumerate(zip(types, ids, strict=True)) if i}  # "" rows: the defaults
        return cls(spec, version, rows, matrix)

    def __len__(self) -> int:
        return sum(len(r) for r in self.type_rows.values())

    def rows_of(self, etype: str, ids: Sequence[str]) -> np.ndarray:
        """Rows of `table` for `ids` of type `etype` (its default row where an id has no embedding), followed by
        one more default row (for a transaction without such an entity)."""
        rows = self.type_rows.get(etype, {})
        default = self.default_row[etype]
        out = np.fromiter((rows.get(i, default) for i in ids), dtype=np.int64, count=len(ids))
        return np.append(out, default)

    def vectors(self, entities: Sequence[tuple[str, str]]) -> list[np.ndarray]:
        rows, matrix, defaults = self.type_rows, self.matrix, self.defaults
        out = []
        for entity in entities:
            row = rows.get(entity[0], {}).get(entity[1])
            if row is not None:
                out.append(matrix[row])
            else:
                out.append(defaults.get(entity[0], np.zeros(self.spec.dim)))
        return out
