"""Pick the graph store named by the settings (FRAUDMESH_GRAPH_STORE)."""

from __future__ import annotations

import asyncpg

from feature_svc.graph.base import GraphStore
from feature_svc.graph.model import GraphError
from feature_svc.graph.postgres import PostgresGraphStore
from feature_svc.ledger import migrate
from shared.settings import Settings


async def open_graph_store(settings: Settings, *, pool: asyncpg.Pool | None = None) -> GraphStore:
    """Open the configured store. With `graph_store=postgres`, `pool` (if given) is shared with the caller
    and stays open on `close`; without it the store opens and owns its own pool on `postgres_dsn`."""
    if settings.graph_store == "postgres":
        if pool is None:
            return await PostgresGraphStore.open(settings.postgres_dsn)
        await migrate(pool)
        return PostgresGraphStore(pool)
    if settings.graph_store == "neo4j":
        if not settings.neo4j_uri:
            raise GraphError("FRAUDMESH_GRAPH_STORE=neo4j needs FRAUDMESH_NEO4J_URI (e.g. neo4j://127.0.0.1:7687)")
        try:  # the driver is the optional `neo4j` extra
            from feature_svc.graph.neo4j_store import Neo4jGraphStore
        except ModuleNotFoundError as exc:
            raise GraphError(
                f"FRAUDMESH_GRAPH_STORE=neo4j needs the neo4j driver ({exc}): pip install -e '.[neo4j]' "
                "-c requirements.lock, or build the image with --build-arg EXTRAS=neo4j"
            ) from exc
        return await Neo4jGraphStore.open(settings.neo4j_uri, settings.neo4j_user, settings.neo4j_password)
    raise GraphError(f"unknown graph store {settings.graph_store!r}; expected postgres or neo4j")
