"""What the GNN path needs in a stack, prepared with the project's own commands when it is missing: a world in
PostgreSQL (`fraudmesh simulate`), its offline store (`fraudmesh features export`) and a trained, activated GNN
(`fraudmesh train`)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from bench import models

TRAIN_EPOCHS = 3
"""Enough for a GNN with the production graph and head shapes; its accuracy does not change the cost of a score."""
BASELINE_ITER = 30
"""The gradient-boosting baseline is not served; a short one (as tests/worlds.py trains) saves minutes."""


def fraudmesh(run_dir: Path, *args: str) -> float:
    """Run `fraudmesh --run-dir RUN_DIR ARGS...` in a child process; its wall seconds. Raises on failure."""
    cmd = [sys.executable, "-m", "deploy.cli", "--run-dir", str(run_dir), *args]
    print(f"[bench] $ fraudmesh --run-dir {run_dir} {' '.join(args)}", flush=True)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"`fraudmesh {' '.join(args)}` exited {proc.returncode}")
    return time.monotonic() - t0


async def world_size(dsn: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        try:
            return int(await conn.fetchval("SELECT count(*) FROM transactions"))
        except asyncpg.UndefinedTableError:
            return 0
    finally:
        await conn.close()


def prepare_gnn(run_dir: Path) -> dict[str, float]:
    """Simulate, export and train as needed (each step only when its product is missing); the seconds each took."""
    from deploy.stack import StackState

    state = StackState.load(run_dir.resolve())
    if state is None:
        raise RuntimeError(f"no stack in {run_dir}: start one with `fraudmesh up` (or pass --up)")
    took: dict[str, float] = {}
    offline = run_dir / "offline"
    if not asyncio.run(world_size(state.postgres_dsn)):
        took["simulate"] = fraudmesh(run_dir, "simulate")
    model_dir = Path(state.run_dir) / "models"
    if models.newest(models.local_models(model_dir), models.GNN_KIND, model_dir) is None:
        if not any(offline.glob("day=*")):
            took["features export"] = fraudmesh(run_dir, "features", "export", "--out", str(offline))
        took["train"] = fraudmesh(
            run_dir,
            "train",
            "--epochs",
            str(TRAIN_EPOCHS),
            "--baseline-iter",
            str(BASELINE_ITER),
            "--offline",
            str(offline),
            "--no-progress",
            "--no-report",
        )
    return took
