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
    NEVER_LABELLED_DAYS,
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
    assert again.incidents is not None and world.incidents is not None
    assert again.incidents.equals(world.incidents)


def test_different_seed_differs(world: World) -> None:
    other = generate_world(WorldParams(n_cards=2_000, n_transactions=20_000, seed=12), progress=False)
    assert not other.transactions.equals(world.transactions)


def test_default_size_has_every_kind() -> None:
    summary = generate_world(progress=False).summary()
    assert summary["transactions"] == 200_000
    assert summary["cards"] == 20_000
    assert all(summary[kind] > 500 for kind in FRAUD_KINDS), summary
    assert summary["legit"] + sum(summary[k] for k in FRAUD_KINDS) == summary["transactions"]
    assert 0.01 < summary["fraud"] / summary["transactions"] < 0.03


def test_default_test_week_has_enough_incidents() -> None:
    """At least 20 rings (and 10 incidents of every other kind) touch the last week, so that intervals over
    incidents on a test week mean something."""
    world = generate_world(progress=False)
    assert world.incidents is not None
    tx = world.transactions
    last_week = pc.greater_equal(
        tx["timestamp"], pa.scalar(world.params.start + timedelta(days=35), tx["timestamp"].type)
    )
    fraud_ids = tx.filter(pc.and_(last_week, tx["is_fraud"]))["transaction_id"]
    incidents = world.incidents.filter(pc.is_in(world.incidents["transaction_id"], value_set=fraud_ids))
    kinds = [i.split("-")[0] for i in set(incidents["incident_id"].to_pylist())]
    assert kinds.count("ring") >= 20, kinds
    assert all(kinds.count(k) >= 10 for k in FRAUD_KINDS), {k: kinds.count(k) for k in FRAUD_KINDS}


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
    never = timedelta(days=NEVER_LABELLED_DAYS)
    assert all(timedelta(days=2) <= d <= timedelta(days=30) or d == never for d in delay)
    # some chargebacks never arrive (about never_labelled_share of the fraud)
    share = sum(d == never for d in delay) / len(delay)
    assert 0.05 < share < 0.15, share
    assert world.labels().num_rows == fraud.num_rows
    assert world.incidents is not None
    assert sorted(world.incidents["transaction_id"].to_pylist()) == sorted(fraud["transaction_id"].to_pylist())


def _ring_links(world: World) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    ring = kind_rows(world, "ring")
    incident = dict(
        zip(world.incidents["transaction_id"].to_pylist(), world.incidents["incident_id"].to_pylist(), strict=True)
    )  # type: ignore[union-attr]
    cards_of: dict[str, set[str]] = {}
    rings_of: dict[str, set[str]] = {}
    for row in ring.select(["transaction_id", "card_id", "device_id", "ip_address"]).to_pylist():
        rings_of.setdefault(row["card_id"], set()).add(incident[row["transaction_id"]])
        for key in ("device_id", "ip_address"):
            cards_of.setdefault(row[key], set()).add(row["card_id"])
    return cards_of, rings_of


def test_rings_are_chains_of_aged_cards(world: World) -> None:
    """A ring's shared devices and IPs each join two of its cards (the chain card-device-card-IP-card), never
    more, so no ring entity stands out by its card count; its cards had legit history before the ring used them;
    some ring devices are legit users' own devices."""
    cards_of, rings_of = _ring_links(world)
    assert all(len(r) == 1 for r in rings_of.values()), "a card belongs to at most one ring"
    ring_cards = set(rings_of)
    assert max(len(c) for c in cards_of.values()) == 2
    assert sum(len(c) == 2 for c in cards_of.values()) >= len(set().union(*rings_of.values()))
    tx = world.transactions
    first_legit = tx.filter(pc.equal(tx["fraud_kind"], "")).group_by("card_id").aggregate([("timestamp", "min")])
    first_legit_of = dict(
        zip(first_legit["card_id"].to_pylist(), first_legit["timestamp_min"].to_pylist(), strict=True)
    )
    ring = kind_rows(world, "ring")
    first_ring = ring.group_by("card_id").aggregate([("timestamp", "min")]).to_pylist()
    aged = [
        r for r in first_ring if r["card_id"] in first_legit_of and first_legit_of[r["card_id"]] < r["timestamp_min"]
    ]
    assert len(aged) >= 0.9 * len(first_ring)
    usual = set(pc.list_flatten(world.cards["usual_device_ids"]).to_pylist())
    assert usual & set(ring["device_id"].to_pylist()), "some ring devices are legit users' (compromised) devices"
    assert ring_cards


def test_rings_mostly_copy_their_cards_habits(world: World) -> None:
    """With the default camouflage (0.7) most ring purchases are at amounts within the card's usual range."""
    cards = _cards_by_id(world)
    rows = kind_rows(world, "ring").to_pylist()
    usual = [r["amount"] <= 10 * cards[r["card_id"]]["typical_amount"] for r in rows]  # type: ignore[operator]
    assert 0.55 < sum(usual) / len(rows) < 0.95


def test_legit_cards_also_get_new_devices(world: World) -> None:
    cards = _cards_by_id(world)
    legit = world.transactions.filter(pc.equal(world.transactions["fraud_kind"], "")).to_pylist()
    off_usual = sum(r["device_id"] not in cards[r["card_id"]]["usual_device_ids"] for r in legit)  # type: ignore[operator]
    assert 0.03 < off_usual / len(legit) < 0.2


def test_card_testing_is_small_bursts_at_compromised_merchants(world: World) -> None:
    ct = kind_rows(world, "card_testing")
    assert pc.max(ct["amount"]).as_py() <= 5.0
    compromised = world.merchants.filter(world.merchants["is_compromised"])["merchant_id"]
    assert pc.all(pc.is_in(ct["merchant_id"], value_set=compromised)).as_py()
    bursts = ct.group_by(["merchant_id", "device_id"]).aggregate(
        [("card_id", "count_distinct"), ("timestamp", "min"), ("timestamp", "max")]
    )
    assert pc.min(bursts["card_id_count_distinct"]).as_py() >= 5
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
        ({"ring_camouflage": 1.5}, "ring_camouflage must be in"),
        ({"never_labelled_share": -0.1}, "never_labelled_share must be in"),
    ],
)
def test_bad_params_are_rejected(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(WorldError, match=message):
        WorldParams(**overrides)  # type: ignore[arg-type]


def test_simulate_options_set_the_world_params() -> None:
    import argparse

    from feature_svc.world.options import add_world_arguments, world_overrides

    p = argparse.ArgumentParser()
    add_world_arguments(p)
    args = p.parse_args(["--ring-camouflage", "0.2", "--label-delay-days", "1", "5", "--ring-share", "0.01"])
    params = WorldParams(**world_overrides(args))
    assert (params.ring_camouflage, params.label_delay_days, params.ring_share) == (0.2, (1.0, 5.0), 0.01)
    assert WorldParams(**world_overrides(p.parse_args([]))) == WorldParams()
