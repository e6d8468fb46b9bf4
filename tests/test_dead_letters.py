"""The second way a partial is dead-lettered: nobody ever acks it (workers keep dying), the server stops after
`max_deliver` and sends its max-deliveries advisory, and one aggregator dead-letters it through the same
function as the workers (shared/dead_letter.py): DLQ with the reason, owner told, one counter."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import httpx
import nats
import pytest

from deploy.servers import Server
from shared import subjects
from shared.messages import Codec, Partial, PartialFailed, Transaction
from tests.stacks import Stack


@pytest.fixture
def stack(tmp_path: Path, isolated_nats: Server, redis_url: str, postgres_dsn: str, model_dir: Path):  # type: ignore[no-untyped-def]
    s = Stack(
        tmp_path / "stack",
        isolated_nats.extra["url"],
        redis_url,
        postgres_dsn,
        model_dir,
        env={"FRAUDMESH_MAX_DELIVER": "2", "FRAUDMESH_ACK_WAIT_S": "0.5"},
    )
    yield s
    s.stop()


OWNER = subjects.results_subject("test-owner")
"""Where the partial's owner (an aggregator) waits for its results: the only subjects an aggregator may notify."""


def scrape(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text


async def test_a_partial_never_acked_is_dead_lettered_by_an_aggregator_once(stack: Stack) -> None:
    (aggregator,) = stack.start("aggregator")  # no inference worker: the test plays one that always dies
    end = time.monotonic() + 30
    async with httpx.AsyncClient(timeout=2) as http:
        while True:  # ready: connected, streams and the inference consumer declared, subscribed
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"http://127.0.0.1:{aggregator.metrics_port}/readyz")).status_code == 200:
                    break
            assert time.monotonic() < end, "the aggregator never became ready"
            await asyncio.sleep(0.1)
    codec = Codec()
    nc = await nats.connect(stack.state.nats_url)
    try:
        owner = await nc.subscribe(OWNER)
        js = nc.jetstream()
        partial = Partial(
            request_id="never-acked",
            index=3,
            count=4,
            transactions=[Transaction(card_id="c1", transaction_amount=5.0)],
        )
        await js.publish(
            subjects.PARTIALS_SUBJECT,
            codec.encode(partial),
            headers={subjects.HDR_MSG_ID: "never-acked:3", subjects.HDR_REPLY_TO: OWNER},
        )
        psub = await js.pull_subscribe_bind(durable=subjects.INFERENCE_CONSUMER, stream=subjects.PARTIALS_STREAM)
        deliveries = 0
        end = time.monotonic() + 10
        while deliveries < 2:  # take it twice and never ack: a worker that crashes every time
            assert time.monotonic() < end, f"only {deliveries} deliveries"
            with contextlib.suppress(TimeoutError):
                deliveries += len(await psub.fetch(1, timeout=1.0))

        # the server gives up when it would deliver a third time: keep a (never answered) pull waiting, as idle
        # workers always do
        async def keep_pulling() -> None:
            while True:
                with contextlib.suppress(TimeoutError):
                    assert not await psub.fetch(1, timeout=1.0), "delivered more than max_deliver times"

        puller = asyncio.create_task(keep_pulling())
        try:
            failed = codec.decode((await owner.next_msg(timeout=10)).data, PartialFailed)
        finally:
            puller.cancel()
        assert (failed.request_id, failed.index) == ("never-acked", 3)
        assert failed.reason == "not acked after 2 deliveries (workers crashed or timed out)"

        dlq = await js.stream_info(subjects.DLQ_STREAM)
        assert dlq.state.messages == 1
        dead = await js.get_last_msg(subjects.DLQ_STREAM, subjects.DLQ_SUBJECT)
        assert codec.decode(dead.data or b"", Partial) == partial
        assert dead.headers is not None
        assert dead.headers[subjects.HDR_DLQ_REASON] == failed.reason
        assert subjects.HDR_MSG_ID not in dead.headers
        assert (await js.stream_info(subjects.PARTIALS_STREAM)).state.messages == 0, "left in the work queue"
    finally:
        await nc.close()
    end = time.monotonic() + 5
    line = 'fraudmesh_dead_lettered_total{consumer="inference",reason="max_deliveries",service="aggregator"} 1.0'
    while line not in scrape(aggregator.metrics_port):
        assert time.monotonic() < end, scrape(aggregator.metrics_port)
        await asyncio.sleep(0.1)
    assert 'handler="max_deliveries",outcome="ok",service="aggregator"} 1.0' in scrape(aggregator.metrics_port)
