"""Static reference data of the simulated payment world: countries, currencies, IP blocks and MCCs.

Kept as plain tuples so that the generator indexes them with numpy arrays (country and MCC are small
integer codes inside the simulator and only become strings when the tables are built).
"""

from __future__ import annotations

from typing import Final

import numpy as np

# (ISO 3166-1 alpha-2, ISO 4217, first IPv4 octet of the block its addresses come from, weight of its
# population). The octets avoid private, loopback and multicast ranges so every address looks public.
COUNTRIES: Final[tuple[tuple[str, str, int, float], ...]] = (
    ("US", "USD", 23, 0.30),
    ("GB", "GBP", 31, 0.10),
    ("DE", "EUR", 46, 0.09),
    ("FR", "EUR", 51, 0.08),
    ("ES", "EUR", 62, 0.05),
    ("IT", "EUR", 79, 0.05),
    ("NL", "EUR", 84, 0.03),
    ("CA", "CAD", 99, 0.05),
    ("BR", "BRL", 138, 0.05),
    ("MX", "MXN", 148, 0.04),
    ("IN", "INR", 103, 0.06),
    ("PL", "PLN", 109, 0.03),
    ("AU", "AUD", 121, 0.03),
    ("JP", "JPY", 126, 0.02),
    ("SG", "SGD", 175, 0.01),
    ("NG", "NGN", 197, 0.01),
)

COUNTRY_CODES: Final = np.array([c[0] for c in COUNTRIES])
CURRENCY_CODES: Final = np.array([c[1] for c in COUNTRIES])
IP_FIRST_OCTET: Final = np.array([c[2] for c in COUNTRIES], dtype=np.int64)
COUNTRY_WEIGHTS: Final = np.array([c[3] for c in COUNTRIES]) / sum(c[3] for c in COUNTRIES)

# (MCC, share of merchants, spend factor relative to a card's typical amount, probability of e-commerce)
MCCS: Final[tuple[tuple[str, float, float, float], ...]] = (
    ("5411", 0.18, 1.0, 0.10),  # grocery
    ("5812", 0.14, 0.6, 0.05),  # restaurants
    ("5814", 0.10, 0.25, 0.10),  # fast food
    ("5541", 0.08, 0.8, 0.00),  # fuel
    ("5311", 0.07, 1.5, 0.30),  # department stores
    ("5651", 0.07, 1.6, 0.50),  # clothing
    ("5732", 0.05, 4.0, 0.60),  # electronics
    ("5944", 0.02, 6.0, 0.30),  # jewellery
    ("5912", 0.06, 0.5, 0.20),  # pharmacy
    ("4121", 0.05, 0.4, 0.90),  # taxis and ride hailing
    ("4511", 0.03, 8.0, 0.90),  # airlines
    ("7011", 0.04, 5.0, 0.70),  # hotels
    ("5815", 0.06, 0.3, 1.00),  # digital goods
    ("6011", 0.03, 2.0, 0.00),  # ATM cash
    ("4829", 0.02, 3.0, 1.00),  # money transfer
)

MCC_CODES: Final = np.array([m[0] for m in MCCS])
MCC_WEIGHTS: Final = np.array([m[1] for m in MCCS]) / sum(m[1] for m in MCCS)
MCC_SPEND: Final = np.array([m[2] for m in MCCS])
MCC_ECOM: Final = np.array([m[3] for m in MCCS])
ATM_MCC: Final = int(np.flatnonzero(MCC_CODES == "6011")[0])
# Where fraudsters cash out: goods that resell easily.
HIGH_RISK_MCCS: Final = np.flatnonzero(np.isin(MCC_CODES, ["5732", "5944", "5815", "4829", "5311"]))
# Card testers need a merchant that answers authorisations quickly for tiny amounts: digital goods.
TESTING_MCCS: Final = np.flatnonzero(np.isin(MCC_CODES, ["5815", "5814", "4121"]))

# Channel codes, in the order of shared.messages.Channel.
CHANNELS: Final = np.array(["pos", "ecom", "atm", "moto", "p2p", "other"])
POS, ECOM, ATM = 0, 1, 2

DEVICE_TYPES: Final = np.array(["ios", "android", "web"])

# Share of purchases by hour of the day (UTC, a rough blend of the populations' local evenings).
_HOURS = np.array([1, 1, 1, 1, 1, 2, 3, 5, 6, 6, 7, 8, 9, 8, 7, 7, 7, 8, 9, 9, 8, 6, 4, 2], dtype=np.float64)
HOUR_WEIGHTS: Final = _HOURS / _HOURS.sum()
