"""`python -m feature_svc.world.personalization`: simulate the clickstream world and load its user, item and
session features into the Redis online store."""

from __future__ import annotations

import argparse
import asyncio

from feature_svc.world.personalization.online import load, store
from feature_svc.world.personalization.world import WorldOptions, generate
from shared.settings import load_settings


async def _main(url: str, ttl_s: int, opts: WorldOptions) -> int:
    online = store(url, ttl_s)
    try:
        return await load(online, generate(opts))
    finally:
        await online.close()


def main(argv: list[str] | None = None) -> int:
    settings = load_settings()
    ap = argparse.ArgumentParser(
        prog="python -m feature_svc.world.personalization", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--redis-url", default=settings.redis_url)
    ap.add_argument("--seed", type=int, default=WorldOptions.seed)
    ap.add_argument("--users", type=int, default=WorldOptions.users)
    ap.add_argument("--items", type=int, default=WorldOptions.items)
    ap.add_argument("--days", type=int, default=WorldOptions.days)
    a = ap.parse_args(argv)
    opts = WorldOptions(seed=a.seed, users=a.users, items=a.items, days=a.days)
    n = asyncio.run(_main(a.redis_url, settings.feature_ttl_s, opts))
    print(f"wrote {n} personalization feature rows to {a.redis_url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
