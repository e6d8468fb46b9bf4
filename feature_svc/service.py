"""The feature-service actor. This skeleton joins the `feature_svc` queue group and answers health pings;
`features.compute` and `features.get` land here with the features work."""

from __future__ import annotations

from shared.service import Service


class FeatureService(Service):
    name = "feature"

    def health_details(self) -> dict[str, str]:
        return {"features": "skeleton: features.compute not yet served"}
