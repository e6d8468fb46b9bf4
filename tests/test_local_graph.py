"""The numpy 1-hop graph columns of the local feature subset agree with a brute-force count, point in time."""

from __future__ import annotations

import numpy as np

from feature_svc.world import WorldParams, generate_world
from trainer import local_graph as lg
from trainer.data import US_PER_DAY, ledger_from_world


def test_one_hop_columns_match_brute_force() -> None:
    world = generate_world(
        WorldParams(n_cards=300, n_transactions=5_000, days=14, seed=5, ring_share=0.03, label_delay_days=(1.0, 5.0)),
        progress=False,
    )
    ledger = ledger_from_world(world)
    rows = np.random.default_rng(0).choice(len(ledger), 400, replace=False)
    label_first = lg.first_label_per_card(ledger)
    card, ts = ledger.ent["card"], ledger.ts
    for link in ("device", "ip"):
        ent = ledger.ent[link]
        distinct = lg.distinct_cards_7d(ledger, link, rows)
        fraud = lg.fraud_cards(ledger, link, rows, label_first)
        for i, r in enumerate(rows):
            before = (ent == ent[r]) & (ts < ts[r])
            window = before & (ts >= ts[r] - 7 * US_PER_DAY)
            assert distinct[i] == len(set(card[window].tolist())), (link, r)
            linked = set(card[before].tolist())
            assert fraud[i] == sum(label_first[c] < ts[r] for c in linked), (link, r)
    new = lg.new_device_24h(ledger, rows)
    for i, r in enumerate(rows):
        first = ts[(card == card[r]) & (ledger.ent["device"] == ledger.ent["device"][r])].min()
        assert new[i] == float(ts[r] - first < US_PER_DAY)
    assert np.nanmax(lg.fraud_cards(ledger, "device", rows, label_first)) >= 1, "some devices carry known fraud"
