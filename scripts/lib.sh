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

# ensure_venv EXTRA : .venv with the project installed in editable mode (plus an extra such as dev)
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
  .venv/bin/python -m pip install -q --disable-pip-version-check -e "$spec" 2>&1 | grep -v -E "^(WARNING: Location|WARNING: Running pip)" || true
  .venv/bin/python -c "import gateway, aggregator, inference_svc, feature_svc" || {
    echo "the project did not install into .venv; see the pip output above" >&2; exit 1; }
}
