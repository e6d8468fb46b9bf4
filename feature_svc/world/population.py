"""The entities of the world, as integer-indexed numpy arrays: cards and their customers, merchants, devices
and IPs. Entities stay integers until the final tables are built, so that sampling stays vectorised.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from feature_svc.world import catalog

NO_DEVICE = -1
N_FAVOURITES = 6
US_PER_DAY = 86_400_000_000


@dataclass
class Registry:
    """A growing set of devices or IPs. Fraud scenarios mint fresh ones (a ring's phones, an ATO's laptop),
    so the tables are only known once every scenario has run."""

    kinds: list[np.ndarray] = field(default_factory=list)  # device type codes or IP country codes
    size: int = 0

    def add(self, kinds: np.ndarray) -> np.ndarray:
        """Register `len(kinds)` new entities and return their indices."""
        kinds = np.asarray(kinds, dtype=np.int64)
        idx = np.arange(self.size, self.size + len(kinds), dtype=np.int64)
        self.kinds.append(kinds)
        self.size += len(kinds)
        return idx

    def all_kinds(self) -> np.ndarray:
        return np.concatenate(self.kinds) if self.kinds else np.zeros(0, dtype=np.int64)


@dataclass
class Population:
    # cards
    card_country: np.ndarray
    card_typical: np.ndarray
    card_home_ip: np.ndarray
    card_devices: np.ndarray  # (n_cards, 3), packed left, NO_DEVICE padded
    card_n_devices: np.ndarray
    card_favourites: np.ndarray  # (n_cards, N_FAVOURITES) merchants at home the card holder returns to
    # a new phone or a reinstalled app: from `card_new_device_at` (µs since the start) on, the card also uses
    # `card_new_device` (NO_DEVICE for cards that get none in the window), so "new device" is not fraud alone
    card_new_device: np.ndarray
    card_new_device_at: np.ndarray
    # merchants
    merchant_country: np.ndarray
    merchant_mcc: np.ndarray
    merchant_compromised: np.ndarray
    # weighted sampling of a merchant inside a country: merchants ordered by country, cumulative weights
    merchant_order: np.ndarray
    merchant_cum: np.ndarray  # len n_merchants + 1, starts at 0
    country_merchant_lo: np.ndarray
    country_merchant_hi: np.ndarray
    # public IPs (cafes, carrier NAT) ordered by country, for uniform sampling inside a country
    public_ips: np.ndarray
    country_public_lo: np.ndarray
    country_public_hi: np.ndarray
    devices: Registry
    ips: Registry

    @property
    def n_cards(self) -> int:
        return len(self.card_country)

    def merchants_in(self, rng: np.random.Generator, countries: np.ndarray) -> np.ndarray:
        """One popularity-weighted merchant per entry of `countries`."""
        lo = self.country_merchant_lo[countries]
        hi = self.country_merchant_hi[countries]
        base = self.merchant_cum[lo]
        u = base + rng.random(len(countries)) * (self.merchant_cum[hi] - base)
        pos = np.clip(np.searchsorted(self.merchant_cum, u, side="right") - 1, lo, hi - 1)
        picked: np.ndarray = self.merchant_order[pos]
        return picked

    def public_ip_in(self, rng: np.random.Generator, countries: np.ndarray) -> np.ndarray:
        lo = self.country_public_lo[countries]
        hi = self.country_public_hi[countries]
        picked: np.ndarray = self.public_ips[lo + (rng.random(len(countries)) * (hi - lo)).astype(np.int64)]
        return picked

    def new_ips(self, countries: np.ndarray) -> np.ndarray:
        return self.ips.add(countries)

    def new_devices(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.devices.add(rng.integers(0, len(catalog.DEVICE_TYPES), n))


def _every_country_then_weighted(rng: np.random.Generator, n: int) -> np.ndarray:
    """Country codes with every country present, so sampling inside a country never meets an empty set."""
    n_countries = len(catalog.COUNTRIES)
    rest = rng.choice(n_countries, size=n - n_countries, p=catalog.COUNTRY_WEIGHTS)
    return np.concatenate([np.arange(n_countries), rest])


def _ranges(sorted_codes: np.ndarray, n_codes: int) -> tuple[np.ndarray, np.ndarray]:
    lo = np.searchsorted(sorted_codes, np.arange(n_codes), side="left")
    hi = np.searchsorted(sorted_codes, np.arange(n_codes), side="right")
    return lo, hi


def build_population(
    rng: np.random.Generator,
    n_cards: int,
    n_merchants: int,
    compromised_share: float,
    *,
    days: int = 42,
    new_device_rate: float = 0.0,
) -> Population:
    """`new_device_rate`: the share of cards that start using a new device at some point of the `days`."""
    n_countries = len(catalog.COUNTRIES)
    devices, ips = Registry(), Registry()

    # merchants: every country has some; popularity is heavy-tailed (a few big chains, many small shops)
    merchant_country = _every_country_then_weighted(rng, n_merchants)
    merchant_mcc = rng.choice(len(catalog.MCCS), size=n_merchants, p=catalog.MCC_WEIGHTS)
    popularity = rng.pareto(1.5, n_merchants) + 1.0
    order = np.argsort(merchant_country, kind="stable")
    cum = np.concatenate([[0.0], np.cumsum(popularity[order])])
    m_lo, m_hi = _ranges(merchant_country[order], n_countries)

    # compromised merchants are where card testers probe; they are small digital-goods style shops
    n_compromised = max(1, round(n_merchants * compromised_share))
    candidates = np.flatnonzero(np.isin(merchant_mcc, catalog.TESTING_MCCS))
    if len(candidates) < n_compromised:
        candidates = np.arange(n_merchants)
    compromised = np.zeros(n_merchants, dtype=bool)
    compromised[rng.choice(candidates, size=n_compromised, replace=False)] = True

    # cards, grouped into households of 1-4 that share a home IP and sometimes a tablet
    card_country = np.sort(rng.choice(n_countries, size=n_cards, p=catalog.COUNTRY_WEIGHTS))
    sizes = rng.choice([1, 2, 3, 4], size=n_cards, p=[0.55, 0.25, 0.12, 0.08])
    household = np.repeat(np.arange(n_cards), sizes)[:n_cards]
    # a household never spans two countries: cut it where the (sorted) country changes
    household = np.cumsum(np.r_[True, (np.diff(household) != 0) | (np.diff(card_country) != 0)]) - 1
    n_households = int(household[-1]) + 1
    first_member = np.r_[True, np.diff(household) != 0]
    household_country = card_country[first_member]
    home_ips = ips.add(household_country)
    card_home_ip = home_ips[household]

    household_size = np.bincount(household, minlength=n_households)
    shared_device = np.full(n_households, NO_DEVICE, dtype=np.int64)
    multi = np.flatnonzero(household_size > 1)
    shared_device[multi] = devices.add(rng.integers(0, len(catalog.DEVICE_TYPES), len(multi)))

    card_devices = np.full((n_cards, 3), NO_DEVICE, dtype=np.int64)
    card_devices[:, 0] = devices.add(rng.integers(0, len(catalog.DEVICE_TYPES), n_cards))
    has_second = rng.random(n_cards) < 0.3
    n_second = int(has_second.sum())
    card_devices[has_second, 1] = devices.add(rng.integers(0, len(catalog.DEVICE_TYPES), n_second))
    uses_shared = (shared_device[household] != NO_DEVICE) & (rng.random(n_cards) < 0.7)
    col = np.where(has_second, 2, 1)
    card_devices[np.flatnonzero(uses_shared), col[uses_shared]] = shared_device[household[uses_shared]]
    card_n_devices = (card_devices != NO_DEVICE).sum(axis=1)

    # public IPs: shared by strangers (coffee shops, carrier NAT), a legitimate source of IP sharing
    public_country = np.sort(_every_country_then_weighted(rng, max(n_countries, n_cards // 20)))
    public_ips = ips.add(public_country)
    p_lo, p_hi = _ranges(public_country, n_countries)

    card_typical = np.round(rng.lognormal(np.log(40.0), 0.6, n_cards), 2)
    new_device = np.full(n_cards, NO_DEVICE, dtype=np.int64)
    gets_new = np.flatnonzero(rng.random(n_cards) < new_device_rate)
    new_device[gets_new] = devices.add(rng.integers(0, len(catalog.DEVICE_TYPES), len(gets_new)))
    new_device_at = rng.integers(0, days * US_PER_DAY, n_cards)

    pop = Population(
        card_country=card_country,
        card_typical=card_typical,
        card_home_ip=card_home_ip,
        card_devices=card_devices,
        card_n_devices=card_n_devices,
        card_favourites=np.zeros((n_cards, N_FAVOURITES), dtype=np.int64),
        card_new_device=new_device,
        card_new_device_at=new_device_at,
        merchant_country=merchant_country,
        merchant_mcc=merchant_mcc,
        merchant_compromised=compromised,
        merchant_order=order,
        merchant_cum=cum,
        country_merchant_lo=m_lo,
        country_merchant_hi=m_hi,
        public_ips=public_ips,
        country_public_lo=p_lo,
        country_public_hi=p_hi,
        devices=devices,
        ips=ips,
    )
    pop.card_favourites = pop.merchants_in(rng, np.repeat(card_country, N_FAVOURITES)).reshape(-1, N_FAVOURITES)
    return pop
