"""The payment-world simulator: reproducible, and each kind of fraud leaves the traces it is meant to."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from feature_svc.world import (
    FRAUD_KINDS,
    World,
    WorldError,
    WorldParams,
    generate_world,
    read_world,
    write_world,
)
from shared.messages import Transaction

IDENTIFIER = re.compile(r"^[A-Za-z0-9_.:@\-]+$")
SMALL = WorldParams(n_cards=2_000, n_transactions=20_000, seed=11)


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world(SMALL, progress=False)


def kind_rows(world: World, kind: str) -> pa.Table:
    tx = world.transactions
    return tx.filter(pc.equal(tx["fraud_kind"], kind))


def test_same_seed_same_world(world: World) -> None:
    again = generate_world(SMALL, progress=False)
    for name in ("transactions", "cards", "merchants", "devices", "ips"):
        assert again.table(name).equals(world.table(name)), name


def test_different_seed_differs(world: World) -> None:
    other = generate_world(WorldParams(n_cards=2_000, n_transactions=20_000, seed=12), progress=False)
    assert not other.transactions.equals(world.transactions)


def test_default_size_has_every_kind() -> None:
    summary = generate_world(progress=False).summary()
    assert summary["transactions"] == 200_000
    assert summary["cards"] == 20_000
    assert all(summary[kind] > 300 for kind in FRAUD_KINDS), summary
    assert summary["legit"] + sum(summary[k] for k in FRAUD_KINDS) == summary["transactions"]
    assert 0.01 < summary["fraud"] / summary["transactions"] < 0.03


def test_summary_counts(world: World) -> None:
    summary = world.summary()
    assert summary["transactions"] == SMALL.n_transactions
    for kind in FRAUD_KINDS:
        assert summary[kind] == kind_rows(world, kind).num_rows > 0
    assert summary["fraud"] == pc.sum(world.transactions["is_fraud"]).as_py()


def test_ids_and_shapes_are_valid(world: World) -> None:
    tx = world.transactions
    for column in ("transaction_id", "card_id", "merchant_id", "device_id", "ip_address"):
        assert all(IDENTIFIER.match(v) for v in tx[column].to_pylist()), column
    assert pc.count_distinct(tx["transaction_id"]).as_py() == tx.num_rows
    for name, key in (("cards", "card_id"), ("merchants", "merchant_id"), ("devices", "device_id")):
        table = world.table(name)
        assert pc.count_distinct(table[key]).as_py() == table.num_rows, name
        assert pc.all(pc.is_in(tx[key], value_set=table[key])).as_py(), name
    ips = world.ips["ip_address"].to_pylist()
    assert len(set(ips)) == len(ips)
    assert all(len(p := ip.split(".")) == 4 and all(0 <= int(o) <= 255 for o in p) for ip in ips)
    assert pc.all(pc.is_in(tx["ip_address"], value_set=world.ips["ip_address"])).as_py()

    ts = tx["timestamp"].to_numpy()
    assert (np.diff(ts.astype("int64")) >= 0).all(), "transactions are sorted by time"
    start = SMALL.start
    assert tx["timestamp"][0].as_py() >= start
    assert tx["timestamp"][-1].as_py() < start + timedelta(days=SMALL.days)


def test_rows_are_valid_wire_transactions(world: World) -> None:
    for row in world.transactions.slice(0, 2_000).to_pylist() + kind_rows(world, "ato").to_pylist():
        msgspec.convert(
            {
                "card_id": row["card_id"],
                "transaction_amount": row["amount"],
                "merchant_id": row["merchant_id"],
                "mcc_code": row["mcc_code"],
                "country_code": row["country_code"],
                "transaction_id": row["transaction_id"],
                "timestamp": row["timestamp"],
                "device_id": row["device_id"],
                "ip_address": row["ip_address"],
                "currency": row["currency"],
                "channel": row["channel"],
            },
            Transaction,
        )


def test_labels_arrive_late_for_fraud_only(world: World) -> None:
    tx = world.transactions
    fraud = tx.filter(tx["is_fraud"])
    legit = tx.filter(pc.invert(tx["is_fraud"]))
    assert fraud["label_time"].null_count == 0
    assert legit["label_time"].null_count == legit.num_rows
    assert set(legit["fraud_kind"].to_pylist()) == {""}
    delay = pc.subtract(fraud["label_time"], fraud["timestamp"]).to_pylist()
    assert all(timedelta(days=2) <= d <= timedelta(days=30) for d in delay)
    assert world.labels().num_rows == fraud.num_rows


def test_rings_share_devices_and_ips(world: World) -> None:
    ring = kind_rows(world, "ring")
    cards_per_device = ring.group_by("device_id").aggregate([("card_id", "count_distinct")])
    assert pc.min(cards_per_device["card_id_count_distinct"]).as_py() >= 2
    cards_per_ip = ring.group_by("ip_address").aggregate([("card_id", "count_distinct")])
    assert pc.min(cards_per_ip["card_id_count_distinct"]).as_py() >= 2
    usual = set(pc.list_flatten(world.cards["usual_device_ids"]).to_pylist())
    assert usual.isdisjoint(ring["device_id"].to_pylist()), "rings use their own phones"


def test_card_testing_is_small_bursts_at_compromised_merchants(world: World) -> None:
    ct = kind_rows(world, "card_testing")
    assert pc.max(ct["amount"]).as_py() <= 5.0
    compromised = world.merchants.filter(world.merchants["is_compromised"])["merchant_id"]
    assert pc.all(pc.is_in(ct["merchant_id"], value_set=compromised)).as_py()
    bursts = ct.group_by(["merchant_id", "device_id"]).aggregate(
        [("card_id", "count_distinct"), ("timestamp", "min"), ("timestamp", "max")]
    )
    assert pc.min(bursts["card_id_count_distinct"]).as_py() >= 8
    spans = pc.subtract(bursts["timestamp_max"], bursts["timestamp_min"]).to_pylist()
    assert max(spans) <= timedelta(minutes=30)


def _cards_by_id(world: World) -> dict[str, dict[str, object]]:
    return {c["card_id"]: c for c in world.cards.to_pylist()}


def test_account_takeover_new_device_new_country_spend_spike(world: World) -> None:
    cards = _cards_by_id(world)
    for row in kind_rows(world, "ato").to_pylist():
        card = cards[row["card_id"]]
        assert row["device_id"] not in card["usual_device_ids"]  # type: ignore[operator]
        assert row["country_code"] != card["home_country"]
        assert row["amount"] >= 3.9 * card["typical_amount"]  # type: ignore[operator]


def test_stolen_cards_spend_big_and_fast_at_home(world: World) -> None:
    cards = _cards_by_id(world)
    rows = kind_rows(world, "stolen_card").to_pylist()
    for row in rows:
        card = cards[row["card_id"]]
        assert row["country_code"] == card["home_country"]
        assert row["amount"] >= 2.9 * card["typical_amount"]  # type: ignore[operator]
    runs = (
        kind_rows(world, "stolen_card")
        .group_by(["card_id", "device_id"])
        .aggregate([("amount", "count"), ("timestamp", "min"), ("timestamp", "max")])
    )
    assert pc.min(runs["amount_count"]).as_py() >= 5
    spans = pc.subtract(runs["timestamp_max"], runs["timestamp_min"]).to_pylist()
    assert max(spans) <= timedelta(hours=3)


def test_write_and_read_back(world: World, tmp_path: Path) -> None:
    write_world(world, tmp_path / "w")
    back = read_world(tmp_path / "w")
    assert back.params == world.params
    for name in ("transactions", "cards", "merchants", "devices", "ips"):
        assert back.table(name).equals(world.table(name)), name


def test_read_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(WorldError, match=r"world\.json is missing"):
        read_world(tmp_path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_cards": 10}, "n_cards must be at least 50"),
        ({"days": 3}, "days must be at least 8"),
        ({"ring_share": 0.6}, "fraud shares"),
        ({"label_delay_days": (5.0, 1.0)}, "label_delay_days"),
    ],
)
def test_bad_params_are_rejected(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(WorldError, match=message):
        WorldParams(**overrides)  # type: ignore[arg-type]
