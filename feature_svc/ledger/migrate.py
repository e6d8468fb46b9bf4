"""Plain-SQL migrations (`migrations/NNN_name.sql`), applied in order, each at most once.

`migrate` is safe to call at every service start: it takes an advisory lock so that several workers
starting together do not race, records what it applied in `schema_migrations`, and refuses to run if an
already-applied file was edited since (a changed migration must be a new file instead).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from feature_svc.ledger.db import LedgerError

MIGRATION_FILE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


class MigrationError(LedgerError):
    """A migration is malformed, was edited after it was applied, or failed to apply."""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations() -> list[Migration]:
    """The packaged migrations, ordered by version."""
    found: dict[str, Migration] = {}
    for entry in resources.files("feature_svc.ledger").joinpath("migrations").iterdir():
        if not entry.name.endswith(".sql"):
            continue
        m = MIGRATION_FILE.match(entry.name)
        if m is None:
            raise MigrationError(f"migration file {entry.name!r} must be named NNN_lower_case_name.sql")
        version, name = m.groups()
        if version in found:
            raise MigrationError(f"two migrations share version {version}: {found[version].name} and {name}")
        found[version] = Migration(version, name, entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


async def migrate(pool: asyncpg.Pool) -> list[str]:
    """Apply the migrations not yet applied, all in one transaction; return the versions applied now."""
    applied_now: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('fraudmesh.migrate.' || coalesce(current_schema(), '')))"
        )
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    text PRIMARY KEY,
                   name       text NOT NULL,
                   checksum   text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now()
               )"""
        )
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
        applied = {r["version"]: r["checksum"] for r in rows}
        for mig in migrations():
            checksum = applied.get(mig.version)
            if checksum is not None:
                if checksum != mig.checksum:
                    raise MigrationError(
                        f"migration {mig.version}_{mig.name} changed after it was applied; "
                        f"add a new migration file instead of editing an applied one"
                    )
                continue
            try:
                await conn.execute(mig.sql)
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"migration {mig.version}_{mig.name} failed: {exc}") from exc
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                mig.version,
                mig.name,
                mig.checksum,
            )
            applied_now.append(mig.version)
    return applied_now
