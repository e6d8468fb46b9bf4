"""Operations routes: `/health` (every service behind NATS), `/healthz` (liveness), `/ready` (readiness)."""

from __future__ import annotations

from typing import Literal

from litestar import Controller, Response, get
from litestar.openapi.datastructures import ResponseSpec

from gateway.bridge import NatsBridge
from gateway.schemas import HealthResponse, ServiceHealth

REQUIRED = ("aggregator", "inference")
Status = Literal["ok", "degraded", "down"]


async def _service_health(bridge: NatsBridge) -> dict[str, ServiceHealth]:
    replies = await bridge.health()
    out = {}
    for svc, reps in replies.items():
        status: Status = "down" if not reps else ("ok" if all(r.status == "ok" for r in reps) else "degraded")
        out[svc] = ServiceHealth(status=status, instances=len(reps), details={r.instance_id: r.details for r in reps})
    return out


class HealthController(Controller):
    tags = ["operations"]

    @get(
        "/health",
        summary="Status of NATS and of every service behind it",
        responses={503: ResponseSpec(HealthResponse, description="A required service (or NATS) is down.")},
    )
    async def health(self, bridge: NatsBridge) -> Response[HealthResponse]:
        services = await _service_health(bridge)
        required_up = bridge.connected and all(services[s].instances > 0 for s in REQUIRED)
        status: Status = "down"
        if required_up:
            status = "ok" if all(s.status == "ok" for s in services.values()) else "degraded"
        body = HealthResponse(
            status=status, nats="connected" if bridge.connected else "disconnected", services=services
        )
        return Response(body, status_code=200 if required_up else 503)

    @get("/healthz", summary="Liveness: 200 while the process answers (no dependency checks)")
    async def healthz(self) -> dict[str, str]:
        return {"status": "alive"}

    @get(
        "/ready",
        summary="Readiness: 200 when requests can be scored",
        responses={503: ResponseSpec(dict[str, str], description="Not ready: `reason` says why.")},
    )
    async def ready(self, bridge: NatsBridge) -> Response[dict[str, str]]:
        services = await _service_health(bridge)
        missing = [s for s in REQUIRED if services[s].instances == 0]
        if not bridge.connected:
            return Response({"status": "not ready", "reason": "not connected to NATS"}, status_code=503)
        if missing:
            return Response({"status": "not ready", "reason": f"no instance of {', '.join(missing)}"}, status_code=503)
        return Response({"status": "ready"}, status_code=200)
