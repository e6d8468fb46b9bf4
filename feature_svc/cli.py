"""`fraudmesh simulate` and `fraudmesh features export`, as functions of parsed arguments.

Wiring into deploy/cli.py:

    from feature_svc import cli as features_cli
    s = sub.add_parser("simulate", help="generate the payment world and load it")
    features_cli.add_simulate_arguments(s); s.set_defaults(func=features_cli.simulate)
    f = sub.add_parser("features").add_subparsers(dest="features_command", required=True)
    s = f.add_parser("export", help="write the Parquet offline store")
    features_cli.add_export_arguments(s); s.set_defaults(func=features_cli.export)

Both return a process exit code (0 ok, 2 a store cannot be reached or bad arguments).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from feature_svc.definitions import FEATURE_SET_VERSION, FEATURES
from feature_svc.graph import GraphError, open_graph_store
from feature_svc.ledger import LedgerError, connect, load_world, migrate, redact
from feature_svc.offline import export_offline
from feature_svc.world import FRAUD_KINDS, World, WorldError, WorldParams, generate_world, write_world
from feature_svc.world.options import add_world_arguments, world_overrides
from shared.settings import Settings, SettingsError, load_settings


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {"postgres_dsn": args.postgres_dsn} if getattr(args, "postgres_dsn", None) else {}
    return load_settings(**overrides)


def add_simulate_arguments(p: argparse.ArgumentParser) -> None:
    d = WorldParams()
    p.add_argument("--transactions", type=int, default=d.n_transactions, help=f"default {d.n_transactions}")
    p.add_argument("--cards", type=int, default=d.n_cards, help=f"default {d.n_cards}")
    p.add_argument("--days", type=int, default=d.days, help=f"default {d.days}")
    p.add_argument("--seed", type=int, default=d.seed, help=f"default {d.seed}")
    p.add_argument("--postgres-dsn", default="", help="default: FRAUDMESH_POSTGRES_DSN")
    p.add_argument("--schema", default=None, help="PostgreSQL schema (default: the DSN's search_path)")
    p.add_argument("--out", type=Path, default=None, help="also write the world as Parquet to this directory")
    p.add_argument("--no-load", action="store_true", help="generate (and --out) only; do not load the stores")
    p.add_argument(
        "--ends-now",
        action="store_true",
        help="shift the world to end at the current hour (for live demos: velocity features as of now are then "
        "meaningful); the default start (2026-09-01) keeps worlds reproducible",
    )
    add_world_arguments(p)


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--family",
        choices=("fraud", "personalization"),
        default="fraud",
        help="fraud (default): one row per transaction; personalization: daily snapshots of the user, item and "
        "session features from the clickstream's event log (feature_svc/offline_clicks.py)",
    )
    p.add_argument(
        "--out", type=Path, default=None, help="default var/offline (personalization: var/offline-personalization)"
    )
    p.add_argument("--legit-fraction", type=float, default=0.1, help="share of unlabelled transactions (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the legit sample (default 0)")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--postgres-dsn", default="", help="default: FRAUDMESH_POSTGRES_DSN")
    p.add_argument("--schema", default=None)


def simulate(args: argparse.Namespace) -> int:
    """Generate the world, print its summary (count per kind of fraud), write it (--out), load ledger + graph."""
    try:
        start = WorldParams().start
        if getattr(args, "ends_now", False):
            now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
            start = now - timedelta(days=args.days)
        params = WorldParams(
            n_cards=args.cards,
            n_transactions=args.transactions,
            days=args.days,
            seed=args.seed,
            start=start,
            **world_overrides(args),
        )
        world = generate_world(params)
    except WorldError as exc:
        print(f"fraudmesh simulate: {exc}", file=sys.stderr)
        return 2
    summary = world.summary()
    print(
        f"world (seed {params.seed}): {summary['transactions']:,} transactions over {params.days} days, "
        f"{summary['cards']:,} cards, {summary['merchants']:,} merchants, {summary['devices']:,} devices, "
        f"{summary['ips']:,} IPs"
    )
    print(f"  legit        {summary['legit']:>9,}")
    for kind in FRAUD_KINDS:
        print(f"  {kind:<12} {summary[kind]:>9,}")
    print(f"  fraud total  {summary['fraud']:>9,} ({summary['fraud'] / summary['transactions']:.2%})")
    if args.out is not None:
        print(f"wrote {write_world(world, args.out)}")
    if args.no_load:
        return 0
    try:
        settings = _settings(args)
        counts = asyncio.run(_load(settings, world, args.schema))
    except (LedgerError, GraphError, SettingsError) as exc:
        print(f"fraudmesh simulate: {exc}", file=sys.stderr)
        return 2
    print("loaded: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    return 0


async def _load(settings: Settings, world: World, schema: str | None) -> dict[str, int]:
    pool = await connect(settings.postgres_dsn, schema=schema)
    try:
        await migrate(pool)
        counts = await load_world(pool, world)
        graph = await open_graph_store(settings, pool=pool)
        try:
            counts.update(await graph.load_world(world))
        finally:
            await graph.close()
    finally:
        await pool.close()
    return counts


def export(args: argparse.Namespace) -> int:
    """Write the Parquet offline store (`day=YYYY-MM-DD/` partitions) from the ledger and the graph store."""
    if args.family == "personalization":
        return _export_personalization(args)
    args.out = args.out or Path("var/offline")
    try:
        settings = _settings(args)
        summary = asyncio.run(_export(settings, args))
    except (LedgerError, GraphError, SettingsError, ValueError) as exc:
        print(f"fraudmesh features export: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {summary['rows']:,} rows ({summary['fraud_rows']:,} fraud) over {summary['days']} days to "
        f"{args.out} in {summary['seconds']:.1f} s; {len(FEATURES)} features, set {FEATURE_SET_VERSION}"
    )
    return 0


async def _export(settings: Settings, args: argparse.Namespace) -> dict[str, object]:
    pool = await connect(settings.postgres_dsn, schema=args.schema, max_size=16)
    try:
        await migrate(pool)
        if not await pool.fetchval("SELECT count(*) FROM transactions"):
            raise LedgerError(f"the ledger at {redact(settings.postgres_dsn)} is empty: run `fraudmesh simulate` first")
        graph = await open_graph_store(settings, pool=pool)
        try:
            return await export_offline(
                pool, graph, args.out, legit_fraction=args.legit_fraction, seed=args.seed, batch_size=args.batch_size
            )
        finally:
            await graph.close()
    finally:
        await pool.close()


def _export_personalization(args: argparse.Namespace) -> int:
    args.out = args.out or Path("var/offline-personalization")
    try:
        settings = _settings(args)
        summary = asyncio.run(_export_clicks(settings, args))
    except (LedgerError, SettingsError, ValueError) as exc:
        print(f"fraudmesh features export --family personalization: {exc}", file=sys.stderr)
        return 2
    rows = ", ".join(f"{n:,} {e}" for e, n in summary["rows"].items())
    print(
        f"wrote {len(summary['snapshots'])} daily snapshots ({rows} rows) of {summary['events']:,} events to "
        f"{args.out} in {summary['seconds']:.1f} s; feature set {summary['feature_set_version']}"
    )
    return 0


async def _export_clicks(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from feature_svc.offline_clicks import export_click_snapshots

    pool = await connect(settings.postgres_dsn, schema=args.schema, max_size=4)
    try:
        await migrate(pool)
        return await export_click_snapshots(pool, args.out)
    finally:
        await pool.close()
