"""Generate a world: entities, fraud scenarios, legitimate traffic, then the tables with string ids.

Determinism: one numpy Generator seeded from `params.seed` drives every draw, in a fixed order, so the
same parameters always produce identical tables (the tests check this).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from feature_svc.world import catalog, fraud
from feature_svc.world.legit import LEGIT, US_PER_DAY, TxnBlock, legit_transactions
from feature_svc.world.model import (
    CARDS_SCHEMA,
    DEVICES_SCHEMA,
    FRAUD_KINDS,
    INCIDENTS_SCHEMA,
    IPS_SCHEMA,
    MERCHANTS_SCHEMA,
    NEVER_LABELLED_DAYS,
    TIMESTAMP,
    TRANSACTIONS_SCHEMA,
    World,
    WorldError,
    WorldParams,
)
from feature_svc.world.population import NO_DEVICE, Population, build_population

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def generate_world(params: WorldParams | None = None, *, progress: bool = True) -> World:
    """Simulate a payment world. `progress` shows a tqdm bar on stderr, one step per stage."""
    params = params or WorldParams()
    rng = np.random.default_rng(params.seed)
    n = params.n_transactions
    scenarios = (
        ("ring", fraud.rings, params.ring_share),
        ("card_testing", fraud.card_testing, params.card_testing_share),
        ("ato", fraud.account_takeover, params.ato_share),
        ("stolen_card", fraud.stolen_cards, params.stolen_card_share),
    )
    with tqdm(total=len(scenarios) + 3, desc="simulating world", unit="stage", disable=not progress) as bar:
        bar.set_postfix_str("population")
        pop = build_population(
            rng,
            params.n_cards,
            params.merchants,
            params.compromised_merchant_share,
            days=params.days,
            new_device_rate=params.new_device_rate,
        )
        bar.update()
        blocks: list[TxnBlock] = []
        for name, scenario, share in scenarios:
            bar.set_postfix_str(name)
            blocks.append(scenario(rng, pop, round(n * share), params))
            bar.update()
        n_fraud = sum(len(b) for b in blocks)
        if n_fraud >= n:
            raise WorldError(f"fraud scenarios produced {n_fraud} transactions, more than n_transactions={n}")
        bar.set_postfix_str("legit traffic")
        blocks.append(legit_transactions(rng, pop, n - n_fraud, params.days))
        bar.update()
        bar.set_postfix_str("tables")
        txn = TxnBlock.concat(blocks)
        txn = txn.take(np.argsort(txn.ts, kind="stable"))
        world = _tables(rng, params, pop, txn)
        bar.update()
    return world


def _ids(prefix: str, n: int, width: int) -> pa.Array:
    width = max(width, len(str(max(n - 1, 0))))
    return pa.array([f"{prefix}{i:0{width}d}" for i in range(n)], type=pa.string())


def _codes(values: np.ndarray, idx: np.ndarray) -> pa.Array:
    return pa.array(values).take(pa.array(idx))


def _ip_strings(rng: np.random.Generator, ip_country: np.ndarray) -> pa.Array:
    """Unique dotted quads, each inside its country's block (first octet), octets 1-254 elsewhere."""
    out = np.empty(len(ip_country), dtype=object)
    for country in range(len(catalog.COUNTRIES)):
        where = np.flatnonzero(ip_country == country)
        k = rng.choice(254**3, size=len(where), replace=False)
        first = catalog.IP_FIRST_OCTET[country]
        out[where] = [f"{first}.{v // 64516 + 1}.{v // 254 % 254 + 1}.{v % 254 + 1}" for v in k.tolist()]
    return pa.array(out, type=pa.string())


def _tables(rng: np.random.Generator, params: WorldParams, pop: Population, txn: TxnBlock) -> World:
    n = len(txn)
    card_ids = _ids("card_", pop.n_cards, 6)
    merchant_ids = _ids("m_", len(pop.merchant_country), 5)
    device_ids = _ids("dev_", pop.devices.size, 7)
    ip_country = pop.ips.all_kinds()
    ip_ids = _ip_strings(rng, ip_country)

    start_us = (params.start - EPOCH) // timedelta(microseconds=1)
    ts = start_us + txn.ts
    is_fraud = txn.kind != LEGIT
    lo, hi = params.label_delay_days
    delay = ((lo + (hi - lo) * rng.beta(2.0, 3.0, n)) * US_PER_DAY).astype(np.int64)
    never = rng.random(n) < params.never_labelled_share
    delay = np.where(never, NEVER_LABELLED_DAYS * US_PER_DAY, delay)
    merchant_country = pop.merchant_country[txn.merchant]
    kinds = np.array(["", *FRAUD_KINDS])

    transactions = pa.table(
        {
            "transaction_id": _ids("tx_", n, 8),
            "timestamp": pa.array(ts, type=TIMESTAMP),
            "card_id": card_ids.take(pa.array(txn.card)),
            "merchant_id": merchant_ids.take(pa.array(txn.merchant)),
            "device_id": device_ids.take(pa.array(txn.device)),
            "ip_address": ip_ids.take(pa.array(txn.ip)),
            "amount": pa.array(txn.amount, type=pa.float64()),
            "currency": _codes(catalog.CURRENCY_CODES, merchant_country),
            "country_code": _codes(catalog.COUNTRY_CODES, merchant_country),
            "mcc_code": _codes(catalog.MCC_CODES, pop.merchant_mcc[txn.merchant]),
            "channel": _codes(catalog.CHANNELS, txn.channel),
            "is_fraud": pa.array(is_fraud),
            "fraud_kind": _codes(kinds, txn.kind.astype(np.int64)),
            "label_time": pa.array(ts + delay, type=TIMESTAMP, mask=~is_fraud),
        },
        schema=TRANSACTIONS_SCHEMA,
    )

    usual = pop.card_devices
    present = usual != NO_DEVICE
    offsets = np.concatenate([[0], np.cumsum(present.sum(axis=1))]).astype(np.int32)
    cards = pa.table(
        {
            "card_id": card_ids,
            "customer_id": _ids("cust_", pop.n_cards, 6),
            "home_country": _codes(catalog.COUNTRY_CODES, pop.card_country),
            "currency": _codes(catalog.CURRENCY_CODES, pop.card_country),
            "typical_amount": pa.array(pop.card_typical, type=pa.float64()),
            "home_ip": ip_ids.take(pa.array(pop.card_home_ip)),
            "usual_device_ids": pa.ListArray.from_arrays(pa.array(offsets), device_ids.take(pa.array(usual[present]))),
        },
        schema=CARDS_SCHEMA,
    )
    merchants = pa.table(
        {
            "merchant_id": merchant_ids,
            "mcc_code": _codes(catalog.MCC_CODES, pop.merchant_mcc),
            "country_code": _codes(catalog.COUNTRY_CODES, pop.merchant_country),
            "is_compromised": pa.array(pop.merchant_compromised),
        },
        schema=MERCHANTS_SCHEMA,
    )
    devices = pa.table(
        {"device_id": device_ids, "device_type": _codes(catalog.DEVICE_TYPES, pop.devices.all_kinds())},
        schema=DEVICES_SCHEMA,
    )
    ips = pa.table({"ip_address": ip_ids, "country_code": _codes(catalog.COUNTRY_CODES, ip_country)}, schema=IPS_SCHEMA)
    fraud_rows = np.flatnonzero(is_fraud)
    incident_ids = [
        f"{kinds[k]}-{i:05d}"
        for k, i in zip(txn.kind[fraud_rows].tolist(), txn.incident[fraud_rows].tolist(), strict=True)
    ]
    incidents = pa.table(
        {"transaction_id": transactions["transaction_id"].take(pa.array(fraud_rows)), "incident_id": incident_ids},
        schema=INCIDENTS_SCHEMA,
    )
    return World(
        params=params,
        transactions=transactions,
        cards=cards,
        merchants=merchants,
        devices=devices,
        ips=ips,
        incidents=incidents,
    )
