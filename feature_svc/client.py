"""Callers' side of the feature service: one request on `features.compute` / `features.get`, decoded.

Splitting is the service's job (a request over `chunk_size` entities is cut into chunks that the feature workers
share, see feature_svc/service.py), so callers send one request of any size up to MAX_ENTITIES.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from nats.aio.client import Client as NATS

from shared import subjects
from shared.feature_messages import (
    EntityRef,
    FeaturesComputeAnswer,
    FeaturesComputeReply,
    FeaturesComputeRequest,
    FeaturesGetAnswer,
    FeaturesGetReply,
    FeaturesGetRequest,
)
from shared.messages import Codec, ErrorReply

_codec = Codec()


class FeatureServiceError(RuntimeError):
    """The feature service answered with an ErrorReply (kept in `.reply`)."""

    def __init__(self, reply: ErrorReply) -> None:
        super().__init__(f"{reply.code}: {reply.message}")
        self.reply = reply


def _refs(entities: Sequence[tuple[str, str]]) -> list[EntityRef]:
    return [EntityRef(type=t, id=i) for t, i in entities]  # type: ignore[arg-type]  # entity types are checked where they are decoded (msgspec, in the feature service)


async def compute_remote(
    nc: NATS,
    entities: Sequence[tuple[str, str]],
    *,
    as_of: datetime | None = None,
    write: bool = True,
    timeout: float = 10.0,
    chunk_size: int | None = None,
    headers: dict[str, str] | None = None,
) -> FeaturesComputeReply:
    """Compute (and, when current, write to Redis) the features of `entities` through `features.compute`."""
    req = FeaturesComputeRequest(entities=_refs(entities), as_of=as_of, write=write, chunk_size=chunk_size)
    msg = await nc.request(subjects.FEATURES_COMPUTE, _codec.encode(req), timeout=timeout, headers=headers)
    answer: FeaturesComputeReply | ErrorReply = _codec.decoder(FeaturesComputeAnswer).decode(msg.data)
    if isinstance(answer, ErrorReply):
        raise FeatureServiceError(answer)
    return answer


async def get_remote(
    nc: NATS,
    entities: Sequence[tuple[str, str]],
    *,
    names: list[str] | None = None,
    max_age_s: float | None = None,
    timeout: float = 10.0,
    headers: dict[str, str] | None = None,
) -> FeaturesGetReply:
    """Read features through Redis with `features.get` (missing or stale ones are computed)."""
    req = FeaturesGetRequest(entities=_refs(entities), names=names, max_age_s=max_age_s)
    msg = await nc.request(subjects.FEATURES_GET, _codec.encode(req), timeout=timeout, headers=headers)
    answer: FeaturesGetReply | ErrorReply = _codec.decoder(FeaturesGetAnswer).decode(msg.data)
    if isinstance(answer, ErrorReply):
        raise FeatureServiceError(answer)
    return answer
