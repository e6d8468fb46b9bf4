"""The gateway's log file holds the project's JSON lines, with request and trace ids, and card numbers masked."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from tests.stacks import Stack

PAN = "4111111111111111"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def gateway_log(stack: Stack) -> Path:
    (proc,) = [p for p in stack.procs if p.name == "gateway"]
    return Path(proc.log)


def test_gateway_log_lines_are_json_with_ids_and_masked_card_numbers(stack: Stack) -> None:
    r = httpx.get(
        f"{stack.gateway_url}/features",
        params={"entity_type": "card", "entity_id": PAN},
        headers={"X-Request-Id": "log-test-1", "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"},
        timeout=10,
    )
    assert r.status_code == 400, r.text
    path = gateway_log(stack)
    found: list[dict[str, object]] = []
    for _ in range(50):  # the line is written before the response is sent; the file may lag a flush behind
        lines = path.read_text(errors="replace").splitlines()
        found = [d for d in map(json.loads, lines) if d.get("request_id") == "log-test-1"]
        if found:
            break
        time.sleep(0.1)
    assert all(line.startswith("{") for line in lines), [x for x in lines if not x.startswith("{")][:3]
    (line,) = found
    assert line["service"] == "gateway" and line["level"] == "info" and line["event"] == "request refused"
    assert line["trace_id"] == TRACE_ID
    assert line["status"] == 400 and line["error_paths"] == ["query.entity_id"]
    assert line["query"] == "entity_type=card&entity_id=[REDACTED-PAN]"
    assert PAN not in path.read_text(errors="replace")
