"""Failure paths with real processes: a worker SIGKILLed mid-batch, no workers at all, slow workers, a poison
partial, a graceful SIGTERM. Each test runs its own nats-server so its streams are its own."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import nats
import pytest

from deploy.demo import sample_batch
from deploy.servers import Server
from deploy.stack import alive
from shared import subjects
from shared.messages import (
    Codec,
    Partial,
    PartialFailed,
    PartialOutcome,
    PartialResult,
    ScoreReply,
    ScoreRequest,
    Transaction,
)
from tests.stacks import Stack, metric


@pytest.fixture
def make_stack(tmp_path: Path, isolated_nats: Server, redis_url: str, postgres_dsn: str, model_dir: Path):  # type: ignore[no-untyped-def]
    stacks: list[Stack] = []

    def make(env: dict[str, str] | None = None) -> Stack:
        s = Stack(
            tmp_path / f"stack{len(stacks)}",
            isolated_nats.extra["url"],
            redis_url,
            postgres_dsn,
            model_dir,
            env=env,
        )
        stacks.append(s)
        return s

    yield make
    for s in stacks:
        s.stop()


async def score_over_nats(url: str, txs: list[Transaction], timeout_s: float) -> ScoreReply:
    codec = Codec()
    nc = await nats.connect(url)
    try:
        headers = {subjects.HDR_DEADLINE: str(int((time.time() + timeout_s) * 1000))}
        msg = await nc.request(
            subjects.SCORE,
            codec.encode(ScoreRequest(transactions=txs, request_id="kill-test")),
            timeout=timeout_s + 1,
            headers=headers,
        )
        return codec.decode(msg.data, ScoreReply)
    finally:
        await nc.close()


async def test_sigkilled_worker_partials_are_redelivered_and_scored_exactly_once(make_stack) -> None:  # type: ignore[no-untyped-def]
    s: Stack = make_stack(
        {
            "FRAUDMESH_ACK_WAIT_S": "2",
            "FRAUDMESH_CHAOS_INFERENCE_DELAY_MS": "40",
            "FRAUDMESH_INFERENCE_CONCURRENCY": "2",
        }
    )
    s.start("aggregator")
    victim, _survivor = s.start("inference", 2)
    s.start("gateway")
    s.wait_ready()
    s.wait_health("inference", 2)
    txs = [
        Transaction(card_id=f"card_{i % 997}", transaction_amount=float(i % 500) + 0.5, transaction_id=f"tx-{i:05d}")
        for i in range(10_000)
    ]
    task = asyncio.create_task(score_over_nats(s.state.nats_url, txs, timeout_s=60))
    # wait until the victim is mid-batch: it has scored one partial and (concurrency 2, 40 ms each) holds more
    end = time.monotonic() + 20
    while metric(victim.metrics_port, 'fraudmesh_inference_partials_total{outcome="scored"}') < 1:
        assert time.monotonic() < end, "victim never received a partial"
        await asyncio.sleep(0.005)
    s.kill(victim, signal.SIGKILL)
    assert not alive(victim.pid)
    reply = await task
    assert reply.complete, reply.missing_transaction_ids[:10]
    ids = [r.transaction_id for r in reply.results if r is not None]
    assert ids == [t.transaction_id for t in txs]  # every transaction once, in order
    assert len(reply.partials) == 50
    redelivered = [p for p in reply.partials if p.deliveries > 1]
    assert redelivered, "no partial was redelivered: the kill did not hit an unacked partial"
    assert all(p.worker_id != victim.name + "-0" or p.deliveries == 1 for p in reply.partials)
    assert {p.worker_id for p in redelivered} == {"inference-1"}
    # the work queue is empty: every partial was acked exactly when its result was published
    nc = await nats.connect(s.state.nats_url)
    try:
        info = await nc.jetstream().stream_info(subjects.PARTIALS_STREAM)
        assert info.state.messages == 0
    finally:
        await nc.close()


def test_no_inference_worker_gets_504_within_the_deadline(make_stack) -> None:  # type: ignore[no-untyped-def]
    s: Stack = make_stack()
    s.start("aggregator")
    s.start("gateway")
    s.wait_listening()
    s.wait_health("aggregator", 1)
    t0 = time.monotonic()
    r = httpx.post(f"{s.gateway_url}/predict?timeout_ms=1500", json={"transactions": sample_batch(1000)}, timeout=10)
    elapsed = time.monotonic() - t0
    assert r.status_code == 504, r.text
    doc = r.json()
    assert doc["code"] == "deadline_exceeded"
    assert "inference workers" in doc["message"]
    assert len(doc["missing_transaction_ids"]) == 1000
    assert elapsed < 1.5 + 1.0, f"took {elapsed:.2f}s for a 1.5s deadline"
    assert httpx.get(f"{s.gateway_url}/ready", timeout=5).status_code == 503


def test_no_aggregator_gets_503(make_stack) -> None:  # type: ignore[no-untyped-def]
    s: Stack = make_stack()
    s.start("gateway")
    s.wait_listening()
    r = httpx.post(f"{s.gateway_url}/score/fraud", json={"card_id": "c", "transaction_amount": 1.0}, timeout=10)
    assert r.status_code == 503, r.text
    assert r.json()["code"] == "unavailable"
    assert "aggregator" in r.json()["message"]
    health = httpx.get(f"{s.gateway_url}/health", timeout=5)
    assert health.status_code == 503
    assert health.json()["services"]["aggregator"]["status"] == "down"


def test_slow_workers_give_an_incomplete_reply_naming_the_missing_transactions(make_stack) -> None:  # type: ignore[no-untyped-def]
    s: Stack = make_stack({"FRAUDMESH_CHAOS_INFERENCE_DELAY_MS": "400", "FRAUDMESH_INFERENCE_CONCURRENCY": "1"})
    s.start("aggregator")
    s.start("inference", 1)
    s.start("gateway")
    s.wait_ready()
    batch = sample_batch(1000)
    r = httpx.post(f"{s.gateway_url}/predict?timeout_ms=1000", json={"transactions": batch}, timeout=10)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["complete"] is False
    scored = [p for p in doc["partials"] if p["scored"] is not False and p.get("worker_id")]
    assert 1 <= len(scored) < 5
    expected_missing = [t["transaction_id"] for t, res in zip(batch, doc["results"], strict=True) if res is None]
    assert doc["missing_transaction_ids"] == expected_missing
    assert len(expected_missing) == 200 * (5 - len(scored))


async def test_poison_partial_is_dead_lettered(make_stack) -> None:  # type: ignore[no-untyped-def]
    s: Stack = make_stack({"FRAUDMESH_MAX_DELIVER": "2"})
    s.start("aggregator")
    s.start("inference", 1)
    s.start("gateway")
    s.wait_ready()
    nc = await nats.connect(s.state.nats_url)
    try:
        js = nc.jetstream()
        await js.publish(
            subjects.PARTIALS_SUBJECT,
            b"\xc1 this is not a partial",
            headers={subjects.HDR_MSG_ID: "poison:0"},
        )
        end = time.monotonic() + 15
        while True:
            info = await js.stream_info(subjects.DLQ_STREAM)
            if info.state.messages >= 1:
                break
            assert time.monotonic() < end, "poison partial never reached the dead-letter stream"
            await asyncio.sleep(0.1)
        dead = await js.get_last_msg(subjects.DLQ_STREAM, subjects.DLQ_SUBJECT)
        assert dead.data == b"\xc1 this is not a partial"
        assert dead.headers and "Fraudmesh-Dead-Letter-Reason" in dead.headers
        assert (await js.stream_info(subjects.PARTIALS_STREAM)).state.messages == 0
    finally:
        await nc.close()
    # and the service keeps scoring
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.post(f"{s.gateway_url}/score/fraud", json={"card_id": "c", "transaction_amount": 1.0})
    assert r.status_code == 200


async def test_a_partial_carries_its_family_and_one_of_another_family_is_dead_lettered(make_stack) -> None:  # type: ignore[no-untyped-def]
    """Partials are fraud's: the result of one says `family: fraud`; a partial naming another family is never scored
    as transactions: it is dead-lettered at once and its owner told why (a `PartialFailed` on its inbox)."""
    s: Stack = make_stack({})
    for name in ("aggregator", "feature", "inference", "gateway"):
        s.start(name)
    s.wait_ready()
    codec = Codec()
    nc = await nats.connect(s.state.nats_url)
    try:
        js = nc.jetstream()
        inbox = f"{subjects.RESULTS_PREFIX}.family-test"  # an aggregator's inbox: workers may publish there
        sub = await nc.subscribe(inbox)
        txs = [Transaction(card_id="card_fam", transaction_amount=12.0)]
        for index, family in ((0, "fraud"), (1, "personalization")):
            body = Partial(request_id="fam", index=index, count=2, transactions=txs, family=family)
            headers = {subjects.HDR_MSG_ID: f"fam:{index}", subjects.HDR_REPLY_TO: inbox}
            await js.publish(subjects.PARTIALS_SUBJECT, codec.encode(body), headers=headers)
        outcomes = {}
        for _ in range(2):
            msg = await sub.next_msg(timeout=15)
            outcome = codec.decoder(PartialOutcome).decode(msg.data)
            outcomes[outcome.index] = outcome
        scored, refused = outcomes[0], outcomes[1]
        assert isinstance(scored, PartialResult) and scored.family == "fraud" and len(scored.scores) == 1
        assert isinstance(refused, PartialFailed) and "'personalization'" in refused.reason, refused
        dead = await js.get_last_msg(subjects.DLQ_STREAM, subjects.DLQ_SUBJECT)
        assert codec.decode(dead.data, Partial).family == "personalization"
    finally:
        await nc.close()


def test_sigterm_drains_in_flight_partials_without_redelivery(make_stack) -> None:  # type: ignore[no-untyped-def]
    s: Stack = make_stack({"FRAUDMESH_CHAOS_INFERENCE_DELAY_MS": "150", "FRAUDMESH_ACK_WAIT_S": "30"})
    s.start("aggregator")
    leaving, _staying = s.start("inference", 2)
    s.start("gateway")
    s.wait_ready()
    s.wait_health("inference", 2)

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(timeout=20) as client:
            task = asyncio.create_task(
                client.post(f"{s.gateway_url}/predict?timeout_ms=15000", json={"transactions": sample_batch(2000)})
            )
            end = time.monotonic() + 10
            while metric(leaving.metrics_port, "fraudmesh_partial_queue_seconds_count") < 1:
                assert time.monotonic() < end
                await asyncio.sleep(0.01)
            s.kill(leaving, signal.SIGTERM)
            return await task

    t0 = time.monotonic()
    r = asyncio.run(go())
    assert r.status_code == 200 and r.json()["complete"] is True
    # nothing waited for ack_wait (30 s): the leaving worker finished what it held before it exited
    assert time.monotonic() - t0 < 15
    assert all(p["deliveries"] == 1 for p in r.json()["partials"])
    assert "stopped" in s.log_of(leaving)
