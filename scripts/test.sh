#!/usr/bin/env bash
# One command, fresh machine: install what the suite needs and run it. The suite starts its own
# nats-server (JetStream), redis-server and PostgreSQL on free loopback ports; nothing is mocked.
# Extra arguments go to pytest, e.g. scripts/test.sh -k failures -x
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_python
ensure_system_packages redis-server:redis-server initdb:postgresql
# optional: lets tests/test_deploy_manifests.py validate docker-compose.yml (it skips, saying why, without it)
[ "$(id -u)" = 0 ] && (ensure_system_packages docker-compose:docker-compose || true)
# train: torch==2.13.0 (CPU) and torch-geometric, for the ONNX-vs-torch and training tests
ensure_venv dev,train
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
