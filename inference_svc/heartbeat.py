"""JetStream `in_progress` heartbeats for a partial being scored."""

from __future__ import annotations

import asyncio
import contextlib

from nats.aio.msg import Msg


class Heartbeat:
    """Sends `in_progress` every `period` seconds while a partial is being scored, so JetStream does not
    redeliver it under us. A timer, not a task: most partials finish long before the first beat."""

    def __init__(self, msg: Msg, period: float) -> None:
        self._msg = msg
        self._period = period
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = self._loop.call_later(period, self._beat)
        self._tasks: set[asyncio.Task[None]] = set()

    def _beat(self) -> None:
        task = self._loop.create_task(self._send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._handle = self._loop.call_later(self._period, self._beat)

    async def _send(self) -> None:
        with contextlib.suppress(Exception):
            await self._msg.in_progress()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
