#!/usr/bin/env bash
# One command, fresh machine: install, start nats-server + redis-server + PostgreSQL + the services,
# score a 1000-transaction sample and print where the API docs and metrics are. Stop with scripts/stop.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_python
ensure_system_packages redis-server:redis-server initdb:postgresql
# bootstrap: scikit-learn + skl2onnx, which `fraudmesh up` uses to build the bootstrap model on a fresh clone
ensure_venv bootstrap
.venv/bin/fraudmesh down >/dev/null 2>&1 || true
.venv/bin/fraudmesh up
.venv/bin/fraudmesh demo -n "${DEMO_TRANSACTIONS:-1000}"
echo
echo "stop everything with: scripts/stop.sh   (or .venv/bin/fraudmesh down)"
