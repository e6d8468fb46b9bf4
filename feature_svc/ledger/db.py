"""Connection pools to the ledger, optionally confined to one PostgreSQL schema.

A schema per pool (through `search_path`) lets several ledgers share one database: the test suite gives
each test module its own, and a deployment can keep staging and production side by side.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

import asyncpg

SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class LedgerError(RuntimeError):
    """The ledger cannot be reached or used; the message says where and why (never the password)."""


def redact(dsn: str) -> str:
    """The DSN without its password, for error messages and logs."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def check_schema(schema: str) -> str:
    if not SCHEMA_NAME.match(schema):
        raise LedgerError(
            f"invalid schema name {schema!r}: use lower-case letters, digits and _ (at most 63), "
            f"starting with a letter or _"
        )
    return schema


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release a connection to the pool without asyncpg's default reset query (`RESET ALL`, `CLOSE ALL`,
    `UNLISTEN *`, `pg_advisory_unlock_all()`): one more round trip, and one more statement for PostgreSQL, after
    every `pool.fetch`, which at live ingestion's many small statements was the most frequent statement of all
    (bench/results/ingest-perf-*.md). asyncpg still rolls back an open transaction on release; this code changes no
    session state (only `SET LOCAL` and transaction-level advisory locks, both gone at the transaction's end)."""


async def connect(dsn: str, *, schema: str | None = None, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """Open a pool to the ledger. With `schema`, the schema is created if missing and every connection
    of the pool uses it (search_path), so unqualified table names resolve there."""
    server_settings: dict[str, str] = {}
    try:
        if schema is not None:
            check_schema(schema)
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            finally:
                await conn.close()
            server_settings["search_path"] = schema
        pool = await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, server_settings=server_settings, reset=_keep_session
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise LedgerError(f"cannot open the ledger at {redact(dsn)}: {exc}") from exc
    assert pool is not None  # create_pool only returns None when used without await
    return pool
