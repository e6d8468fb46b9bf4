"""Point-in-time correctness of features on a real PostgreSQL: the offline export counts nothing at or after a
transaction's own timestamp (checked on a constructed case and, by brute force from the raw transactions, on a
sample), and online computation as of a transaction's time equals its offline row exactly."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest

from feature_svc.compute import compute_features
from feature_svc.definitions import FEATURES, feature_names
from feature_svc.graph import CardLabel, PostgresGraphStore, edges_for_transaction
from feature_svc.offline import export_offline, features_for_rows, read_offline
from feature_svc.world import World, WorldParams, generate_world
from tests.worlds import load_world_into

SCHEMA = "test_features_pit"


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world(WorldParams(n_cards=300, n_transactions=6_000, seed=11), progress=False)


@pytest.fixture(scope="module")
async def pool(postgres_dsn: str, world: World) -> AsyncIterator[asyncpg.Pool]:
    pool = await load_world_into(postgres_dsn, world, schema=SCHEMA, max_size=16)
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
def graph(pool: asyncpg.Pool) -> PostgresGraphStore:
    return PostgresGraphStore(pool)


@pytest.fixture(scope="module")
async def offline(pool: asyncpg.Pool, graph: PostgresGraphStore, tmp_path_factory: pytest.TempPathFactory) -> Any:
    out: Path = tmp_path_factory.mktemp("offline")
    summary = await export_offline(pool, graph, out, legit_fraction=0.2, seed=1, batch_size=500, progress=False)
    assert summary["rows"] > summary["fraud_rows"] > 0
    return read_offline(out)


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


# ------------------------------------------------------------------------------------ the export itself


async def test_export_holds_every_labelled_transaction_partitioned_by_day(
    offline: Any, world: World, tmp_path_factory: pytest.TempPathFactory
) -> None:
    fraud_ids = {r["transaction_id"] for r in world.labels().to_pylist()}
    rows = offline.to_pylist()
    exported = {r["transaction_id"] for r in rows}
    assert fraud_ids <= exported
    assert len(exported) == len(rows)
    n_legit = sum(1 for r in rows if not r["is_fraud"])
    assert 0.1 * (world.transactions.num_rows - len(fraud_ids)) < n_legit < 0.3 * world.transactions.num_rows
    for r in rows:
        assert r["day"] == r["timestamp"].strftime("%Y-%m-%d")
        assert (r["label_time"] is not None) == r["is_fraud"] and (r["fraud_kind"] != "") == r["is_fraud"]
    assert set(FEATURES) <= set(offline.column_names)


# ------------------------------------------------------------------------------- no future leakage


async def test_constructed_case_counts_nothing_at_or_after_as_of(pool: asyncpg.Pool, graph: PostgresGraphStore) -> None:
    """A probe card with transactions before, exactly at and after T, and labels known before and after T."""
    t = datetime(2027, 6, 1, 12, tzinfo=UTC)
    txs = [  # (id, time, amount, device, label_time or None)
        ("probe_tx_1", t - timedelta(hours=2), 10.0, "probe_dev_a", t - timedelta(hours=1)),
        ("probe_tx_2", t - timedelta(minutes=30), 20.0, "probe_dev_a", t + timedelta(days=1)),
        ("probe_tx_3", t, 400.0, "probe_dev_b", t + timedelta(days=2)),  # exactly at T: must not count
        ("probe_tx_4", t + timedelta(seconds=1), 800.0, "probe_dev_c", None),
    ]
    await pool.executemany(
        """INSERT INTO transactions (transaction_id, "timestamp", card_id, merchant_id, device_id, ip_address,
           amount, currency, country_code, mcc_code, channel)
           VALUES ($1, $2, 'probe_card', 'probe_merchant', $3, '203.0.113.9', $4, 'USD', 'US', '5411', 'ecom')""",
        [(i, ts, dev, amt) for i, ts, amt, dev, _ in txs],
    )
    await pool.executemany(
        """INSERT INTO labels (transaction_id, card_id, merchant_id, transaction_time, is_fraud, fraud_kind, label_time)
           VALUES ($1, 'probe_card', 'probe_merchant', $2, true, 'stolen_card', $3)""",
        [(i, ts, lt) for i, ts, _, _, lt in txs if lt is not None],
    )
    edges = [
        e
        for i, ts, _, dev, _ in txs
        for e in edges_for_transaction(
            "probe_card", ts, device_id=dev, ip_address="203.0.113.9", merchant_id="probe_merchant"
        )
    ]
    await graph.upsert_edges(edges)
    await graph.upsert_card_labels([CardLabel("probe_card", t - timedelta(hours=1))])

    entities = [("card", "probe_card"), ("merchant", "probe_merchant"), ("device", "probe_dev_b")]
    online = await compute_features(pool, graph, entities, t)
    card, merchant, dev_b = (online[e] for e in entities)
    assert card["card_txn_count_1h"] == 1 and card["card_txn_sum_1h"] == 20.0
    assert card["card_txn_count_24h"] == 2 and card["card_txn_count_total"] == 2
    assert card["card_amount_max_30d"] == 20.0
    assert card["card_seconds_since_last_txn"] == 30 * 60
    assert card["card_fraud_labels_known"] == 1  # tx_2's label arrives after T
    assert card["card_degree"] == 3  # dev_a, the IP, the merchant: dev_b was first seen AT T
    assert card["card_distinct_devices_7d"] == 1
    assert merchant["merchant_fraud_labels_known_30d"] == 1 and merchant["merchant_fraud_rate_known_30d"] == 0.5
    assert dev_b["device_txn_count_7d"] == 0 and dev_b["device_degree"] == 0
    assert dev_b["device_seconds_since_last_txn"] == -1

    # the offline path, with the transaction at exactly T as its row, sees the same
    rows = await pool.fetch(
        """SELECT transaction_id, "timestamp", card_id, merchant_id, device_id, ip_address FROM transactions
           WHERE transaction_id = 'probe_tx_3'"""
    )
    offline_row = (await features_for_rows(pool, graph, list(rows)))[0]
    for name, value in card.items():
        assert offline_row[name] == value, name
    # and one second later, tx_3 counts
    later = (await compute_features(pool, graph, [("card", "probe_card")], t + timedelta(seconds=1)))[
        ("card", "probe_card")
    ]
    assert later["card_txn_count_1h"] == 2 and later["card_amount_max_30d"] == 400.0


def _brute_force(row: dict[str, Any], by_card: dict[str, list[dict[str, Any]]], tx: list[dict[str, Any]]) -> dict:
    """Recompute card (and some merchant, device, IP, graph) features of one row from the raw transactions."""
    t: datetime = row["timestamp"]
    hist = [x for x in by_card[row["card_id"]] if x["timestamp"] < t]

    def within(xs: list[dict[str, Any]], delta: timedelta) -> list[dict[str, Any]]:
        return [x for x in xs if x["timestamp"] >= t - delta]

    h1, d1, d7, d30 = (
        within(hist, timedelta(hours=1)),
        within(hist, timedelta(days=1)),
        within(hist, timedelta(days=7)),
        within(hist, timedelta(days=30)),
    )
    amounts = [x["amount"] for x in d30]
    out: dict[str, float] = {
        "card_txn_count_1h": len(h1),
        "card_txn_count_24h": len(d1),
        "card_txn_count_7d": len(d7),
        "card_txn_sum_1h": sum(x["amount"] for x in h1),
        "card_txn_sum_24h": sum(x["amount"] for x in d1),
        "card_txn_sum_7d": sum(x["amount"] for x in d7),
        "card_amount_mean_30d": float(np.mean(amounts)) if amounts else 0.0,
        "card_amount_std_30d": float(np.std(amounts)) if amounts else 0.0,
        "card_amount_max_30d": max(amounts, default=0.0),
        "card_distinct_merchants_24h": len({x["merchant_id"] for x in d1}),
        "card_distinct_merchants_7d": len({x["merchant_id"] for x in d7}),
        "card_distinct_countries_7d": len({x["country_code"] for x in d7}),
        "card_txn_count_total": len(hist),
        "card_seconds_since_last_txn": (t - hist[-1]["timestamp"]).total_seconds() if hist else -1.0,
        "card_fraud_labels_known": sum(1 for x in hist if x["is_fraud"] and x["label_time"] < t),
        "card_degree": len({(k, x[k]) for x in hist for k in ("device_id", "ip_address", "merchant_id") if x[k]}),
    }
    cut = t - timedelta(days=1)
    for flag, key in (("card_new_device_24h", "device_id"), ("card_new_country_24h", "country_code")):
        first: dict[str, datetime] = {}
        for x in hist:
            if x[key] and x[key] not in first:
                first[x[key]] = x["timestamp"]
        out[flag] = float(bool(first) and max(first.values()) >= cut and min(first.values()) < cut)
    devices = {x["device_id"] for x in hist if x["device_id"]}
    sharing = {x["card_id"] for x in tx if x["timestamp"] < t and x["device_id"] in devices}
    out["card_cards_sharing_device"] = len(sharing - {row["card_id"]})
    m30 = [x for x in tx if x["merchant_id"] == row["merchant_id"] and t - timedelta(days=30) <= x["timestamp"] < t]
    known = sum(1 for x in m30 if x["is_fraud"] and x["label_time"] < t)
    out["merchant_fraud_labels_known_30d"] = known
    out["merchant_fraud_rate_known_30d"] = known / len(m30) if m30 else 0.0
    ip7 = [x for x in tx if x["ip_address"] == row["ip_address"] and t - timedelta(days=7) <= x["timestamp"] < t]
    out["ip_distinct_cards_7d"] = len({x["card_id"] for x in ip7})
    return out


async def test_offline_rows_match_a_brute_force_recomputation(offline: Any, world: World) -> None:
    tx = world.transactions.to_pylist()
    by_card: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for x in tx:
        by_card[x["card_id"]].append(x)
    rows = offline.to_pylist()
    rng = random.Random(5)
    sample = rng.sample(rows, 60) + [r for r in rows if r["is_fraud"]][:40]
    checked_nonzero = 0
    for row in sample:
        expected = _brute_force(row, by_card, tx)
        for name, value in expected.items():
            assert close(row[name], value), (row["transaction_id"], name, row[name], value)
        checked_nonzero += expected["card_txn_count_total"] > 0
    assert checked_nonzero > 20  # the sample is not all first transactions


async def test_later_transactions_and_labels_are_not_counted(offline: Any, world: World) -> None:
    """For fraud rows whose card transacts again later and whose own label arrives later, the row counts only
    strictly earlier transactions and earlier-known labels."""
    tx = world.transactions.to_pylist()
    by_card: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for x in tx:
        by_card[x["card_id"]].append(x)
    found = 0
    for row in offline.to_pylist():
        if not row["is_fraud"]:
            continue
        mine = by_card[row["card_id"]]
        later = [x for x in mine if x["timestamp"] >= row["timestamp"]]
        assert row["label_time"] > row["timestamp"]
        if len(later) > 1:
            found += 1
            assert row["card_txn_count_total"] == len(mine) - len(later)
            assert row["card_fraud_labels_known"] == sum(
                1 for x in mine if x["is_fraud"] and x["label_time"] < row["timestamp"]
            )
    assert found > 5


# --------------------------------------------------------------------------------- online == offline


async def test_online_compute_equals_offline_rows(pool: asyncpg.Pool, graph: PostgresGraphStore, offline: Any) -> None:
    rows = offline.to_pylist()
    sample = random.Random(9).sample(rows, 40) + [r for r in rows if r["is_fraud"]][-20:]
    for row in sample:
        entities = [
            (t, row[c])
            for t, c in (
                ("card", "card_id"),
                ("merchant", "merchant_id"),
                ("device", "device_id"),
                ("ip", "ip_address"),
            )
            if row[c]
        ]
        online = await compute_features(pool, graph, entities, row["timestamp"])
        for etype, eid in entities:
            values = online[(etype, eid)]
            assert list(values) == feature_names(etype)
            for name, value in values.items():
                assert close(row[name], value), (row["transaction_id"], name, row[name], value)
