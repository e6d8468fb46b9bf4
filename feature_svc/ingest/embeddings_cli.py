"""`fraudmesh embeddings refresh`: the active GNN with embeddings recomputed from the ledger, as a new version (no
torch); deploy/cli.py then activates it through the model registry (the workers hot-swap)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from feature_svc.ingest.embeddings_refresh import EmbeddingRefreshError, refresh_embeddings
from feature_svc.ledger import LedgerError, connect
from inference_svc.artifact import ArtifactError
from shared.settings import SettingsError, load_settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", default="", help="model version (default: the active one)")
    p.add_argument("--schema", default=None, help="PostgreSQL schema (default: the DSN's search_path)")
    p.add_argument("--no-activate", action="store_true", help="write the new version only")


def refresh(args: argparse.Namespace) -> str | None:
    """The new version's name, or None (the error printed)."""
    try:
        summary = asyncio.run(_refresh(args))
    except (EmbeddingRefreshError, ArtifactError, LedgerError, SettingsError, OSError) as exc:
        print(f"fraudmesh embeddings refresh: {exc}", file=sys.stderr)
        return None
    print(json.dumps(summary))
    return str(summary["new_version"])


async def _refresh(args: argparse.Namespace) -> dict[str, object]:
    settings = load_settings()
    pool = await connect(settings.postgres_dsn, schema=args.schema, max_size=2)
    try:
        return await refresh_embeddings(pool, args.model_dir or Path(settings.model_dir), args.version)
    finally:
        await pool.close()
