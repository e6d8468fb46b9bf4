"""Service discovery with the NATS micro protocol (`$SRV.PING`, `$SRV.INFO`, `$SRV.STATS`), through nats.py's
`nats.micro`: `nats micro ls`, `nats micro info inference` and examples/list_services.py see every instance.

nats.micro answers the three verbs; the endpoints it describes are the service's own routes (request-reply
endpoints, JetStream consumers, listeners, KV watches), with their counts from the dispatch core. A route's
`metadata.kind` says which form it is. (nats.micro's own `add_endpoint` is not used: it runs handlers one at a
time per subscription, while fraudmesh's endpoints run bounded-concurrent.)
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Sequence
from datetime import datetime

from nats.aio.client import Client
from nats.micro.service import (
    EndpointInfo,
    EndpointStats,
    ServiceConfig,
    ServiceInfo,
    ServiceStats,
)
from nats.micro.service import Service as MicroService

from shared.dispatch import Route


def fraudmesh_version() -> str:
    try:
        return importlib.metadata.version("fraudmesh")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a plain checkout
        return "0.0.0"


class Discovery(MicroService):
    """A nats.micro service whose endpoints are the routes of a fraudmesh `Service`."""

    def __init__(
        self,
        nc: Client,
        *,
        name: str,
        description: str,
        metadata: dict[str, str],
        routes: Callable[[], Sequence[Route]],
    ) -> None:
        super().__init__(
            nc,
            ServiceConfig(name=name, version=fraudmesh_version(), description=description, metadata=metadata),
        )
        self._routes = routes

    def info(self) -> ServiceInfo:
        return ServiceInfo(
            id=self.id,
            name=self._name,
            version=self._version,
            description=self._description,
            metadata=self._metadata,
            endpoints=[
                EndpointInfo(name=r.name, subject=r.destination, queue_group=r.group, metadata=r.stats_metadata())
                for r in self._routes()
            ],
        )

    def stats(self) -> ServiceStats:
        return ServiceStats(
            id=self.id,
            name=self._name,
            version=self._version,
            metadata=self._metadata,
            started=self._started,
            endpoints=[
                EndpointStats(
                    name=r.name,
                    subject=r.destination,
                    queue_group=r.group,
                    num_requests=r.requests,
                    num_errors=r.errors,
                    processing_time=r.processing_ns,
                    average_processing_time=r.processing_ns // r.requests if r.requests else 0,
                    last_error=r.last_error or None,
                )
                for r in self._routes()
            ],
        )

    @property
    def started(self) -> datetime:
        return self._started
