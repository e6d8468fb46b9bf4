"""The machine and the settings a run used, for the report."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import procs
from shared.nats_conn import redact as redact_url

PACKAGES = ("nats-py", "litestar", "msgspec", "onnxruntime", "uvicorn", "httpx", "prometheus-client")
SECRET_MARKERS = ("PASSWORD", "API_KEYS", "SECRET", "TOKEN")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return 0.0


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, Any]:
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count() or 0,
        "ram_gib": _ram_gib(),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "packages": {p: _version(p) for p in PACKAGES},
    }


def redact(env: dict[str, str]) -> dict[str, str]:
    return {k: ("<redacted>" if any(m in k for m in SECRET_MARKERS) else v) for k, v in sorted(env.items())}


def stack_settings(state: Any) -> dict[str, Any]:
    """Replica counts from stack.json and the effective settings of the running services."""
    from shared.settings import load_settings

    replicas: dict[str, int] = {}
    for s in state.services:
        replicas[s.name] = replicas.get(s.name, 0) + 1
    env: dict[str, dict[str, str]] = {}
    for s in state.services:
        env.setdefault(s.name, procs.environ(s.pid))
    effective: dict[str, Any] = {}
    agg_env = {k: v for k, v in env.get("aggregator", {}).items() if k != "FRAUDMESH_HOME"}
    inf_env = {k: v for k, v in env.get("inference", {}).items() if k != "FRAUDMESH_HOME"}
    try:
        agg, inf = load_settings(agg_env), load_settings(inf_env)
        effective = {
            "partial_size": agg.partial_size,
            "coalesce_window_ms": agg.coalesce_window_ms,
            "handler_concurrency": agg.handler_concurrency,
            "inference_concurrency": inf.inference_concurrency,
            "onnx_threads": inf.onnx_threads,
            "request_timeout_ms": agg.request_timeout_ms,
        }
    except Exception as exc:
        effective = {"error": str(exc)}
    shared_keys = {
        "FRAUDMESH_NATS_URL",
        "FRAUDMESH_REDIS_URL",
        "FRAUDMESH_POSTGRES_DSN",
        "FRAUDMESH_MODEL_DIR",
        "FRAUDMESH_INSTANCE_ID",
        "FRAUDMESH_METRICS_PORT",
        "FRAUDMESH_HTTP_PORT",
    }
    return {
        "replicas": replicas,
        "effective": effective,
        "fraudmesh_env": {n: redact({k: v for k, v in e.items() if k not in shared_keys}) for n, e in env.items()},
        "bench_env": redact({k: v for k, v in os.environ.items() if k.startswith("FRAUDMESH_")}),
        "nats_url": redact_url(state.nats_url),  # never a password in a report
        "gateway_url": state.gateway_url,
    }
