"""`fraudmesh embeddings refresh`: recompute the active GNN's embeddings from the ledger into Redis (no torch)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from redis.asyncio import Redis

from feature_svc.ingest.embeddings_refresh import EmbeddingRefreshError, refresh_embeddings
from feature_svc.ledger import LedgerError, connect
from inference_svc.artifact import ArtifactError
from shared.settings import SettingsError, load_settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", default="", help="model version (default: the active one)")
    p.add_argument("--model-dir", type=Path, default=None, help="default: FRAUDMESH_MODEL_DIR")
    p.add_argument("--schema", default=None, help="PostgreSQL schema (default: the DSN's search_path)")


def refresh(args: argparse.Namespace) -> int:
    try:
        summary = asyncio.run(_refresh(args))
    except (EmbeddingRefreshError, ArtifactError, LedgerError, SettingsError, OSError) as exc:
        print(f"fraudmesh embeddings refresh: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


async def _refresh(args: argparse.Namespace) -> dict[str, object]:
    settings = load_settings()
    pool = await connect(settings.postgres_dsn, schema=args.schema, max_size=2)
    redis = Redis.from_url(settings.redis_url)
    try:
        return await refresh_embeddings(pool, redis, args.model_dir or Path(settings.model_dir), args.version)
    finally:
        await redis.aclose()
        await pool.close()
