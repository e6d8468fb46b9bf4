"""The training data: the world's transactions as integer-indexed numpy arrays, and the time split.

Entities are indexed by their position in the world's entity tables (cards, merchants, devices, ips), so the
graph snapshots, the tabular rows and the exported embeddings all share one index per entity type.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feature_svc.world import World
from inference_svc.tx_features import featurize
from shared.messages import Transaction

ENTITY_TYPES: tuple[str, ...] = ("card", "merchant", "device", "ip")
ENTITY_COLUMN = {"card": "card_id", "merchant": "merchant_id", "device": "device_id", "ip": "ip_address"}
ENTITY_TABLE = {
    "card": ("cards", "card_id"),
    "merchant": ("merchants", "merchant_id"),
    "device": ("devices", "device_id"),
    "ip": ("ips", "ip_address"),
}
US_PER_DAY = 86_400_000_000
NEVER = np.iinfo(np.int64).max  # label_time of a transaction never labelled fraud


def to_us(t: datetime) -> int:
    return (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def from_us(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(us))


@dataclass
class Ledger:
    """Every transaction of the world, time-ordered, with entity indices (-1 when absent)."""

    tx_id: np.ndarray  # object (str)
    ts: np.ndarray  # int64, epoch microseconds
    ent: dict[str, np.ndarray]  # entity type -> int64 index into `ids[type]`
    ids: dict[str, np.ndarray]  # entity type -> object array of ids
    amount: np.ndarray
    is_fraud: np.ndarray
    kind: np.ndarray  # object: '' or a fraud kind
    label_time: np.ndarray  # int64 epoch us, NEVER for legit
    start_us: int
    days: int
    data_hash: str
    tx_rows: pa.Table = field(repr=False)  # the raw transaction table, for featurize

    def __len__(self) -> int:
        return len(self.ts)

    def n_nodes(self, etype: str) -> int:
        return len(self.ids[etype])

    def day_of(self, ts: np.ndarray) -> np.ndarray:
        return (ts - self.start_us) // US_PER_DAY


def ledger_from_world(world: World) -> Ledger:
    tx = world.transactions
    ids: dict[str, np.ndarray] = {}
    ent: dict[str, np.ndarray] = {}
    for etype in ENTITY_TYPES:
        table, col = ENTITY_TABLE[etype]
        id_arr = world.table(table)[col].combine_chunks()
        ids[etype] = np.asarray(id_arr.to_pylist(), dtype=object)
        ent[etype] = np.asarray(pc.fill_null(pc.index_in(tx[ENTITY_COLUMN[etype]], value_set=id_arr), -1).to_numpy())
        ent[etype] = ent[etype].astype(np.int64)
    ts = tx["timestamp"].cast(pa.int64()).to_numpy()
    lt = pc.fill_null(tx["label_time"].cast(pa.int64()), NEVER).to_numpy().astype(np.int64)
    h = hashlib.sha256()
    for col in (
        "transaction_id",
        "timestamp",
        "card_id",
        "merchant_id",
        "device_id",
        "ip_address",
        "amount",
        "is_fraud",
        "label_time",
    ):
        h.update(np.asarray(tx[col].combine_chunks().to_pylist(), dtype=object).astype(str).tobytes())
    return Ledger(
        tx_id=np.asarray(tx["transaction_id"].to_pylist(), dtype=object),
        ts=ts,
        ent=ent,
        ids=ids,
        amount=tx["amount"].to_numpy(),
        is_fraud=tx["is_fraud"].to_numpy(zero_copy_only=False).astype(bool),
        kind=np.asarray(tx["fraud_kind"].to_pylist(), dtype=object),
        label_time=lt,
        start_us=to_us(world.params.start),
        days=world.params.days,
        data_hash="sha256:" + h.hexdigest()[:16],
        tx_rows=tx,
    )


def transactions_of(table: pa.Table) -> list[Transaction]:
    """Wire Transactions built from ledger/offline rows, so `featurize` sees exactly what serving sees."""
    cols = {
        c: table[c].to_pylist()
        for c in (
            "transaction_id",
            "timestamp",
            "card_id",
            "merchant_id",
            "device_id",
            "ip_address",
            "amount",
            "country_code",
            "mcc_code",
            "channel",
        )
    }
    cur = table["currency"].to_pylist() if "currency" in table.column_names else [None] * table.num_rows
    return [
        Transaction(
            card_id=cols["card_id"][i],
            transaction_amount=cols["amount"][i],
            merchant_id=cols["merchant_id"][i],
            mcc_code=cols["mcc_code"][i],
            country_code=cols["country_code"][i],
            transaction_id=cols["transaction_id"][i],
            timestamp=cols["timestamp"][i],
            device_id=cols["device_id"][i],
            ip_address=cols["ip_address"][i],
            currency=cur[i],
            channel=cols["channel"][i],
        )
        for i in range(table.num_rows)
    ]


def tx_field_matrix(table: pa.Table) -> np.ndarray:
    return featurize(transactions_of(table))


@dataclass(frozen=True)
class Split:
    """Day boundaries (epoch us): train [start, train_end), validation [train_end, val_end), test [val_end, end).

    Training labels are the ones known at `train_end` (label_time < train_end); validation and test are judged
    with the eventual labels, since they are evaluation windows looked at after the chargebacks matured."""

    start: int
    train_end: int
    val_end: int
    end: int

    @classmethod
    def by_days(cls, start_us: int, days: int, val_days: int = 7, test_days: int = 7) -> Split:
        if days - val_days - test_days < 3:
            raise ValueError(f"a {days}-day world cannot hold {val_days} validation and {test_days} test days")
        train_end = start_us + (days - val_days - test_days) * US_PER_DAY
        val_end = train_end + val_days * US_PER_DAY
        return cls(start_us, train_end, val_end, start_us + days * US_PER_DAY)

    def part(self, ts: np.ndarray) -> np.ndarray:
        """0 train, 1 validation, 2 test, per timestamp."""
        return np.searchsorted([self.train_end, self.val_end], ts, side="right").astype(np.int8)

    def to_json(self) -> dict[str, str]:
        return {k: from_us(getattr(self, k)).isoformat() for k in ("start", "train_end", "val_end", "end")}


def train_labels(is_fraud: np.ndarray, label_time: np.ndarray, split: Split) -> np.ndarray:
    """Fraud as known at the train cut-off: a chargeback that arrives later is not a label yet."""
    return is_fraud & (label_time < split.train_end)
