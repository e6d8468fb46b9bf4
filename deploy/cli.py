"""`fraudmesh`: run the local stack, score a sample, manage models, print settings."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deploy.servers import ServerError

if TYPE_CHECKING:
    from deploy.model_registry import RegistryAdmin as Registry
    from shared.settings import Settings

DEFAULT_RUN_DIR = Path("var")


def _cmd_up(args: argparse.Namespace) -> int:
    from deploy.stack import up

    replicas = {
        "gateway": args.gateways,
        "aggregator": args.aggregators,
        "inference": args.inference,
        "feature": args.features,
    }
    from shared.nats_conn import redact

    state = up(args.run_dir, replicas, http_port=args.http_port)
    print(f"\nfraudmesh is up. gateway {state.gateway_url}  (docs {state.gateway_url}/docs)")
    print(
        f"nats {redact(state.nats_url)} (monitor {state.nats_monitor})  redis {state.redis_url}  "
        f"postgres {state.postgres_dsn}"
    )
    if state.env:
        print(f"settings passed to every service: {', '.join(sorted(state.env))}")
    print("NATS credentials for another system: `fraudmesh nats-user public`")
    print(f"logs in {Path(state.run_dir) / 'logs'}; stop with `fraudmesh down`")
    return 0


def _cmd_restart(args: argparse.Namespace) -> int:
    from deploy.stack import restart

    print(restart(args.run_dir, args.name))
    return 0


def _cmd_nats_user(args: argparse.Namespace) -> int:
    """Print the NATS URL and credentials of one user of the local stack, as FRAUDMESH_* settings."""
    from deploy import nats_auth
    from deploy.stack import StackState

    state = StackState.load(args.run_dir.resolve())
    if state is None or not state.nats_url:
        print("no stack recorded; start one with `fraudmesh up`", file=sys.stderr)
        return 1
    if args.user not in nats_auth.USERS:
        print(f"fraudmesh: no NATS user {args.user!r}; the users are {', '.join(nats_auth.USERS)}", file=sys.stderr)
        return 2
    user, secret = nats_auth.credentials_of(state.nats_url)
    if user != nats_auth.ADMIN:
        print("this stack's NATS runs without users", file=sys.stderr)
        return 1
    # `eval "$(fraudmesh nats-user public)"` sets them in a shell
    print(f"export FRAUDMESH_NATS_URL={nats_auth.strip_credentials(state.nats_url)}")
    print(f"export FRAUDMESH_NATS_USER={args.user}")
    print(f"export FRAUDMESH_NATS_PASSWORD={nats_auth.password(secret, args.user)}")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    from deploy.stack import down

    down(args.run_dir)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from deploy.servers import alive
    from deploy.stack import StackState

    state = StackState.load(args.run_dir.resolve())
    if state is None:
        print("no stack recorded; start one with `fraudmesh up`")
        return 1
    for s in state.services:
        extra = (f" http :{s.http_port}" if s.http_port else "") + (
            f" metrics :{s.metrics_port}" if s.metrics_port else ""
        )
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
    state = StackState.load(args.run_dir.resolve())
    if not url:
        if state is None:
            print("no stack running; start one with `fraudmesh up` (or pass --url)", file=sys.stderr)
            return 1
        url = state.gateway_url
    pers_dir = None  # the local stack's personalization models: a pair its model knows
    if state is not None and not args.url:
        from deploy.personalization import model_dir
        from shared.settings import load_settings

        pers_dir = model_dir(load_settings({**state.env, **state.service_env()}))
    return run_demo(url, args.n, args.api_key, pers_dir)


def _cmd_model_init(args: argparse.Namespace) -> int:
    from inference_svc.bootstrap import train_bootstrap
    from shared.settings import load_settings

    if args.family == "personalization":
        from deploy.personalization import model_dir
        from trainer.personalization.bootstrap import train_bootstrap as train_personalization

        out = args.model_dir or model_dir(load_settings())
        pers = train_personalization(out)
        print(f"personalization bootstrap model {pers['version']} written to {out / pers['version']} and activated")
        print(json.dumps(pers["metrics"]))
        return 0
    args.model_dir = args.model_dir or Path(load_settings().model_dir)
    meta = train_bootstrap(args.model_dir)
    print(f"bootstrap model {meta.version} written to {args.model_dir / meta.version} and activated")
    print(json.dumps(meta.metrics))
    return 0


def _model_target(args: argparse.Namespace) -> tuple[str, Path, Settings]:
    """NATS URL, model dir and settings: the options, else FRAUDMESH_* settings, else the local stack's
    (var/stack.json: its NATS admin)."""
    from shared.settings import load_settings

    _stack_env(args)
    settings = load_settings()
    return args.nats_url or settings.nats_url, args.model_dir or Path(settings.model_dir), settings


def _model_cmd(args: argparse.Namespace, body: Callable[..., Awaitable[int]]) -> int:
    """Connect to NATS (once, no endless retries: a CLI says what is wrong), open the registry, run `body`."""
    import asyncio

    import nats

    from deploy.model_registry import RegistryAdmin as Registry
    from inference_svc.registry import RegistryError
    from shared.nats_conn import NatsAuthError, auth_options, redact

    url, model_dir, settings = _model_target(args)

    async def go() -> int:
        async def quiet(_exc: Exception) -> None:
            pass

        try:
            nc = await nats.connect(
                url.split(","),
                connect_timeout=3,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.2,
                error_cb=quiet,
                **auth_options(settings),
            )
        except Exception as exc:
            if "authorization violation" in str(exc).lower():
                print(f"fraudmesh: {NatsAuthError.__doc__} NATS at {redact(url)}: {exc}", file=sys.stderr)
                return 2
            print(
                f"fraudmesh: cannot reach NATS at {redact(url)} ({type(exc).__name__}); start the stack "
                f"(`fraudmesh up`) or set FRAUDMESH_NATS_URL",
                file=sys.stderr,
            )
            return 2
        try:
            family = getattr(args, "family", "fraud")
            directory = model_dir
            if family != "fraud" and not args.model_dir:
                from deploy.personalization import model_dir as family_dir

                directory = family_dir(settings)
            registry = Registry(nc.jetstream(timeout=10.0), directory, settings.stream_replicas, family=family)
            return await body(nc, registry, redact(url))
        except RegistryError as exc:
            print(f"fraudmesh: {exc}", file=sys.stderr)
            return 1
        finally:
            await nc.close()

    return asyncio.run(go())


def _print_worker_replies(replies: list[object], expected: int) -> int:
    """One line per worker; returns how many reported an error."""
    from shared.messages import ErrorReply
    from shared.model_messages import ModelWorkerState

    errors = 0
    for r in sorted(replies, key=lambda r: getattr(r, "instance_id", "")):
        if isinstance(r, ModelWorkerState):
            cand = f", candidate {r.candidate} at {r.candidate_share:g}" if r.candidate else ""
            pinned = " (pinned)" if r.pinned else ""
            line = f"  {r.instance_id}: active {r.active}{cand}{pinned}, swaps {r.swaps}"
            if r.error:
                errors += 1
                line += f"\n    ERROR: {r.error}"
            print(line)
        elif isinstance(r, ErrorReply):
            errors += 1
            print(f"  error reply: {r.code}: {r.message}")
        else:
            errors += 1
            print(f"  {r}")
    if not replies and expected:
        print(
            f"  none of the {expected} running inference workers answered on fraud.model.control in time (an older "
            f"release without the registry?); workers load the registry's state when they start"
        )
    elif not replies:
        print("  no inference worker is running; workers load the registry's state when they start")
    elif len(replies) < expected:
        print(f"  only {len(replies)} of {expected} workers answered in time; the others follow the KV when they can")
    return errors


async def _validate_version(registry: Registry, version: str) -> str:
    """Make sure `version` can be served: a loadable local copy (then published, so other hosts can fetch it),
    or a published one. Returns how it was found; raises RegistryError with the reason otherwise."""
    from inference_svc.artifact import ArtifactError
    from inference_svc.model import load_model
    from inference_svc.registry import RegistryError, VersionNotFound, check_version, is_local, local_versions

    check_version(version)
    if is_local(registry.model_dir, version):
        try:
            model = load_model(registry.model_dir, version)
        except ArtifactError as exc:
            raise RegistryError(f"model version {version!r} cannot be loaded: {exc}") from None
        if model.version != version:
            raise RegistryError(f"{registry.model_dir / version}/metadata.json names version {model.version!r}")
        manifest = await registry.publish(version)
        return f"published from {registry.model_dir} ({len(manifest.files)} files)"
    if await registry.manifest(version) is not None:
        return "found in the object store"
    known = sorted({*local_versions(registry.model_dir), *(m.version for m in await registry.published_versions())})
    raise VersionNotFound(
        f"model version {version!r} not found: it is neither in {registry.model_dir} nor published in the object "
        f"store. Known versions: {', '.join(known) or 'none'} (`fraudmesh model list`). Nothing was changed."
    )


def _cmd_model_list(args: argparse.Namespace) -> int:
    async def body(nc: Any, registry: Registry, url: str) -> int:
        from deploy.model_registry import broadcast, count_workers
        from inference_svc.registry import local_active
        from shared.model_messages import ModelStatus
        from shared.personalization_messages import PersonalizationModelControl

        state = await registry.read_state()
        local = local_active(registry.model_dir)
        print(f"model dir {registry.model_dir}, registry on {url}")
        print(f"{'version':<34} {'kind':<24} {'created':<26} {'local':<6} {'store':<6} state")
        for v in await registry.list_versions():
            marks = []
            if v.version == state.active:
                marks.append("ACTIVE")
            if v.version == state.candidate:
                marks.append(f"CANDIDATE {state.candidate_share:g}")
            if v.version == local and not state.active:
                marks.append("active (local file; no registry entry)")
            print(
                f"{v.version:<34} {v.kind[:24]:<24} {v.created_at[:25]:<26} {'yes' if v.local else '-':<6} "
                f"{'yes' if v.published else '-':<6} {' '.join(marks)}"
            )
        print("workers:")
        expected = await count_workers(nc)
        if registry.family == "personalization":
            status = PersonalizationModelControl()
            replies = await _personalization_broadcast(nc, status, expected, args.timeout)
            _print_family_replies(replies, expected)
            return 0
        replies = await broadcast(nc, ModelStatus(), expect=expected, timeout_s=args.timeout)
        _print_worker_replies(replies, expected)
        return 0

    return _model_cmd(args, body)


def _cmd_model_publish(args: argparse.Namespace) -> int:
    async def body(_nc: Any, registry: Registry, _url: str) -> int:
        manifest = await registry.publish(args.version)
        size = sum(f.size for f in manifest.files)
        print(f"published {manifest.version}: {len(manifest.files)} files, {size / 1e6:.2f} MB")
        return 0

    return _model_cmd(args, body)


async def _personalization_broadcast(nc: Any, request: object, expected: int, timeout_s: float) -> list[object]:
    from deploy.model_registry import broadcast
    from shared import subjects
    from shared.personalization_messages import PersonalizationControlAnswer

    return await broadcast(
        nc,
        request,
        expect=expected,
        timeout_s=timeout_s,
        subject=subjects.PERSONALIZATION_MODEL_CONTROL,
        reply_type=PersonalizationControlAnswer,
    )


def _print_family_replies(replies: list[object], expected: int) -> int:
    """One line per worker of a family other than fraud; returns how many reported an error."""
    from shared.messages import ErrorReply
    from shared.personalization_messages import PersonalizationModelState

    errors = 0
    for r in sorted(replies, key=lambda r: getattr(r, "worker_id", "")):
        if isinstance(r, PersonalizationModelState):
            print(f"  {r.worker_id}: active {r.version or '(none)'}" + (f"\n    ERROR: {r.error}" if r.error else ""))
            errors += bool(r.error)
        else:
            errors += 1
            print(f"  error reply: {r.code}: {r.message}" if isinstance(r, ErrorReply) else f"  {r}")
    if len(replies) < expected:
        print(f"  {len(replies)} of {expected} workers answered in time; the others follow the KV when they can")
    return errors


async def _validate_family_version(registry: Registry, version: str) -> str:
    """A personalization version that loads here (then published) or is published; how it was found."""
    from inference_svc.personalization.artifact import PersonalizationModelError, load
    from inference_svc.registry import RegistryError, VersionNotFound, check_version, is_local

    check_version(version)
    if is_local(registry.model_dir, version):
        try:
            load(registry.model_dir, version)
        except PersonalizationModelError as exc:
            raise RegistryError(f"personalization version {version!r} cannot be loaded: {exc}") from None
        return f"published from {registry.model_dir} ({len((await registry.publish(version)).files)} files)"
    if await registry.manifest(version) is not None:
        return "found in the object store"
    known = ", ".join(v.version for v in await registry.list_versions()) or "none"
    raise VersionNotFound(
        f"personalization version {version!r} is neither in {registry.model_dir} nor published. Known versions: "
        f"{known} (`fraudmesh model list --family personalization`). Nothing was changed."
    )


async def _activate_family(nc: Any, registry: Registry, version: str, timeout_s: float) -> int:
    """`fraudmesh model activate --family personalization VERSION`: check it loads, publish it, write the family's
    `active` key and tell the workers (they also follow the key); put the key back when no worker can serve it."""
    from inference_svc.registry import KEY_ACTIVE, state_key
    from shared.personalization_messages import PersonalizationModelControl, PersonalizationModelState

    how = await _validate_family_version(registry, version)
    await registry.ensure_local(version)  # its metadata names the world whose features it scores with
    from deploy.personalization import load_features, metadata_of
    from shared.settings import load_settings

    settings = load_settings()
    try:
        rows = await load_features(settings, metadata_of(registry.model_dir, version))
        print(f"{rows} user/item/session feature rows of {version}'s world loaded into Redis")
    except Exception as exc:  # the model still serves (unknown users as cold starts): say so, go on
        print(f"warning: the features of {version}'s world were not loaded into Redis: {exc!r}", file=sys.stderr)
    before = await registry.read_state()
    await registry.set_active(version)
    print(f"{version} ({how}) is the registry's active {registry.family} version; telling the workers ...")
    from deploy.model_registry import count_workers

    expected = await count_workers(nc)
    replies = await _personalization_broadcast(nc, PersonalizationModelControl(version=version), expected, timeout_s)
    errors = _print_family_replies(replies, expected)
    if replies and errors == len(replies) and all(isinstance(r, PersonalizationModelState) for r in replies):
        kv = await registry.state_kv()
        key = state_key(registry.family, KEY_ACTIVE)
        if before.active:
            await kv.put(key, before.active.encode())
        else:
            await kv.delete(key)
        print(f"no worker could serve {version}: the registry's {key} is back to {before.active or '(none)'}")
    return 1 if errors else 0


def _cmd_model_activate(args: argparse.Namespace) -> int:
    async def body(nc: Any, registry: Registry, _url: str) -> int:
        if registry.family != "fraud":
            return await _activate_family(nc, registry, args.version, args.timeout)
        from deploy.model_registry import broadcast, count_workers
        from inference_svc.registry import KEY_ACTIVE
        from shared.model_messages import ActivateModel, ModelWorkerState

        how = await _validate_version(registry, args.version)
        before = await registry.read_state()
        await registry.set_active(args.version)
        if before.candidate == args.version:
            await registry.clear_candidate()
            print(f"{args.version} was the A/B candidate: promoted, the candidate is cleared")
        print(f"{args.version} ({how}) is the registry's active version; telling the workers ...")
        expected = await count_workers(nc)
        replies = await broadcast(nc, ActivateModel(version=args.version), expect=expected, timeout_s=args.timeout)
        errors = _print_worker_replies(replies, expected)
        if replies and errors == len(replies) and all(isinstance(r, ModelWorkerState) for r in replies):
            kv = await registry.state_kv()  # no worker could serve it: put the registry back as it was
            if before.active:
                await kv.put(KEY_ACTIVE, before.active.encode())
            else:
                await kv.delete(KEY_ACTIVE)
            print(
                f"no worker could serve {args.version}: the registry's active version is back to "
                f"{before.active or '(none: the local active file)'}",
                file=sys.stderr,
            )
        return 1 if errors else 0

    return _model_cmd(args, body)


def _cmd_model_candidate(args: argparse.Namespace) -> int:
    async def body(nc: Any, registry: Registry, _url: str) -> int:
        from deploy.model_registry import broadcast, count_workers
        from shared.model_messages import ClearCandidate, SetCandidate

        request: ClearCandidate | SetCandidate
        if args.clear:
            await registry.clear_candidate()
            if registry.family != "fraud":
                print(f"{registry.family} A/B candidate cleared (its workers follow the KV)")
                return 0
            request = ClearCandidate()
            print("A/B candidate cleared; telling the workers ...")
        else:
            if not args.version:
                print("fraudmesh: name the candidate version, or pass --clear", file=sys.stderr)
                return 2
            if not 0.0 < args.share <= 1.0:
                print(f"fraudmesh: --share must be in (0, 1], not {args.share} (use --clear to stop)", file=sys.stderr)
                return 2
            state = await registry.read_state()
            if state.active == args.version:
                print(f"fraudmesh: {args.version} is already the active version", file=sys.stderr)
                return 1
            if registry.family != "fraud":  # its workers follow the family's KV keys (no control message)
                how = await _validate_family_version(registry, args.version)
                await registry.set_candidate(args.version, args.share)
                print(f"{args.version} ({how}) gets {args.share:g} of the {registry.family} requests (KV watch)")
                return 0
            how = await _validate_version(registry, args.version)
            await registry.set_candidate(args.version, args.share)
            request = SetCandidate(version=args.version, share=args.share)
            print(f"{args.version} ({how}) gets {args.share:g} of the partials; telling the workers ...")
        expected = await count_workers(nc)
        replies = await broadcast(nc, request, expect=expected, timeout_s=args.timeout)
        return 1 if _print_worker_replies(replies, expected) else 0

    return _model_cmd(args, body)


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


def _add_check_arguments(p: argparse.ArgumentParser) -> None:
    from feature_svc.ingest.check_cli import add_check_arguments

    add_check_arguments(p)


def _cmd_features_check(args: argparse.Namespace) -> int:
    from feature_svc.ingest.check_cli import check

    _stack_env(args)
    return check(args)


def _embeddings_arguments(p: argparse.ArgumentParser) -> None:
    from feature_svc.ingest.embeddings_cli import add_arguments

    add_arguments(p)


def _cmd_embeddings_refresh(args: argparse.Namespace) -> int:
    from feature_svc.ingest.embeddings_cli import refresh

    _stack_env(args)
    version = refresh(args)
    if version is None:
        return 2
    if args.no_activate:
        return 0
    args.version = version  # publish + activate through the registry: every worker hot-swaps to it
    return _cmd_model_activate(args)


def _traffic_arguments(p: argparse.ArgumentParser) -> None:
    from deploy.traffic import add_arguments

    add_arguments(p)


def _cmd_traffic(args: argparse.Namespace) -> int:
    from deploy.stack import StackState
    from deploy.traffic import main

    _stack_env(args)
    state = StackState.load(args.run_dir.resolve())
    url = args.url or (state.gateway_url if state is not None else "")
    if not url:
        print("no stack running; start one with `fraudmesh up` (or pass --url)", file=sys.stderr)
        return 1
    return main(args, url)


def _cmd_train(args: argparse.Namespace) -> int:
    rest = list(args.train_args)
    if rest[:2] == ["--family", "personalization"] or rest[:1] == ["--family=personalization"]:
        return _train_personalization(args, rest[2:] if rest[0] == "--family" else rest[1:])
    if rest[:2] == ["--family", "fraud"] or rest[:1] == ["--family=fraud"]:
        args.train_args = rest[2:] if rest[0] == "--family" else rest[1:]
    try:
        from trainer.cli import train_main
    except ImportError as exc:
        print(f"fraudmesh train needs the train extra ({exc}): pip install -e '.[train]'", file=sys.stderr)
        return 2
    _stack_env(args)  # publish into the local stack's registry when one runs
    return int(train_main(args.train_args))


def _train_personalization(args: argparse.Namespace, rest: list[str]) -> int:
    """`fraudmesh train --family personalization [options of python -m trainer.personalization]`: LightGCN into
    the family's model dir (the local stack's when one runs, unless --out is given)."""
    try:
        from trainer.personalization.__main__ import main as personalization_main
    except ImportError as exc:
        print(
            f"fraudmesh train --family personalization needs the train extra ({exc}): pip install -e '.[train]'",
            file=sys.stderr,
        )
        return 2
    from deploy.personalization import model_dir, provision
    from deploy.stack import StackState
    from shared.settings import load_settings

    _stack_env(args)
    if not any(a == "--out" or a.startswith("--out=") for a in rest):
        rest = ["--out", str(model_dir(load_settings())), *rest]
    code = int(personalization_main(rest))
    if code == 0 and StackState.load(args.run_dir.resolve()) is not None and "-h" not in rest and "--help" not in rest:
        pers = provision(load_settings())  # the local stack: what it serves, and that world's features
        print(
            f"the stack serves {pers.version} ({pers.source}); serve the new version on every worker (its world's "
            "features loaded first) with `fraudmesh model activate --family personalization VERSION`"
        )
    return code


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
    s.add_argument(
        "--gateways",
        type=int,
        default=1,
        help="gateway processes sharing the HTTP port (SO_REUSEPORT; each scraped on its own metrics port)",
    )
    s.add_argument("--aggregators", type=int, default=1)
    s.add_argument("--inference", type=int, default=2)
    s.add_argument("--features", type=int, default=2)
    s.add_argument("--http-port", type=int, default=8000, help="gateway port (a free one if taken)")
    s.set_defaults(func=_cmd_up)

    sub.add_parser("down", help="stop everything `up` started").set_defaults(func=_cmd_down)
    s = sub.add_parser("restart", help="restart one server or service instance, keeping its ports and data")
    s.add_argument("name", help="nats, redis, postgres, or an instance such as inference-0 (see `fraudmesh status`)")
    s.set_defaults(func=_cmd_restart)
    s = sub.add_parser("nats-user", help="print the NATS URL and credentials of a user of the local stack")
    s.add_argument("user", nargs="?", default="public", help="public (default), admin, gateway, aggregator, ...")
    s.set_defaults(func=_cmd_nats_user)
    sub.add_parser("status", help="what is running").set_defaults(func=_cmd_status)

    s = sub.add_parser("demo", help="score a sample batch through the gateway and print the result")
    s.add_argument("-n", type=int, default=1000, help="transactions in the sample (default 1000)")
    s.add_argument("--url", default="", help="gateway URL (default: the local stack's)")
    s.add_argument("--api-key", default="")
    s.set_defaults(func=_cmd_demo)

    m = sub.add_parser("model", help="model artifacts and the model registry").add_subparsers(
        dest="model_command", required=True
    )
    s = m.add_parser("init", help="train and activate the bootstrap model of a family (no torch needed)")
    s.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="default: FRAUDMESH_MODEL_DIR or var/models (personalization: FRAUDMESH_PERSONALIZATION_MODEL_DIR or "
        "<model dir>-personalization)",
    )
    s.add_argument("--family", choices=("fraud", "personalization"), default="fraud", help="default: fraud")
    s.set_defaults(func=_cmd_model_init)

    def registry_options(s: argparse.ArgumentParser, families: bool = False) -> None:
        s.add_argument("--model-dir", type=Path, default=None, help="default: FRAUDMESH_MODEL_DIR or the stack's")
        if families:
            s.add_argument(
                "--family",
                choices=("fraud", "personalization"),
                default="fraud",
                help="model family (default fraud); personalization: FRAUDMESH_PERSONALIZATION_MODEL_DIR's versions, "
                "KV keys `personalization.*`",
            )
        s.add_argument("--nats-url", default="", help="default: FRAUDMESH_NATS_URL or the local stack's")
        s.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the workers' answers")

    s = m.add_parser("list", help="versions (local and in the object store), the registry state, each worker's")
    registry_options(s, families=True)
    s.set_defaults(func=_cmd_model_list)
    s = m.add_parser("publish", help="upload a local version to the NATS object store")
    s.add_argument("version")
    registry_options(s, families=True)
    s.set_defaults(func=_cmd_model_publish)
    s = m.add_parser("activate", help="make a version active on every worker (publishing it first if needed)")
    s.add_argument("version")
    registry_options(s, families=True)
    s.set_defaults(func=_cmd_model_activate)
    s = m.add_parser("candidate", help="A/B: send a share of the partials to a candidate version, or --clear")
    s.add_argument("version", nargs="?", default="")
    s.add_argument("--share", type=float, default=0.1, help="fraction of partials for the candidate (default 0.1)")
    s.add_argument("--clear", action="store_true", help="stop the A/B split")
    registry_options(s, families=True)
    s.set_defaults(func=_cmd_model_candidate)

    sub.add_parser("settings", help="print the settings table (Markdown)").set_defaults(func=_cmd_settings)

    from feature_svc import cli as features_cli

    s = sub.add_parser("simulate", help="generate the seeded payment world and load it into PostgreSQL and the graph")
    features_cli.add_simulate_arguments(s)
    s.set_defaults(func=_cmd_simulate)
    f = sub.add_parser("features", help="feature store").add_subparsers(dest="features_command", required=True)
    s = f.add_parser("export", help="write the point-in-time-correct Parquet offline store, partitioned by day")
    features_cli.add_export_arguments(s)
    s.set_defaults(func=_cmd_features_export)
    s = f.add_parser("check", help="compare online feature values with a recompute from the ledger (issue 9)")
    _add_check_arguments(s)
    s.set_defaults(func=_cmd_features_check)

    e = sub.add_parser("embeddings", help="GNN embeddings").add_subparsers(dest="embeddings_command", required=True)
    s = e.add_parser("refresh", help="the active GNN with embeddings recomputed from the ledger, as a new version")
    _embeddings_arguments(s)
    registry_options(s)
    s.set_defaults(func=_cmd_embeddings_refresh)

    s = sub.add_parser("traffic", help="live traffic with injected fraud episodes through POST /score/fraud")
    _traffic_arguments(s)
    s.set_defaults(func=_cmd_traffic)

    s = sub.add_parser(
        "train",
        help="train the GNN and the baseline, export ONNX (needs the train extra); `--family personalization` first: "
        "LightGCN and its baselines (options of python -m trainer.personalization)",
    )
    s.add_argument("train_args", nargs=argparse.REMAINDER, help="options of trainer.cli (see `fraudmesh train -h`)")
    s.set_defaults(func=_cmd_train)
    s = sub.add_parser(
        "evaluate",
        help="write a model's report (reports/model/served/), or with --study the multi-seed study (reports/model/)",
    )
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
