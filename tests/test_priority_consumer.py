"""`PriorityConsumer` (shared/consumer.py) on a real nats-server: several durables of one stream, highest first.

A backlog of low messages published before the high ones is handled high first; a runner fetches only for a free
slot (the others stay in the stream for another replica); a message whose handler raises is retried by the
policy like any consumer's. Order and counts only: nothing is timed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

from deploy.servers import Server
from shared.context import Delivery, Transient
from shared.policy import ConsumerPolicy
from shared.service import Service
from shared.settings import load_settings

STREAM = "PRIO_TEST"
LEVELS = ("high", "normal", "low")


class Item(msgspec.Struct, tag="item", tag_field="type"):
    level: str
    n: int


class Runner(Service):
    name = "prio-test"

    def __init__(self, url: str, concurrency: int) -> None:
        super().__init__(load_settings({}, nats_url=url, instance_id="prio-test"))
        self.concurrency = concurrency
        self.seen: list[tuple[str, int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_once: set[int] = set()

    async def on_start(self) -> None:
        self.priority_consumer(
            name="prio",
            stream=STREAM,
            durables=[f"prio-{level}" for level in LEVELS],
            message_type=Item,
            handler=self.handle,
            max_wait_s=0.1,
            concurrency=self.concurrency,
            policy=ConsumerPolicy(max_deliver=5, backoff_base_s=0.01, backoff_max_s=0.05),
        )

    async def handle(self, item: Item, delivery: Delivery) -> None:
        self.seen.append((item.level, item.n))
        await self.gate.wait()
        if item.n in self.fail_once:
            self.fail_once.discard(item.n)
            raise Transient("a dependency is down")


@pytest.fixture
async def js_url(isolated_nats: Server) -> AsyncIterator[str]:
    url: str = isolated_nats.extra["url"]
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(name=STREAM, subjects=[f"prio.{x}" for x in LEVELS], retention=RetentionPolicy.WORK_QUEUE)
    )
    for level in LEVELS:
        await js.add_consumer(
            STREAM,
            ConsumerConfig(
                durable_name=f"prio-{level}",
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=10.0,
                max_deliver=5,
                filter_subject=f"prio.{level}",
            ),
        )
    await nc.close()
    yield url


async def publish(url: str, items: list[tuple[str, int]]) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    for level, n in items:
        await js.publish(f"prio.{level}", msgspec.msgpack.encode(Item(level, n)))
    await nc.close()


async def until(check: Any, what: str) -> None:
    for _ in range(600):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(what)


async def test_a_backlog_is_handled_highest_priority_first(js_url: str) -> None:
    backlog = [("low", i) for i in range(10)] + [("normal", i) for i in range(10, 20)]
    backlog += [("high", i) for i in range(20, 30)]
    await publish(js_url, backlog)
    runner = Runner(js_url, concurrency=1)
    await runner.start()
    try:
        await until(lambda: len(runner.seen) == 30, "not every message was handled")
        assert [level for level, _ in runner.seen] == ["high"] * 10 + ["normal"] * 10 + ["low"] * 10
        assert [n for _, n in runner.seen] == list(range(20, 30)) + list(range(10, 20)) + list(range(10))
    finally:
        await runner.stop()


async def test_a_runner_fetches_only_for_a_free_slot_and_retries_a_failure(js_url: str) -> None:
    runner = Runner(js_url, concurrency=2)
    runner.gate.clear()  # handlers block: the two slots fill and stay full
    runner.fail_once = {1}
    await runner.start()
    try:
        await publish(js_url, [("low", i) for i in range(6)])
        await until(lambda: len(runner.seen) == 2, "the slots did not fill")
        nc = await nats.connect(js_url)
        info = await nc.jetstream().consumer_info(STREAM, "prio-low")
        await nc.close()
        assert info.num_ack_pending == 2 and info.num_pending == 4  # the rest stays for another replica
        await publish(js_url, [("high", 100)])
        runner.gate.set()
        await until(lambda: {n for _, n in runner.seen} == {*range(6), 100}, "not every message was handled")
        done = [n for _, n in runner.seen]
        assert done.index(100) < done.index(5)  # the high one came in while lows were queued, and went first
        assert done.count(1) == 2  # the failure was nak'ed and handled again
    finally:
        await runner.stop()
