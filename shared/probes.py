"""Cheap periodic checks of a service's dependencies, for its health replies (`health_details`).

Each check is an async callable returning True when the dependency answers; a `Probes` runs them every `interval_s`
(each bounded by the interval) and keeps the last state and when it was seen, so a health reply costs nothing and is
never older than about one interval. The gateway's `/health` reads the `<name>` keys ("ok" or "down: ...").
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

Check = Callable[[], Awaitable[bool]]


class Probes:
    def __init__(self, checks: dict[str, Check], interval_s: float = 0.5) -> None:
        self.checks = checks
        self.interval_s = interval_s
        self.state: dict[str, str] = {name: "unknown" for name in checks}
        self.checked_at = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _one(self, name: str, check: Check) -> None:
        try:
            ok = await asyncio.wait_for(check(), timeout=self.interval_s)
            self.state[name] = "ok" if ok else "down: no answer"
        except Exception as exc:
            self.state[name] = f"down: {type(exc).__name__}"

    async def run_once(self) -> None:
        await asyncio.gather(*(self._one(n, c) for n, c in self.checks.items()))
        self.checked_at = time.time()

    async def _loop(self) -> None:
        while True:
            await self.run_once()
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        if self._task is None and self.checks:
            self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def details(self) -> dict[str, str]:
        out = dict(self.state)
        if self.checked_at:
            out["checked_age_s"] = f"{time.time() - self.checked_at:.2f}"
        return out
