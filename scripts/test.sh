#!/usr/bin/env bash
# One command, fresh machine: install what the suite needs and run it. The suite starts its own
# nats-server (JetStream), redis-server and PostgreSQL on free loopback ports; nothing is mocked.
# Extra arguments go to pytest, e.g. scripts/test.sh -k failures -x
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_python
ensure_system_packages redis-server:redis-server initdb:postgresql wrk:wrk
# optional, as root: a docker engine for tests/test_compose.py (builds the image and runs the compose stack)
# and docker-compose for tests/test_deploy_manifests.py; without them those tests skip and say why.
[ "$(id -u)" = 0 ] && (ensure_docker || true)
# optional, as root: promtool (Debian's prometheus package, no daemon started) for tests/test_alert_rules.py
[ "$(id -u)" = 0 ] && (ensure_system_packages promtool:prometheus || true)
# train: torch==2.13.0 (CPU) and torch-geometric, for the ONNX-vs-torch and training tests;
# bootstrap: scikit-learn/skl2onnx (bootstrap model); neo4j: the driver (graph contract tests)
ensure_venv dev,train,bootstrap,neo4j
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy  # strict on shared/ gateway/ aggregator/ inference_svc/ feature_svc/ (pyproject.toml)
exec .venv/bin/python -m pytest "$@"
