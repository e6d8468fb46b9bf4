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


# ------------------------------------------------------------------------------------------ strict edges
def errors_of(r: httpx.Response) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = r.json()["errors"]
    return errors


@pytest.mark.parametrize(
    ("field", "path", "hint"),
    [
        ("devce_id", "$.transactions[0].devce_id", "Did you mean `device_id`?"),
        ("merchantId", "$.transactions[0].merchantId", "Did you mean `merchant_id`?"),
        ("zzz", "$.transactions[0].zzz", "Known fields: card_id, transaction_amount"),
    ],
)
def test_unknown_field_is_refused_and_named(stack: Stack, field: str, path: str, hint: str) -> None:
    r = post(stack, "/predict", batch({**GOOD, field: "d_1"}))
    assert_error(r, 400, "bad_request")
    (err,) = errors_of(r)
    assert err["path"] == path
    assert f"Unknown field '{field}'." in err["message"] and hint in err["message"]


def test_unknown_field_on_single_score_and_top_level(stack: Stack) -> None:
    r = post(stack, "/score/fraud", json.dumps({**GOOD, "devce_id": "d"}))
    assert_error(r, 400, "bad_request")
    assert paths(r) == ["$.devce_id"]
    r = post(stack, "/predict", json.dumps({"transactions": [GOOD], "partial_sise": 10}))
    assert_error(r, 400, "bad_request")
    assert paths(r) == ["$.partial_sise"]
    assert "Did you mean `partial_size`?" in errors_of(r)[0]["message"]


@pytest.mark.parametrize(
    ("path", "body", "where"),
    [
        (
            "/predict",
            '{"transactions": [{"card_id": "a", "transaction_amount": 1, "card_id": "b"}]}',
            "$.transactions[0].card_id",
        ),
        (
            "/predict",
            '{"transactions": [{"card_id": "a", "transaction_amount": 1}], "transactions": []}',
            "$.transactions",
        ),
        (
            "/score/fraud",
            '{"card_id": "a", "transaction_amount": 1, "transaction_amount": 9e9}',
            "$.transaction_amount",
        ),
    ],
)
def test_duplicate_keys_are_refused(stack: Stack, path: str, body: str, where: str) -> None:
    r = post(stack, path, body)
    assert_error(r, 400, "bad_request")
    assert where in paths(r)
    assert any("Duplicate key" in e["message"] for e in errors_of(r))


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_that_is_not_json_gets_415(stack: Stack, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    for path, body in (("/predict", batch(GOOD)), ("/score/fraud", json.dumps(GOOD))):
        r = httpx.post(f"{stack.gateway_url}{path}", content=body.encode(), headers=headers, timeout=10)
        assert r.status_code == 415, r.text
        doc = r.json()
        assert doc["type"] == "error" and "Content-Type: application/json" in doc["message"]


def test_json_with_a_charset_is_json(stack: Stack) -> None:
    r = httpx.post(
        f"{stack.gateway_url}/score/fraud",
        content=json.dumps(GOOD).encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
        timeout=10,
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("depth", [40, 1_000, 100_000])
def test_deep_nesting_is_a_400_never_a_500(stack: Stack, depth: int) -> None:
    for path, body in (
        ("/predict", '{"transactions": [' + "[" * depth + "]" * depth + "]}"),
        ("/score/fraud", '{"card_id": ' + '{"a": ' * depth + "1" + "}" * depth + "}"),
        ("/predict", "[" * depth + "]" * depth),
    ):
        r = post(stack, path, body)
        assert_error(r, 400, "bad_request")
        assert paths(r) == ["$"]
        assert "nested more than 32 levels deep" in errors_of(r)[0]["message"]


@pytest.mark.parametrize("rid", ["a/b", "a+b", "a b", "x" * 65, "é", ""])
def test_unusable_request_id_header_is_refused(stack: Stack, rid: str) -> None:
    r = httpx.post(
        f"{stack.gateway_url}/score/fraud",
        content=json.dumps(GOOD).encode(),
        headers={"Content-Type": "application/json", "X-Request-Id": rid.encode()},
        timeout=10,
    )
    assert_error(r, 400, "bad_request")
    (err,) = errors_of(r)
    assert err["path"] == "header.X-Request-Id"
    assert "1-64 characters from letters, digits and _ . : -" in err["message"]
    assert r.json()["request_id"] != rid and len(r.json()["request_id"]) == 32  # a generated one


def test_plain_request_id_header_is_used(stack: Stack) -> None:
    r = httpx.post(
        f"{stack.gateway_url}/score/fraud",
        content=json.dumps(GOOD).encode(),
        headers={"Content-Type": "application/json", "X-Request-Id": "client:req-1.A_b"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert r.json()["request_id"] == "client:req-1.A_b" == r.headers["x-request-id"]
    assert r.json()["transaction_id"] == "client:req-1.A_b-0"


def test_partial_size_is_bounded_by_the_number_of_partials(stack: Stack) -> None:
    body = json.dumps({"transactions": [GOOD] * 250, "partial_size": 2})
    r = post(stack, "/predict", body)
    assert_error(r, 400, "bad_request")
    (err,) = errors_of(r)
    assert err["path"] == "$.partial_size"
    assert "125 partials; the limit is 100" in err["message"] and "partial_size >= 3" in err["message"]
    r = post(stack, "/predict", json.dumps({"transactions": [GOOD] * 250, "partial_size": 3}))
    assert r.status_code == 200, r.text
    assert len(r.json()["partials"]) == 84


def test_error_list_is_bounded_with_a_count(stack: Stack) -> None:
    r = post(stack, "/predict", batch(*([{"card_id": 1, "transaction_amount": 1}] * 300)))
    assert_error(r, 400, "bad_request")
    doc = r.json()
    assert len(doc["errors"]) == 100 and doc["error_count"] == 300
    assert "300 problems, the first 100 listed" in doc["message"]
    assert doc["errors"][99]["path"] == "$.transactions[99].card_id"


def test_hostile_body_buys_bounded_work(stack: Stack) -> None:
    tx = {f"unknown_{i}": 1 for i in range(50)}
    r = post(stack, "/predict", batch(*([tx] * 5_000)))
    assert_error(r, 400, "bad_request")
    doc = r.json()
    assert len(doc["errors"]) == 100 and doc["error_count"] == 1000
    assert "at least 1000 problems, the first 100 listed" in doc["message"]


def test_echoed_values_are_truncated(stack: Stack) -> None:
    long_name = "k" * 10_000
    r = post(stack, "/score/fraud", json.dumps({**GOOD, long_name: 1}))
    assert_error(r, 400, "bad_request")
    (err,) = errors_of(r)
    assert len(err["message"]) < 300 and len(err["path"]) < 60
    assert "(10002 characters)" in err["message"]
    r = httpx.get(
        f"{stack.gateway_url}/features", params={"entity_type": "x" * 5000, "entity_id": "y" * 5000}, timeout=10
    )
    assert_error(r, 400, "bad_request")
    assert len(r.text) < 1000


def test_413_is_decided_before_the_items_are_validated(stack: Stack) -> None:
    r = post(stack, "/predict", batch(*([{"card_id": 1}] * 10_001)))
    assert_error(r, 413, "payload_too_large")
    assert r.json()["errors"] == []


@pytest.mark.parametrize("tx_id", ["tx/1 + 2", "paiement n° 42 — café", "注文-١٢٣", "a" * 128, "  spaced  "])
def test_transaction_ids_are_opaque_printable_strings(stack: Stack, tx_id: str) -> None:
    r = post(stack, "/score/fraud", json.dumps({**GOOD, "transaction_id": tx_id}))
    assert r.status_code == 200, r.text
    assert r.json()["transaction_id"] == tx_id
    r = post(stack, "/predict", batch({**GOOD, "transaction_id": tx_id}, GOOD))
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["transaction_id"] == tx_id


@pytest.mark.parametrize(
    ("tx_id", "fragment"),
    [
        ("a" * 129, "length <= 128"),
        ("tab\there", "matching regex"),
        ("bell\u0007", "matching regex"),
        ("zero\u200bwidth", "Must be printable"),
        ("nbsp\u00a0", "Must be printable"),
    ],
)
def test_unprintable_or_long_transaction_ids_are_refused(stack: Stack, tx_id: str, fragment: str) -> None:
    r = post(stack, "/predict", batch(GOOD, {**GOOD, "transaction_id": tx_id}))
    assert_error(r, 400, "bad_request")
    (err,) = errors_of(r)
    assert err["path"] == "$.transactions[1].transaction_id" and fragment in err["message"]


@pytest.mark.parametrize("pan", ["4111111111111111", "5500005555555559", "4222222222222", "6011000990139424"])
def test_card_number_as_card_id_is_refused(stack: Stack, pan: str) -> None:
    r = post(stack, "/score/fraud", json.dumps({**GOOD, "card_id": pan}))
    assert_error(r, 400, "bad_request")
    (err,) = errors_of(r)
    assert err["path"] == "$.card_id"
    assert "card number (PAN): send a card token" in err["message"] and pan not in r.text
    r = post(stack, "/predict", batch(GOOD, {**GOOD, "card_id": pan}))
    assert_error(r, 400, "bad_request")
    assert paths(r) == ["$.transactions[1].card_id"]
    r = httpx.get(f"{stack.gateway_url}/features", params={"entity_type": "card", "entity_id": pan}, timeout=10)
    assert_error(r, 400, "bad_request")
    assert paths(r) == ["query.entity_id"] and pan not in r.text


@pytest.mark.parametrize("card_id", ["4111111111111112", "411111111111", "card_4111111111111111"])
def test_digits_that_are_not_a_card_number_are_accepted(stack: Stack, card_id: str) -> None:
    r = post(stack, "/score/fraud", json.dumps({**GOOD, "card_id": card_id}))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("value", ["maybe", "2"])
def test_bad_ingest_parameter(stack: Stack, value: str) -> None:
    r = post(stack, "/score/fraud", json.dumps(GOOD), ingest=value)
    assert_error(r, 400, "bad_request")
    assert paths(r) == ["query.ingest"]
