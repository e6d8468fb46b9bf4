"""LightGCN (torch-geometric) on the bipartite user-item graph, trained with BPR, and the conversion head.
`layers=0` is matrix factorisation: the same embeddings and loss without propagation (the non-graph baseline)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import LGConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import to_torch_csr_tensor


@dataclass(frozen=True)
class GraphOptions:
    dim: int = 32
    layers: int = 3
    epochs: int = 25
    batch: int = 4096
    lr: float = 0.01
    reg: float = 1e-4
    seed: int = 0


def normalized_adjacency(edges: np.ndarray, n_users: int, n_items: int) -> torch.Tensor:
    """D^-1/2 A D^-1/2 of the bipartite graph (users first, then items) as a CSR tensor, computed once."""
    u = torch.as_tensor(edges[:, 0])
    i = torch.as_tensor(edges[:, 1]) + n_users
    ei = torch.stack([torch.cat([u, i]), torch.cat([i, u])])
    n = n_users + n_items
    ei, w = gcn_norm(ei, None, n, add_self_loops=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        return to_torch_csr_tensor(ei, w, size=(n, n))


class LightGCN(nn.Module):
    """Embeddings averaged over `layers` rounds of LightGCN propagation (torch-geometric `LGConv` on the
    pre-normalised adjacency); `layers=0` is plain matrix factorisation."""

    def __init__(self, n_nodes: int, dim: int, layers: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_nodes, dim)
        nn.init.normal_(self.embedding.weight, std=0.1)
        self.layers = layers
        self.conv = LGConv(normalize=False)

    def forward(self, adj: torch.Tensor) -> torch.Tensor:
        x = self.embedding.weight
        out = x
        for _ in range(self.layers):
            x = self.conv(x, adj)
            out = out + x
        return out / (self.layers + 1)


def train_embeddings(
    edges: np.ndarray, n_users: int, n_items: int, opts: GraphOptions
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Propagated (layers > 0) or raw (layers = 0) user and item embeddings trained with BPR on the history's
    interactions (one random negative item per positive), and the loss per epoch."""
    torch.manual_seed(opts.seed)
    gen = torch.Generator().manual_seed(opts.seed)
    model = LightGCN(n_users + n_items, opts.dim, opts.layers)
    adj = normalized_adjacency(edges, n_users, n_items)
    pos = torch.as_tensor(edges)
    optim = torch.optim.Adam(model.parameters(), lr=opts.lr)
    losses: list[float] = []
    for _ in range(opts.epochs):
        perm = torch.randperm(len(pos), generator=gen)
        total = 0.0
        for start in range(0, len(pos), opts.batch):
            b = pos[perm[start : start + opts.batch]]
            neg = torch.randint(0, n_items, (len(b),), generator=gen) + n_users
            emb = model(adj)
            u, p, q = emb[b[:, 0]], emb[b[:, 1] + n_users], emb[neg]
            bpr = -F.logsigmoid((u * p).sum(-1) - (u * q).sum(-1)).mean()
            ego = model.embedding.weight
            reg = opts.reg * (ego[b[:, 0]].pow(2).sum() + ego[b[:, 1] + n_users].pow(2).sum() + ego[neg].pow(2).sum())
            loss = bpr + reg / len(b)
            optim.zero_grad()
            loss.backward()
            optim.step()
            total += float(loss.detach()) * len(b)
        losses.append(total / len(pos))
    with torch.no_grad():
        emb = model(adj).numpy()
    return emb[:n_users].astype(np.float32), emb[n_users:].astype(np.float32), losses


class ConversionHead(nn.Module):
    """P(bought | viewed): a logistic head over the pair's affinity (the embeddings' dot product) and the
    standardised context vector. (A hidden layer over the elementwise product overfits the few labelled views.)"""

    def __init__(self, n_context: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(1 + n_context)
        self.linear = nn.Linear(1 + n_context, 1)

    def forward(self, u: torch.Tensor, i: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = torch.cat([(u * i).sum(-1, keepdim=True), context], dim=-1)
        return self.linear(self.norm(x)).squeeze(-1)


def train_head(
    users: np.ndarray, items: np.ndarray, u: np.ndarray, i: np.ndarray, context: np.ndarray, y: np.ndarray, seed: int
) -> ConversionHead:
    torch.manual_seed(seed)
    head = ConversionHead(context.shape[1])
    ue, ie = torch.as_tensor(users[u]), torch.as_tensor(items[i])
    ctx, target = torch.as_tensor(context), torch.as_tensor(y)
    optim = torch.optim.Adam(head.parameters(), lr=0.05)
    loss_fn = nn.BCEWithLogitsLoss()
    head.train()
    for _ in range(300):
        optim.zero_grad()
        loss = loss_fn(head(ue, ie, ctx), target)
        loss.backward()
        optim.step()
    return head.eval()


def head_scores(
    head: ConversionHead, users: np.ndarray, items: np.ndarray, u: np.ndarray, i: np.ndarray, context: np.ndarray
) -> np.ndarray:
    with torch.no_grad():
        logits = head(torch.as_tensor(users[u]), torch.as_tensor(items[i]), torch.as_tensor(context))
    return torch.sigmoid(logits).numpy()
