"""The refresh rounds shared by a feature worker's micro-batches (feature_svc/ingest/coalesce.py): merged, never
acked before a round that started after them wrote their entities, a busy entity recomputed once per interval,
and a failed round failing exactly the batches that were in it."""

from __future__ import annotations

import asyncio

import pytest

from feature_svc.compute import Entity
from feature_svc.ingest.coalesce import RefreshCoalescer

M = ("merchant", "m1")


class Recorder:
    """A refresh that records each round's entities; a round waits on `gate` while it is set to block."""

    def __init__(self) -> None:
        self.rounds: list[set[Entity]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = asyncio.Event()
        self.fail: dict[int, Exception] = {}
        """Round number (0 first) -> what it raises."""

    async def __call__(self, entities: list[Entity]) -> None:
        self.rounds.append(set(entities))
        self.started.set()
        await self.gate.wait()
        if len(self.rounds) - 1 in self.fail:
            raise self.fail[len(self.rounds) - 1]


def card(i: int) -> Entity:
    return ("card", f"c{i}")


async def test_batches_that_arrive_together_share_one_round() -> None:
    rec = Recorder()
    co = RefreshCoalescer(rec, min_interval_s=0.0)
    await asyncio.gather(*(co.refresh([card(i), M]) for i in range(5)))
    assert rec.rounds == [{M, *(card(i) for i in range(5))}]
    assert co.rounds == 1 and co.entities == 6


async def test_an_entity_in_a_running_round_is_written_again_for_a_later_batch() -> None:
    rec = Recorder()
    co = RefreshCoalescer(rec, min_interval_s=0.0)
    rec.gate.clear()
    first = asyncio.create_task(co.refresh([card(1), M]))
    await rec.started.wait()  # the first round has taken m1 (as of a moment before the second batch's writes)
    second = asyncio.create_task(co.refresh([card(2), M]))
    await asyncio.sleep(0)
    assert not second.done()
    rec.gate.set()
    await asyncio.gather(first, second)
    assert rec.rounds == [{card(1), M}, {card(2), M}]


async def test_a_busy_entity_waits_for_its_interval_and_its_batch_waits_with_it() -> None:
    rec = Recorder()
    co = RefreshCoalescer(rec, min_interval_s=0.0, entity_interval_s=0.2)
    await co.refresh([card(1), M])
    second = asyncio.create_task(co.refresh([card(2), M]))
    third = asyncio.create_task(co.refresh([card(3), M]))
    await asyncio.gather(second, third)
    # c2 and c3 need no wait; m1 was refreshed a moment ago, so it comes once more, in a round of its own
    assert rec.rounds == [{card(1), M}, {card(2), card(3)}, {M}]


async def test_a_failed_round_fails_its_batches_only_and_the_next_round_runs() -> None:
    rec = Recorder()
    co = RefreshCoalescer(rec, min_interval_s=0.0)
    rec.gate.clear()
    rec.fail = {0: RuntimeError("redis is down")}
    failing = asyncio.create_task(co.refresh([card(1)]))
    await rec.started.wait()
    later = asyncio.create_task(co.refresh([card(2)]))  # arrives while the failing round runs
    await asyncio.sleep(0)
    rec.gate.set()
    with pytest.raises(RuntimeError, match="redis is down"):
        await failing
    await later
    assert rec.rounds == [{card(1)}, {card(2)}]


async def test_close_cancels_the_waiting_batches() -> None:
    rec = Recorder()
    co = RefreshCoalescer(rec, min_interval_s=0.0)
    rec.gate.clear()
    waiting = asyncio.create_task(co.refresh([card(1)]))
    await rec.started.wait()
    await co.close()
    with pytest.raises(asyncio.CancelledError):
        await waiting
