"""What the gateway puts on NATS, seen by a real NATS subscriber standing in for the aggregator: `?ingest=` is passed
through, edge-only Structs travel as plain transactions, and the bodies stay readable by older decoders."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
import nats
import pytest
from nats.aio.msg import Msg

from deploy.servers import Server
from shared import subjects
from shared.messages import ErrorReply, ScoreReply, ScoreRequest, TransactionScore
from tests.stacks import Stack

TX = {"card_id": "card_1", "transaction_amount": 12.5, "transaction_id": "tx/1 + é"}


class _OldScoreRequest(msgspec.Struct, tag="score", tag_field="type", kw_only=True):
    """ScoreRequest as an aggregator built before `ingest` existed decodes it."""

    transactions: list[dict[str, object]]
    request_id: str = ""


@pytest.fixture
async def gateway_and_requests(
    tmp_path: Path, isolated_nats: Server, redis_url: str, postgres_dsn: str, model_dir: Path
) -> AsyncIterator[tuple[Stack, list[bytes]]]:
    """A gateway on its own nats-server, with a test subscriber answering `fraud.score` (queue `aggregator`)."""
    url = isolated_nats.extra["url"]
    nc = await nats.connect(url)
    seen: list[bytes] = []

    async def answer(msg: Msg) -> None:
        seen.append(msg.data)
        req = msgspec.msgpack.decode(msg.data, type=ScoreRequest)
        score = TransactionScore(
            transaction_id=req.transactions[0].transaction_id or "",
            fraud_score=0.1,
            risk_level="low",
            recommended_action="approve",
            confidence=0.9,
            model_version="test",
        )
        reply = ScoreReply(request_id=req.request_id, complete=True, results=[score] * len(req.transactions))
        await msg.respond(msgspec.msgpack.encode(reply))

    await nc.subscribe(subjects.SCORE, queue="aggregator", cb=answer)
    stack = Stack(tmp_path / "stack", url, redis_url, postgres_dsn, model_dir)
    stack.start("gateway")
    try:
        stack.wait_listening()
        yield stack, seen
    finally:
        stack.stop()
        await nc.drain()


async def _post(stack: Stack, path: str, body: object, **params: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=10) as client:
        for _ in range(50):  # the gateway connects to NATS just after it starts listening
            r = await client.post(path, json=body, params=params)
            if r.status_code != 503:
                return r
            await asyncio.sleep(0.1)
        return r


async def test_ingest_query_parameter_reaches_the_score_request(
    gateway_and_requests: tuple[Stack, list[bytes]],
) -> None:
    stack, seen = gateway_and_requests
    r = await _post(stack, "/score/fraud", TX)
    assert r.status_code == 200, r.text
    r = await _post(stack, "/score/fraud", TX, ingest="false")
    assert r.status_code == 200, r.text
    r = await _post(stack, "/predict", {"transactions": [TX, TX]}, ingest="false")
    assert r.status_code == 200, r.text
    decoded = [msgspec.msgpack.decode(body, type=ScoreRequest) for body in seen]
    assert [d.ingest for d in decoded] == [True, False, False]
    assert decoded[0].transactions[0].transaction_id == "tx/1 + é"
    assert type(decoded[0].transactions[0]).__name__ == "Transaction"


async def test_score_requests_stay_readable_by_an_older_decoder(
    gateway_and_requests: tuple[Stack, list[bytes]],
) -> None:
    stack, seen = gateway_and_requests
    r = await _post(stack, "/predict", {"transactions": [TX]}, ingest="false")
    assert r.status_code == 200, r.text
    old = msgspec.msgpack.decode(seen[-1], type=_OldScoreRequest)  # unknown `ingest` ignored: schema rule 3
    assert old.transactions == [TX]
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(old), type=ScoreRequest).ingest is True  # rule 1


def test_help_prints_usage_and_exits_0() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: python -m gateway") and "docs/settings.md" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "--port", "1"], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 2 and "unrecognized arguments: --port" in out.stderr


async def test_request_id_that_could_poison_a_partial_is_refused_on_nats_too(stack: Stack) -> None:
    nc = await nats.connect(stack.state.nats_url)
    try:
        body = {"type": "score", "transactions": [TX], "request_id": "a b/c+d"}
        msg = await nc.request(subjects.SCORE, msgspec.msgpack.encode(body), timeout=10)
        reply = msgspec.msgpack.decode(msg.data, type=ErrorReply)
        assert reply.code == "bad_request"
        assert [e.path for e in reply.errors] == ["$.request_id"]
        body["request_id"] = "plain-id.1"
        msg = await nc.request(subjects.SCORE, msgspec.msgpack.encode(body), timeout=10)
        ok = msgspec.msgpack.decode(msg.data, type=ScoreReply)
        assert ok.complete and ok.results[0] is not None and ok.results[0].transaction_id == "tx/1 + é"
    finally:
        await nc.drain()
