# Shared by scripts/run.sh and scripts/test.sh: system packages and the project's virtualenv.
# shellcheck shell=bash

need_python() {
  PYTHON=${PYTHON:-python3}
  if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "fraudmesh needs Python 3.11+: install python3 (e.g. sudo apt-get install -y python3 python3-venv)" >&2
    exit 1
  fi
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "fraudmesh needs Python 3.11+, found $("$PYTHON" --version 2>&1). Set PYTHON=/path/to/python3.11" >&2
    exit 1
  fi
}

# ensure_system_packages PKG... : apt-get install what is missing (as root), or say exactly what to run.
ensure_system_packages() {
  local missing=()
  for spec in "$@"; do
    local bin=${spec%%:*} pkg=${spec#*:}
    if ! command -v "$bin" >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/"$bin" >/dev/null 2>&1; then
      missing+=("$pkg")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing system packages: ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing system packages: ${missing[*]}. Install them with:" >&2
    echo "    sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
}

# ensure_venv EXTRAS : .venv with the project installed in editable mode (plus extras such as dev,train),
# every version pinned by requirements.lock (used as constraints: it also pins extras not installed here)
ensure_venv() {
  local extra=${1:-}
  if [ ! -x .venv/bin/python ]; then
    if ! "$PYTHON" -m venv .venv 2>/dev/null; then
      rm -rf .venv
      ensure_system_packages "__no_such_bin__:python3-venv"
      "$PYTHON" -m venv .venv
    fi
  fi
  local spec="."
  [ -n "$extra" ] && spec=".[$extra]"
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q --disable-pip-version-check -e "$spec" -c requirements.lock 2>&1 | grep -v -E "^(WARNING: Location|WARNING: Running pip)" || true
  .venv/bin/python -c "import gateway, aggregator, inference_svc, feature_svc" || {
    echo "the project did not install into .venv; see the pip output above" >&2; exit 1; }
}

# ensure_docker: as root, a running docker engine and docker-compose for tests/test_compose.py (Debian's
# docker.io, docker-compose, and debootstrap for the local base image). The engine is started with overlay2,
# or vfs where overlay does not mount; no iptables and no default bridge (compose's own networks still work).
# It keeps running after the tests; its log is /var/log/fraudmesh-dockerd.log.
ensure_docker() {
  ensure_system_packages dockerd:docker.io docker-compose:docker-compose debootstrap:debootstrap
  docker info >/dev/null 2>&1 && return 0
  local driver pid
  for driver in overlay2 vfs; do
    setsid dockerd --storage-driver="$driver" --iptables=false --bridge=none </dev/null >>/var/log/fraudmesh-dockerd.log 2>&1 &
    pid=$!
    for _ in $(seq 1 30); do
      if docker info >/dev/null 2>&1; then
        echo "docker engine started (storage driver $driver, pid $pid)" >&2
        return 0
      fi
      kill -0 "$pid" 2>/dev/null || break
      sleep 1
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  echo "could not start a docker engine; see /var/log/fraudmesh-dockerd.log (tests/test_compose.py will skip)" >&2
  return 1
}
