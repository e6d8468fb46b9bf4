"""Collecting the partial results of one batch: each partial is counted once, whatever JetStream redelivers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from shared.messages import PartialFailed, PartialInfo, PartialOutcome, PartialResult, TransactionScore


@dataclass
class PendingBatch:
    """The partials of one published batch, and what has come back for each."""

    batch_id: str
    bounds: list[tuple[int, int]]
    """(start, end) of each partial in the batch's transaction list."""
    results: list[PartialResult | None] = field(init=False)
    failures: dict[int, str] = field(default_factory=dict)
    duplicates: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.results = [None] * len(self.bounds)
        self._open = len(self.bounds)

    @property
    def outstanding(self) -> int:
        return self._open

    def accept(self, outcome: PartialOutcome) -> bool:
        """Record one outcome. Returns False for a duplicate or an out-of-range index (ignored)."""
        i = outcome.index
        if not 0 <= i < len(self.bounds) or self.results[i] is not None or i in self.failures:
            self.duplicates += 1
            return False
        if isinstance(outcome, PartialFailed):
            self.failures[i] = outcome.reason
        else:
            start, end = self.bounds[i]
            if len(outcome.scores) != end - start:
                self.failures[i] = f"worker {outcome.worker_id} returned {len(outcome.scores)} scores for {end - start}"
            else:
                self.results[i] = outcome
        self._open -= 1
        if self._open == 0:
            self.done.set()
        return True

    def scores(self, n: int) -> list[TransactionScore | None]:
        out: list[TransactionScore | None] = [None] * n
        for res, (start, end) in zip(self.results, self.bounds, strict=True):
            if res is not None:
                out[start:end] = res.scores
        return out

    def infos(self) -> list[PartialInfo]:
        infos = []
        for i, ((start, end), res) in enumerate(zip(self.bounds, self.results, strict=True)):
            if res is None:
                infos.append(PartialInfo(index=i, size=end - start, scored=False))
            else:
                infos.append(
                    PartialInfo(
                        index=i,
                        size=end - start,
                        worker_id=res.worker_id,
                        model_version=res.model_version,
                        deliveries=res.deliveries,
                        queue_ms=round(res.queue_ms, 3),
                        compute_ms=round(res.compute_ms, 3),
                        entities=res.entities,
                        entities_from_cache=res.entities_from_cache,
                        entities_computed=res.entities_computed,
                    )
                )
        return infos


def split_bounds(n: int, size: int) -> list[tuple[int, int]]:
    """[0, n) in consecutive slices of at most `size`: 1000 by 200 gives 5 slices."""
    return [(start, min(start + size, n)) for start in range(0, n, size)]
