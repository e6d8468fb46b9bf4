"""Risk factors for models without an exact explainer (the GNN head): group occlusion.

For each group of inputs (the card's velocity, the device's links to fraud, the graph embeddings, ...), the
partial is scored again with that group set to "unknown" (NaN, which the model maps to its training default;
embeddings go to their default vector). The drop in score is that group's contribution. Every group's occluded
copy of the partial is stacked into one input, so that costs one extra ONNX run per partial, not one per group.
A group that raises the score (in log-odds) is explained with the row's own values, e.g. "device used by 3
fraud-labelled cards".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from shared.messages import FactorSource, RiskFactor

Values = Callable[[str], float]


def _n(v: float) -> str:
    return f"{v:,.0f}" if v == v else "?"


def _pct(v: float, digits: int) -> str:
    """A share as a percentage; "?" when the model does not read it (NaN), never "nan%"."""
    return f"{100 * v:.{digits}f}%" if v == v else "?"


@dataclass(frozen=True)
class Group:
    code: str
    source: FactorSource
    prefixes: tuple[str, ...]
    text: Callable[[Values], str]


GROUPS: tuple[Group, ...] = (
    Group("device_fraud_links", "graph", ("device_fraud_cards", "device_degree", "device_distinct_cards"),
          lambda v: f"device used by {_n(v('device_fraud_cards'))} fraud-labelled card(s) and "
                    f"{_n(v('device_degree'))} card(s) in all"),
    Group("ip_fraud_links", "graph", ("ip_fraud_cards", "ip_degree", "ip_distinct_cards"),
          lambda v: f"IP address used by {_n(v('ip_fraud_cards'))} fraud-labelled card(s) and "
                    f"{_n(v('ip_degree'))} card(s) in all"),
    Group("card_graph", "graph", ("card_cards_sharing", "card_fraud_cards_2hop", "card_component_size",
                                  "card_degree"),
          lambda v: f"card shares devices or IPs with {_n(v('card_cards_sharing_device'))} other card(s); "
                    f"{_n(v('card_fraud_cards_2hop'))} fraud-labelled card(s) within 2 hops"),
    Group("graph_embedding", "graph", ("emb_",),
          lambda v: "position in the transaction graph resembles known fraud (GNN embedding)"),
    Group("card_velocity", "features", ("card_txn_count", "card_txn_sum", "card_distinct_merchants",
                                        "card_seconds_since_last"),
          lambda v: f"card velocity: {_n(v('card_txn_count_1h'))} transaction(s) in the last hour, "
                    f"{_n(v('card_txn_count_24h'))} in 24 h"),
    Group("card_novelty", "features", ("card_new_device", "card_new_country", "card_distinct_countries",
                                       "card_distinct_devices", "card_account_age"),
          lambda v: "new device or country for this card"
                    + (" (new device)" if v("card_new_device_24h") > 0 else "")
                    + (" (new country)" if v("card_new_country_24h") > 0 else "")),
    Group("card_amount_profile", "features", ("card_amount_",),
          lambda v: f"amount out of line with the card's 30-day profile (mean {_n(v('card_amount_mean_30d'))})"),
    Group("card_history", "features", ("card_fraud_labels_known", "card_txn_count_total"),
          lambda v: f"card has {_n(v('card_fraud_labels_known'))} confirmed fraud(s) on record"),
    Group("merchant_risk", "features", ("merchant_",),
          lambda v: f"merchant risk: {_pct(v('merchant_fraud_rate_known_30d'), 1)} known fraud in 30 days, "
                    f"{_pct(v('merchant_small_txn_share_24h'), 0)} small (card-testing) amounts today"),
    Group("device_activity", "features", ("device_txn_count", "device_seconds_since_last"),
          lambda v: f"device activity: {_n(v('device_txn_count_1h'))} transaction(s) in the last hour"),
    Group("ip_activity", "features", ("ip_txn_count", "ip_seconds_since_last"),
          lambda v: f"IP activity: {_n(v('ip_txn_count_1h'))} transaction(s) in the last hour"),
)  # fmt: skip


MAX_ROWS = 8_192
"""Rows of one ONNX run of the explainer (its stacked occluded copies): bounds its memory for big partials."""


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p.astype(np.float64), 1e-9, 1 - 1e-9)
    return np.log(q / (1 - q))


class OcclusionExplainer:
    def __init__(
        self,
        names: Sequence[str],
        predict: Callable[[np.ndarray], np.ndarray],
        tx_descriptions: dict[str, str],
        embedding_defaults: dict[str, np.ndarray] | None = None,
        max_rows: int = MAX_ROWS,
    ) -> None:
        self.names = list(names)
        self.predict = predict
        self.index = {n: i for i, n in enumerate(self.names)}
        claimed: set[int] = set()
        self.groups: list[tuple[Group | None, np.ndarray, str]] = []
        for g in GROUPS:
            cols = [i for i, n in enumerate(self.names) if i not in claimed and n.startswith(g.prefixes)]
            if cols:
                claimed.update(cols)
                self.groups.append((g, np.array(cols), g.code))
        # every transaction field its own group: their descriptions are already sentences
        for name in tx_descriptions:
            i = self.index.get(name)
            if i is not None and i not in claimed:
                self.groups.append((None, np.array([i]), name))
        self.tx_descriptions = tx_descriptions
        self.embedding_defaults = embedding_defaults or {}
        self.fills = [self._fill(cols) for _, cols, _ in self.groups]
        self.max_rows = max_rows
        # the inputs the texts read (probed with 0 and 1), and their position among `text_columns`: `explain`
        # converts those columns to Python floats at once instead of indexing numpy per value
        seen: list[str] = []
        for probe in (0.0, 1.0):

            def record(name: str, probe: float = probe) -> float:
                seen.append(name)
                return probe

            for group, _, _ in self.groups:
                if group is not None:
                    group.text(record)
        read = sorted({self.index[n] for n in seen if n in self.index})
        self.text_columns = np.array(read, dtype=np.int64)
        self.text_position = {self.names[c]: j for j, c in enumerate(read)}

    def _fill(self, cols: np.ndarray) -> np.ndarray:
        """What occluding `cols` writes there: NaN ("unknown"), or for an embedding column its type's default."""
        fill = np.full(len(cols), np.nan)
        for j, c in enumerate(cols.tolist()):
            name = self.names[c]
            if name.startswith("emb_"):
                etype, k = name[4:].rsplit("_", 1)
                default = self.embedding_defaults.get(etype)
                fill[j] = default[int(k)] if default is not None else 0.0
        return fill

    def occluded(self, x: np.ndarray) -> np.ndarray:
        """Every group's occluded copy of `x`, stacked: rows [g*n, (g+1)*n) are `x` with group g occluded."""
        n = x.shape[0]
        z = np.tile(x, (len(self.groups), 1))
        for g, (_, cols, _) in enumerate(self.groups):
            z[g * n : (g + 1) * n, cols] = self.fills[g]
        return z

    @property
    def codes(self) -> list[str]:
        """The name of each group: a GROUPS code, or a transaction field's feature name."""
        return [code for _, _, code in self.groups]

    def deltas(self, x: np.ndarray, p: np.ndarray) -> np.ndarray:
        """(rows, groups): logit(p) - logit(p with that group unknown), the attribution of each group (all groups
        in as few ONNX runs as `occluded_scores` allows)."""
        if not self.groups:
            return np.zeros((x.shape[0], 0))
        return np.asarray((_logit(p)[None, :] - _logit(self.occluded_scores(x))).T)

    def baseline(self, x: np.ndarray) -> np.ndarray:
        """The prediction with every group unknown at once: what the model says knowing none of these inputs."""
        if not self.groups:
            return self.predict(x)
        z = x.copy()
        for g, (_, cols, _) in enumerate(self.groups):
            z[:, cols] = self.fills[g]
        return self.predict(z)

    def occluded_scores(self, x: np.ndarray) -> np.ndarray:
        """(groups, n): the score of every row with each group occluded, in as few ONNX runs as MAX_ROWS allows
        (one for a partial of up to MAX_ROWS / groups rows). The model scores each row on its own, so stacking
        changes no score (tests/test_fast_path.py holds it against one run per group)."""
        n = x.shape[0]
        per_run = max(1, self.max_rows // max(1, len(self.groups)))
        if n <= per_run:
            return self.predict(self.occluded(x)).reshape(len(self.groups), n)
        parts = [self.occluded_scores(x[i : i + per_run]) for i in range(0, n, per_run)]
        return np.concatenate(parts, axis=1)

    def explain(self, x: np.ndarray, p: np.ndarray, k: int = 3, min_weight: float = 0.1) -> list[list[RiskFactor]]:
        """Weights are log-odds differences (so they mean the same at a score of 0.001 as at 0.5)."""
        n = x.shape[0]
        if n == 0 or not self.groups:
            return [[] for _ in range(n)]
        deltas = self.deltas(x, p)
        order = np.argsort(-deltas, axis=1)[:, :k]
        weights = np.round(np.take_along_axis(deltas, order, axis=1).astype(np.float64), 4).tolist()
        # the values the texts read, as the Python floats a per-row lookup would give, in one conversion
        values = x[:, self.text_columns].tolist()
        index, nan = self.index, float("nan")

        def at_row(row: int, name: str) -> float:  # a name the probes in __init__ did not see a text read
            i = index.get(name)
            return float(x[row, i]) if i is not None else nan

        groups, pos, tx_descriptions = self.groups, self.text_position, self.tx_descriptions
        out: list[list[RiskFactor]] = []
        for row, (top, ws) in enumerate(zip(order.tolist(), weights, strict=True)):
            factors = []
            for gi, w in zip(top, ws, strict=True):
                if w <= min_weight:
                    break
                group, _, code = groups[gi]
                if group is None:
                    factors.append(RiskFactor(code=code, description=tx_descriptions[code], weight=w,
                                              source="transaction"))  # fmt: skip
                    continue
                text = group.text(
                    lambda name, r=values[row], row=row: r[pos[name]] if name in pos else at_row(row, name)
                )
                factors.append(RiskFactor(code=code, description=text, weight=w, source=group.source))
            out.append(factors)
        return out
