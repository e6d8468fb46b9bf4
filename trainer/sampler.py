"""Neighbour sampling on a graph snapshot, in numpy: the mini-batch subgraph a GraphSAGE layer stack needs.

torch-geometric's `NeighborLoader` needs pyg-lib or torch-sparse for its sampler, and neither installs here as a
wheel; the sampling itself is small, so it lives here. The semantics are NeighborLoader's for a heterogeneous
graph (no trimming):

- the seeds are the entities of a batch of transactions (card, merchant, device, IP), each type's seeds first in
  its node list, in the order given;
- hop h samples, for every node reached at hop h-1 and every edge type that ends at its type, up to `fanout[h]`
  distinct in-neighbours, uniformly without replacement (all of them when it has fewer); the sampled edges keep
  their direction (edge type), so a node aggregates only the neighbours sampled for it;
- a node reached at several hops is one node; the subgraph's edges are local indices into the node lists.

The subgraph has the encoder's input format (`Encoder.encode`), so the encoder trained on it is the one that runs
on full snapshots for validation, export and the daily refresh (`trainer.embed`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.snapshot import LINKS, Snapshot

NODE_TYPES: tuple[str, ...] = ("card", "merchant", "device", "ip")
EdgeType = tuple[str, str, str]
EDGE_TYPES: tuple[EdgeType, ...] = tuple(
    et for link in LINKS for et in (("card", f"to_{link}", link), (link, "to_card", "card"))
)


@dataclass
class Csr:
    """In-neighbours of every destination node of one edge type: `src[ptr[v]:ptr[v + 1]]`."""

    ptr: np.ndarray  # (n_dst + 1,) int64
    src: np.ndarray  # (n_edges,) int64

    @classmethod
    def build(cls, src: np.ndarray, dst: np.ndarray, n_dst: int) -> Csr:
        order = np.argsort(dst, kind="stable")
        ptr = np.zeros(n_dst + 1, dtype=np.int64)
        np.cumsum(np.bincount(dst, minlength=n_dst), out=ptr[1:])
        return cls(ptr=ptr, src=src[order].astype(np.int64))

    def degree(self, nodes: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.ptr[nodes + 1] - self.ptr[nodes]
        return out


@dataclass
class SnapshotGraph:
    """A snapshot's nodes (each type with one extra edge-less 'unseen' node at index n) and per-edge-type CSRs."""

    x: dict[str, np.ndarray]  # node type -> (n + 1, features) float32, the last row all zeros
    csr: dict[EdgeType, Csr]

    @classmethod
    def of(cls, snap: Snapshot) -> SnapshotGraph:
        x = {t: np.vstack([snap.x[t], np.zeros((1, snap.x[t].shape[1]), np.float32)]) for t in NODE_TYPES}
        csr: dict[EdgeType, Csr] = {}
        for link in LINKS:
            card, other = snap.edges[link][0], snap.edges[link][1]
            csr[("card", f"to_{link}", link)] = Csr.build(card, other, len(x[link]))
            csr[(link, "to_card", "card")] = Csr.build(other, card, len(x["card"]))
        return cls(x=x, csr=csr)

    def n_nodes(self, ntype: str) -> int:
        return len(self.x[ntype])


@dataclass
class Subgraph:
    """A sampled subgraph: global ids per type (seeds first), their features, and edges in local indices."""

    nodes: dict[str, np.ndarray]  # type -> global node ids, the type's seeds first
    n_seeds: dict[str, int]
    x: dict[str, np.ndarray]
    edges: dict[EdgeType, np.ndarray]  # edge type -> (2, E): row 0 source, row 1 destination (local ids)

    def seed_index(self, ntype: str, global_ids: np.ndarray) -> np.ndarray:
        """Local index of each of `global_ids` (all must be seeds of that type)."""
        seeds = self.nodes[ntype][: self.n_seeds[ntype]]
        order = np.argsort(seeds, kind="stable")
        pos = np.searchsorted(seeds, global_ids, sorter=order)
        found = order[np.minimum(pos, len(seeds) - 1)]
        if len(global_ids) and not np.array_equal(seeds[found], global_ids):
            raise ValueError(f"some {ntype} ids are not seeds of this subgraph")
        out: np.ndarray = found
        return out


def choose_without_replacement(deg: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """For each row, `k` distinct positions in [0, deg) (requires deg >= k), uniformly: Floyd's algorithm, one
    step per sampled position, vectorised over the rows. Returns (rows, k) int64."""
    n = len(deg)
    out = np.empty((n, k), dtype=np.int64)
    for i in range(k):
        j = deg - k + i  # Floyd: draw t in [0, j]; if taken, take j (which no earlier step could have taken)
        t = np.floor(rng.random(n) * (j + 1)).astype(np.int64)
        t = np.minimum(t, j)
        taken = (out[:, :i] == t[:, None]).any(axis=1) if i else np.zeros(n, dtype=bool)
        out[:, i] = np.where(taken, j, t)
    return out


def sample_in_neighbours(
    csr: Csr, dst: np.ndarray, fanout: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Up to `fanout` distinct in-neighbours of each of `dst` (all of them when fewer); returns (src, dst) pairs
    in global ids. `fanout < 0` takes every neighbour."""
    deg = csr.degree(dst)
    start = csr.ptr[dst]
    full = deg <= fanout if fanout >= 0 else np.ones(len(dst), dtype=bool)
    # rows that keep every neighbour
    d_full, s_full, n_full = dst[full], start[full], deg[full]
    rep = np.repeat(np.arange(len(d_full)), n_full)
    offs = np.arange(int(n_full.sum())) - np.repeat(np.cumsum(n_full) - n_full, n_full)
    src_a, dst_a = csr.src[s_full[rep] + offs], d_full[rep]
    # rows with more neighbours than the fan-out
    many = ~full
    if not many.any():
        return src_a, dst_a
    pick = choose_without_replacement(deg[many], fanout, rng)
    src_b = csr.src[start[many][:, None] + pick].ravel()
    dst_b = np.repeat(dst[many], fanout)
    return np.concatenate([src_a, src_b]), np.concatenate([dst_a, dst_b])


class _Index:
    """Global -> local ids of one node type, seeds first, growing as hops add nodes."""

    def __init__(self, n_global: int, seeds: np.ndarray) -> None:
        self.local = np.full(n_global, -1, dtype=np.int64)
        self.nodes = [seeds]
        self.count = len(seeds)
        self.local[seeds] = np.arange(len(seeds))

    def add(self, ids: np.ndarray) -> np.ndarray:
        """Add the ids not present yet (in first-seen order); returns the new ones."""
        uniq, first = np.unique(ids, return_index=True)
        new = ids[np.sort(first[self.local[uniq] < 0])]
        self.local[new] = np.arange(self.count, self.count + len(new))
        self.count += len(new)
        self.nodes.append(new)
        return new

    def all(self) -> np.ndarray:
        return np.concatenate(self.nodes)


def sample(
    graph: SnapshotGraph, seeds: dict[str, np.ndarray], fanout: tuple[int, ...], rng: np.random.Generator
) -> Subgraph:
    """The `len(fanout)`-hop sampled subgraph around `seeds` (per type, distinct global ids)."""
    for t, s in seeds.items():
        if len(np.unique(s)) != len(s):
            raise ValueError(f"{t} seeds must be distinct")
    index = {t: _Index(graph.n_nodes(t), np.asarray(seeds.get(t, np.zeros(0, np.int64)), np.int64)) for t in NODE_TYPES}
    frontier = {t: index[t].nodes[0] for t in NODE_TYPES}
    src_parts: dict[EdgeType, list[np.ndarray]] = {et: [] for et in EDGE_TYPES}
    dst_parts: dict[EdgeType, list[np.ndarray]] = {et: [] for et in EDGE_TYPES}
    for k in fanout:
        reached: dict[str, list[np.ndarray]] = {t: [] for t in NODE_TYPES}
        for et in EDGE_TYPES:
            s_type, _, d_type = et
            if not len(frontier[d_type]):
                continue
            src, dst = sample_in_neighbours(graph.csr[et], frontier[d_type], k, rng)
            src_parts[et].append(src)
            dst_parts[et].append(dst)
            reached[s_type].append(src)
        frontier = {
            t: index[t].add(np.concatenate(reached[t])) if reached[t] else np.zeros(0, np.int64) for t in NODE_TYPES
        }
    nodes = {t: index[t].all() for t in NODE_TYPES}
    edges = {}
    for et in EDGE_TYPES:
        s_type, _, d_type = et
        src = np.concatenate(src_parts[et]) if src_parts[et] else np.zeros(0, np.int64)
        dst = np.concatenate(dst_parts[et]) if dst_parts[et] else np.zeros(0, np.int64)
        edges[et] = np.stack([index[s_type].local[src], index[d_type].local[dst]]).astype(np.int64)
    return Subgraph(
        nodes=nodes,
        n_seeds={t: len(index[t].nodes[0]) for t in NODE_TYPES},
        x={t: graph.x[t][nodes[t]] for t in NODE_TYPES},
        edges=edges,
    )
