"""`fraudmesh features check`: compare online feature values with a recompute from the ledger.

    fraudmesh features check                       # ~100 entities of each type ingested in the last hour
    fraudmesh features check --entity card:card_000123 --entity device:dev_0000316
    fraudmesh features check --sample 500 --since-minutes 1440 --json

Exit status 0 when every compared value matches, 1 when some differ (each printed), 2 on a usage or store error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import timedelta

import msgspec

from feature_svc.compute import Entity
from feature_svc.definitions import ENTITY_TYPES, FEATURE_SET_VERSION, LAGGING_S
from feature_svc.graph import GraphError, open_graph_store
from feature_svc.ingest.check import CheckReport, confirmed_check, sample_entities
from feature_svc.ledger import LedgerError, connect, migrate
from feature_svc.online import DEFAULT_PREFIX, OnlineStore
from shared.settings import SettingsError, load_settings


def add_check_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--entity", action="append", default=[], metavar="TYPE:ID", help="check these (repeatable)")
    p.add_argument("--sample", type=int, default=100, help="entities of each type to sample (default 100)")
    p.add_argument("--since-minutes", type=float, default=60.0, help="sample from this recent ingestion (default 60)")
    p.add_argument(
        "--settle-s",
        type=float,
        default=LAGGING_S,
        help=f"re-check differences after this, so in-flight ingestion is not a fault (default {LAGGING_S:g})",
    )
    p.add_argument("--schema", default=None, help="PostgreSQL schema (default: the DSN's search_path)")
    p.add_argument("--redis-prefix", default=DEFAULT_PREFIX)
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def parse_entity(text: str) -> Entity:
    etype, sep, eid = text.partition(":")
    if not sep or etype not in ENTITY_TYPES or not eid:
        raise ValueError(f"--entity {text!r}: expected TYPE:ID with TYPE one of {', '.join(ENTITY_TYPES)}")
    return etype, eid


def check(args: argparse.Namespace) -> int:
    try:
        entities = [parse_entity(e) for e in args.entity]
        report = asyncio.run(_check(args, entities))
    except (ValueError, LedgerError, GraphError, SettingsError, OSError) as exc:
        print(f"fraudmesh features check: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(msgspec.json.encode(report).decode())
    else:
        print(
            f"checked {report.checked} entities ({report.features_compared} values, {report.missing} not in Redis), "
            f"feature set {FEATURE_SET_VERSION}: {len(report.mismatches)} mismatch(es)"
        )
        for m in report.mismatches[:50]:
            print(f"  {m.entity_type} {m.entity_id} {m.feature}: online {m.online} ledger {m.ledger}")
    return 1 if report.mismatches else 0


async def _check(args: argparse.Namespace, entities: list[Entity]) -> CheckReport:
    settings = load_settings()
    pool = await connect(settings.postgres_dsn, schema=args.schema, max_size=8)
    online = OnlineStore.from_url(settings.redis_url, version=FEATURE_SET_VERSION, prefix=args.redis_prefix)
    try:
        await migrate(pool)
        graph = await open_graph_store(settings, pool=pool)
        try:
            if not entities:
                entities = await sample_entities(pool, args.sample, timedelta(minutes=args.since_minutes))
            return await confirmed_check(pool, graph, online, entities, args.settle_s)
        finally:
            await graph.close()
    finally:
        await online.close()
        await pool.close()
