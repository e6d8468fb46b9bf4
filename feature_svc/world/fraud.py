"""The four kinds of fraud. Each one leaves its own traces, but none of them is given away by a single column:

- ring: mule accounts (aged cards with their own legit history) linked in a chain card-device-card-IP-card, each
  device or IP shared by two neighbouring cards only (as in a family), some of them legit users' own devices
  and public IPs; most purchases copy the card's own habits (the camouflage), the rest cash out. Only the chain,
  2-3 hops long, and the labels that arrive on some of its members tell it apart;
- card_testing: bursts of tiny amounts from many cards at one compromised merchant within minutes;
- ato: account takeover, a new device in a foreign country spending several times the usual amount;
- stolen_card: a quick run of large purchases at home (amount and velocity anomalies).

Every function returns `target`-ish transactions as a TxnBlock; whole incidents are generated, so the
count is close to the target, not equal. `incident` numbers the incidents inside one scenario.
"""

from __future__ import annotations

import numpy as np

from feature_svc.world import catalog
from feature_svc.world.legit import US_PER_DAY, US_PER_HOUR, TxnBlock, daytime
from feature_svc.world.model import FRAUD_KINDS, FraudKind, WorldParams
from feature_svc.world.population import N_FAVOURITES, Population

US_PER_MINUTE = 60_000_000
KIND_CODE = {kind: i + 1 for i, kind in enumerate(FRAUD_KINDS)}
RING_ROWS = 21  # mean transactions of one ring (6 cards x 3.5 purchases), to turn a share into a ring count
RING_STAGGER_DAYS = 4  # a ring recruits its next mule card every 4 days; each card works for a week


def _empty() -> TxnBlock:
    z = np.zeros(0, dtype=np.int64)
    return TxnBlock(ts=z, card=z, merchant=z, device=z, ip=z, amount=z.astype(float), channel=z, kind=z, incident=z)


def _block(
    ts: np.ndarray,
    card: np.ndarray,
    merchant: np.ndarray,
    device: np.ndarray,
    ip: np.ndarray,
    amount: np.ndarray,
    channel: int,
    kind: FraudKind,
    incident: np.ndarray,
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
        incident=np.broadcast_to(np.asarray(incident, dtype=np.int64), (n,)).copy(),
    )


def _chain_links(
    rng: np.random.Generator, pop: Population, size: int, params: WorldParams
) -> tuple[list[list[int]], list[list[int]]]:
    """The size-1 links of a chain of `size` cards, alternating device and IP from a random first type: per card,
    the devices and the IPs it shares with its neighbours. A device link is a legit user's own (compromised)
    device with probability compromised_device_share, else a fresh phone; an IP link is a public IP with
    probability public_ip_share, else a fresh proxy IP."""
    devices: list[list[int]] = [[] for _ in range(size)]
    ips: list[list[int]] = [[] for _ in range(size)]
    country = int(rng.integers(0, len(catalog.COUNTRIES)))
    first_is_device = rng.random() < 0.5
    for i in range(size - 1):
        if (i % 2 == 0) == first_is_device:
            if rng.random() < params.compromised_device_share:
                owner = int(rng.integers(0, pop.n_cards))
                link = int(pop.card_devices[owner, 0])
            else:
                link = int(pop.new_devices(rng, 1)[0])
            devices[i].append(link)
            devices[i + 1].append(link)
        else:
            if rng.random() < params.public_ip_share:
                link = int(pop.public_ip_in(rng, np.array([country]))[0])
            else:
                link = int(pop.new_ips(np.array([country]))[0])
            ips[i].append(link)
            ips[i + 1].append(link)
    return devices, ips


def rings(rng: np.random.Generator, pop: Population, target: int, params: WorldParams) -> TxnBlock:
    """Rings of 4-8 aged cards (a card belongs to at most one ring) chained card-device-card-IP-card.

    Members join one after another, four days apart, and each makes 2-5 purchases in its week, through the
    devices and IPs it shares with its neighbours (its own usual device or home IP where it has no link of that
    type). With probability ring_camouflage a purchase copies the card's habits (a favourite merchant, its usual
    amount, daytime), else it cashes out (resellable goods, ~250 in any currency, any hour)."""
    if target <= 0:
        return _empty()
    days = params.days
    high_risk = np.flatnonzero(np.isin(pop.merchant_mcc, catalog.HIGH_RISK_MCCS))
    if len(high_risk) == 0:
        high_risk = np.arange(len(pop.merchant_mcc))
    members = rng.permutation(pop.n_cards)
    taken = 0
    blocks: list[TxnBlock] = []
    for ring in range(max(1, round(target / RING_ROWS))):
        size = int(rng.integers(4, 9))
        if taken + size > len(members):
            break
        cards = members[taken : taken + size]
        taken += size
        link_devices, link_ips = _chain_links(rng, pop, size, params)
        cashout = rng.choice(high_risk, size=min(len(high_risk), int(rng.integers(3, 7))), replace=False)
        per_card = rng.integers(2, 6, size)
        slot = np.repeat(np.arange(size), per_card)
        card = cards[slot]
        m = len(card)
        device = np.array(
            [rng.choice(link_devices[i]) if link_devices[i] else pop.card_devices[cards[i], 0] for i in slot]
        )
        ip = np.array([rng.choice(link_ips[i]) if link_ips[i] else pop.card_home_ip[cards[i]] for i in slot])
        # recruited one after another: member i works its card from day i * RING_STAGGER_DAYS of the ring on,
        # for a week, so the labels of the first members arrive while the last ones are still spending
        start = int(rng.integers(7 * US_PER_DAY, max(8 * US_PER_DAY, (days - 7) * US_PER_DAY)))
        day = (slot * RING_STAGGER_DAYS + rng.integers(0, 7, m)) * US_PER_DAY
        camouflaged = rng.random(m) < params.ring_camouflage
        favourite = pop.card_favourites[card, rng.integers(0, N_FAVOURITES, m)]
        usual = pop.card_typical[card] * catalog.MCC_SPEND[pop.merchant_mcc[favourite]] * rng.lognormal(0.0, 0.5, m)
        ts = start + day + np.where(camouflaged, daytime(rng, m), rng.integers(0, US_PER_DAY, m))
        inside = ts < days * US_PER_DAY
        blocks.append(
            _block(
                ts=ts,
                card=card,
                merchant=np.where(camouflaged, favourite, cashout[rng.integers(0, len(cashout), m)]),
                device=device,
                ip=ip,
                amount=np.where(camouflaged, usual, rng.lognormal(np.log(250.0), 0.5, m)),
                channel=catalog.ECOM,
                kind="ring",
                incident=np.full(m, ring),
            ).take(np.flatnonzero(inside))
        )
    return TxnBlock.concat(blocks) if blocks else _empty()


def card_testing(rng: np.random.Generator, pop: Population, target: int, params: WorldParams) -> TxnBlock:
    """Bursts: a bot on one device and two IPs (public ones with probability public_ip_share) tries 5-15 stolen
    card numbers, once or twice each, for a few units at one compromised merchant within 30 minutes."""
    if target <= 0:
        return _empty()
    days = params.days
    compromised = np.flatnonzero(pop.merchant_compromised)
    n_bursts = max(1, round(target / 15))
    victims_per_burst = rng.integers(5, 16, n_bursts)
    victim_burst = np.repeat(np.arange(n_bursts), victims_per_burst)
    victim_card = rng.choice(pop.n_cards, size=len(victim_burst))
    row_victim = np.repeat(np.arange(len(victim_burst)), rng.integers(1, 3, len(victim_burst)))
    burst = victim_burst[row_victim]
    m = len(row_victim)

    start = rng.integers(0, days * US_PER_DAY - US_PER_HOUR, n_bursts)
    merchant = compromised[rng.integers(0, len(compromised), n_bursts)]
    bot_device = pop.new_devices(rng, n_bursts)
    bot_country = np.repeat(rng.integers(0, len(catalog.COUNTRIES), n_bursts), 2)
    bot_ips = np.where(
        rng.random(len(bot_country)) < params.public_ip_share,
        pop.public_ip_in(rng, bot_country),
        pop.new_ips(bot_country),
    ).reshape(-1, 2)
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
        incident=burst,
    )


def account_takeover(rng: np.random.Generator, pop: Population, target: int, params: WorldParams) -> TxnBlock:
    """After at least a week of normal history, 2-6 purchases within six hours from a device the card never
    used and an IP in a foreign country (public with probability public_ip_share), at 4-12 times the card's
    typical amount."""
    if target <= 0:
        return _empty()
    days = params.days
    n = max(1, round(target / 4))
    victim = rng.choice(pop.n_cards, size=n, replace=n > pop.n_cards)
    n_countries = len(catalog.COUNTRIES)
    foreign = (pop.card_country[victim] + rng.integers(1, n_countries, n)) % n_countries
    device = pop.new_devices(rng, n)
    ip = np.where(rng.random(n) < params.public_ip_share, pop.public_ip_in(rng, foreign), pop.new_ips(foreign))
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
        incident=incident,
    )


def stolen_cards(rng: np.random.Generator, pop: Population, target: int, params: WorldParams) -> TxnBlock:
    """A stolen card run at home: 5-13 purchases within three hours at 3-15 times the typical amount."""
    if target <= 0:
        return _empty()
    days = params.days
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
        incident=incident,
    )
