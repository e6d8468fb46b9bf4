"""Operations routes: `/health` (every service behind NATS, and their dependencies), `/healthz` (liveness),
`/ready` (readiness).

Both `/health` and `/ready` answer from health replies at most one second old (gateway/bridge.py `health`), name
the dependency that is down (gateway/health_view.py) and say how old their information is (`age_s`)."""

from __future__ import annotations

from typing import Literal

from litestar import Controller, Response, get
from litestar.openapi.datastructures import ResponseSpec

from gateway.bridge import NatsBridge
from gateway.dependencies import Gateway
from gateway.health_view import system_view
from gateway.schemas import HealthResponse, ReadyResponse, ServiceHealth
from shared.messages import HealthReply

Status = Literal["ok", "degraded", "down"]


def _service_health(replies: dict[str, list[HealthReply]]) -> dict[str, ServiceHealth]:
    out = {}
    for svc, reps in replies.items():
        status: Status = "down" if not reps else ("ok" if all(r.status == "ok" for r in reps) else "degraded")
        out[svc] = ServiceHealth(status=status, instances=len(reps), details={r.instance_id: r.details for r in reps})
    return out


async def unready_reason(bridge: NatsBridge) -> str:
    """Why nothing can be scored now ("" when it can): the same view as `/ready`, for the probes of other APIs
    (MLflow's `/ping`, OIP's `/v2/health/ready`)."""
    view = system_view(await bridge.health(), bridge.connected)
    if view.can_score:
        return ""
    return "; ".join(view.problems[d] for d in view.down)


class HealthController(Controller):
    tags = ["operations"]

    @get(
        "/health",
        summary="Status of NATS, of every service behind it and of their stores",
        responses={503: ResponseSpec(HealthResponse, description="Something is down: `down` names it.")},
    )
    async def health(self, bridge: NatsBridge) -> Response[HealthResponse]:
        """200 `ok` when everything is up; 503 otherwise, with `down` naming what is down (`nats`, `redis`,
        `postgres`, `aggregator`, `inference`, `feature`) and `problems` saying what was seen."""
        replies = await bridge.health()
        services = _service_health(replies)
        view = system_view(replies, bridge.connected)
        status: Status = "down" if not view.can_score else ("degraded" if view.down else "ok")
        if status == "ok" and any(s.status != "ok" for s in services.values()):
            status = "degraded"
        body = HealthResponse(
            status=status,
            nats="connected" if bridge.connected else "disconnected",
            services=services,
            down=view.down,
            problems=view.problems,
            model_version=view.model_version,
            age_s=round(bridge.health_age_s, 3),
        )
        return Response(body, status_code=200 if status == "ok" else 503)

    @get("/healthz", summary="Liveness: 200 while the process answers (no dependency checks)")
    async def healthz(self) -> dict[str, str]:
        return {"status": "alive"}

    @get(
        "/ready",
        summary="Readiness: 200 when requests can be scored",
        responses={503: ResponseSpec(ReadyResponse, description="Not ready: `reason` says why.")},
    )
    async def ready(self, bridge: NatsBridge, gateway: Gateway) -> Response[ReadyResponse]:
        """503 when nothing can be scored (no NATS, no aggregator, no inference worker), or when the feature
        stores are down and FRAUDMESH_DEGRADED_POLICY=fail refuses every degraded score."""
        replies = await bridge.health()
        view = system_view(replies, bridge.connected)
        body = ReadyResponse(
            status="ready", down=view.down, model_version=view.model_version, age_s=round(bridge.health_age_s, 3)
        )
        fail = gateway.settings.degraded_policy == "fail" and view.features_down
        if not view.can_score or fail:
            body.status = "not ready"
            body.reason = "; ".join(view.problems[d] for d in view.down)
            return Response(body, status_code=503)
        return Response(body, status_code=200)
