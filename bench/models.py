"""Which model the stack serves: the trained GNN (the product) or the bootstrap logistic regression, switched
through the registry as `fraudmesh model activate` does."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

GNN_KIND = "hetero_graphsage"
BOOTSTRAP_KIND = "logistic_regression"
NO_GNN = (
    "no trained GNN in {model_dir}: the benchmark measures the GNN path by default. Prepare it with "
    "`fraudmesh simulate && fraudmesh features export && fraudmesh train --epochs 3 --baseline-iter 30` "
    "(or `python -m bench --up "
    "--prepare`), or pass --bootstrap-only to measure the bootstrap model alone."
)


def local_models(model_dir: Path) -> dict[str, str]:
    """version -> kind, for every version with a readable metadata.json."""
    out = {}
    if model_dir.is_dir():
        for d in sorted(model_dir.iterdir()):
            meta = d / "metadata.json"
            if meta.is_file():
                try:
                    out[d.name] = str(json.loads(meta.read_text()).get("kind", ""))
                except (OSError, ValueError):
                    continue
    return out


def newest(models: dict[str, str], kind: str, model_dir: Path) -> str | None:
    found = [v for v, k in models.items() if k == kind]
    return max(found, key=lambda v: (model_dir / v / "metadata.json").stat().st_mtime) if found else None


def serving(gateway_url: str) -> str:
    """The model version the gateway's `/ready` reports."""
    try:
        return str(httpx.get(f"{gateway_url}/ready", timeout=5.0).json().get("model_version", ""))
    except (httpx.HTTPError, ValueError):
        return ""


def activate(run_dir: Path, gateway_url: str, version: str, timeout_s: float = 60.0) -> None:
    """`fraudmesh model activate VERSION`, then wait until the gateway reports it."""
    from deploy.cli import main as fraudmesh

    if serving(gateway_url) == version:
        return
    rc = fraudmesh(["--run-dir", str(run_dir), "model", "activate", version])
    if rc != 0:
        raise RuntimeError(f"`fraudmesh model activate {version}` failed (exit {rc}); see its output above")
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if serving(gateway_url) == version:
            return
        time.sleep(0.5)
    raise RuntimeError(f"the gateway did not report model {version} within {timeout_s:.0f} s of its activation")
