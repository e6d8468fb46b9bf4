"""`GET /`: what this service is and where its docs are (seed 004)."""

from __future__ import annotations

import importlib.metadata

from litestar import Controller, get

from gateway.seed_schemas import RootResponse


def package_version() -> str:
    try:
        return importlib.metadata.version("fraudmesh")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


VERSION = package_version()
DOCS_URL = "/docs"


class InfoController(Controller):
    tags = ["operations"]

    @get("/", operation_id="serviceInfo", summary="Service name, version, status and where the docs are")
    async def root(self) -> RootResponse:
        """Answers while the process runs (no dependency is checked: see `/ready` for that)."""
        return RootResponse(
            name="fraudmesh",
            version=VERSION,
            description="Real-time fraud scoring of payment transactions over NATS microservices.",
            status="running",
            docs_url=DOCS_URL,
        )
