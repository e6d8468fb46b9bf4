"""Every class of bad input gets a 4xx with the path of each bad field, in the one error shape. Never a 500."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.stacks import Stack

GOOD = {
    "card_id": "card_1",
    "transaction_amount": 12.5,
    "merchant_id": "m_1",
    "mcc_code": "5411",
    "country_code": "US",
}


def post(stack: Stack, path: str, body: bytes | str, **params: object) -> httpx.Response:
    content = body.encode() if isinstance(body, str) else body
    return httpx.post(
        f"{stack.gateway_url}{path}",
        content=content,
        params=params,  # type: ignore[arg-type]
        headers={"Content-Type": "application/json"},
        timeout=10,
    )


def batch(*txs: object) -> str:
    return json.dumps({"transactions": list(txs)})


def paths(r: httpx.Response) -> list[str]:
    return [e["path"] for e in r.json()["errors"]]


def assert_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    doc = r.json()
    assert doc["type"] == "error" and doc["code"] == code
    assert doc["message"]
    assert doc["request_id"] == r.headers["x-request-id"]


@pytest.mark.parametrize(
    ("tx", "path", "fragment"),
    [
        ({"transaction_amount": 1.0}, "$.transactions[1].card_id", "missing required field"),
        ({"card_id": "c"}, "$.transactions[1].transaction_amount", "missing required field"),
        ({"card_id": 123, "transaction_amount": 1.0}, "$.transactions[1].card_id", "Expected `str`"),
        (
            {"card_id": "c", "transaction_amount": "12.5"},
            "$.transactions[1].transaction_amount",
            "Expected `float`",
        ),
        ({"card_id": "c", "transaction_amount": -0.01}, "$.transactions[1].transaction_amount", ">= 0"),
        (
            {"card_id": "c", "transaction_amount": 1.0, "mcc_code": "54"},
            "$.transactions[1].mcc_code",
            "matching regex",
        ),
        (
            {"card_id": "c", "transaction_amount": 1.0, "channel": "fax"},
            "$.transactions[1].channel",
            "Invalid enum",
        ),
        (
            {"card_id": "c", "transaction_amount": 1.0, "timestamp": "yesterday"},
            "$.transactions[1].timestamp",
            "Invalid RFC3339",
        ),
        ({"card_id": "", "transaction_amount": 1.0}, "$.transactions[1].card_id", "length >= 1"),
    ],
)
def test_bad_field_is_named_by_path(stack: Stack, tx: dict[str, object], path: str, fragment: str) -> None:
    r = post(stack, "/predict", batch(GOOD, tx))
    assert_error(r, 400, "bad_request")
    errs = r.json()["errors"]
    assert [e["path"] for e in errs] == [path]
    assert fragment in errs[0]["message"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_amounts_are_rejected(stack: Stack, literal: str) -> None:
    body = '{"transactions": [{"card_id": "c", "transaction_amount": LITERAL}]}'.replace("LITERAL", literal)
    r = post(stack, "/predict", body)
    assert_error(r, 400, "bad_request")
    assert paths(r) == ["$.transactions[0].transaction_amount"]


def test_every_bad_field_is_reported_not_just_the_first(stack: Stack) -> None:
    r = post(stack, "/predict", batch({"card_id": 1, "transaction_amount": -1}, GOOD, {"card_id": "x"}))
    assert_error(r, 400, "bad_request")
    assert paths(r) == [
        "$.transactions[0].card_id",
        "$.transactions[0].transaction_amount",
        "$.transactions[2].transaction_amount",
    ]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ('{"transactions": []}', "$.transactions"),
        ("{}", "$.transactions"),
        ('{"transactions": {"card_id": "c"}}', "$.transactions"),
        ('{"transactions": [42]}', "$.transactions[0]"),
        ("[1, 2]", "$"),
        ('{"transactions": [', "$"),
        ("", "$"),
        (
            '{"transactions": [{"card_id": "c", "transaction_amount": 1}], "partial_size": 0}',
            "$.partial_size",
        ),
    ],
)
def test_bad_batch_shapes(stack: Stack, body: str, path: str) -> None:
    r = post(stack, "/predict", body)
    assert_error(r, 400, "bad_request")
    assert paths(r) == [path]


def test_empty_batch_message_is_plain(stack: Stack) -> None:
    r = post(stack, "/predict", '{"transactions": []}')
    assert "empty" in r.json()["errors"][0]["message"]


def test_more_than_10000_transactions_gets_413(stack: Stack) -> None:
    r = post(stack, "/predict", batch(*([GOOD] * 10_001)))
    assert_error(r, 413, "payload_too_large")
    assert "10001" in r.json()["message"] and "10000" in r.json()["message"]


def test_exactly_10000_is_accepted(stack: Stack) -> None:
    r = post(stack, "/predict", batch(*([GOOD] * 10_000)), timeout_ms=30000)
    assert r.status_code == 200, r.text[:500]
    assert len(r.json()["results"]) == 10_000


def test_single_score_bad_input(stack: Stack) -> None:
    r = post(stack, "/score/fraud", json.dumps({"card_id": "c", "transaction_amount": "NaN"}))
    assert_error(r, 400, "bad_request")
    assert paths(r) == ["$.transaction_amount"]
    r = post(stack, "/score/fraud", '{"card_id": "c", "transaction_amount": NaN}')
    assert_error(r, 400, "bad_request")
    assert paths(r) == ["$.transaction_amount"]
    r = post(stack, "/score/fraud", "[]")
    assert_error(r, 400, "bad_request")


@pytest.mark.parametrize("value", ["abc", "0", "999999999"])
def test_bad_timeout_parameter(stack: Stack, value: str) -> None:
    r = post(stack, "/predict", batch(GOOD), timeout_ms=value)
    assert_error(r, 400, "bad_request")
    assert paths(r) == ["query.timeout_ms"]


def test_unknown_route_and_method_use_the_error_shape(stack: Stack) -> None:
    r = httpx.get(f"{stack.gateway_url}/nope", timeout=5)
    assert_error(r, 404, "not_found")
    r = httpx.get(f"{stack.gateway_url}/predict", timeout=5)
    assert r.status_code == 405
    assert r.json()["type"] == "error"


def test_fuzzed_bodies_never_cause_a_500(stack: Stack) -> None:
    import random

    rng = random.Random(5)
    atoms: list[object] = [None, True, -1, 0, 1.5, 1e308, "", "x" * 300, [], {}, "5411", "NaN"]
    fields = [
        "card_id",
        "transaction_amount",
        "merchant_id",
        "mcc_code",
        "country_code",
        "timestamp",
        "device_id",
        "ip_address",
        "currency",
        "channel",
        "transaction_id",
        "extra",
    ]
    for _ in range(60):
        tx = {f: rng.choice(atoms) for f in rng.sample(fields, rng.randint(0, len(fields)))}
        for path, body in (
            ("/predict", json.dumps({"transactions": [tx]})),
            ("/score/fraud", json.dumps(tx)),
        ):
            r = post(stack, path, body)
            assert r.status_code < 500, (body, r.text)
            assert r.status_code in (200, 400), (body, r.text)
