"""Transactions as integer columns, and the legitimate behaviour of the card holders."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from feature_svc.world import catalog
from feature_svc.world.population import N_FAVOURITES, NO_DEVICE, Population

US_PER_DAY = 86_400_000_000
US_PER_HOUR = 3_600_000_000
LEGIT = 0  # fraud kind code of a legitimate transaction; fraud kinds are 1.. in FRAUD_KINDS order


@dataclass
class TxnBlock:
    """A batch of transactions, one numpy array per column; timestamps are µs since the world's start."""

    ts: np.ndarray
    card: np.ndarray
    merchant: np.ndarray
    device: np.ndarray
    ip: np.ndarray
    amount: np.ndarray
    channel: np.ndarray
    kind: np.ndarray
    incident: np.ndarray  # int64 incident number inside its kind's scenario; -1 for legitimate transactions

    def __len__(self) -> int:
        return len(self.ts)

    @classmethod
    def concat(cls, blocks: list[TxnBlock]) -> TxnBlock:
        return cls(**{f.name: np.concatenate([getattr(b, f.name) for b in blocks]) for f in fields(cls)})

    def take(self, idx: np.ndarray) -> TxnBlock:
        return TxnBlock(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})


def channels_for(rng: np.random.Generator, mcc: np.ndarray) -> np.ndarray:
    """POS or e-commerce by how online the merchant category is; ATMs are always the ATM channel."""
    channel = np.where(rng.random(len(mcc)) < catalog.MCC_ECOM[mcc], catalog.ECOM, catalog.POS)
    return np.where(mcc == catalog.ATM_MCC, catalog.ATM, channel)


def daytime(rng: np.random.Generator, n: int) -> np.ndarray:
    """µs into the day, by the hours people shop at (catalog.HOUR_WEIGHTS)."""
    hour = rng.choice(24, size=n, p=catalog.HOUR_WEIGHTS)
    out: np.ndarray = hour * US_PER_HOUR + rng.integers(0, US_PER_HOUR, n)
    return out


def legit_transactions(rng: np.random.Generator, pop: Population, n: int, days: int) -> TxnBlock:
    """Card holders shopping: mostly at a few favourite merchants at home, from their own devices and home
    IP, at amounts around their typical spend, by day more than by night; sometimes abroad."""
    activity = rng.gamma(2.0, 1.0, pop.n_cards)
    card = rng.choice(pop.n_cards, size=n, p=activity / activity.sum())
    day = rng.integers(0, days, n)
    ts = day * US_PER_DAY + daytime(rng, n)

    home = pop.card_country[card]
    abroad = rng.random(n) < 0.03
    country = np.where(abroad, rng.choice(len(catalog.COUNTRIES), size=n, p=catalog.COUNTRY_WEIGHTS), home)

    at_favourite = ~abroad & (rng.random(n) < 0.6)
    merchant = np.where(
        at_favourite,
        pop.card_favourites[card, rng.integers(0, N_FAVOURITES, n)],
        pop.merchants_in(rng, country),
    )
    mcc = pop.merchant_mcc[merchant]
    amount = pop.card_typical[card] * catalog.MCC_SPEND[mcc] * rng.lognormal(0.0, 0.5, n)

    slot = (rng.random(n) * pop.card_n_devices[card]).astype(np.int64)
    device = pop.card_devices[card, slot]
    # after a card's new device appears, 60% of its purchases come from it
    on_new = (pop.card_new_device[card] != NO_DEVICE) & (ts >= pop.card_new_device_at[card]) & (rng.random(n) < 0.6)
    device = np.where(on_new, pop.card_new_device[card], device)
    from_home = ~abroad & (rng.random(n) < 0.85)
    ip = np.where(from_home, pop.card_home_ip[card], pop.public_ip_in(rng, country))

    return TxnBlock(
        ts=ts,
        card=card,
        merchant=merchant,
        device=device,
        ip=ip,
        amount=np.maximum(np.round(amount, 2), 0.5),
        channel=channels_for(rng, mcc),
        kind=np.full(n, LEGIT, dtype=np.int8),
        incident=np.full(n, -1, dtype=np.int64),
    )
