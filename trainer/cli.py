"""`fraudmesh train`: simulate (or read) the world, read the registry features from the offline store, train the GNN
and the baseline on a time split, export both to ONNX with their metadata, and write the evaluation report."""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

from feature_svc.world.options import add_world_arguments, world_overrides

DEFAULT_OFFLINE = Path("var/offline")
DEFAULT_SERVED_HEAD = "auto"  # which head over the GNN embeddings `fraudmesh train` activates (trainer.heads)


def _fanout(text: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        msg = f"--fanout wants comma-separated integers such as 10,10,10, not {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not out or any(k == 0 or k < -1 for k in out):
        raise argparse.ArgumentTypeError(f"--fanout {text!r}: each hop samples at least 1 neighbour (-1: all)")
    return out


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fraudmesh train", description=__doc__.splitlines()[0])
    src = ap.add_argument_group("data")
    src.add_argument("--world", type=Path, help="a world directory (write_world); default: simulate one")
    src.add_argument("--seed", type=int, default=0, help="world seed when simulating (default 0, the default world)")
    src.add_argument("--cards", type=int, default=20_000)
    src.add_argument("--transactions", type=int, default=200_000)
    src.add_argument("--days", type=int, default=42)
    src.add_argument(
        "--offline",
        type=Path,
        help=f"the Parquet offline store of that world (`fraudmesh features export`); default {DEFAULT_OFFLINE}",
    )
    src.add_argument(
        "--local-features",
        action="store_true",
        help="use the numpy subset of the registry instead of the offline store (prototype/tests, not for serving)",
    )
    src.add_argument(
        "--legit-fraction",
        type=float,
        default=1.0,
        help="with --local-features: keep this share of legit rows, weighted back (default 1: all)",
    )
    add_world_arguments(ap)
    tr = ap.add_argument_group("training")
    tr.add_argument("--epochs", type=int, default=30)
    tr.add_argument("--patience", type=int, default=5)
    tr.add_argument("--train-seed", type=int, default=0)
    tr.add_argument("--val-days", type=int, default=7)
    tr.add_argument("--test-days", type=int, default=7)
    tr.add_argument("--threads", type=int, default=2)
    tr.add_argument("--layers", type=int, default=3, help="GraphSAGE layers (hops each embedding sees)")
    tr.add_argument("--baseline-iter", type=int, default=300, help="cap on gradient-boosting iterations")
    tr.add_argument(
        "--no-ablation",
        action="store_true",
        help="skip the head-only ablation (a second GNN training, reported beside the GNN, never served)",
    )
    tr.add_argument(
        "--no-emb-gbm",
        action="store_true",
        help="skip the gradient boosting on [fields | registry | embeddings] (then --served-head gbm is unavailable)",
    )
    tr.add_argument(
        "--batch-size",
        type=int,
        default=0,
        help="GNN training: 0 = one step per day on the full snapshot (default); N = neighbour-sampled mini-batches "
        "of N transactions (memory bounded by N and the fan-out, for big worlds)",
    )
    tr.add_argument(
        "--fanout",
        type=_fanout,
        default=(10, 10, 10),
        help="with --batch-size: neighbours sampled per node and edge type at each hop, one per layer (10,10,10)",
    )
    tr.add_argument("--no-progress", action="store_true")
    out = ap.add_argument_group("output")
    out.add_argument("--model-dir", type=Path, default=Path(os.environ.get("FRAUDMESH_MODEL_DIR", "var/models")))
    out.add_argument("--no-activate", action="store_true", help="write the artifact without making it active")
    out.add_argument(
        "--served-head",
        choices=("auto", "mlp", "gbm"),
        default=DEFAULT_SERVED_HEAD,
        help=(
            "which head over the GNN embeddings is activated: mlp (the GNN's own head, version gnn-*), gbm "
            "(gradient boosting on the same inputs, version embgbm-*) or auto (the one with the better overall "
            "PR-AUC on the validation week with the labels known at its cut-off; recorded in the metadata as "
            f"training.head_selection); both are exported (default {DEFAULT_SERVED_HEAD})"
        ),
    )
    out.add_argument(
        "--report", type=Path, default=Path("reports/model/served"), help="the artifact's evaluation report directory"
    )
    out.add_argument("--no-report", action="store_true")
    out.add_argument("--nats-url", default="", help="registry to publish to (default: FRAUDMESH_NATS_URL)")
    out.add_argument("--no-publish", action="store_true", help="write the local registry entry only")
    return ap


def train_main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    started = time.perf_counter()
    try:
        import torch  # noqa: F401
        import torch_geometric  # noqa: F401
    except ImportError as exc:
        print(f"fraudmesh train needs the train extra: pip install -e '.[train]' ({exc})", file=sys.stderr)
        return 2
    from feature_svc.world import WorldError, WorldParams, generate_world, read_world
    from trainer.export import export
    from trainer.train import TrainConfig, run

    if args.served_head == "gbm" and args.no_emb_gbm:
        print("fraudmesh train: --served-head gbm serves the embeddings+GBM head; drop --no-emb-gbm", file=sys.stderr)
        return 2
    offline = args.offline
    if not args.local_features:
        offline = offline or DEFAULT_OFFLINE
        if not (offline / "_feature_set.json").exists():
            print(
                f"no offline store at {offline}: export the registry features of this world first "
                "(`fraudmesh simulate` + `fraudmesh features export`), pass --offline DIR, or --local-features",
                file=sys.stderr,
            )
            return 2
    else:
        offline = None
    try:
        if args.world:
            world = read_world(args.world)
        else:
            params = WorldParams(
                seed=args.seed,
                n_cards=args.cards,
                n_transactions=args.transactions,
                days=args.days,
                **world_overrides(args),
            )
            world = generate_world(params, progress=not args.no_progress)
    except WorldError as exc:
        print(f"fraudmesh train: {exc}", file=sys.stderr)
        return 2
    cfg = TrainConfig(
        seed=args.train_seed,
        epochs=args.epochs,
        patience=args.patience,
        val_days=args.val_days,
        test_days=args.test_days,
        threads=args.threads,
        layers=args.layers,
        baseline_iter=args.baseline_iter,
        batch_size=args.batch_size,
        fanout=args.fanout,
        legit_fraction=args.legit_fraction,
        ablation=not args.no_ablation,
        emb_gbm=not args.no_emb_gbm,
        progress=not args.no_progress,
    )
    try:
        result = run(world, offline, cfg)
    except ValueError as exc:
        print(f"fraudmesh train: {exc}", file=sys.stderr)
        return 2
    written = export(
        result,
        args.model_dir,
        activate=not args.no_activate,
        world_params=world.params.to_json(),
        served_head=args.served_head,
    )
    train_s = time.perf_counter() - started
    _print_summary(result.metrics["test"], written, train_s)
    if not args.no_report:
        from trainer.evaluate import write_report

        path = write_report(args.model_dir, written["version"], args.report)
        print(f"report: {path}")
    if not args.no_publish:
        for version in dict.fromkeys([written["version"], written.get("emb_gbm_version", "")]):
            if version:
                print(_publish(args.model_dir, version, args.nats_url))
    load = os.getloadavg()
    print(f"train time {train_s:.0f} s (load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} CPUs)")
    return 0


def _print_summary(test: dict, written: dict, seconds: float) -> None:
    print(json.dumps(written, indent=1))
    print(f"{'test PR-AUC':<14}{'GNN':>8}{'baseline':>10}")
    for kind, g in test["gnn"].items():
        print(f"{kind:<14}{g['pr_auc']:>8.4f}{test['baseline'][kind]['pr_auc']:>10.4f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (max RSS) {peak:.0f} MB")


if __name__ == "__main__":
    raise SystemExit(train_main())


def _publish(model_dir: Path, version: str, nats_url: str = "") -> str:
    """Put the new version in the registry's NATS Object Store too, when a NATS system is reachable (the local
    directory entry is written either way). Activation stays an explicit step: `fraudmesh model activate`."""
    import asyncio

    import nats

    from deploy.model_registry import RegistryAdmin
    from shared.settings import load_settings

    settings = load_settings()
    url = nats_url or settings.nats_url

    async def go() -> str:
        async def quiet(_exc: Exception) -> None:
            pass

        try:
            nc = await nats.connect(url.split(","), connect_timeout=2, max_reconnect_attempts=0, error_cb=quiet)
        except Exception as exc:
            return (
                f"registry: {version} is in {model_dir}; not published to the NATS Object Store ({url} "
                f"not reachable: {type(exc).__name__}). Publish later: fraudmesh model publish {version}"
            )
        try:
            manifest = await RegistryAdmin(nc.jetstream(timeout=10.0), model_dir, settings.stream_replicas).publish(
                version
            )
            return (
                f"registry: {version} published to the NATS Object Store ({len(manifest.files)} files) and kept in "
                f"{model_dir}; serve it with: fraudmesh model activate {version}"
            )
        finally:
            await nc.close()

    return asyncio.run(go())
