"""Features computed from a transaction's own fields, vectorised over a partial.

This is the feature source that needs no store: the backbone scores with it alone, and the richer sources
(Redis online features, graph embeddings) add columns beside it. Training and serving both call `featurize`,
so the two cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np

from shared.messages import Transaction

FEATURE_NAMES: tuple[str, ...] = (
    "log_amount",
    "amount_high",
    "amount_tiny",
    "round_amount",
    "mcc_high_risk",
    "mcc_missing",
    "cross_border",
    "channel_ecom",
    "channel_atm",
    "channel_remote_other",
    "night_utc",
    "device_missing",
    "ip_missing",
)

DESCRIPTIONS: dict[str, str] = {
    "log_amount": "amount is large for a card payment",
    "amount_high": "amount over 1,000",
    "amount_tiny": "tiny amount (under 5), typical of card testing",
    "round_amount": "round amount",
    "mcc_high_risk": "high-risk merchant category (digital goods, gambling, money transfer, quasi-cash)",
    "mcc_missing": "merchant category missing",
    "cross_border": "currency does not match the merchant country",
    "channel_ecom": "card-not-present e-commerce payment",
    "channel_atm": "ATM withdrawal",
    "channel_remote_other": "mail/phone order or P2P payment",
    "night_utc": "made between 00:00 and 05:00 UTC",
    "device_missing": "no device fingerprint",
    "ip_missing": "no IP address",
}

HIGH_RISK_MCC = frozenset({"4829", "5816", "5967", "5993", "6051", "6211", "7801", "7802", "7995"})

# currency -> countries where it is the local currency (enough for a cross-border signal)
CURRENCY_COUNTRIES: dict[str, frozenset[str]] = {
    "USD": frozenset({"US", "EC", "SV", "PA", "PR"}),
    "EUR": frozenset(
        {
            "AT",
            "BE",
            "CY",
            "DE",
            "EE",
            "ES",
            "FI",
            "FR",
            "GR",
            "HR",
            "IE",
            "IT",
            "LT",
            "LU",
            "LV",
            "MT",
            "NL",
            "PT",
            "SI",
            "SK",
        }
    ),
    "GBP": frozenset({"GB"}),
    "CAD": frozenset({"CA"}),
    "AUD": frozenset({"AU"}),
    "JPY": frozenset({"JP"}),
    "CHF": frozenset({"CH", "LI"}),
    "SEK": frozenset({"SE"}),
    "NOK": frozenset({"NO"}),
    "DKK": frozenset({"DK"}),
    "PLN": frozenset({"PL"}),
    "INR": frozenset({"IN"}),
    "BRL": frozenset({"BR"}),
    "MXN": frozenset({"MX"}),
    "SGD": frozenset({"SG"}),
}


def _utc_hour(ts: dt.datetime | None) -> int:
    if ts is None:
        return 12  # unknown time: counts as daytime, i.e. adds no risk
    return ts.astimezone(dt.UTC).hour if ts.tzinfo is not None else ts.hour  # naive = UTC, as documented


def featurize(transactions: Sequence[Transaction]) -> np.ndarray:
    """(n, len(FEATURE_NAMES)) float32 matrix, one row per transaction."""
    n = len(transactions)
    amount = np.fromiter((t.transaction_amount for t in transactions), dtype=np.float64, count=n)
    mcc = [t.mcc_code for t in transactions]
    channel = [t.channel for t in transactions]
    hours = np.fromiter((_utc_hour(t.timestamp) for t in transactions), dtype=np.int16, count=n)
    cross = np.fromiter(
        (
            t.currency is not None
            and t.country_code is not None
            and t.currency.upper() in CURRENCY_COUNTRIES
            and t.country_code.upper() not in CURRENCY_COUNTRIES[t.currency.upper()]
            for t in transactions
        ),
        dtype=bool,
        count=n,
    )
    x = np.empty((n, len(FEATURE_NAMES)), dtype=np.float32)
    x[:, 0] = np.log1p(amount)
    x[:, 1] = amount > 1000
    x[:, 2] = amount < 5
    x[:, 3] = (amount >= 100) & (np.mod(amount, 100) == 0)
    x[:, 4] = [m in HIGH_RISK_MCC for m in mcc]
    x[:, 5] = [m is None for m in mcc]
    x[:, 6] = cross
    x[:, 7] = [c == "ecom" for c in channel]
    x[:, 8] = [c == "atm" for c in channel]
    x[:, 9] = [c in ("moto", "p2p") for c in channel]
    x[:, 10] = hours < 5
    x[:, 11] = [t.device_id is None for t in transactions]
    x[:, 12] = [t.ip_address is None for t in transactions]
    return x
