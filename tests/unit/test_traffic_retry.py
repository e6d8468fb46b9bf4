"""`fraudmesh traffic` as an acquirer's client: a 503 with Retry-After (admission control shedding) is sent again
after the wait with the same transaction id, and counts as an error only when its last attempt fails. The gateway's
side of this (refusing with 503 + Retry-After) is tested against real servers in tests/test_faults.py; this is the
client's policy, against scripted answers."""

from __future__ import annotations

import json

import httpx

from deploy import traffic
from deploy.traffic import Tally, send

SCORED = {"risk_level": "low", "recommended_action": "approve"}


def scripted(statuses: list[int], seen: list[str]) -> httpx.AsyncClient:
    answers = iter(statuses)

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content)["transaction_id"])
        status = next(answers)
        if status == 503:
            return httpx.Response(503, headers={"Retry-After": "0"}, json={"code": "overloaded"})
        return httpx.Response(status, json=SCORED if status == 200 else {"code": "bad"})

    return httpx.AsyncClient(transport=httpx.MockTransport(answer), base_url="http://gateway")


async def test_a_shed_transaction_is_sent_again_with_its_id_and_scored() -> None:
    seen: list[str] = []
    tally = Tally()
    async with scripted([503, 503, 200], seen) as client:
        await send(client, {"card_id": "c1", "transaction_amount": 5.0}, tally, None)
    assert (tally.scored, tally.retried, tally.errors) == (1, 2, 0)
    assert len(seen) == 3 and len(set(seen)) == 1


async def test_a_transaction_still_refused_after_its_retries_is_an_error() -> None:
    seen: list[str] = []
    tally = Tally()
    async with scripted([503] * (traffic.RETRIES + 1), seen) as client:
        await send(client, {"card_id": "c1", "transaction_amount": 5.0}, tally, None)
    assert (tally.scored, tally.retried, tally.errors) == (0, traffic.RETRIES, 1)
    assert tally.last_error == "HTTP 503"


async def test_other_failures_are_not_retried() -> None:
    seen: list[str] = []
    tally = Tally()
    async with scripted([400], seen) as client:
        await send(client, {"card_id": "c1", "transaction_amount": 5.0}, tally, None)
    assert (tally.scored, tally.retried, tally.errors, len(seen)) == (0, 0, 1, 1)
