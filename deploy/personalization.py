"""The personalization family on `fraudmesh up`: a model in the family's directory (the torch-free bootstrap,
trainer/personalization/bootstrap.py, when none is active) and the user, item and session features of the served
model's world in Redis, so that `POST /score/personalization` answers on a fresh clone.

The served version is the registry's (`personalization.active` in the model-state KV) when one is set, else the
directory's `active` file; its metadata names the world (`training.world`) whose features are loaded. `fraudmesh model
activate --family personalization V` loads V's world the same way before the workers switch."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.settings import Settings

FAMILY = "personalization"


@dataclass(frozen=True)
class Provisioned:
    version: str
    kind: str
    model_dir: Path
    feature_rows: int
    trained: bool
    """True when this call trained the bootstrap model (no version was active)."""
    source: str
    """Where the served version was named: `registry` (the KV) or `model dir` (its `active` file)."""


def model_dir(settings: Settings) -> Path:
    from inference_svc.personalization.endpoint import model_dir_of

    return model_dir_of(settings)


def ensure_model(directory: Path) -> tuple[str, bool]:
    """The active version of `directory`, training and activating the bootstrap model when there is none."""
    from inference_svc.personalization.artifact import active_version

    version = active_version(directory)
    if version is not None and (directory / version / "metadata.json").exists():
        return version, False
    from trainer.personalization.bootstrap import train_bootstrap

    return str(train_bootstrap(directory)["version"]), True


def metadata_of(directory: Path, version: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((directory / version / "metadata.json").read_text())
    return doc


async def load_features(settings: Settings, metadata: dict[str, Any]) -> int:
    """Write the user, item and session rows of the world `metadata` was trained on into `settings.redis_url`."""
    from feature_svc.world.personalization.online import load, store
    from feature_svc.world.personalization.world import generate, options_of

    online = store(settings.redis_url, settings.feature_ttl_s)
    try:
        return await load(online, await asyncio.to_thread(generate, options_of(metadata)))
    finally:
        await online.close()


async def registry_active(settings: Settings, directory: Path) -> str:
    """The registry's `personalization.active` (fetched into `directory` when only published), or "" when none is
    set or NATS cannot be read (the directory's `active` then decides, as it does for the workers)."""
    import nats

    from inference_svc.registry import Registry
    from shared.nats_conn import auth_options

    async def quiet(_exc: Exception) -> None:
        pass

    try:
        nc = await nats.connect(
            settings.nats_url.split(","),
            connect_timeout=3,
            max_reconnect_attempts=1,
            error_cb=quiet,
            **auth_options(settings),
        )
    except Exception:
        return ""
    try:
        registry = Registry(nc.jetstream(timeout=5.0), directory, settings.stream_replicas, family=FAMILY)
        with contextlib.suppress(Exception):
            version = (await registry.read_state()).active
            if version:
                await registry.ensure_local(version)
                return version
        return ""
    finally:
        await nc.close()


def provision(settings: Settings) -> Provisioned:
    """Make sure the family has a model to serve, then (re)load the served version's world features (their TTL is
    `feature_ttl_s`: each `up` refreshes them)."""
    directory = model_dir(settings)
    version, trained = ensure_model(directory)
    source = "model dir"
    served = asyncio.run(registry_active(settings, directory))
    if served and (directory / served / "metadata.json").exists():
        version, source = served, "registry"
    meta = metadata_of(directory, version)
    rows = asyncio.run(load_features(settings, meta))
    return Provisioned(version, str(meta.get("kind", "")), directory, rows, trained, source)
