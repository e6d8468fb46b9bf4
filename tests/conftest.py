"""Real servers for the whole suite: nats-server (JetStream), redis-server and PostgreSQL, each started once
on free loopback ports in a temporary directory. Nothing here is mocked."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from deploy.servers import Server, start_nats, start_postgres, start_redis, stop_postgres
from tests.stacks import Stack

if TYPE_CHECKING:
    from feature_svc.world import World


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The fast unit tests (tests/unit/, no servers) run first, so a broken rule fails in seconds."""
    items.sort(key=lambda item: "unit" not in item.path.parent.name)


@pytest.fixture(scope="session")
def run_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="fraudmesh-test-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def nats_server(run_dir: Path) -> Iterator[Server]:
    srv = start_nats(run_dir / "nats-srv")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def nats_url(nats_server: Server) -> str:
    return nats_server.extra["url"]


@pytest.fixture(scope="session")
def redis_server(run_dir: Path) -> Iterator[Server]:
    srv = start_redis(run_dir / "redis-srv")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: Server) -> str:
    return redis_server.extra["url"]


@pytest.fixture(scope="session")
def postgres_server(run_dir: Path) -> Iterator[Server]:
    srv = start_postgres(run_dir / "pg-srv")
    yield srv
    stop_postgres(srv)


@pytest.fixture(scope="session")
def postgres_dsn(postgres_server: Server) -> str:
    return postgres_server.extra["dsn"]


@pytest.fixture(scope="session")
def model_dir(run_dir: Path) -> Path:
    """The bootstrap model, trained once for the whole session (no torch involved)."""
    from inference_svc.bootstrap import train_bootstrap

    d = run_dir / "models"
    train_bootstrap(d, n=20_000)
    # the personalization family beside it (`<model_dir>-personalization`, the workers' default): a tiny model, trained
    # by the trainer's CLI in its own process (torch stays out of the test process)
    tiny = ["--users", "200", "--items", "100", "--days", "20", "--epochs", "2"]
    out = subprocess.run(
        [sys.executable, "-m", "trainer.personalization", *tiny, "--out", f"{d}-personalization"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return d


@pytest.fixture(scope="session")
def stack(run_dir: Path, nats_url: str, redis_url: str, postgres_dsn: str, model_dir: Path) -> Iterator[Stack]:
    """The default topology on the session's servers: 1 gateway, 1 aggregator, 2 inference, 1 feature."""
    s = Stack(run_dir / "stack", nats_url, redis_url, postgres_dsn, model_dir)
    try:
        s.start_all(inference=2)
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def gnn_world(postgres_dsn: str) -> World:
    """tests/worlds.py's TINY world in the ledger and graph store of the default schema (the services' one), once
    per module: the GNN and GBM serving tests train and serve a model on it."""
    from tests.worlds import TINY, loaded_world

    return loaded_world(postgres_dsn, TINY)


@pytest.fixture
def isolated_nats(tmp_path: Path) -> Iterator[Server]:
    """A nats-server of the test's own, for topologies that must not share streams with the main stack."""
    srv = start_nats(tmp_path / "nats")
    yield srv
    srv.stop()
