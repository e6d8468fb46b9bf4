"""Neighbour-sampled mini-batches for GNN training: memory bounded by batch size and fan-out, not by the world.

Full-graph training (`TrainConfig.batch_size = 0`) runs the encoder over a day's whole snapshot for each optimiser
step, so its memory and time per step grow with the world. Here a training day's transactions are shuffled into
batches of `batch_size`; each batch's entities (card, merchant, device, IP) are the seeds of a
`len(fanout)`-hop neighbour sample of that day's snapshot (`trainer.sampler`), the encoder runs on that subgraph
only, and the head scores the batch with the seeds' embeddings. Validation, test scoring and export still run the
encoder on full snapshots without gradients (the embeddings serving gets), so the trained encoder is used exactly
as before.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from trainer.gnn import Encoder
from trainer.sampler import NODE_TYPES, SnapshotGraph, sample


def sampled_batches(
    encoder: Encoder,
    graph: SnapshotGraph,
    ent: dict[str, np.ndarray],
    batch_size: int,
    fanout: tuple[int, ...],
    rng: np.random.Generator,
) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor], dict[str, np.ndarray]]]:
    """Per batch of rows: (positions of the batch's rows in `ent`, embeddings of the subgraph's nodes per type,
    each row's local node index per type). `ent[t]` is the entity of each row (the unseen node for an absent one).
    The embeddings carry gradients to the encoder; an encoder switched off (`enabled = False`) gives zeros and
    samples nothing."""
    n = len(next(iter(ent.values())))
    order = rng.permutation(n)
    for lo in range(0, n, batch_size):
        pos = order[lo : lo + batch_size]
        if not getattr(encoder, "enabled", True):
            zeros = {t: torch.zeros((1, encoder.dim)) for t in NODE_TYPES}
            yield pos, zeros, {t: np.zeros(len(pos), dtype=np.int64) for t in NODE_TYPES}
            continue
        seeds = {t: np.unique(ent[t][pos]) for t in NODE_TYPES}
        sub = sample(graph, seeds, fanout, rng)
        x = {t: torch.from_numpy(sub.x[t]) for t in NODE_TYPES}
        ei = {et: torch.from_numpy(e) for et, e in sub.edges.items()}
        emb = encoder.encode(x, ei)
        # seeds are sorted and first in each node list: a row's local index is its entity's rank among the seeds
        index = {t: np.searchsorted(seeds[t], ent[t][pos]) for t in NODE_TYPES}
        yield pos, emb, index
