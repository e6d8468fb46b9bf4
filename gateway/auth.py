"""API keys: `X-API-Key` compared in constant time with every configured key; a separate set for admin routes.

A guard is an object built from the settings (no global state). A refusal is logged (route, client address, reason:
missing or unknown key), never the key itself.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler

from shared.logs import log_fields

log = logging.getLogger("fraudmesh.gateway.auth")
HEADER = "x-api-key"


def parse_keys(text: str) -> tuple[bytes, ...]:
    return tuple(k.strip().encode() for k in text.split(",") if k.strip())


def key_matches(given: bytes, keys: tuple[bytes, ...]) -> bool:
    """Constant time in the key's content: every key is compared, with `hmac.compare_digest`, whatever matches."""
    found = False
    for key in keys:
        found |= hmac.compare_digest(given, key)
    return found


class KeyGuard:
    """A Litestar guard accepting a request whose `X-API-Key` is one of `keys`."""

    def __init__(self, keys: tuple[bytes, ...], kind: str, how: str) -> None:
        self.keys = keys
        self.kind = kind
        self.how = how

    async def __call__(self, connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        given = connection.headers.get(HEADER)
        if given is not None and key_matches(given.encode(), self.keys):
            return
        reason = "missing" if given is None else "unknown"
        log.warning(
            "authentication failed",
            extra=log_fields(
                kind=self.kind,
                reason=f"{reason} key",
                path=connection.url.path,
                client=connection.client.host if connection.client else "",
            ),
        )
        raise NotAuthorizedException(f"{reason.capitalize()} {self.kind} key: {self.how}")


def api_key_guard(api_keys: str) -> list[KeyGuard]:
    """The guards of the API routes: none when FRAUDMESH_API_KEYS is empty (local development)."""
    keys = parse_keys(api_keys)
    return [KeyGuard(keys, "API", "send it in the X-API-Key header.")] if keys else []


def admin_key_guard(admin_keys: str, api_keys: str) -> list[KeyGuard]:
    """The guards of admin routes (`guards=admin_key_guard(...)`): an FRAUDMESH_ADMIN_API_KEYS key is required.
    With no admin keys, admin routes are open only when the API is open too (no API keys: local development);
    otherwise they are closed to everyone, since an API key never grants admin rights."""
    keys = parse_keys(admin_keys)
    if keys:
        return [KeyGuard(keys, "admin", "send an admin key (FRAUDMESH_ADMIN_API_KEYS) in the X-API-Key header.")]
    if parse_keys(api_keys):
        return [KeyGuard((), "admin", "admin routes are closed: the operator sets FRAUDMESH_ADMIN_API_KEYS.")]
    return []
