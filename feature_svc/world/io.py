"""Write a world to a directory of Parquet files (one per table, plus its parameters) and read it back.

Parquet because the offline store and the trainer are columnar too, and because it keeps the exact types
(UTC timestamps, nullable label times, list columns) that CSV would lose.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from feature_svc.world.model import INCIDENTS_SCHEMA, SCHEMAS, World, WorldError, WorldParams

PARAMS_FILE = "world.json"
INCIDENTS_FILE = "incidents.parquet"  # optional: worlds written before incidents existed have none


def write_world(world: World, directory: str | Path) -> Path:
    """Write every table as `<name>.parquet` and the parameters as `world.json`; returns the directory."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for name in SCHEMAS:
        pq.write_table(world.table(name), out / f"{name}.parquet", compression="zstd")
    if world.incidents is not None:
        pq.write_table(world.incidents, out / INCIDENTS_FILE, compression="zstd")
    (out / PARAMS_FILE).write_text(json.dumps(world.params.to_json(), indent=2) + "\n")
    return out


def read_world(directory: str | Path) -> World:
    """Read a world written by `write_world`, checking that every table is there with the expected schema."""
    src = Path(directory)
    params_path = src / PARAMS_FILE
    if not params_path.is_file():
        raise WorldError(f"{src} is not a world directory: {PARAMS_FILE} is missing (see write_world)")
    try:
        params = WorldParams.from_json(json.loads(params_path.read_text()))
    except (ValueError, TypeError, KeyError) as exc:
        raise WorldError(f"{params_path} is not valid world parameters: {exc}") from exc
    tables = {}
    for name, schema in SCHEMAS.items():
        path = src / f"{name}.parquet"
        if not path.is_file():
            raise WorldError(f"{src} is missing {path.name}")
        table = pq.read_table(path)
        if not table.schema.equals(schema):
            raise WorldError(f"{path} has schema {table.schema}, expected {schema}")
        tables[name] = table
    incidents_path = src / INCIDENTS_FILE
    incidents = pq.read_table(incidents_path) if incidents_path.is_file() else None
    if incidents is not None and not incidents.schema.equals(INCIDENTS_SCHEMA):
        raise WorldError(f"{incidents_path} has schema {incidents.schema}, expected {INCIDENTS_SCHEMA}")
    return World(params=params, **tables, incidents=incidents)
