"""The four kinds of fraud. Each one leaves its own traces, so that a model has something distinct to learn:

- ring: a group of cards cashing out through the same few devices and IPs (a graph signal);
- card_testing: bursts of tiny amounts from many cards at one compromised merchant within minutes;
- ato: account takeover, a brand-new device in a foreign country spending several times the usual amount;
- stolen_card: a quick run of large purchases at home (amount and velocity anomalies).

Every function returns `target`-ish transactions as a TxnBlock; whole incidents are generated, so the
count is close to the target, not equal.
"""

from __future__ import annotations

import numpy as np

from feature_svc.world import catalog
from feature_svc.world.legit import US_PER_DAY, US_PER_HOUR, TxnBlock
from feature_svc.world.model import FRAUD_KINDS
from feature_svc.world.population import Population

US_PER_MINUTE = 60_000_000
KIND_CODE = {kind: i + 1 for i, kind in enumerate(FRAUD_KINDS)}


def _empty() -> TxnBlock:
    z = np.zeros(0, dtype=np.int64)
    return TxnBlock(ts=z, card=z, merchant=z, device=z, ip=z, amount=z.astype(float), channel=z, kind=z)


def _block(
    ts: np.ndarray,
    card: np.ndarray,
    merchant: np.ndarray,
    device: np.ndarray,
    ip: np.ndarray,
    amount: np.ndarray,
    channel: int,
    kind: str,
) -> TxnBlock:
    n = len(ts)
    return TxnBlock(
        ts=ts.astype(np.int64),
        card=card.astype(np.int64),
        merchant=merchant.astype(np.int64),
        device=device.astype(np.int64),
        ip=ip.astype(np.int64),
        amount=np.maximum(np.round(amount, 2), 0.01),
        channel=np.full(n, channel, dtype=np.int64),
        kind=np.full(n, KIND_CODE[kind], dtype=np.int8),
    )


def rings(rng: np.random.Generator, pop: Population, target: int, days: int) -> TxnBlock:
    """Rings of 4-10 cards, each ring with 1-3 phones and 2-4 proxy IPs that all its cards use, buying
    resellable goods at a handful of cash-out merchants over one week."""
    if target <= 0:
        return _empty()
    high_risk = np.flatnonzero(np.isin(pop.merchant_mcc, catalog.HIGH_RISK_MCCS))
    if len(high_risk) == 0:
        high_risk = np.arange(len(pop.merchant_mcc))
    members = rng.permutation(pop.n_cards)  # a card belongs to at most one ring
    taken = 0
    blocks: list[TxnBlock] = []
    for _ in range(max(1, round(target / 40))):
        size = int(rng.integers(4, 11))
        if taken + size > len(members):
            break
        cards = members[taken : taken + size]
        taken += size
        devices = pop.new_devices(rng, int(rng.integers(1, 4)))
        ips = pop.new_ips(np.full(int(rng.integers(2, 5)), rng.integers(0, len(catalog.COUNTRIES))))
        cashout = rng.choice(high_risk, size=min(len(high_risk), int(rng.integers(3, 7))), replace=False)
        card = np.repeat(cards, rng.integers(3, 9, size))
        m = len(card)
        start = rng.integers(0, (days - 7) * US_PER_DAY)
        blocks.append(
            _block(
                ts=start + rng.integers(0, 7 * US_PER_DAY, m),
                card=card,
                merchant=cashout[rng.integers(0, len(cashout), m)],
                device=devices[rng.integers(0, len(devices), m)],
                ip=ips[rng.integers(0, len(ips), m)],
                amount=rng.lognormal(np.log(250.0), 0.5, m),
                channel=catalog.ECOM,
                kind="ring",
            )
        )
    return TxnBlock.concat(blocks) if blocks else _empty()


def card_testing(rng: np.random.Generator, pop: Population, target: int, days: int) -> TxnBlock:
    """Bursts: a bot on one device and two IPs tries 8-25 stolen card numbers, 1-3 times each, for a few
    units at one compromised merchant within 30 minutes."""
    if target <= 0:
        return _empty()
    compromised = np.flatnonzero(pop.merchant_compromised)
    n_bursts = max(1, round(target / 32))
    victims_per_burst = rng.integers(8, 26, n_bursts)
    victim_burst = np.repeat(np.arange(n_bursts), victims_per_burst)
    victim_card = rng.choice(pop.n_cards, size=len(victim_burst))
    row_victim = np.repeat(np.arange(len(victim_burst)), rng.integers(1, 4, len(victim_burst)))
    burst = victim_burst[row_victim]
    m = len(row_victim)

    start = rng.integers(0, days * US_PER_DAY - US_PER_HOUR, n_bursts)
    merchant = compromised[rng.integers(0, len(compromised), n_bursts)]
    bot_device = pop.new_devices(rng, n_bursts)
    bot_ips = pop.new_ips(np.repeat(rng.integers(0, len(catalog.COUNTRIES), n_bursts), 2)).reshape(-1, 2)
    amount = np.where(rng.random(m) < 0.3, 1.0, rng.uniform(0.5, 5.0, m))
    return _block(
        ts=start[burst] + rng.integers(0, 30 * US_PER_MINUTE, m),
        card=victim_card[row_victim],
        merchant=merchant[burst],
        device=bot_device[burst],
        ip=bot_ips[burst, rng.integers(0, 2, m)],
        amount=amount,
        channel=catalog.ECOM,
        kind="card_testing",
    )


def account_takeover(rng: np.random.Generator, pop: Population, target: int, days: int) -> TxnBlock:
    """After at least a week of normal history, 2-6 purchases within six hours from a never-seen device and
    IP in a foreign country, at 4-12 times the card's typical amount."""
    if target <= 0:
        return _empty()
    n = max(1, round(target / 4))
    victim = rng.choice(pop.n_cards, size=n, replace=n > pop.n_cards)
    n_countries = len(catalog.COUNTRIES)
    foreign = (pop.card_country[victim] + rng.integers(1, n_countries, n)) % n_countries
    device = pop.new_devices(rng, n)
    ip = pop.new_ips(foreign)
    incident = np.repeat(np.arange(n), rng.integers(2, 7, n))
    m = len(incident)
    start = rng.integers(7 * US_PER_DAY, days * US_PER_DAY - 6 * US_PER_HOUR, n)
    return _block(
        ts=start[incident] + rng.integers(0, 6 * US_PER_HOUR, m),
        card=victim[incident],
        merchant=pop.merchants_in(rng, foreign[incident]),
        device=device[incident],
        ip=ip[incident],
        amount=pop.card_typical[victim[incident]] * rng.uniform(4.0, 12.0, m),
        channel=catalog.ECOM,
        kind="ato",
    )


def stolen_cards(rng: np.random.Generator, pop: Population, target: int, days: int) -> TxnBlock:
    """A stolen card run at home: 5-13 purchases within three hours at 3-15 times the typical amount."""
    if target <= 0:
        return _empty()
    n = max(1, round(target / 9))
    victim = rng.choice(pop.n_cards, size=n, replace=n > pop.n_cards)
    home = pop.card_country[victim]
    thief_device = pop.new_devices(rng, n)
    incident = np.repeat(np.arange(n), rng.integers(5, 14, n))
    m = len(incident)
    start = rng.integers(3 * US_PER_DAY, days * US_PER_DAY - 3 * US_PER_HOUR, n)
    return _block(
        ts=start[incident] + rng.integers(0, 3 * US_PER_HOUR, m),
        card=victim[incident],
        merchant=pop.merchants_in(rng, home[incident]),
        device=thief_device[incident],
        ip=pop.public_ip_in(rng, home[incident]),
        amount=pop.card_typical[victim[incident]] * rng.uniform(3.0, 15.0, m),
        channel=catalog.POS,
        kind="stolen_card",
    )
