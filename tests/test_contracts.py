"""Unit checks of the contracts: settings, wire messages, log redaction. No servers needed."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import msgspec
import pytest

from shared.logs import JsonFormatter, redact
from shared.messages import Codec, ErrorReply, PartialOutcome, PartialResult, ScoreReply, ScoreRequest, Transaction
from shared.settings import SettingsError, load_settings, settings_table

ROOT = Path(__file__).resolve().parent.parent


def test_settings_docs_are_in_step_with_the_code() -> None:
    doc = (ROOT / "docs" / "settings.md").read_text()
    assert settings_table() in doc, "docs/settings.md is stale: regenerate it with `fraudmesh settings`"


def test_settings_are_typed_from_the_environment() -> None:
    s = load_settings({"FRAUDMESH_PARTIAL_SIZE": "50", "FRAUDMESH_ACK_WAIT_S": "2.5", "PATH": "/bin"})
    assert s.partial_size == 50 and s.ack_wait_s == 2.5


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"FRAUDMESH_PARTIAL_SIZE": "lots"}, "FRAUDMESH_PARTIAL_SIZE='lots'"),
        ({"FRAUDMESH_PARTIAL_SIZE": "0"}, ">= 1"),
        ({"FRAUDMESH_GRAPH_STORE": "mysql"}, "FRAUDMESH_GRAPH_STORE"),
        ({"FRAUDMESH_PARTIAL_SIZ": "5"}, "Unknown setting(s) FRAUDMESH_PARTIAL_SIZ"),
    ],
)
def test_bad_settings_say_which_variable_and_why(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(env)
    assert fragment in str(err.value)


def test_messages_round_trip_as_msgpack() -> None:
    codec = Codec()
    req = ScoreRequest(
        transactions=[
            Transaction(
                card_id="c1", transaction_amount=12.5, timestamp=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
            )
        ],
        request_id="r1",
    )
    assert codec.decode(codec.encode(req), ScoreRequest) == req


def test_publishers_may_omit_the_type_tag_and_optional_fields() -> None:
    raw = msgspec.msgpack.encode({"transactions": [{"card_id": "c", "transaction_amount": 1}]})
    req = Codec().decode(raw, ScoreRequest)
    assert req.transactions[0].merchant_id is None and req.partial_size is None


def test_unknown_fields_are_ignored_so_old_consumers_survive_new_fields() -> None:
    raw = msgspec.msgpack.encode({"transactions": [{"card_id": "c", "transaction_amount": 1, "new_field": [1, 2]}]})
    assert Codec().decode(raw, ScoreRequest).transactions[0].card_id == "c"


def test_replies_are_a_tagged_union() -> None:
    codec = Codec()
    err = codec.encode(ErrorReply(code="bad_request", message="m"))
    ok = codec.encode(ScoreReply(request_id="r", complete=True, results=[]))
    assert isinstance(codec.decode(err, ScoreReply | ErrorReply), ErrorReply)  # type: ignore[arg-type]
    assert isinstance(codec.decode(ok, ScoreReply | ErrorReply), ScoreReply)  # type: ignore[arg-type]
    res = codec.encode(PartialResult(request_id="r", index=0, scores=[], worker_id="w", model_version="v"))
    assert isinstance(codec.decode(res, PartialOutcome), PartialResult)  # type: ignore[arg-type]


@pytest.mark.parametrize("amount", [float("nan"), float("inf"), -1.0, 1e13])
def test_amount_must_be_finite_non_negative_and_bounded(amount: float) -> None:
    raw = msgspec.msgpack.encode({"transactions": [{"card_id": "c", "transaction_amount": amount}]})
    with pytest.raises(msgspec.ValidationError, match=r"transaction_amount"):
        Codec().decode(raw, ScoreRequest)


def test_card_numbers_never_reach_a_log_line() -> None:
    assert redact("pan 4111 1111 1111 1111 end") == "pan [REDACTED-PAN] end"
    assert redact("4111-1111-1111-1111") == "[REDACTED-PAN]"
    assert redact("version bootstrap-20261122164049") == "version bootstrap-20261122164049"  # not Luhn-valid
    fmt = JsonFormatter("svc", "i1")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "card %s declined", ("5555555555554444",), None)
    record.fields = {"card": "5555555555554444"}
    line = fmt.format(record)
    assert "5555555555554444" not in line and line.count("[REDACTED-PAN]") == 2


def test_log_lines_carry_request_and_caller_trace_ids() -> None:
    import json

    from shared.logs import request_id_var, trace_id_of, trace_id_var

    tid = "4bf92f3577b34da6a3ce929d0e0e4736"
    r, t = request_id_var.set("req-1"), trace_id_var.set(trace_id_of(f"00-{tid}-00f067aa0ba902b7-01"))
    try:
        line = JsonFormatter("svc", "i1").format(logging.LogRecord("x", logging.INFO, __file__, 1, "event", (), None))
    finally:
        request_id_var.reset(r)
        trace_id_var.reset(t)
    doc = json.loads(line)
    assert doc["request_id"] == "req-1" and doc["trace_id"] == tid and doc["event"] == "event"
    assert trace_id_of("garbage") == ""
