"""The personalization family on `fraudmesh up`: a model in the family's directory (the torch-free bootstrap,
trainer/personalization/bootstrap.py, when none is active) and the user, item and session features of that model's
world in Redis, so that `POST /score/personalization` answers on a fresh clone."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from shared.settings import Settings


@dataclass(frozen=True)
class Provisioned:
    version: str
    kind: str
    model_dir: Path
    feature_rows: int
    trained: bool
    """True when this call trained the bootstrap model (no version was active)."""


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


async def _load_features(redis_url: str, ttl_s: int, metadata: dict[str, object]) -> int:
    from feature_svc.world.personalization.online import load, store
    from feature_svc.world.personalization.world import generate
    from trainer.personalization.bootstrap import world_options

    online = store(redis_url, ttl_s)
    try:
        return await load(online, generate(world_options(metadata)))
    finally:
        await online.close()


def provision(settings: Settings) -> Provisioned:
    """Make sure the family has an active model, then (re)load its world's features (their TTL is
    `feature_ttl_s`: each `up` refreshes them)."""
    directory = model_dir(settings)
    version, trained = ensure_model(directory)
    meta = json.loads((directory / version / "metadata.json").read_text())
    rows = asyncio.run(_load_features(settings.redis_url, settings.feature_ttl_s, meta))
    return Provisioned(version, str(meta.get("kind", "")), directory, rows, trained)
