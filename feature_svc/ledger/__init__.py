"""The PostgreSQL ledger: transactions, labels (chargebacks), entities and the graph's edge table.

pool = await connect(settings.postgres_dsn)
await migrate(pool)                # idempotent; call at every start
await load_world(pool, world)      # COPY a simulated world in, replacing what was there
"""

from feature_svc.ledger.db import LedgerError, connect, redact
from feature_svc.ledger.load import copy_table, load_world
from feature_svc.ledger.migrate import Migration, MigrationError, migrate, migrations

__all__ = [
    "LedgerError",
    "Migration",
    "MigrationError",
    "connect",
    "copy_table",
    "load_world",
    "migrate",
    "migrations",
    "redact",
]
