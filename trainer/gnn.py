"""The torch models: a heterogeneous GraphSAGE encoder over cards, merchants, devices and IPs, and a transaction
head that scores [transaction fields | registry features | embeddings of the card, merchant, device and IP]."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch_geometric.nn import HeteroConv, SAGEConv

from trainer.snapshot import LINKS, NODE_FEATURES, Snapshot

NODE_TYPES: tuple[str, ...] = ("card", "merchant", "device", "ip")
EDGE_TYPES: list[tuple[str, str, str]] = [
    et for link in LINKS for et in (("card", f"to_{link}", link), (link, "to_card", "card"))
]


def edge_index_dict(edges: dict[str, torch.Tensor]) -> dict[tuple[str, str, str], torch.Tensor]:
    """Card->entity edges (row 0 card, row 1 entity) in both directions, keyed by PyG edge type."""
    out = {}
    for link in LINKS:
        e = edges[link]
        out[("card", f"to_{link}", link)] = e
        out[(link, "to_card", "card")] = e.flip(0)
    return out


class Encoder(nn.Module):
    """Per-type input projection, `layers` rounds of HeteroConv(SAGEConv, mean aggregation) with residuals, and a
    per-type output projection to `dim`-wide entity embeddings."""

    def __init__(self, hidden: int = 32, dim: int = 16, layers: int = 2) -> None:
        super().__init__()
        self.inp = nn.ModuleDict({t: nn.Linear(len(NODE_FEATURES[t]), hidden) for t in NODE_TYPES})
        self.convs = nn.ModuleList(
            HeteroConv({et: SAGEConv(hidden, hidden) for et in EDGE_TYPES}, aggr="sum") for _ in range(layers)
        )
        self.out = nn.ModuleDict({t: nn.Linear(hidden, dim) for t in NODE_TYPES})
        self.dim = dim

    def forward(self, x: dict[str, torch.Tensor], edges: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.encode(x, edge_index_dict(edges))

    def encode(
        self, x: dict[str, torch.Tensor], ei: dict[tuple[str, str, str], torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The embeddings given directed edges per PyG edge type (a full snapshot's edges in both directions, or a
        sampled subgraph's, where a node aggregates only the in-neighbours sampled for it)."""
        h = {t: torch.relu(self.inp[t](x[t])) for t in NODE_TYPES}
        for conv in self.convs:
            m = conv(h, ei)
            h = {t: h[t] + torch.relu(m[t]) for t in NODE_TYPES}
        return {t: self.out[t](h[t]) for t in NODE_TYPES}


class EncoderOnnx(nn.Module):
    """The encoder with positional tensors, for ONNX: node features per type, then card->entity edges per link."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x_card, x_merchant, x_device, x_ip, e_device, e_ip, e_merchant):  # type: ignore[no-untyped-def]
        x = {"card": x_card, "merchant": x_merchant, "device": x_device, "ip": x_ip}
        out = self.encoder(x, {"device": e_device, "ip": e_ip, "merchant": e_merchant})
        return out["card"], out["merchant"], out["device"], out["ip"]


class Head(nn.Module):
    """Scores one matrix [tx fields (n_tx) | registry features (n_tab) | 4 embeddings], raw values in: NaN -> 0,
    signed log1p on the registry features, standardisation with the training means, then an MLP and a sigmoid.
    Everything is inside the module so the ONNX file takes the raw input tuple the inference worker builds."""

    def __init__(self, n_tx: int, n_tab: int, dim: int, mean: np.ndarray, std: np.ndarray, hidden: int = 64) -> None:
        super().__init__()
        self.n_tx, self.n_tab, self.dim = n_tx, n_tab, dim
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        n_in = n_tx + n_tab + 4 * dim
        self.mlp = nn.Sequential(
            nn.Linear(n_in, hidden), nn.ReLU(), nn.Dropout(0.1), nn.Linear(hidden, 32), nn.ReLU(), nn.Linear(32, 1)
        )

    @staticmethod
    def transform(raw: torch.Tensor, n_tx: int) -> torch.Tensor:
        raw = torch.where(torch.isnan(raw), torch.zeros_like(raw), raw)
        tx, tab = raw[:, :n_tx], raw[:, n_tx:]
        return torch.cat([tx, torch.sign(tab) * torch.log1p(torch.abs(tab))], dim=1)

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        k = self.n_tx + self.n_tab
        z = (self.transform(x[:, :k], self.n_tx) - self.mean) / self.std
        return self.mlp(torch.cat([z, x[:, k:]], dim=1)).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logit(x))


def snapshot_tensors(snap: Snapshot) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    x = {t: torch.from_numpy(snap.x[t]) for t in NODE_TYPES}
    e = {link: torch.from_numpy(snap.edges[link]) for link in LINKS}
    return x, e
