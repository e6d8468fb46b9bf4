"""`fraudmesh`: run the local stack, score a sample, manage models, print settings."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from deploy.servers import ServerError

DEFAULT_RUN_DIR = Path("var")


def _cmd_up(args: argparse.Namespace) -> int:
    from deploy.stack import up

    replicas = {
        "gateway": args.gateways,
        "aggregator": args.aggregators,
        "inference": args.inference,
        "feature": args.features,
    }
    state = up(args.run_dir, replicas, http_port=args.http_port)
    print(f"\nfraudmesh is up. gateway {state.gateway_url}  (docs {state.gateway_url}/docs)")
    print(
        f"nats {state.nats_url} (monitor {state.nats_monitor})  redis {state.redis_url}  postgres {state.postgres_dsn}"
    )
    print(f"logs in {Path(state.run_dir) / 'logs'}; stop with `fraudmesh down`")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    from deploy.stack import down

    down(args.run_dir)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from deploy.stack import StackState, alive

    state = StackState.load(args.run_dir.resolve())
    if state is None:
        print("no stack recorded; start one with `fraudmesh up`")
        return 1
    for s in state.services:
        extra = f" metrics :{s.metrics_port}" if s.metrics_port else f" http :{s.http_port}"
        print(f"{s.name}-{s.index:<3} pid {s.pid:<7} {'up' if alive(s.pid) else 'DOWN':<5}{extra}  log {s.log}")
    for name, info in state.servers.items():
        print(
            f"{name:<10} pid {info['pid']!s:<7} {'up' if alive(int(str(info['pid']))) else 'DOWN':<5} "
            f"port {info['port']}"
        )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from deploy.demo import run_demo
    from deploy.stack import StackState

    url = args.url
    if not url:
        state = StackState.load(args.run_dir.resolve())
        if state is None:
            print("no stack running; start one with `fraudmesh up` (or pass --url)", file=sys.stderr)
            return 1
        url = state.gateway_url
    return run_demo(url, args.n, args.api_key)


def _cmd_model_init(args: argparse.Namespace) -> int:
    from inference_svc.bootstrap import train_bootstrap
    from shared.settings import load_settings

    args.model_dir = args.model_dir or Path(load_settings().model_dir)
    meta = train_bootstrap(args.model_dir)
    print(f"bootstrap model {meta.version} written to {args.model_dir / meta.version} and activated")
    print(json.dumps(meta.metrics))
    return 0


def _cmd_settings(args: argparse.Namespace) -> int:
    from shared.settings import settings_table

    print(settings_table(), end="")
    return 0


def _stack_env(args: argparse.Namespace) -> None:
    """Point store settings at the local stack when the user set none (so `fraudmesh simulate` just works)."""
    from deploy.stack import StackState

    state = StackState.load(args.run_dir.resolve())
    if state is not None:
        for key, value in state.service_env().items():
            os.environ.setdefault(key, value)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from feature_svc import cli as features_cli

    _stack_env(args)
    return features_cli.simulate(args)


def _cmd_features_export(args: argparse.Namespace) -> int:
    from feature_svc import cli as features_cli

    _stack_env(args)
    return features_cli.export(args)


def _cmd_train(args: argparse.Namespace) -> int:
    try:
        from trainer.cli import train_main
    except ImportError as exc:
        print(f"fraudmesh train needs the train extra ({exc}): pip install -e '.[train]'", file=sys.stderr)
        return 2
    return int(train_main(args.train_args))


def _cmd_evaluate(args: argparse.Namespace) -> int:
    try:
        from trainer.evaluate import evaluate_main
    except ImportError as exc:
        print(f"fraudmesh evaluate needs the train extra ({exc}): pip install -e '.[train]'", file=sys.stderr)
        return 2
    return int(evaluate_main(args.evaluate_args))


def _cmd_bench(args: argparse.Namespace) -> int:
    from bench.cli import main as bench_main

    return int(bench_main(["--run-dir", str(args.run_dir), *args.bench_args]))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fraudmesh", description=__doc__)
    p.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR, help="where the local stack lives (default: var)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("up", help="start servers and services locally")
    s.add_argument("--gateways", type=int, default=1)
    s.add_argument("--aggregators", type=int, default=1)
    s.add_argument("--inference", type=int, default=2)
    s.add_argument("--features", type=int, default=2)
    s.add_argument("--http-port", type=int, default=8000, help="gateway port (a free one if taken)")
    s.set_defaults(func=_cmd_up)

    sub.add_parser("down", help="stop everything `up` started").set_defaults(func=_cmd_down)
    sub.add_parser("status", help="what is running").set_defaults(func=_cmd_status)

    s = sub.add_parser("demo", help="score a sample batch through the gateway and print the result")
    s.add_argument("-n", type=int, default=1000, help="transactions in the sample (default 1000)")
    s.add_argument("--url", default="", help="gateway URL (default: the local stack's)")
    s.add_argument("--api-key", default="")
    s.set_defaults(func=_cmd_demo)

    m = sub.add_parser("model", help="model artifacts").add_subparsers(dest="model_command", required=True)
    s = m.add_parser("init", help="train and activate the bootstrap model (no torch needed)")
    s.add_argument("--model-dir", type=Path, default=None, help="default: FRAUDMESH_MODEL_DIR or var/models")
    s.set_defaults(func=_cmd_model_init)

    sub.add_parser("settings", help="print the settings table (Markdown)").set_defaults(func=_cmd_settings)

    from feature_svc import cli as features_cli

    s = sub.add_parser("simulate", help="generate the seeded payment world and load it into PostgreSQL and the graph")
    features_cli.add_simulate_arguments(s)
    s.set_defaults(func=_cmd_simulate)
    f = sub.add_parser("features", help="feature store").add_subparsers(dest="features_command", required=True)
    s = f.add_parser("export", help="write the point-in-time-correct Parquet offline store, partitioned by day")
    features_cli.add_export_arguments(s)
    s.set_defaults(func=_cmd_features_export)

    s = sub.add_parser("train", help="train the GNN and the baseline, export ONNX (needs the train extra)")
    s.add_argument("train_args", nargs=argparse.REMAINDER, help="options of trainer.cli (see `fraudmesh train -h`)")
    s.set_defaults(func=_cmd_train)
    s = sub.add_parser("evaluate", help="write reports/model/ (PR/ROC curves, per-kind metrics)")
    s.add_argument("evaluate_args", nargs=argparse.REMAINDER, help="options of trainer.evaluate")
    s.set_defaults(func=_cmd_evaluate)

    s = sub.add_parser("bench", help="benchmark the running stack; writes bench/results/<name>.{json,md}")
    s.add_argument("bench_args", nargs=argparse.REMAINDER, help="options of `python -m bench` (see --help)")
    s.set_defaults(func=_cmd_bench)
    return p


PASS_THROUGH = {"train": "train_args", "evaluate": "evaluate_args", "bench": "bench_args"}
"""Subcommands whose options (including -h) belong to another module's parser."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    for i, token in enumerate(argv):
        if token in PASS_THROUGH:
            args = parser.parse_args([*argv[:i], token])
            setattr(args, PASS_THROUGH[token], argv[i + 1 :])
            break
    else:
        args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ServerError as exc:
        print(f"fraudmesh: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
