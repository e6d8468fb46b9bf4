"""`python -m trainer.personalization`: simulate the clickstream world, train LightGCN and the baselines on its time
split, export the model to ONNX and write the report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from feature_svc.world.personalization.world import WorldOptions
from trainer.personalization import report
from trainer.personalization.model import GraphOptions
from trainer.personalization.pipeline import run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trainer.personalization", description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=WorldOptions.seed, help="world seed (default: the default world)")
    ap.add_argument("--users", type=int, default=WorldOptions.users)
    ap.add_argument("--items", type=int, default=WorldOptions.items)
    ap.add_argument("--days", type=int, default=WorldOptions.days)
    ap.add_argument("--epochs", type=int, default=GraphOptions.epochs)
    ap.add_argument("--dim", type=int, default=GraphOptions.dim)
    ap.add_argument("--out", type=Path, default=Path("var/models-personalization"), help="model directory")
    ap.add_argument("--report", type=Path, help="write the report here (e.g. reports/model/personalization)")
    ap.add_argument("--no-activate", action="store_true", help="do not make the new version the active one")
    a = ap.parse_args(argv)
    world = WorldOptions(seed=a.seed, users=a.users, items=a.items, days=a.days)
    outcome = run(world, GraphOptions(epochs=a.epochs, dim=a.dim), a.out, activate=not a.no_activate)
    for name, m in outcome.metrics.items():
        print(f"{name:22s} " + "  ".join(f"{k}={v:.4f}" for k, v in m.items() if k != "users"))
    print(f"model {outcome.version} -> {outcome.path}")
    if a.report is not None:
        cmd = "python -m trainer.personalization " + " ".join(argv if argv is not None else sys.argv[1:])
        print(f"report -> {report.write(outcome, a.report, cmd.strip())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
