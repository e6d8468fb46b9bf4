"""The feature service's wire API: `features.compute` and `features.get` (msgpack on NATS).

Schema rules as in shared/messages.py: new fields get defaults, a field's type never changes and is never
renamed or reused, unknown fields are ignored, and every top-level Struct carries a `type` tag.

Entity types are the four node types of the transaction graph. Feature values are float64 (NaN never appears:
a feature without data has a defined neutral value, see feature_svc/definitions.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from msgspec import Meta, Struct

from shared.entities import ENTITY_TYPES, EntityType
from shared.messages import ErrorReply, Identifier

__all__ = ["ENTITY_TYPES", "EntityType"]

MAX_ENTITIES = 10_000


class EntityRef(Struct, kw_only=True, frozen=True):
    """One entity: a card, merchant, device or IP, by id (the same id syntax as on transactions)."""

    type: EntityType
    id: Identifier


class EntityFeatures(Struct, kw_only=True):
    """The features of one entity. `computed_at` is epoch seconds; `source` says whether they were computed for
    this request or read from the Redis online store; `known` is false for an entity the ledger has never seen
    (its features are then the neutral values of a new entity)."""

    type: EntityType
    id: str
    values: dict[str, float]
    computed_at: float
    version: str
    source: Literal["computed", "cache"] = "computed"
    age_s: float = 0.0
    known: bool = True


class FeaturesComputeRequest(Struct, tag="features_compute", tag_field="type", kw_only=True, omit_defaults=True):
    """Body of `features.compute`. `as_of` (UTC) defaults to now; nothing at or after it counts. Features are
    written to Redis only for a current computation (`as_of` omitted or within a minute of now) and `write`."""

    entities: Annotated[list[EntityRef], Meta(min_length=1, max_length=MAX_ENTITIES)]
    as_of: datetime | None = None
    write: bool = True
    request_id: str = ""
    chunk_size: Annotated[int, Meta(ge=1, le=MAX_ENTITIES)] | None = None


class FeaturesComputeReply(Struct, tag="features_compute_reply", tag_field="type", kw_only=True):
    """Reply of `features.compute`: one entry per requested entity, in request order."""

    entities: list[EntityFeatures]
    version: str
    computed_at: float
    as_of: datetime
    written: bool = False
    chunks: int = 1
    workers: list[str] = []
    compute_ms: float = 0.0


class FeaturesGetRequest(Struct, tag="features_get", tag_field="type", kw_only=True, omit_defaults=True):
    """Body of `features.get`: read through Redis; missing or stale entities are computed (as of now) and
    written. `names` limits the values returned (unknown names are a bad request); `max_age_s` makes older
    entries stale."""

    entities: Annotated[list[EntityRef], Meta(min_length=1, max_length=MAX_ENTITIES)]
    names: list[str] | None = None
    max_age_s: Annotated[float, Meta(gt=0)] | None = None
    request_id: str = ""


class FeaturesGetReply(Struct, tag="features_get_reply", tag_field="type", kw_only=True):
    """Reply of `features.get`: one entry per requested entity, in request order, with cache statistics."""

    entities: list[EntityFeatures]
    version: str
    hits: int = 0
    misses: int = 0
    stale: int = 0
    computed: int = 0


FeaturesComputeAnswer = FeaturesComputeReply | ErrorReply
FeaturesGetAnswer = FeaturesGetReply | ErrorReply
