"""Tabular features per transaction, point in time (as of the transaction's own timestamp, nothing at or after it).

Two sources, both named by the feature registry (`feature_svc.definitions.FEATURES`) so training and serving
read the same columns in the same order:

- `offline_features`: the Parquet offline store written by `feature_svc.offline.export_offline`, i.e. the very
  SQL and graph computations behind `features.compute` and the Redis online store. This is the production path.
- `local_features`: a numpy re-computation of a subset of the registry (velocity counts and sums, recency,
  degrees, known labels) straight from the world, with the same point-in-time rule. It needs no PostgreSQL, so
  the fast tests and a quick prototype can run; it is not what a served model should be trained on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from feature_svc.definitions import FEATURES
from trainer.data import US_PER_DAY, Ledger

US_PER_HOUR = US_PER_DAY // 24
WINDOWS = {"1h": US_PER_HOUR, "24h": US_PER_DAY, "7d": 7 * US_PER_DAY}


@dataclass
class Tabular:
    """The rows of the ledger that have tabular features, their features, and a sampling weight per row."""

    rows: np.ndarray  # int64 indices into the ledger
    x: np.ndarray  # (len(rows), len(names)) float64, NaN where an entity is absent
    names: list[str]
    weight: np.ndarray  # 1 / sampling rate: legit rows of a sampled offline store weigh more
    source: str
    tx_table: pa.Table | None = None  # the rows' transaction fields (offline store) for featurize


def offline_features(offline_dir: str | Path, ledger: Ledger) -> Tabular:
    from feature_svc.offline import read_offline

    table = read_offline(offline_dir)
    meta_path = Path(offline_dir) / "_feature_set.json"
    fraction = 1.0
    if meta_path.exists():
        fraction = float(json.loads(meta_path.read_text()).get("legit_fraction", 1.0)) or 1.0
    names = [n for n in FEATURES if n in table.column_names]
    missing = [n for n in FEATURES if n not in table.column_names]
    if missing:
        raise ValueError(f"offline store {offline_dir} lacks registry features {missing}; re-export it")
    pos = {t: i for i, t in enumerate(ledger.tx_id.tolist())}
    tx_ids = table["transaction_id"].to_pylist()
    unknown = [t for t in tx_ids if t not in pos]
    if unknown:
        raise ValueError(f"{len(unknown)} offline rows are not in the world (first {unknown[0]}): wrong world?")
    rows = np.array([pos[t] for t in tx_ids], dtype=np.int64)
    x = np.column_stack([table[n].to_numpy(zero_copy_only=False).astype(np.float64) for n in names])
    weight = np.where(ledger.is_fraud[rows], 1.0, 1.0 / fraction)
    return Tabular(rows=rows, x=x, names=names, weight=weight, source=f"offline store {offline_dir}", tx_table=table)


# ------------------------------------------------------------------------------------------ numpy subset


def _grouped_before(
    keys: np.ndarray, times: np.ndarray, q_keys: np.ndarray, q_times: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For each query (key, t): the sorted order of (keys, times) and the positions of (key, t) in it, i.e. how
    many of the key's events are strictly before t is `pos - group_start`."""
    span = int(max(times.max(initial=0), q_times.max(initial=0))) + 8 * US_PER_DAY
    comp = keys.astype(np.int64) * span + times
    order = np.argsort(comp, kind="stable")
    sorted_comp = comp[order]
    base = q_keys.astype(np.int64) * span
    start = np.searchsorted(sorted_comp, base, side="left")
    return order, sorted_comp, base, start


def _local_entity(ledger: Ledger, etype: str, rows: np.ndarray, out: dict[str, np.ndarray]) -> None:
    ent = ledger.ent[etype]
    t0 = ledger.start_us - 8 * US_PER_DAY
    times = ledger.ts - t0
    valid = ent >= 0
    keys, tms, amt = ent[valid], times[valid], ledger.amount[valid]
    q_key, q_t = ent[rows], times[rows]
    q_ok = q_key >= 0
    q_key = np.where(q_ok, q_key, 0)
    order, sorted_comp, base, start = _grouped_before(keys, tms, q_key, q_t)
    cum = np.concatenate([[0.0], np.cumsum(amt[order])])
    end = np.searchsorted(sorted_comp, base + q_t, side="left")  # strictly before t
    nan = np.full(len(rows), np.nan)
    for w, us in WINDOWS.items():
        lo = np.maximum(np.searchsorted(sorted_comp, base + q_t - us, side="left"), start)
        name = f"{etype}_txn_count_{w}"
        if name in FEATURES:
            out[name] = np.where(q_ok, end - lo, nan)
        name = f"{etype}_txn_sum_{w}"
        if name in FEATURES:
            out[name] = np.where(q_ok, cum[end] - cum[lo], nan)
    if f"{etype}_seconds_since_last_txn" in FEATURES:
        last = sorted_comp[np.maximum(end - 1, 0)] - base
        secs = np.where(end > start, (q_t - last) / 1e6, -1.0)
        out[f"{etype}_seconds_since_last_txn"] = np.where(q_ok, secs, nan)
    if etype == "card":
        out["card_txn_count_total"] = (end - start).astype(float)
    # degree: distinct linked entities whose first transaction together is before t
    if etype in ("device", "ip", "merchant"):
        card = ledger.ent["card"][valid]
        pair = keys.astype(np.int64) * (ledger.n_nodes("card") + 1) + card
        _, first_idx = np.unique(pair, return_index=True)
        fk, ft = keys[first_idx], tms[first_idx]
        _, sc, b2, s2 = _grouped_before(fk, ft, q_key, q_t)
        e2 = np.searchsorted(sc, b2 + q_t, side="left")
        out[f"{etype}_degree"] = np.where(q_ok, e2 - s2, nan)


def local_features(ledger: Ledger, rows: np.ndarray | None = None) -> Tabular:
    """A numpy subset of the registry for `rows` (default: every transaction); see the module docstring."""
    rows = np.arange(len(ledger)) if rows is None else rows
    out: dict[str, np.ndarray] = {}
    for etype in ("card", "merchant", "device", "ip"):
        _local_entity(ledger, etype, rows, out)
    # card_fraud_labels_known: the card's fraud labels with label_time < t
    fraud = ledger.is_fraud
    card = ledger.ent["card"]
    t0 = ledger.start_us - 8 * US_PER_DAY
    lt = np.minimum(ledger.label_time[fraud], ledger.start_us + 400 * US_PER_DAY) - t0
    _, sc, b, s = _grouped_before(card[fraud], lt, card[rows], ledger.ts[rows] - t0)
    out["card_fraud_labels_known"] = (np.searchsorted(sc, b + ledger.ts[rows] - t0, side="left") - s).astype(float)
    _local_graph(ledger, rows, out)
    names = [n for n in FEATURES if n in out]
    x = np.column_stack([out[n] for n in names]).astype(np.float64)
    return Tabular(rows=rows, x=x, names=names, weight=np.ones(len(rows)), source="local numpy subset")


def _local_graph(ledger: Ledger, rows: np.ndarray, out: dict[str, np.ndarray]) -> None:
    from trainer import local_graph as lg

    label_first = lg.first_label_per_card(ledger)
    for link in ("device", "ip"):
        out[f"{link}_distinct_cards_7d"] = lg.distinct_cards_7d(ledger, link, rows)
        out[f"{link}_fraud_cards"] = lg.fraud_cards(ledger, link, rows, label_first)
    out["card_new_device_24h"] = lg.new_device_24h(ledger, rows)
    out["card_fraud_cards_2hop"] = lg.fraud_cards_2hop(ledger, rows, label_first)


def sample_legit(ledger: Ledger, fraction: float, seed: int) -> np.ndarray:
    """Rows of a legit-sampled subset (every fraud row, `fraction` of the others), like the offline store's export;
    weigh the sampled legit rows by 1/fraction."""
    rng = np.random.default_rng(seed)
    keep = ledger.is_fraud | (rng.random(len(ledger)) < fraction)
    return np.flatnonzero(keep)
