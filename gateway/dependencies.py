"""What route handlers receive by dependency injection: settings, the bridge, the request id and the deadline.

`create_app` registers `dependencies(settings, bridge)` on the app, so any controller names what it needs as a
parameter (`settings: Settings`, `bridge: NatsBridge`, `gateway: Gateway` (both at once), `request_id: str`,
`deadline_ms: float`) and never reads `app.state`.

Hot routes should depend on few providers per level: Litestar resolves several dependencies of the same depth in an
anyio task group (a task each). The scoring routes therefore take one `Scoring` built from `gateway` alone, calling
`provide_request_id` and `provide_deadline` itself (see gateway/controllers/score.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.di import Provide

from gateway.bridge import NatsBridge
from gateway.request_context import BAD_REQUEST_ID, request_id_of
from gateway.stores import Stores
from gateway.validation import BodyError, echo
from shared.messages import FieldError
from shared.settings import Settings


def provide_request_id(request: Request[Any, Any, Any]) -> str:
    """The request id; a 400 when the client's `X-Request-Id` could not be used as one."""
    bad = request.scope.get("state", {}).get(BAD_REQUEST_ID)
    if bad is not None:
        raise BodyError(
            [
                FieldError(
                    path="header.X-Request-Id",
                    message=f"Not usable as a request id: {echo(bad)}. Send 1-64 characters from letters, digits "
                    "and _ . : - (or no X-Request-Id: the gateway then generates one).",
                )
            ],
            "The X-Request-Id header is invalid.",
        )
    return request_id_of(request)


def provide_deadline(settings: Settings, timeout_ms: int | None = None) -> float:
    """The absolute deadline (epoch ms) from the `timeout_ms` query parameter or the default."""
    if timeout_ms is not None and not 1 <= timeout_ms <= settings.max_request_timeout_ms:
        raise BodyError(
            [
                FieldError(
                    path="query.timeout_ms",
                    message=f"Must be between 1 and {settings.max_request_timeout_ms} ms, got {timeout_ms}.",
                )
            ],
            "The query is invalid.",
        )
    return time.time() * 1000.0 + (timeout_ms or settings.request_timeout_ms)


@dataclass(frozen=True, slots=True)
class Gateway:
    """The process-wide pieces a route may need, in one dependency. `settings` are those in force now: the
    process's own with the runtime overrides (`POST /config`) on top."""

    bridge: NatsBridge
    stores: Stores

    @property
    def settings(self) -> Settings:
        return self.bridge.settings


def dependencies(bridge: NatsBridge, stores: Stores) -> dict[str, Provide]:
    gateway = Gateway(bridge, stores)

    def provide_gateway() -> Gateway:
        return gateway

    def provide_settings() -> Settings:
        return bridge.settings

    def provide_bridge() -> NatsBridge:
        return bridge

    return {
        "gateway": Provide(provide_gateway, use_cache=True, sync_to_thread=False),
        "settings": Provide(provide_settings, use_cache=True, sync_to_thread=False),
        "bridge": Provide(provide_bridge, use_cache=True, sync_to_thread=False),
        "request_id": Provide(provide_request_id, sync_to_thread=False),
        "deadline_ms": Provide(provide_deadline, sync_to_thread=False),
    }
