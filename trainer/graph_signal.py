"""How much a world's graph can tell about fraud through known labels, whatever the model: for each row, the
fraud-labelled cards (label known at the start of the row's day) within 1, 2 and 3 card-hops through devices and
IPs (a card-hop is card-entity-card; public entities with more than `max_degree` cards are not walked), and the
size of the card's component through those entities.

An upper bound in spirit on what message passing over labels and structure can add: if ring rows are hardly
more often near a known fraud than legit rows, no GNN over this graph can score rings much better.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from trainer.bootstrap import pr_auc
from trainer.data import US_PER_DAY, Ledger
from trainer.local_graph import _pair_first_seen, first_label_per_card


def _binary(m: sp.csr_matrix) -> sp.csr_matrix:
    m = m.tocsr()
    m.data[:] = 1.0
    return m


def hop_features(ledger: Ledger, rows: np.ndarray, max_degree: int = 6) -> dict[str, np.ndarray]:
    n = ledger.n_nodes("card")
    label_first = first_label_per_card(ledger)
    links = {}
    for link in ("device", "ip"):
        _, _, uniq, first = _pair_first_seen(ledger, link)
        ok = uniq >= 0
        links[link] = (uniq[ok] // (n + 1), uniq[ok] % (n + 1), ledger.ts[first[ok]])
    day = ledger.day_of(ledger.ts[rows])
    out = {k: np.zeros(len(rows)) for k in ("hop1", "hop2", "hop3", "component")}
    for d in np.unique(day):
        as_of = ledger.start_us + int(d) * US_PER_DAY
        parts = []
        for link, (e, c, t) in links.items():
            keep = t < as_of
            a = _binary(sp.csr_matrix((np.ones(int(keep.sum())), (c[keep], e[keep])), shape=(n, ledger.n_nodes(link))))
            degree = np.asarray(a.sum(axis=0)).ravel()
            parts.append(a @ sp.diags((degree <= max_degree).astype(float)))
        a = sp.hstack(parts).tocsr()
        c1 = (a @ a.T).tocsr()
        c1.setdiag(0)
        c1.eliminate_zeros()
        c1 = _binary(c1)
        labelled = (label_first < as_of).astype(float)
        c2 = _binary(c1 @ c1 + c1)
        c3 = _binary(c2 @ c1 + c2)
        _, comp = connected_components(c1, directed=False)
        size = np.bincount(comp)
        sel = day == d
        cards = ledger.ent["card"][rows[sel]]
        for name, m in (("hop1", c1), ("hop2", c2), ("hop3", c3)):
            out[name][sel] = (m @ labelled)[cards]
        out["component"][sel] = size[comp[cards]]
    return out


def graph_signal(ledger: Ledger, rows: np.ndarray, weight: np.ndarray, kinds: tuple[str, ...]) -> dict[str, dict]:
    """Per fraud kind: for each hop feature, its PR-AUC alone and the share of that kind's rows and of legit rows
    where it is non-zero (component: above the legit 90th percentile)."""
    feats = hop_features(ledger, rows)
    kind = ledger.kind[rows]
    legit = kind == ""
    out: dict[str, dict] = {}
    for k in kinds:
        m = legit | (kind == k)
        y = kind[m] == k
        res: dict[str, object] = {
            "positives": int(y.sum()),
            "base_rate": round(float(np.sum(weight[m] * y) / np.sum(weight[m])), 5),
        }
        for name, v in feats.items():
            cut = np.percentile(v[legit], 90) if name == "component" else 0.0
            res[name] = {
                "pr_auc": round(pr_auc(y, v[m], weight[m]), 4),
                "share_kind": round(float(np.mean(v[kind == k] > cut)), 3),
                "share_legit": round(float(np.mean(v[legit] > cut)), 3),
            }
        out[k] = res
    return out
