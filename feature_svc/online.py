"""The Redis online feature store: one HASH per entity, read for many entities in one round trip.

Key `{prefix}:{type}:{id}` (default prefix `fm:feat`), fields: every feature value (float, written with repr so it
reads back exactly and `redis-cli HGETALL` shows it), `computed_at` (epoch seconds), `version` (the feature-set
version), `known` ("1"/"0") and `_vec`: the same values packed as little-endian float64 in registry order of the
entity type. The scoring path reads only `_vec` and the metadata (`read_blocks`: one Lua script, one bulk-string
reply of fixed-size records that numpy decodes without a loop per entity; `read_vectors` and `read_packed` are the
earlier forms, kept for bench/features.py): 3 fields per entity instead of ~30 keeps a 200-transaction partial's
read (~800 entities) to one cheap round trip.
Each HASH has a TTL. Writes and reads are pipelined without MULTI (`transaction=False`): one round trip each.

    store = OnlineStore.from_url(settings.redis_url, version=FEATURE_SET_VERSION, ttl_s=settings.feature_ttl_s)
    reads = await store.read([("card", "card_00001"), ("merchant", "m_00042")], max_age_s=3600)
    for r in reads:
        if r.fresh: x = r.vector(names)          # numpy float64, NaN where a name is absent
        else: ...                                # missing or stale: ask features.compute

Only redis, msgspec and numpy here: the inference worker imports this module.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
from redis.asyncio import ConnectionPool, Redis
from redis.typing import EncodableT, FieldT

DEFAULT_PREFIX = "fm:feat"
COMPUTED_AT = "computed_at"
VERSION = "version"
KNOWN = "known"
VEC = "_vec"
META_FIELDS = (COMPUTED_AT, VERSION, KNOWN)
VECTOR_FIELDS = (COMPUTED_AT, VERSION, KNOWN, VEC)


_PACKED_READ = """
local n = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  if i <= n then
    out[i] = redis.call('HMGET', KEYS[i], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
  else
    out[i] = redis.call('GET', KEYS[i])
  end
end
return out
"""

# The scoring path's read (`read_blocks`): ONE bulk string for the whole partial. KEYS are grouped by entity type;
# ARGV = [feature-set version, then per type: its count of keys and the byte length of its `_vec`]. Per key, a
# record of fixed size: status (1 byte: 0 missing, 1 this version with a `_vec` of the right length, 2 present but
# another version or a bad `_vec`), `computed_at` as little-endian float64 (its stored decimal text through the same
# correctly rounded strtod Python's float() uses), then `_vec` (zeros unless status is 1). The pieces are joined
# once, at the end. numpy reads the reply with one structured dtype per type and picks the wanted columns.
# Measured against the per-field reply (bench/partial.py): the same Redis time, a third of the client's.
_BLOCK_READ = """
local version = ARGV[1]
local pack = struct.pack
local out = {}
local n = 0
local k = 1
local a = 2
while a <= #ARGV do
  local count = tonumber(ARGV[a])
  local vec_len = tonumber(ARGV[a + 1])
  a = a + 2
  local blank = string.rep('\\0', vec_len)
  local missing = pack('<Bd', 0, 0) .. blank
  for i = 1, count do
    local r = redis.call('HMGET', KEYS[k], 'computed_at', 'version', '_vec')
    k = k + 1
    n = n + 1
    if not r[1] then
      out[n] = missing
    else
      local vec = r[3]
      if r[2] ~= version or not vec or #vec ~= vec_len then
        out[n] = pack('<Bd', 2, tonumber(r[1]) or 0)
        n = n + 1
        out[n] = blank
      else
        out[n] = pack('<Bd', 1, tonumber(r[1]) or 0)
        n = n + 1
        out[n] = vec
      end
    end
  end
end
return table.concat(out)
"""

_WRITE_IF_NEWER = """
local ttl = tonumber(ARGV[1])
local entries = cmsgpack.unpack(ARGV[2])
local written = 0
for i = 1, #KEYS do
  local fields = entries[i]
  local at = nil
  for j = 1, #fields, 2 do
    if fields[j] == 'computed_at' then at = tonumber(fields[j + 1]) end
  end
  local cur = redis.call('HGET', KEYS[i], 'computed_at')
  if (not cur) or (at ~= nil and tonumber(cur) <= at) then
    redis.call('DEL', KEYS[i])
    redis.call('HSET', KEYS[i], unpack(fields))
    if ARGV[2 + i] ~= '' then redis.call('HSET', KEYS[i], '_vec', ARGV[2 + i]) end
    redis.call('EXPIRE', KEYS[i], ttl)
    written = written + 1
  end
end
return written
"""
"""KEYS: the entities' HASH keys; ARGV[1]: the TTL; ARGV[2]: ONE msgpack array holding, per key, the flat list
[field, value, field, value, ...] of its text fields; ARGV[2 + i]: key i's packed `_vec` (bytes: Redis's
cmsgpack has no binary type), '' for none. Two arguments per entity instead of ~70: redis-py encodes every
argument in Python (~5 us each), which made the write of a 1,500-entity micro-batch cost ~0.25 s of CPU."""


class FeatureRecord(msgspec.Struct, kw_only=True):
    """What is written for one entity."""

    entity_type: str
    entity_id: str
    values: dict[str, float]
    computed_at: float
    known: bool = True


class OnlineRead(msgspec.Struct, kw_only=True):
    """One entity's read: `present` (a HASH exists), `stale` (present but of another feature-set version, or
    older than the max age), `age_s` (None when missing) and the values read."""

    entity_type: str
    entity_id: str
    present: bool
    stale: bool = False
    age_s: float | None = None
    computed_at: float | None = None
    version: str = ""
    known: bool = True
    values: dict[str, float] = {}

    @property
    def fresh(self) -> bool:
        return self.present and not self.stale

    def vector(self, names: Sequence[str]) -> np.ndarray:
        """The values in `names` order, NaN where missing."""
        return np.array([self.values.get(n, np.nan) for n in names], dtype=np.float64)


class VectorRead(msgspec.Struct, kw_only=True):
    """One entity's packed read for the scoring path: `vector` is None when missing or stale."""

    present: bool
    stale: bool = False
    age_s: float | None = None
    known: bool = True
    vector: np.ndarray | None = None

    @property
    def fresh(self) -> bool:
        return self.present and not self.stale


@dataclass
class TypeBlock:
    """The packed read of the entities of one type (`read_blocks`), as arrays in the order asked."""

    present: np.ndarray
    """bool (n,): a HASH exists."""
    fresh: np.ndarray
    """bool (n,): present, of this feature-set version, with a whole `_vec`, and not older than the max age."""
    age_s: np.ndarray
    """float64 (n,): seconds since `computed_at` (at least 0); NaN where missing."""
    values: np.ndarray
    """float64 (n, len(columns)): the wanted columns; NaN rows where not fresh."""

    @property
    def stale(self) -> np.ndarray:
        stale: np.ndarray = self.present & ~self.fresh
        return stale


def _text(raw: bytes | str | None) -> str | None:
    if raw is None:
        return None
    return raw.decode() if isinstance(raw, bytes) else raw


class OnlineStore:
    def __init__(
        self,
        redis: Redis,
        *,
        version: str,
        ttl_s: int = 86400,
        prefix: str = DEFAULT_PREFIX,
        layout: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.redis = redis
        self.version = version
        self.ttl_s = ttl_s
        self.prefix = prefix
        self._layout = layout
        self._script: Any = None
        self._block_script: Any = None
        self._newer_script: Any = None

    @property
    def layout(self) -> Mapping[str, Sequence[str]]:
        """Feature names per entity type, in the order `_vec` packs them (the registry's)."""
        if self._layout is None:
            from feature_svc.definitions import ENTITY_TYPES, feature_names

            self._layout = {t: feature_names(t) for t in ENTITY_TYPES}
        return self._layout

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        version: str,
        ttl_s: int = 86400,
        prefix: str = DEFAULT_PREFIX,
        max_connections: int = 64,
        layout: Mapping[str, Sequence[str]] | None = None,
    ) -> OnlineStore:
        """A store over its own connection pool (closed by `close`)."""
        pool = ConnectionPool.from_url(url, max_connections=max_connections)
        return cls(Redis(connection_pool=pool), version=version, ttl_s=ttl_s, prefix=prefix, layout=layout)

    def key(self, entity_type: str, entity_id: str) -> str:
        return f"{self.prefix}:{entity_type}:{entity_id}"

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except Exception:
            return False

    async def close(self) -> None:
        await self.redis.aclose()

    # ------------------------------------------------------------------------------------------ write
    def _mapping(self, rec: FeatureRecord) -> dict[FieldT, EncodableT]:
        mapping: dict[FieldT, EncodableT] = {name: repr(float(v)) for name, v in rec.values.items()}
        names = self.layout.get(rec.entity_type)
        if names is not None:
            packed = [rec.values.get(name, np.nan) for name in names]
            mapping[VEC] = np.asarray(packed, dtype="<f8").tobytes()
        mapping[COMPUTED_AT] = repr(float(rec.computed_at))
        mapping[VERSION] = self.version
        mapping[KNOWN] = "1" if rec.known else "0"
        return mapping

    async def write(self, records: Iterable[FeatureRecord]) -> int:
        """HSET every record (replacing its fields) and set its TTL, in one pipelined round trip."""
        n = 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for rec in records:
                key = self.key(rec.entity_type, rec.entity_id)
                pipe.delete(key)
                pipe.hset(key, mapping=self._mapping(rec))
                pipe.expire(key, self.ttl_s)
                n += 1
            if n:
                await pipe.execute()
        return n

    async def write_if_newer(self, records: Sequence[FeatureRecord]) -> int:
        """Like `write`, but an entity whose stored `computed_at` is newer than the record's keeps its entry
        (two workers computing the same entity never regress it to the older value). ONE Lua call, atomic per
        entity. Returns how many records were written."""
        if not records:
            return 0
        keys: list[str] = []
        texts: list[list[str]] = []
        vecs: list[bytes] = []
        for rec in records:
            keys.append(self.key(rec.entity_type, rec.entity_id))
            mapping = self._mapping(rec)
            vec = mapping.pop(VEC, b"")
            vecs.append(vec if isinstance(vec, bytes) else b"")
            texts.append([str(x) for kv in mapping.items() for x in kv])
        args: list[EncodableT] = [self.ttl_s, msgspec.msgpack.encode(texts), *vecs]
        if self._newer_script is None:
            self._newer_script = self.redis.register_script(_WRITE_IF_NEWER)
        return int(await self._newer_script(keys=keys, args=args))

    # ------------------------------------------------------------------------------------------- read
    async def read(
        self,
        entities: Sequence[tuple[str, str]],
        *,
        names: Mapping[str, Sequence[str]] | None = None,
        max_age_s: float | None = None,
        now: float | None = None,
    ) -> list[OnlineRead]:
        """Read many entities in ONE round trip: pipelined HGETALL, or, with `names` (feature names per entity
        type, e.g. {"card": [...], "merchant": [...]}), HMGET of those names plus the metadata.

        Results are in `entities` order. An entity is stale when its version differs from this store's, when it
        is older than `max_age_s`, or when it lacks one of the requested names."""
        if not entities:
            return []
        wanted_of: list[list[str] | None] = []
        async with self.redis.pipeline(transaction=False) as pipe:
            for etype, eid in entities:
                key = self.key(etype, eid)
                wanted = list(names.get(etype, ())) if names is not None else None
                wanted_of.append(wanted)
                if wanted is None:
                    pipe.hgetall(key)
                else:
                    pipe.hmget(key, [*META_FIELDS, *wanted])
            raw = await pipe.execute()
        now = time.time() if now is None else now
        return [
            self._decode(etype, eid, item, wanted, max_age_s, now)
            for (etype, eid), item, wanted in zip(entities, raw, wanted_of, strict=True)
        ]

    async def read_vectors(
        self, entities: Sequence[tuple[str, str]], *, max_age_s: float | None = None, now: float | None = None
    ) -> list[VectorRead]:
        """The scoring path's read: per entity, its packed vector and metadata, in ONE round trip (pipelined
        HMGET of 4 fields). Stale: another feature-set version, older than `max_age_s`, or no `_vec`."""
        if not entities:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            self.queue_vectors(pipe, entities)
            raw = await pipe.execute()
        return self.decode_vectors(entities, raw, max_age_s=max_age_s, now=now)

    async def read_packed(
        self,
        entities: Sequence[tuple[str, str]],
        extra_keys: Sequence[str] = (),
        *,
        max_age_s: float | None = None,
        now: float | None = None,
    ) -> tuple[list[VectorRead], list[bytes | None]]:
        """`read_vectors` plus GET of `extra_keys` (e.g. model embeddings) as ONE Redis command: a Lua script
        (EVALSHA) that runs every HMGET and GET server-side and returns one reply. A pipeline of ~800 commands
        costs ~15 us of client CPU per command; one reply parses in a fraction of that."""
        if not entities and not extra_keys:
            return [], []
        keys = [self.key(t, i) for t, i in entities]
        raw = await self._packed_script(keys=[*keys, *extra_keys], args=[len(keys), *VECTOR_FIELDS])
        reads = self.decode_vectors(entities, raw[: len(keys)], max_age_s=max_age_s, now=now)
        return reads, list(raw[len(keys) :])

    async def read_blocks(
        self,
        ids: Mapping[str, Sequence[str]],
        columns: Mapping[str, Sequence[int]] | None = None,
        *,
        max_age_s: float | None = None,
        now: float | None = None,
    ) -> dict[str, TypeBlock]:
        """The scoring path's read: for each entity type, the packed vectors of `ids[type]` (only `columns[type]`,
        positions in the type's layout; every column when None), as one `TypeBlock`. ONE command (a Lua script)
        whose reply is ONE bulk string of fixed-size records, decoded by numpy without a Python loop per entity
        (`_BLOCK_READ`).
        Same freshness rules as `read_vectors`: another feature-set version, a `_vec` of the wrong length or an
        age over `max_age_s` is stale."""
        keys: list[str] = []
        args: list[EncodableT] = [self.version]
        shapes: list[tuple[str, int, int, list[int] | None]] = []
        for etype, wanted_ids in ids.items():
            if not wanted_ids:
                continue
            width = len(self.layout.get(etype, ()))
            cols = None if columns is None or etype not in columns else list(columns[etype])
            keys.extend(self.key(etype, i) for i in wanted_ids)
            args.extend((len(wanted_ids), 8 * width))
            shapes.append((etype, len(wanted_ids), width, cols))
        raw: bytes = await self._blocks_script(keys=keys, args=args) if keys else b""
        now = time.time() if now is None else now
        out: dict[str, TypeBlock] = {}
        offset = 0
        for etype, count, width, cols in shapes:
            dtype = np.dtype([("status", "u1"), ("at", "<f8"), ("values", "<f8", (width,))])
            rec = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
            offset += count * dtype.itemsize
            present = rec["status"] != 0
            age = np.where(present, np.maximum(0.0, now - rec["at"]), np.nan)
            fresh = rec["status"] == 1
            if max_age_s is not None:
                fresh &= age <= max_age_s
            values = rec["values"] if cols is None else rec["values"][:, cols]
            out[etype] = TypeBlock(
                present=present, fresh=fresh, age_s=age, values=np.where(fresh[:, None], values, np.nan)
            )
        if offset != len(raw):
            raise ValueError(f"read_blocks: the reply has {len(raw)} bytes, {offset} were expected")
        for etype, wanted_ids in ids.items():
            if etype not in out:
                k = len(self.layout.get(etype, ())) if columns is None or etype not in columns else len(columns[etype])
                n = len(wanted_ids)
                out[etype] = TypeBlock(
                    present=np.zeros(n, dtype=bool),
                    fresh=np.zeros(n, dtype=bool),
                    age_s=np.full(n, np.nan),
                    values=np.full((n, k), np.nan),
                )
        return out

    @property
    def _blocks_script(self) -> Any:
        if self._block_script is None:
            self._block_script = self.redis.register_script(_BLOCK_READ)
        return self._block_script

    @property
    def _packed_script(self) -> Any:
        if self._script is None:
            self._script = self.redis.register_script(_PACKED_READ)
        return self._script

    def queue_vectors(self, pipe: Any, entities: Sequence[tuple[str, str]]) -> None:
        """Add the vector reads to a caller's pipeline (to share one round trip with other reads)."""
        for etype, eid in entities:
            pipe.hmget(self.key(etype, eid), VECTOR_FIELDS)

    def decode_vectors(
        self,
        entities: Sequence[tuple[str, str]],
        raw: Sequence[Sequence[bytes | None]],
        *,
        max_age_s: float | None = None,
        now: float | None = None,
    ) -> list[VectorRead]:
        now = time.time() if now is None else now
        out: list[VectorRead] = []
        for (etype, _), (computed, version, known, vec) in zip(entities, raw, strict=True):
            if computed is None:
                out.append(VectorRead(present=False))
                continue
            age = max(0.0, now - float(computed))
            width = len(self.layout.get(etype, ()))
            stale = (
                _text(version) != self.version
                or (max_age_s is not None and age > max_age_s)
                or vec is None
                or len(vec) != 8 * width
            )
            out.append(
                VectorRead(
                    present=True,
                    stale=stale,
                    age_s=age,
                    known=known != b"0",
                    vector=None if stale or vec is None else np.frombuffer(vec, dtype="<f8"),
                )
            )
        return out

    def _decode(
        self,
        etype: str,
        eid: str,
        item: Mapping[bytes, bytes] | list[bytes | None],
        wanted: list[str] | None,
        max_age_s: float | None,
        now: float,
    ) -> OnlineRead:
        if wanted is None:
            fields = {
                _text(k) or "": _text(v)
                for k, v in item.items()  # type: ignore[union-attr]  # an HGETALL reply (a mapping) whenever wanted is None
                if k not in (VEC, VEC.encode())  # packed bytes, not text
            }
        else:
            fields = {k: _text(v) for k, v in zip([*META_FIELDS, *wanted], item, strict=True) if v is not None}
        computed = fields.pop(COMPUTED_AT, None)
        version = fields.pop(VERSION, None) or ""
        known = fields.pop(KNOWN, "1") != "0"
        if computed is None:
            return OnlineRead(entity_type=etype, entity_id=eid, present=False)
        computed_at = float(computed)
        age = max(0.0, now - computed_at)
        values = {k: float(v) for k, v in fields.items() if v is not None}
        stale = version != self.version or (max_age_s is not None and age > max_age_s)
        if wanted is not None and not stale:
            stale = len(values) != len(wanted)  # an entry without a requested feature cannot serve it
        return OnlineRead(
            entity_type=etype,
            entity_id=eid,
            present=True,
            stale=stale,
            age_s=age,
            computed_at=computed_at,
            version=version,
            known=known,
            values=values,
        )
