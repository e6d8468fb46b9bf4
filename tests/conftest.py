"""Real servers for the whole suite: nats-server (JetStream), redis-server and PostgreSQL, each started once
on free loopback ports in a temporary directory. Nothing here is mocked."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.servers import Server, start_nats, start_postgres, start_redis, stop_postgres


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
