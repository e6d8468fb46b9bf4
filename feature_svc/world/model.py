"""The simulated world as data: its parameters and its tables (pyarrow), independent of how it was made.

Tables rather than Python objects because every consumer is columnar: the ledger loader COPYs columns, the
graph loader aggregates them, the offline store and the trainer read Parquet.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import pyarrow as pa
import pyarrow.compute as pc

FraudKind = Literal["ring", "card_testing", "ato", "stolen_card"]
FRAUD_KINDS: Final[tuple[FraudKind, ...]] = ("ring", "card_testing", "ato", "stolen_card")

TIMESTAMP: Final = pa.timestamp("us", tz="UTC")
# label_time of a fraud whose chargeback never arrives: ten years after the transaction, beyond any as-of query
# (the ledger's labels.label_time is NOT NULL, so "never" is a time no query reaches rather than a null)
NEVER_LABELLED_DAYS: Final = 3650

TRANSACTIONS_SCHEMA: Final = pa.schema(
    [
        ("transaction_id", pa.string()),
        ("timestamp", TIMESTAMP),
        ("card_id", pa.string()),
        ("merchant_id", pa.string()),
        ("device_id", pa.string()),
        ("ip_address", pa.string()),
        ("amount", pa.float64()),
        ("currency", pa.string()),
        ("country_code", pa.string()),
        ("mcc_code", pa.string()),
        ("channel", pa.string()),
        ("is_fraud", pa.bool_()),
        ("fraud_kind", pa.string()),  # '' for legitimate transactions
        ("label_time", TIMESTAMP),  # when the chargeback arrives; null for legitimate transactions
    ]
)
CARDS_SCHEMA: Final = pa.schema(
    [
        ("card_id", pa.string()),
        ("customer_id", pa.string()),
        ("home_country", pa.string()),
        ("currency", pa.string()),
        ("typical_amount", pa.float64()),
        ("home_ip", pa.string()),
        ("usual_device_ids", pa.list_(pa.string())),
    ]
)
MERCHANTS_SCHEMA: Final = pa.schema(
    [
        ("merchant_id", pa.string()),
        ("mcc_code", pa.string()),
        ("country_code", pa.string()),
        ("is_compromised", pa.bool_()),  # ground truth of the simulation, not something a bank knows
    ]
)
DEVICES_SCHEMA: Final = pa.schema([("device_id", pa.string()), ("device_type", pa.string())])
IPS_SCHEMA: Final = pa.schema([("ip_address", pa.string()), ("country_code", pa.string())])
# which incident each fraud transaction belongs to (a ring, a card-testing burst, one takeover, one theft), so an
# evaluation can resample incidents rather than rows; ground truth of the simulation, not something a bank has
INCIDENTS_SCHEMA: Final = pa.schema([("transaction_id", pa.string()), ("incident_id", pa.string())])

SCHEMAS: Final[dict[str, pa.Schema]] = {
    "transactions": TRANSACTIONS_SCHEMA,
    "cards": CARDS_SCHEMA,
    "merchants": MERCHANTS_SCHEMA,
    "devices": DEVICES_SCHEMA,
    "ips": IPS_SCHEMA,
}


class WorldError(ValueError):
    """Bad simulator parameters or an unreadable world directory; the message says which and why."""


@dataclass(frozen=True, kw_only=True)
class WorldParams:
    """Everything that determines a world: the same parameters always give the same tables.

    The fraud shares are fractions of `n_transactions`; the generator turns them into whole incidents, so
    the realised counts are close to, not exactly, these shares.
    """

    n_cards: int = 20_000
    n_transactions: int = 200_000
    n_merchants: int | None = None  # default: one merchant per 10 cards, at least 50
    days: int = 42
    start: datetime = datetime(2026, 9, 1, tzinfo=UTC)
    seed: int = 0
    ring_share: float = 0.007
    card_testing_share: float = 0.005
    ato_share: float = 0.003
    stolen_card_share: float = 0.004
    compromised_merchant_share: float = 0.01
    label_delay_days: tuple[float, float] = (2.0, 30.0)
    # camouflage: the share of a ring's purchases that copy its card's own habits (favourite merchants, usual
    # amounts, daytime hours) instead of cashing out at resellable goods
    ring_camouflage: float = 0.7
    # a ring's chain links card-device-card-IP-card: the share of its devices that are legit users' own
    # (compromised) devices, and of its IPs that are public (cafes, carrier NAT) rather than fresh proxies
    compromised_device_share: float = 0.4
    public_ip_share: float = 0.4
    new_device_rate: float = 0.2  # share of cards whose holder starts using a new device during the world
    never_labelled_share: float = 0.1  # fraud whose chargeback never arrives (label_time = NEVER_LABELLED)

    def __post_init__(self) -> None:
        if self.n_cards < 50:
            raise WorldError(f"n_cards must be at least 50 (rings need cards to share), got {self.n_cards}")
        if self.n_transactions < 1_000:
            raise WorldError(f"n_transactions must be at least 1000, got {self.n_transactions}")
        if self.n_merchants is not None and self.n_merchants < 50:
            raise WorldError(f"n_merchants must be at least 50, got {self.n_merchants}")
        if self.days < 8:
            raise WorldError(f"days must be at least 8 (account takeover needs a week of history): {self.days}")
        if self.start.tzinfo is None:
            raise WorldError("start must be timezone-aware (UTC), so timestamps are unambiguous")
        shares = (self.ring_share, self.card_testing_share, self.ato_share, self.stolen_card_share)
        if any(s < 0 for s in shares) or sum(shares) > 0.5:
            raise WorldError(f"fraud shares must be >= 0 and sum to at most 0.5, got {shares}")
        if not 0 <= self.compromised_merchant_share <= 0.5:
            raise WorldError(f"compromised_merchant_share must be in [0, 0.5], got {self.compromised_merchant_share}")
        for name in (
            "ring_camouflage",
            "compromised_device_share",
            "public_ip_share",
            "new_device_rate",
            "never_labelled_share",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise WorldError(f"{name} must be in [0, 1], got {value}")
        lo, hi = self.label_delay_days
        if not 0 < lo <= hi:
            raise WorldError(f"label_delay_days must be (low, high) with 0 < low <= high, got {(lo, hi)}")

    @property
    def merchants(self) -> int:
        return self.n_merchants if self.n_merchants is not None else max(50, self.n_cards // 10)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["start"] = self.start.isoformat()
        out["label_delay_days"] = list(self.label_delay_days)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorldParams:
        data = dict(data)
        data["start"] = datetime.fromisoformat(data["start"])
        data["label_delay_days"] = tuple(data["label_delay_days"])
        return cls(**data)


@dataclass(frozen=True)
class World:
    """A generated payment world. `transactions` is sorted by timestamp; fraud rows carry their label_time."""

    params: WorldParams
    transactions: pa.Table
    cards: pa.Table
    merchants: pa.Table
    devices: pa.Table
    ips: pa.Table
    incidents: pa.Table | None = None  # INCIDENTS_SCHEMA; None for worlds written before it existed

    def table(self, name: str) -> pa.Table:
        if name not in SCHEMAS:
            raise WorldError(f"unknown world table {name!r}; tables are {', '.join(SCHEMAS)}")
        table: pa.Table = getattr(self, name)
        return table

    def labels(self) -> pa.Table:
        """The chargebacks: one row per fraud transaction, with the time the label became known."""
        tx = self.transactions
        return tx.filter(tx["is_fraud"]).select(
            ["transaction_id", "card_id", "merchant_id", "timestamp", "fraud_kind", "label_time"]
        )

    def summary(self) -> dict[str, int]:
        """Counts of transactions per fraud kind (and legit), plus the entity counts."""
        kinds = self.transactions["fraud_kind"]
        out: dict[str, int] = {"transactions": self.transactions.num_rows}
        out["legit"] = int(pc.sum(pc.equal(kinds, "")).as_py() or 0)
        for kind in FRAUD_KINDS:
            out[kind] = int(pc.sum(pc.equal(kinds, kind)).as_py() or 0)
        out["fraud"] = out["transactions"] - out["legit"]
        for name in ("cards", "merchants", "devices", "ips"):
            out[name] = self.table(name).num_rows
        return out
