"""One way to connect to NATS for every process: reconnect forever, short pings, retry the first connect."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nats.aio.client import Client as NATS

from shared.logs import log_fields

log = logging.getLogger("fraudmesh.nats")


async def connect_nats(
    urls: str,
    name: str,
    *,
    on_disconnect: Callable[[], None] | None = None,
    on_reconnect: Callable[[], None] | None = None,
    first_connect_retries: int = -1,
) -> NATS:
    """Connect with reconnect-forever. The first connect is retried too (start order must not matter);
    `first_connect_retries=-1` retries forever, which services want and tests may not."""

    async def on_error(exc: Exception) -> None:
        log.warning("nats error", extra=log_fields(error=repr(exc)))

    async def disconnected() -> None:
        log.warning("nats disconnected")
        if on_disconnect:
            on_disconnect()

    async def reconnected() -> None:
        log.info("nats reconnected")
        if on_reconnect:
            on_reconnect()

    delay, attempt = 0.2, 0
    while True:
        nc = NATS()
        try:
            await nc.connect(
                servers=urls.split(","),
                name=name,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                ping_interval=5,
                max_outstanding_pings=3,
                connect_timeout=2,
                error_cb=on_error,
                disconnected_cb=disconnected,
                reconnected_cb=reconnected,
                pending_size=64 * 1024 * 1024,
            )
            return nc
        except Exception as exc:
            attempt += 1
            if 0 <= first_connect_retries < attempt:
                raise
            log.warning(
                "nats not reachable yet; retrying",
                extra=log_fields(url=urls, error=repr(exc), retry_in_s=delay),
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
