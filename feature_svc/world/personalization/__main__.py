"""`python -m feature_svc.world.personalization`: simulate the clickstream world and load its user, item and
session features into the Redis online store. `--model-dir DIR` loads the world that DIR's active personalization
model was trained on (its metadata's `training.world`), as compose's model-init does after installing the
bootstrap model, so that the users and items the model knows are scored from their features."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from feature_svc.world.personalization.online import load, store
from feature_svc.world.personalization.world import WorldOptions, generate, options_of
from shared.settings import load_settings


async def _main(url: str, ttl_s: int, opts: WorldOptions) -> int:
    online = store(url, ttl_s)
    try:
        return await load(online, generate(opts))
    finally:
        await online.close()


def world_of_model_dir(directory: Path) -> WorldOptions:
    """The world of `directory`'s active version; SystemExit naming what is missing when there is none."""
    marker = directory / "active"
    version = marker.read_text().strip() if marker.exists() else ""
    meta = directory / version / "metadata.json"
    if not version or not meta.exists():
        raise SystemExit(
            f"no active personalization model in {directory} (want `active` naming a version with a metadata.json); "
            "train one with `fraudmesh model init --family personalization --model-dir DIR`"
        )
    return options_of(json.loads(meta.read_text()))


def main(argv: list[str] | None = None) -> int:
    settings = load_settings()
    ap = argparse.ArgumentParser(
        prog="python -m feature_svc.world.personalization", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--redis-url", default=settings.redis_url)
    ap.add_argument("--model-dir", type=Path, default=None, help="load the world of this directory's active model")
    ap.add_argument("--seed", type=int, default=WorldOptions.seed)
    ap.add_argument("--users", type=int, default=WorldOptions.users)
    ap.add_argument("--items", type=int, default=WorldOptions.items)
    ap.add_argument("--days", type=int, default=WorldOptions.days)
    a = ap.parse_args(argv)
    if a.model_dir is not None:
        opts = world_of_model_dir(a.model_dir)
    else:
        opts = WorldOptions(seed=a.seed, users=a.users, items=a.items, days=a.days)
    n = asyncio.run(_main(a.redis_url, settings.feature_ttl_s, opts))
    print(f"wrote {n} personalization feature rows (world seed {opts.seed}, {opts.users} users) to {a.redis_url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
