"""What the health replies of every service say about the system: which dependency is down, which model is active.

Each service reports its own dependencies in its health reply's details (cheap periodic checks: the inference workers'
`redis`, the feature workers' `redis` and `postgres`; `shared/probes.py`, feature_svc/service.py). A value that does
not start with "ok" means that dependency is down (an "unknown" value, before the first check, is not counted).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.messages import HealthReply

REQUIRED = ("aggregator", "inference")
"""Without an instance of these, nothing can be scored."""
DEPENDENCY_KEYS = ("redis", "postgres")
FEATURE_DEPENDENCIES = ("redis", "postgres", "feature")
"""Dependencies whose loss degrades scores (FRAUDMESH_DEGRADED_POLICY) rather than stopping them."""
SERVICE_LABEL = {"aggregator": "no aggregator", "inference": "no inference workers", "feature": "no feature workers"}


@dataclass
class SystemView:
    down: list[str] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)
    model_version: str = ""

    @property
    def can_score(self) -> bool:
        return not any(d in self.down for d in ("nats", *REQUIRED))

    @property
    def features_down(self) -> bool:
        return any(d in self.down for d in FEATURE_DEPENDENCIES)


def system_view(replies: dict[str, list[HealthReply]], nats_connected: bool) -> SystemView:
    view = SystemView()
    if not nats_connected:
        view.down.append("nats")
        view.problems["nats"] = "the gateway is not connected to NATS"
        return view
    # the feature workers are needed only when the model reads entity features (route 1)
    needs_features = any(r.details.get("entity_features") == "on" for r in replies.get("inference", []))
    for svc, label in SERVICE_LABEL.items():
        if svc == "feature" and not needs_features:
            continue
        if not replies.get(svc):
            view.down.append(svc)
            view.problems[svc] = f"{label}: no instance answered its health ping"
    for svc, reps in replies.items():
        for rep in reps:
            for dep in DEPENDENCY_KEYS:
                state = rep.details.get(dep, "")
                if state and not state.startswith(("ok", "unknown")) and dep not in view.problems:
                    view.down.append(dep)
                    view.problems[dep] = f"{state} (seen by {svc} {rep.instance_id})"
    versions = sorted({r.details.get("model_version", "") for r in replies.get("inference", [])} - {""})
    view.model_version = ",".join(versions)
    return view
