#!/usr/bin/env bash
# One command, fresh machine: install, start nats-server + redis-server + PostgreSQL + the services, train a small
# GNN on the spot on a simulated world that ends now and serve it, score a 1000-transaction sample, run ~30 s of
# live traffic with injected fraud episodes (each detected or not, with its detection latency), and print where the
# API docs and metrics are. Stop with scripts/stop.sh.
#
# The GNN step (a few minutes on 2 cores) runs once: a later run.sh serves the GNN already trained (RETRAIN=1 trains
# again; GNN=0 keeps the bootstrap logistic regression). World size and epochs: RUN_CARDS, RUN_TRANSACTIONS,
# RUN_DAYS, RUN_EPOCHS.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_python

# serve_gnn: the GNN on a live world, with the project's own commands: simulate a small seeded world that ends now
# (so its velocity and recency features mean something to live traffic) into the ledger and the graph, export its
# point-in-time offline features, train the GNN on them (progress bars on stderr) and activate it on every worker.
serve_gnn() {
  local active
  active=$(cat var/models/active 2>/dev/null || true)
  if [ "${active#gnn-}" != "$active" ] && [ -z "${RETRAIN:-}" ]; then
    echo "serving $active, trained by an earlier run.sh on the world in var/world (RETRAIN=1 trains a new one)"
    return 0
  fi
  # 35 days: the training window (days before the last 7) must be long enough for chargebacks (2-30 days late) to
  # arrive inside it; with 21 days it holds almost no known fraud and the GNN learns nothing (val PR-AUC ~0.01)
  local cards=${RUN_CARDS:-2000} txns=${RUN_TRANSACTIONS:-24000} days=${RUN_DAYS:-35} epochs=${RUN_EPOCHS:-3}
  local t0=$SECONDS
  echo
  echo "GNN: simulate a ${cards}-card world of ${txns} transactions over ${days} days ending now, export its features, train ${epochs} epochs"
  echo "[1/4] fraudmesh simulate"
  .venv/bin/fraudmesh simulate --cards "$cards" --transactions "$txns" --days "$days" --ends-now --out var/world
  echo "[2/4] fraudmesh features export   ($((SECONDS - t0)) s so far)"
  rm -rf var/offline
  .venv/bin/fraudmesh features export --out var/offline --legit-fraction 0.25
  echo "[3/4] fraudmesh train   ($((SECONDS - t0)) s so far)"
  .venv/bin/fraudmesh train --world var/world --offline var/offline --epochs "$epochs" --val-days 5 --test-days 2 \
    --baseline-iter 30 --no-ablation --no-emb-gbm --no-report
  active=$(cat var/models/active)
  echo "[4/4] fraudmesh model activate $active   ($((SECONDS - t0)) s so far)"
  .venv/bin/fraudmesh model activate "$active"
  echo "GNN $active serving, $((SECONDS - t0)) s after the world was simulated"
}
ensure_system_packages redis-server:redis-server initdb:postgresql
# bootstrap: scikit-learn + skl2onnx + onnx, which `fraudmesh up` uses to build the bootstrap models (fraud, and
# personalization: pers-bootstrap, no torch) on a fresh clone; the demo then prints one personalization score.
# train: torch 2.13.0 (CPU) and torch-geometric, for the GNN trained below (never needed by the services)
if [ "${GNN:-1}" = 1 ]; then
  ensure_venv bootstrap,train
else
  ensure_venv bootstrap
fi
.venv/bin/fraudmesh down >/dev/null 2>&1 || true
.venv/bin/fraudmesh up
if [ "${GNN:-1}" = 1 ]; then serve_gnn; fi
.venv/bin/fraudmesh demo -n "${DEMO_TRANSACTIONS:-1000}"
echo
echo "live run: ${LIVE_SECONDS:-30} s of payments with injected fraud episodes, every one ingested (fraudmesh traffic)"
.venv/bin/fraudmesh traffic --rate "${LIVE_RATE:-30}" --duration "${LIVE_SECONDS:-30}"
echo
echo "stop everything with: scripts/stop.sh   (or .venv/bin/fraudmesh down)"
