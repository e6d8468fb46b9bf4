"""The registry's 1-hop and 2-hop graph columns, recomputed in numpy for the local feature subset (no PostgreSQL):
what a single-row or 1-hop model can know about devices and IPs, so the world can be checked against it and the
baseline gets the same graph counts the served registry has.

- `{device,ip}_distinct_cards_7d`: distinct cards on the entity in the 7 days before the transaction (exact);
- `{device,ip}_fraud_cards`: cards linked to the entity before the transaction whose first fraud label arrived
  before it (exact);
- `card_new_device_24h`: the card first used this transaction's device within the last 24 hours (exact);
- `card_fraud_cards_2hop`: other fraud-labelled cards reachable card-device-card or card-IP-card, from the graph
  as of the start of the transaction's day (the daily snapshot: an approximation of the registry's as-of query).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from trainer.data import NEVER, US_PER_DAY, Ledger

WEEK = 7 * US_PER_DAY


def first_label_per_card(ledger: Ledger) -> np.ndarray:
    """Per card, when its first fraud label arrived (NEVER if none)."""
    out = np.full(ledger.n_nodes("card"), NEVER, dtype=np.int64)
    fraud = ledger.is_fraud & (ledger.ent["card"] >= 0)
    np.minimum.at(out, ledger.ent["card"][fraud], ledger.label_time[fraud])
    return out


def _pair_first_seen(ledger: Ledger, link: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per transaction: its (entity, card) pair id and the pair's first time; per pair: entity and card."""
    n_cards = ledger.n_nodes("card") + 1
    ent = ledger.ent[link]
    pair = np.where(ent >= 0, ent * n_cards + ledger.ent["card"], -1)
    uniq, first, inverse = np.unique(pair, return_index=True, return_inverse=True)
    first_ts = ledger.ts[first][inverse]
    return pair, first_ts, uniq, first


def distinct_cards_7d(ledger: Ledger, link: str, rows: np.ndarray) -> np.ndarray:
    """Distinct cards that used the entity in [t - 7d, t), t the transaction's time (NaN where it has none)."""
    ent = ledger.ent[link]
    pair, _, _, _ = _pair_first_seen(ledger, link)
    order = np.lexsort((ledger.ts, ent))  # by entity, then time
    e_sorted, t_sorted, p_sorted = ent[order], ledger.ts[order], pair[order]
    # next use of the same pair after each transaction (by time), NEVER when it is the pair's last
    by_pair = np.lexsort((ledger.ts, pair))
    nxt = np.full(len(pair), NEVER, dtype=np.int64)
    same = pair[by_pair][1:] == pair[by_pair][:-1]
    nxt[by_pair[:-1][same]] = ledger.ts[by_pair][1:][same]
    nxt_sorted = nxt[order]
    q_e, q_t = ent[rows], ledger.ts[rows]
    span = int(ledger.ts.max() - ledger.ts.min()) + 2 * WEEK
    comp = (e_sorted.astype(np.int64) + 1) * span + (t_sorted - ledger.ts.min())
    base = (q_e.astype(np.int64) + 1) * span - ledger.ts.min()
    end = np.searchsorted(comp, base + q_t, side="left")
    lo = np.searchsorted(comp, base + q_t - WEEK, side="left")
    count = np.zeros(len(rows))
    k = 1
    while True:
        j = end - k
        live = j >= lo
        if not live.any():
            break
        jj = np.where(live, j, 0)
        # a transaction in the window counts its pair once: when it is the pair's last use before t
        count += live & (nxt_sorted[jj] >= q_t) & (p_sorted[jj] >= 0)
        k += 1
    return np.where(q_e >= 0, count, np.nan)


def fraud_cards(ledger: Ledger, link: str, rows: np.ndarray, label_first: np.ndarray) -> np.ndarray:
    """Cards linked to the entity before t whose first label arrived before t."""
    ent = ledger.ent[link]
    _, _, uniq, first = _pair_first_seen(ledger, link)
    ok = uniq >= 0
    n_cards = ledger.n_nodes("card") + 1
    p_ent, p_card, p_first = uniq[ok] // n_cards, uniq[ok] % n_cards, ledger.ts[first[ok]]
    known_at = np.maximum(p_first, label_first[np.minimum(p_card, len(label_first) - 1)])
    known_at = np.where(p_card < len(label_first), known_at, NEVER)
    keep = known_at < NEVER
    p_ent, known_at = p_ent[keep], known_at[keep]
    t0 = ledger.ts.min() - WEEK
    span = int(ledger.ts.max() - t0) + 2 * WEEK
    times = np.minimum(known_at, ledger.ts.max() + WEEK) - t0  # a later label never counts: clip, keep ordering
    comp = np.sort(p_ent.astype(np.int64) * span + times)
    q_e, q_t = ent[rows], ledger.ts[rows] - t0
    base = np.maximum(q_e, 0).astype(np.int64) * span
    out = (np.searchsorted(comp, base + q_t, side="left") - np.searchsorted(comp, base, side="left")).astype(float)
    return np.where(q_e >= 0, out, np.nan)


def new_device_24h(ledger: Ledger, rows: np.ndarray) -> np.ndarray:
    _, first_ts, _, _ = _pair_first_seen(ledger, "device")
    ok = ledger.ent["device"][rows] >= 0
    return np.where(ok, (ledger.ts[rows] - first_ts[rows] < US_PER_DAY).astype(float), np.nan)


def fraud_cards_2hop(ledger: Ledger, rows: np.ndarray, label_first: np.ndarray) -> np.ndarray:
    """Other cards with a known label reachable through a shared device or IP, as of the start of each row's day."""
    n_cards = ledger.n_nodes("card")
    day = ledger.day_of(ledger.ts[rows])
    out = np.zeros(len(rows))
    links = {}
    for link in ("device", "ip"):
        _, _, uniq, first = _pair_first_seen(ledger, link)
        ok = uniq >= 0
        links[link] = (uniq[ok] // (n_cards + 1), uniq[ok] % (n_cards + 1), ledger.ts[first[ok]])
    for d in np.unique(day):
        as_of = ledger.start_us + int(d) * US_PER_DAY
        labelled = label_first < as_of
        if not labelled.any():
            continue
        reach = None
        has_edge = np.zeros(n_cards, dtype=bool)
        for link, (e, c, t) in links.items():
            keep = t < as_of
            a = sp.csr_matrix((np.ones(int(keep.sum())), (c[keep], e[keep])), shape=(n_cards, ledger.n_nodes(link)))
            a.data[:] = 1.0
            has_edge |= np.diff(a.indptr) > 0
            r = (a @ a[labelled].T).tocsr()
            reach = r if reach is None else reach + r
        assert reach is not None
        reach.eliminate_zeros()
        # distinct labelled cards reached, minus the card itself (a labelled card with any edge reaches itself)
        counts = np.diff(reach.tocsr().indptr) - (labelled & has_edge)
        sel = day == d
        out[sel] = counts[ledger.ent["card"][rows[sel]]]
    return out
