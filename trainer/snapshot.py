"""Graph snapshots as of a time T, in numpy only (no torch): the typed edges first seen strictly before T and the
input features of every node from transactions before T and fraud labels known before T.

The GNN encoder runs on a snapshot; `trainer.embed` runs the ONNX-exported encoder on one, so an embedding
refresh needs numpy and onnxruntime only. Every node of the world has a row: a node not yet seen at T has all-zero
features and no edges, so its embedding is exactly the type's default embedding (what serving uses for an entity
it has no embedding for).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from trainer.data import Ledger

LINKS: tuple[str, ...] = ("device", "ip", "merchant")  # every edge joins a card to one of these
SMALL_AMOUNT = 5.0
NODE_FEATURES: dict[str, tuple[str, ...]] = {
    "card": (
        "seen",
        "log_txns",
        "log_devices",
        "log_ips",
        "log_merchants",
        "fraud_known",
        "log_mean_amount",
        "log_days_active",
    ),
    "device": ("seen", "log_txns", "log_cards", "log_fraud_cards", "fraud_card_share"),
    "ip": ("seen", "log_txns", "log_cards", "log_fraud_cards", "fraud_card_share"),
    "merchant": ("seen", "log_txns", "log_cards", "log_fraud_txns", "fraud_txn_share", "small_share"),
}


@dataclass
class EdgeTable:
    """Unique (card, entity) pairs per link type, with the time of their first transaction."""

    card: dict[str, np.ndarray]
    other: dict[str, np.ndarray]
    first_seen: dict[str, np.ndarray]


def edge_table(ledger: Ledger) -> EdgeTable:
    card_all = ledger.ent["card"]
    out = EdgeTable({}, {}, {})
    n_cards = ledger.n_nodes("card") + 1
    for link in LINKS:
        other = ledger.ent[link]
        ok = (other >= 0) & (card_all >= 0)
        pair = other[ok] * n_cards + card_all[ok]
        uniq, first = np.unique(pair, return_index=True)  # ledger is time-ordered: first index = first time
        out.card[link] = (uniq % n_cards).astype(np.int64)
        out.other[link] = (uniq // n_cards).astype(np.int64)
        out.first_seen[link] = ledger.ts[ok][first]
    return out


@dataclass
class Snapshot:
    as_of: int
    x: dict[str, np.ndarray]  # node type -> (n_nodes, n_features) float32
    edges: dict[str, np.ndarray]  # link type -> (2, n_edges) int64: row 0 card, row 1 the other node


def _log(v: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.log1p(np.maximum(v, 0.0))
    return out


def snapshot(ledger: Ledger, edges: EdgeTable, as_of: int, label_cutoff: int | None = None) -> Snapshot:
    """The graph as of `as_of`: edges with first_seen < as_of, transactions before it, labels known before
    min(as_of, label_cutoff)."""
    k = int(np.searchsorted(ledger.ts, as_of, side="left"))  # transactions strictly before as_of
    label_before = as_of if label_cutoff is None else min(as_of, label_cutoff)
    n = {t: ledger.n_nodes(t) for t in ("card", "merchant", "device", "ip")}
    card = ledger.ent["card"][:k]
    amount = ledger.amount[:k]
    known = ledger.is_fraud[:k] & (ledger.label_time[:k] < label_before)
    card_txns = np.bincount(card, minlength=n["card"]).astype(np.float64)
    fraud_card = np.bincount(card[known], minlength=n["card"]) > 0
    amount_sum = np.bincount(card, weights=amount, minlength=n["card"]).astype(np.float64)
    first_ts = np.full(n["card"], np.iinfo(np.int64).max)
    np.minimum.at(first_ts, card, ledger.ts[:k])
    days_active = np.where(card_txns > 0, (as_of - np.minimum(first_ts, as_of)) / 86_400e6, 0.0)

    snap_edges: dict[str, np.ndarray] = {}
    card_deg: dict[str, np.ndarray] = {}
    x: dict[str, np.ndarray] = {}
    for link in LINKS:
        keep = edges.first_seen[link] < as_of
        c, o = edges.card[link][keep], edges.other[link][keep]
        snap_edges[link] = np.stack([c, o])
        card_deg[link] = np.bincount(c, minlength=n["card"]).astype(np.float64)
        present = ledger.ent[link][:k]
        o_txns = np.bincount(present[present >= 0], minlength=n[link]).astype(np.float64)
        o_cards = np.bincount(o, minlength=n[link]).astype(np.float64)
        o_fraud_cards = np.bincount(o, weights=fraud_card[c], minlength=n[link]).astype(np.float64)
        seen = (o_txns > 0).astype(np.float64)
        if link == "merchant":
            m = ledger.ent["merchant"][:k]
            ok = m >= 0
            fraud_txns = np.bincount(m[ok & known], minlength=n[link]).astype(np.float64)
            small = np.bincount(m[ok & (amount < SMALL_AMOUNT)], minlength=n[link]).astype(np.float64)
            share = np.divide(fraud_txns, o_txns, out=np.zeros_like(o_txns), where=o_txns > 0)
            small_share = np.divide(small, o_txns, out=np.zeros_like(o_txns), where=o_txns > 0)
            cols = [seen, _log(o_txns), _log(o_cards), _log(fraud_txns), share, small_share]
        else:
            share = np.divide(o_fraud_cards, o_cards, out=np.zeros_like(o_cards), where=o_cards > 0)
            cols = [seen, _log(o_txns), _log(o_cards), _log(o_fraud_cards), share]
        x[link] = np.column_stack(cols).astype(np.float32)
    mean_amount = np.divide(amount_sum, card_txns, out=np.zeros_like(amount_sum), where=card_txns > 0)
    x["card"] = np.column_stack(
        [
            (card_txns > 0).astype(np.float64),
            _log(card_txns),
            _log(card_deg["device"]),
            _log(card_deg["ip"]),
            _log(card_deg["merchant"]),
            fraud_card.astype(np.float64),
            _log(mean_amount),
            _log(days_active),
        ]
    ).astype(np.float32)
    for t, names in NODE_FEATURES.items():
        assert x[t].shape[1] == len(names), t
    return Snapshot(as_of=as_of, x=x, edges=snap_edges)


class DailySnapshots:
    """The snapshots at the start of each day 0..days, computed on demand and kept in a small LRU cache: memory
    holds `cache` snapshots whatever the number of days (a 1M-transaction world no longer keeps 43 full graphs)."""

    def __init__(self, ledger: Ledger, edges: EdgeTable, days: int, start_us: int, cache: int = 4) -> None:
        self.ledger, self.edges, self.days, self.start_us, self.cache = ledger, edges, days, start_us, cache
        self._lru: OrderedDict[int, Snapshot] = OrderedDict()

    def __len__(self) -> int:
        return self.days + 1

    def __getitem__(self, day: int) -> Snapshot:
        d = int(day) % len(self) if int(day) < 0 else int(day)
        if not 0 <= d < len(self):
            raise IndexError(f"day {day} outside 0..{self.days}")
        if d in self._lru:
            self._lru.move_to_end(d)
            return self._lru[d]
        snap = snapshot(self.ledger, self.edges, self.start_us + d * 86_400_000_000)
        self._lru[d] = snap
        if len(self._lru) > self.cache:
            self._lru.popitem(last=False)
        return snap
