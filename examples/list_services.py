#!/usr/bin/env python3
"""List every running fraudmesh service instance through the NATS micro discovery protocol (`$SRV.INFO`).

Only nats-py is used: nothing from fraudmesh is imported. Every service answers `$SRV.PING`, `$SRV.INFO` and
`$SRV.STATS` (as `nats micro ls` expects), so this works against any NATS where fraudmesh runs:

    eval "$(fraudmesh nats-user admin)"                       # discovery needs a user allowed `$SRV.>`: admin
    python examples/list_services.py                          # FRAUDMESH_NATS_URL/_USER/_PASSWORD, or the flags
    python examples/list_services.py --nats-url nats://host:4222 --wait 1.0
    python examples/list_services.py --json                   # one JSON document per instance, one a line
    python examples/list_services.py --stats                  # with per-endpoint message counts

The table has one block per instance: name, version, id, instance id, then each endpoint with its kind
(endpoint, consumer, listener, kv_watch), subject and queue group. Exit status 0 when at least one service
answered, 1 when none did or NATS is unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

import nats
from nats.errors import Error as NatsError
from nats.errors import NoServersError


async def gather(nc: nats.NATS, subject: str, wait_s: float) -> list[dict[str, Any]]:
    """Send one request and collect every reply that comes within `wait_s` (each instance answers once)."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(subject, b"", reply=inbox)
    await nc.flush()
    replies: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + wait_s
    while (left := end - loop.time()) > 0:
        try:
            msg = await sub.next_msg(timeout=left)
        except TimeoutError:
            break
        replies.append(json.loads(msg.data))
    await sub.unsubscribe()
    return replies


def print_table(infos: list[dict[str, Any]], stats: dict[str, dict[str, Any]]) -> None:
    for info in sorted(infos, key=lambda i: (i["name"], i.get("metadata", {}).get("instance_id", ""))):
        meta = info.get("metadata") or {}
        print(f"{info['name']} {info['version']}  id={info['id']}  instance={meta.get('instance_id', '')}")
        counts = {e["name"]: e for e in stats.get(info["id"], {}).get("endpoints", [])}
        for ep in info.get("endpoints") or []:
            kind = (ep.get("metadata") or {}).get("kind", "")
            line = f"    {ep['name']:<16} {kind:<9} {ep['subject']}"
            if ep.get("queue_group"):
                line += f"  (queue {ep['queue_group']})"
            if ep["name"] in counts:
                c = counts[ep["name"]]
                line += f"  messages={c['num_requests']} errors={c['num_errors']}"
            print(line)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    env = os.environ
    parser.add_argument(
        "--nats-url",
        dest="nats",
        default=env.get("FRAUDMESH_NATS_URL", "nats://127.0.0.1:4222"),
        help="NATS server URL (default: FRAUDMESH_NATS_URL or nats://127.0.0.1:4222)",
    )
    parser.add_argument("--user", default=env.get("FRAUDMESH_NATS_USER", ""), help="NATS user (FRAUDMESH_NATS_USER)")
    parser.add_argument(
        "--password", default=env.get("FRAUDMESH_NATS_PASSWORD", ""), help="NATS password (FRAUDMESH_NATS_PASSWORD)"
    )
    parser.add_argument("--wait", type=float, default=0.5, help="seconds to wait for answers")
    parser.add_argument("--json", action="store_true", help="print each $SRV.INFO answer as a JSON line")
    parser.add_argument("--stats", action="store_true", help="also ask $SRV.STATS for message counts")
    args = parser.parse_args(argv)

    async def quiet(_exc: Exception) -> None:
        return None

    try:
        nc = await asyncio.wait_for(
            nats.connect(
                args.nats,
                connect_timeout=2,
                allow_reconnect=False,
                error_cb=quiet,
                user=args.user or None,
                password=args.password or None,
            ),
            timeout=5,
        )
    except (NoServersError, OSError, NatsError, TimeoutError) as exc:
        if "authorization violation" in str(exc).lower():
            print(
                f"NATS at {args.nats} refused user {args.user or '(none)'!r}: wrong or missing credentials. "
                'Against the local stack: eval "$(fraudmesh nats-user admin)"',
                file=sys.stderr,
            )
            return 1
        print(
            f"cannot reach NATS at {args.nats}: {str(exc) or type(exc).__name__}. "
            "Is the stack running (`fraudmesh up`)?",
            file=sys.stderr,
        )
        return 1
    try:
        infos = await gather(nc, "$SRV.INFO", args.wait)
        stats = {s["id"]: s for s in await gather(nc, "$SRV.STATS", args.wait)} if args.stats else {}
    finally:
        await nc.close()
    if not infos:
        print(
            f"no service answered $SRV.INFO on {args.nats} within {args.wait} s (is fraudmesh up? "
            f"user {args.user or '(from the URL)'!r} must be allowed to publish `$SRV.>`: the `admin` user is)",
            file=sys.stderr,
        )
        return 1
    if args.json:
        for info in infos:
            print(json.dumps(info, sort_keys=True))
    else:
        print_table(infos, stats)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
