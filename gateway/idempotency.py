"""Idempotent scoring by transaction id, as payment APIs have it.

A transaction id scored within `idempotency_window_s` (default 24 h) gets its stored decision back instead of a new
score; the same id with a different body is refused with 409 (`conflict`), naming the id and the fields that differ;
`?rescore=true` scores anew and replaces the stored decision. Decisions live in Redis (`fraudmesh:idem:<id>`, with
the window as TTL), shared by every gateway instance.

The hot path pays at most one Redis round trip per request, before scoring: one MGET for all the request's ids
(none with `rescore=true`, none without ids). The decisions are written after the reply is formed, in the
background (one pipelined round trip per request); until that write lands, this gateway answers a repeat from its
own memory of the writes in flight, so a client that repeats at once still gets the stored decision.

Not covered (documented in docs/http-api.md): what-if scoring (`ingest=false`) neither reads nor writes the store (it
changes no history); transactions without an id; two requests with the same new id at the same moment (both are
scored; the ledger and the aggregator still count the transaction once). When Redis cannot be reached the request
is scored anyway (availability first: the ledger is exactly-once by id regardless) and the reply says
`Idempotency-Status: unchecked`; `fraudmesh_idempotency_total{outcome="unchecked"}` counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.bridge import BridgeError
from shared.logs import log_fields
from shared.messages import ErrorReply, FieldError, Transaction, TransactionScore

log = logging.getLogger("fraudmesh.gateway.idempotency")
KEY_PREFIX = "fraudmesh:idem:"
OUTCOMES = ("hit", "miss", "conflict", "rescore", "unchecked", "stored", "write_failed")
LOG_EVERY_S = 10.0
"""A store that is down is logged at most this often (every refused lookup is counted)."""


class StoredDecision(msgspec.Struct, kw_only=True, array_like=True):
    """What Redis keeps per transaction id: the body's canonical hash and fields, and the decision."""

    body_hash: str
    transaction: Transaction
    score: TransactionScore
    stored_at: float
    request_id: str


_encoder = msgspec.msgpack.Encoder(order="deterministic")
_stored = msgspec.msgpack.Decoder(StoredDecision)


def body_hash(tx: Transaction) -> str:
    """The canonical hash of a transaction's fields: the decoded Struct (so key order, `100` vs `100.0`, time zone
    spellings and defaults sent or left out do not matter), in field order, msgpack-encoded."""
    return hashlib.blake2b(_encoder.encode(tx), digest_size=16).hexdigest()


def differing_fields(a: Transaction, b: Transaction) -> list[str]:
    return [f for f in a.__struct_fields__ if getattr(a, f) != getattr(b, f)]


@dataclass(slots=True)
class Plan:
    """What idempotency decided for one request: which transactions to score, which to answer from the store."""

    status: str
    """`Idempotency-Status` of the reply: new, replayed, partly-replayed, rescored, unchecked, off."""
    replayed: dict[int, TransactionScore] = field(default_factory=dict)
    to_score: list[int] = field(default_factory=list)
    hashes: list[str | None] = field(default_factory=list)


def _utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Idempotency:
    """The idempotency store of one gateway process (see the module docstring)."""

    def __init__(self, redis: Redis, registry: CollectorRegistry = REGISTRY) -> None:
        self.redis = redis
        existing = registry._names_to_collectors.get("fraudmesh_idempotency_total")
        self.counter = (
            existing
            if isinstance(existing, Counter)
            else Counter(
                "fraudmesh_idempotency",
                "Idempotency decisions per transaction: hit (stored decision replayed), miss (scored, then stored), "
                "conflict (same id, different body: 409), rescore (?rescore=true), unchecked (the store was "
                "unreachable: scored anyway), stored and write_failed (writes of decisions).",
                ["outcome"],
                registry=registry,
            )
        )
        self.outcomes = {o: self.counter.labels(o) for o in OUTCOMES}
        self.totals = dict.fromkeys(OUTCOMES, 0)
        """The same counts as plain numbers, for `GET /cache/stats`."""
        self._writing: dict[str, StoredDecision] = {}
        """Decisions written in the background, until Redis has them (a repeat on this gateway reads them here)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._logged_down = 0.0

    def count(self, outcome: str, n: int = 1) -> None:
        if n:
            self.outcomes[outcome].inc(n)
            self.totals[outcome] += n

    async def plan(self, txs: Sequence[Transaction], *, rescore: bool, request_id: str, where: str = "$") -> Plan:
        """One MGET for the request's ids. Raises BridgeError `conflict` (409) when a known id has another body."""
        hashes = [body_hash(tx) if tx.transaction_id is not None else None for tx in txs]
        keyed = [i for i, h in enumerate(hashes) if h is not None]
        everything = list(range(len(txs)))
        if not keyed:
            return Plan("new", to_score=everything, hashes=hashes)
        if rescore:
            self.count("rescore", len(keyed))
            return Plan("rescored", to_score=everything, hashes=hashes)
        found: dict[int, StoredDecision] = {}
        ask: list[int] = []
        for i in keyed:
            local = self._writing.get(str(txs[i].transaction_id))
            if local is not None:
                found[i] = local
            else:
                ask.append(i)
        if ask:
            try:
                values = await self.redis.mget([KEY_PREFIX + str(txs[i].transaction_id) for i in ask])
            except (RedisError, OSError) as exc:
                self.count("unchecked", len(keyed))
                self._log_down("lookup", exc)
                return Plan("unchecked", to_score=everything, hashes=hashes)
            for i, raw in zip(ask, values, strict=True):
                if raw:  # an unreadable record (an older format) is scored anew, and the write replaces it
                    with contextlib.suppress(msgspec.ValidationError, msgspec.DecodeError):
                        found[i] = _stored.decode(raw if isinstance(raw, bytes) else raw.encode())
        conflicts = [i for i, rec in found.items() if rec.body_hash != hashes[i]]
        if conflicts:
            self.count("conflict", len(conflicts))
            raise BridgeError(self._conflict(txs, conflicts, found, request_id, where))
        replayed = {i: rec.score for i, rec in found.items()}
        to_score = [i for i in everything if i not in replayed]
        self.count("hit", len(replayed))
        self.count("miss", len(keyed) - len(replayed))
        status = "new" if not replayed else "replayed" if not to_score else "partly-replayed"
        return Plan(status, replayed=replayed, to_score=to_score, hashes=hashes)

    def _conflict(
        self,
        txs: Sequence[Transaction],
        conflicts: list[int],
        found: dict[int, StoredDecision],
        request_id: str,
        where: str,
    ) -> ErrorReply:
        """`where`: the transactions' place in the body (`$` for one, `$.transactions` for a list, "" for nested
        lists: the path then says which transaction in order)."""
        errors = []
        for i in conflicts[:100]:
            rec, tx = found[i], txs[i]
            diff = differing_fields(rec.transaction, tx)
            errors.append(
                FieldError(
                    path=f"{where}.transaction_id"
                    if where == "$"
                    else f"{where}[{i}].transaction_id"
                    if where
                    else f"$.batch[*][*].transaction_id (transaction {i} of the request, counting from 0)",
                    message=f"Transaction id {tx.transaction_id!r} was scored at {_utc(rec.stored_at)} (request "
                    f"{rec.request_id}) with a different body; differing field(s): {', '.join(diff) or 'none'}.",
                )
            )
        first = txs[conflicts[0]].transaction_id
        more = f" and {len(conflicts) - 1} more" if len(conflicts) > 1 else ""
        return ErrorReply(
            code="conflict",
            request_id=request_id,
            message=f"Transaction id {first!r}{more} already names another transaction (scored within the "
            "idempotency window with a different body; see `errors` for the fields that differ). Send the same "
            "body to get the stored decision, a new transaction_id for a new transaction, or ?rescore=true to score "
            "this body and replace the stored decision.",
            errors=errors,
        )

    def remember(
        self,
        txs: Sequence[Transaction],
        plan: Plan,
        scores: Sequence[TransactionScore | None],
        window_s: float,
        request_id: str,
    ) -> None:
        """Store the decisions just made (not the replayed ones, not the unscored ones), in the background."""
        now = time.time()
        records: dict[str, StoredDecision] = {}
        for i in plan.to_score:
            h, s = plan.hashes[i], scores[i]
            if h is not None and s is not None and i not in plan.replayed:
                tx_id = str(txs[i].transaction_id)
                records[tx_id] = StoredDecision(
                    body_hash=h, transaction=txs[i], score=s, stored_at=now, request_id=request_id
                )
        if not records:
            return
        self._writing.update(records)
        task = asyncio.create_task(self._write(records, window_s))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, records: dict[str, StoredDecision], window_s: float) -> None:
        ttl_ms = max(1, int(window_s * 1000))
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for tx_id, rec in records.items():
                    pipe.set(KEY_PREFIX + tx_id, _encoder.encode(rec), px=ttl_ms)
                await pipe.execute()
            self.count("stored", len(records))
        except (RedisError, OSError) as exc:
            self.count("write_failed", len(records))
            self._log_down("write", exc)
        finally:
            for tx_id, rec in records.items():
                if self._writing.get(tx_id) is rec:
                    del self._writing[tx_id]

    def _log_down(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._logged_down >= LOG_EVERY_S:
            self._logged_down = now
            log.warning(
                "idempotency store unreachable: scoring without it",
                extra=log_fields(step=what, error=repr(exc)),
            )

    async def forget_all(self) -> int:
        """Delete every stored decision (`POST /cache/clear`); returns how many."""
        self._writing.clear()
        return await delete_prefix(self.redis, KEY_PREFIX)

    @property
    def writes_in_flight(self) -> int:
        return len(self._writing)

    async def drain(self, timeout: float = 5.0) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)


async def delete_prefix(redis: Redis, prefix: str, batch: int = 1000) -> int:
    """Delete every key under `prefix` (SCAN, then UNLINK in batches): never a blocking KEYS."""
    deleted = 0
    keys: list[bytes] = []
    async for key in redis.scan_iter(match=prefix + "*", count=batch):
        keys.append(key)
        if len(keys) >= batch:
            deleted += int(await redis.unlink(*keys))
            keys = []
    if keys:
        deleted += int(await redis.unlink(*keys))
    return deleted


async def count_prefix(redis: Redis, prefix: str, batch: int = 1000) -> int:
    """How many keys are under `prefix` (SCAN: O(keys), meant for an admin route)."""
    n = 0
    async for _ in redis.scan_iter(match=prefix + "*", count=batch):
        n += 1
    return n
