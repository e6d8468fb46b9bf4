"""`GET /features`: the online features of one entity, read through the bridge (`features.get`)."""

from __future__ import annotations

import re

from litestar import Controller, Response, get

from gateway.bridge import BridgeError, NatsBridge
from gateway.openapi_spec import error_responses
from gateway.schemas import FeaturesResponse
from gateway.validation import BodyError, card_id_error, echo
from shared.feature_messages import ENTITY_TYPES, EntityType
from shared.messages import ErrorReply, FieldError
from shared.settings import Settings

_ENTITY_TYPES: dict[str, EntityType] = {t: t for t in ENTITY_TYPES}
_ID = re.compile(r"^[A-Za-z0-9_.:@\-]{1,128}$")


def _query_errors(entity_type: str, entity_id: str, wanted: list[str] | None, tokens: bool) -> list[FieldError]:
    errors = []
    if entity_type not in ENTITY_TYPES:
        errors.append(
            FieldError(
                path="query.entity_type",
                message=f"Unknown entity type {echo(entity_type)}; use one of {', '.join(ENTITY_TYPES)}.",
            )
        )
    if not _ID.match(entity_id):
        errors.append(
            FieldError(
                path="query.entity_id",
                message=f"Malformed id {echo(entity_id)}: 1-128 characters from letters, digits and _ . : @ -.",
            )
        )
    elif entity_type == "card" and not tokens and (e := card_id_error(entity_id, "query.entity_id")):
        errors.append(e)
    if wanted is not None and not all(wanted):
        errors.append(FieldError(path="query.names", message="Empty feature name in the comma-separated list."))
    return errors


class FeaturesController(Controller):
    tags = ["features"]

    @get(
        "/features",
        summary="The online features of one entity (read through Redis)",
        responses=error_responses(404, 503, 504),
    )
    async def features(
        self,
        bridge: NatsBridge,
        settings: Settings,
        request_id: str,
        entity_type: str,
        entity_id: str,
        names: str | None = None,
    ) -> Response[FeaturesResponse]:
        """`entity_type` is card, merchant, device or ip; `names` is an optional comma-separated list of feature
        names. Missing or stale features are computed on the way (point in time: now)."""
        wanted = [n.strip() for n in names.split(",")] if names else None
        etype = _ENTITY_TYPES.get(entity_type)
        if errors := _query_errors(entity_type, entity_id, wanted, settings.card_ids_are_tokens):
            raise BodyError(errors, "The query is invalid.")
        assert etype is not None  # _query_errors refused an unknown type
        try:
            reply = await bridge.features(etype, entity_id, wanted, request_id)
        except BridgeError as exc:
            for e in exc.reply.errors:  # the feature service names `$.names`; the client sent `query.names`
                if e.path.startswith("$.names"):
                    e.path = "query.names" + e.path.removeprefix("$.names")
            raise
        ent = reply.entities[0]
        if not ent.known:
            raise BridgeError(
                ErrorReply(
                    code="not_found",
                    request_id=request_id,
                    message=f"No {entity_type} {echo(entity_id)} in the ledger: it has never transacted.",
                )
            )
        out = FeaturesResponse(
            entity_type=ent.type,
            entity_id=ent.id,
            values=ent.values,
            computed_at=ent.computed_at,
            version=ent.version,
            source=ent.source,
            age_s=round(ent.age_s, 3),
        )
        return Response(out, headers={"X-Request-Id": request_id})
