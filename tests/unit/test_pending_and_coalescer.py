"""The aggregator's bookkeeping without servers: a PendingBatch counts each partial once, and the Coalescer
shares partials between small requests without adding latency when idle."""

from __future__ import annotations

import asyncio
import math

import pytest

from aggregator.coalesce import Coalescer
from aggregator.pending import PendingBatch, split_bounds
from shared.context import Context, now_ms
from shared.messages import PartialFailed, PartialResult, Transaction, TransactionScore


def score(tid: str) -> TransactionScore:
    return TransactionScore(
        transaction_id=tid,
        fraud_score=0.1,
        risk_level="low",
        recommended_action="approve",
        confidence=0.9,
        model_version="v1",
    )


def result(batch: str, index: int, n: int, deliveries: int = 1) -> PartialResult:
    return PartialResult(
        request_id=batch,
        index=index,
        scores=[score(f"{index}-{i}") for i in range(n)],
        worker_id="w",
        model_version="v1",
        deliveries=deliveries,
    )


# ------------------------------------------------------------------------------------------ split_bounds
@pytest.mark.parametrize(
    ("n", "size", "expected"),
    [
        (1000, 200, [(0, 200), (200, 400), (400, 600), (600, 800), (800, 1000)]),
        (5, 200, [(0, 5)]),
        (201, 200, [(0, 200), (200, 201)]),
        (0, 200, []),
    ],
)
def test_split_bounds(n: int, size: int, expected: list[tuple[int, int]]) -> None:
    assert split_bounds(n, size) == expected


# ----------------------------------------------------------------------------------------- PendingBatch
def test_each_partial_counts_once_and_done_fires_at_the_last() -> None:
    b = PendingBatch("b", split_bounds(5, 2))  # 2, 2, 1
    assert b.accept(result("b", 1, 2))
    assert not b.accept(result("b", 1, 2, deliveries=2)), "a redelivered duplicate was counted"
    assert b.accept(result("b", 0, 2))
    assert not b.done.is_set() and b.outstanding == 1
    assert b.accept(result("b", 2, 1))
    assert b.done.is_set() and b.outstanding == 0 and b.duplicates == 1
    assert [s.transaction_id for s in b.scores(5) if s is not None] == ["0-0", "0-1", "1-0", "1-1", "2-0"]


def test_a_failed_partial_closes_its_slot_and_leaves_its_scores_empty() -> None:
    b = PendingBatch("b", split_bounds(4, 2))
    assert b.accept(PartialFailed(request_id="b", index=0, reason="poison"))
    assert not b.accept(result("b", 0, 2)), "a result after the failure was counted"
    assert b.accept(result("b", 1, 2))
    assert b.done.is_set()
    assert b.scores(4)[:2] == [None, None] and b.failures == {0: "poison"}
    assert [i.scored for i in b.infos()] == [False, True]


def test_out_of_range_and_wrong_size_results_are_not_scores() -> None:
    b = PendingBatch("b", split_bounds(4, 2))
    assert not b.accept(result("b", 7, 2))
    assert b.accept(result("b", 0, 3))  # three scores for a partial of two: a failure, not a result
    assert "returned 3 scores for 2" in b.failures[0]
    assert b.scores(4) == [None] * 4


# -------------------------------------------------------------------------------------------- Coalescer
def tx(i: int) -> Transaction:
    return Transaction(card_id=f"c{i}", transaction_amount=1.0, transaction_id=f"t{i}")


def ctx(timeout_s: float = 5.0) -> Context:
    return Context(subject="fraud.score", headers={}, request_id="r", deadline_ms=now_ms() + timeout_s * 1000)


class Pipeline:
    """A fake publisher: records each partial; `answer` completes one with scores."""

    def __init__(self) -> None:
        self.partials: list[tuple[list[Transaction], PendingBatch]] = []
        self.finished: list[str] = []

    async def publish(self, txs: list[Transaction], ctxs: list[Context]) -> PendingBatch:
        batch = PendingBatch(f"co-{len(self.partials)}", [(0, len(txs))])
        self.partials.append((txs, batch))
        return batch

    def finish(self, batch: PendingBatch) -> None:
        self.finished.append(batch.batch_id)

    def answer(self, k: int) -> None:
        txs, batch = self.partials[k]
        batch.accept(
            PartialResult(
                request_id=batch.batch_id,
                index=0,
                scores=[score(t.transaction_id or "") for t in txs],
                worker_id="w",
                model_version="v1",
            )
        )


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_idle_pipeline_flushes_on_the_next_loop_turn_with_what_arrived_together() -> None:
    p = Pipeline()
    c = Coalescer(p.publish, p.finish, window_ms=math.inf, max_size=200, max_inflight=2)
    a = asyncio.create_task(c.submit([tx(1)], ctx()))
    b = asyncio.create_task(c.submit([tx(2)], ctx()))
    await settle()
    assert [len(txs) for txs, _ in p.partials] == [2], "two requests of one loop turn were not shared"
    p.answer(0)
    out_a, out_b = await a, await b
    assert [s.transaction_id for s in out_a.scores if s] == ["t1"]
    assert [s.transaction_id for s in out_b.scores if s] == ["t2"] and out_b.offset == 1
    assert p.finished == ["co-0"]


async def test_busy_pipeline_buffers_until_a_partial_returns() -> None:
    p = Pipeline()
    c = Coalescer(p.publish, p.finish, window_ms=10_000, max_size=200, max_inflight=1)
    first = asyncio.create_task(c.submit([tx(1)], ctx()))
    await settle()
    waiting = [asyncio.create_task(c.submit([tx(i)], ctx())) for i in range(2, 5)]
    await settle()
    assert len(p.partials) == 1, "flushed although the pipeline was full"
    p.answer(0)
    await first
    await settle()
    assert [len(txs) for txs, _ in p.partials] == [1, 3], "the buffered requests did not go together"
    p.answer(1)
    assert [len((await w).scores) for w in waiting] == [1, 1, 1]


async def test_a_full_buffer_flushes_at_once_and_never_exceeds_max_size() -> None:
    p = Pipeline()
    c = Coalescer(p.publish, p.finish, window_ms=10_000, max_size=4, max_inflight=0)
    tasks = [asyncio.create_task(c.submit([tx(i), tx(i + 100)], ctx())) for i in range(3)]
    await settle()
    assert [len(txs) for txs, _ in p.partials] == [4, 2]
    for k in range(2):
        p.answer(k)
    await asyncio.gather(*tasks)


async def test_a_publish_failure_reaches_every_member() -> None:
    async def broken(txs: list[Transaction], ctxs: list[Context]) -> PendingBatch:
        raise ConnectionError("JetStream unavailable")

    c = Coalescer(broken, lambda b: None, window_ms=1, max_size=200, max_inflight=4)
    results = await asyncio.gather(c.submit([tx(1)], ctx()), c.submit([tx(2)], ctx()), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)


async def test_an_unanswered_partial_ends_at_the_latest_member_deadline() -> None:
    p = Pipeline()
    c = Coalescer(p.publish, p.finish, window_ms=1, max_size=200, max_inflight=4)
    out = await asyncio.gather(c.submit([tx(1)], ctx(0.05)), c.submit([tx(2)], ctx(0.1)))
    assert [o.scores for o in out] == [[None], [None]]
    assert p.finished == ["co-0"], "the pending batch was not finished"
