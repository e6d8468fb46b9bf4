#!/usr/bin/env bash
# One command, fresh machine: install, start nats-server + redis-server + PostgreSQL + the services,
# score a 1000-transaction sample, run ~30 s of live traffic with injected fraud episodes (each detected or not,
# with its detection latency), and print where the API docs and metrics are. Stop with scripts/stop.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_python
ensure_system_packages redis-server:redis-server initdb:postgresql
# bootstrap: scikit-learn + skl2onnx + onnx, which `fraudmesh up` uses to build the bootstrap models (fraud, and
# personalization: pers-bootstrap, no torch) on a fresh clone; the demo then prints one personalization score
ensure_venv bootstrap
.venv/bin/fraudmesh down >/dev/null 2>&1 || true
.venv/bin/fraudmesh up
.venv/bin/fraudmesh demo -n "${DEMO_TRANSACTIONS:-1000}"
echo
echo "live run: ${LIVE_SECONDS:-30} s of payments with injected fraud episodes, every one ingested (fraudmesh traffic)"
.venv/bin/fraudmesh traffic --rate "${LIVE_RATE:-30}" --duration "${LIVE_SECONDS:-30}"
echo
echo "stop everything with: scripts/stop.sh   (or .venv/bin/fraudmesh down)"
