"""Clicks to scores on a real stack (own nats-server; the suite's Redis and PostgreSQL; a torch-free bootstrap
personalization model): events sent with `POST /events` go through FRAUD_CLICKS to the feature workers, and the next
`POST /score/personalization` of that user is scored from the features they produced; re-sending the batch counts
nothing twice; a bad event is a 400 naming its field."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.stacks import Stack, own_stack
from trainer.personalization.bootstrap import train_bootstrap


@pytest.fixture(scope="module")
def lstack(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, postgres_dsn: str, model_dir: Path
) -> Iterator[Stack]:
    run = tmp_path_factory.mktemp("clicks-live")
    models = run / "models-personalization"
    train_bootstrap(models)
    with own_stack(
        run, redis_url, postgres_dsn, model_dir, env={"FRAUDMESH_PERSONALIZATION_MODEL_DIR": str(models)}
    ) as s:
        yield s


def events_of(user: str, run: str) -> list[dict[str, Any]]:
    """Two sessions of a shopper: five views, an add-to-cart and a purchase of a toy."""
    t0 = datetime.now(UTC) - timedelta(hours=2)
    kinds = ["view", "view", "view", "view", "add_to_cart", "purchase", "view"]
    return [
        {
            "event_id": f"{run}-{k}",
            "user_id": user,
            "item_id": f"item_toys_{run}_{k % 3}",
            "session_id": f"session_{run}_{k // 4}",
            "event_type": kind,
            "timestamp": (t0 + timedelta(minutes=3 * k)).isoformat(),
            "item_category": "toys",
            "item_price": 19.5 + k,
        }
        for k, kind in enumerate(kinds)
    ]


def test_posted_events_become_the_features_the_next_score_uses(lstack: Stack) -> None:
    run = uuid.uuid4().hex[:8]
    user = f"user_live_{run}"
    pair = {"user_id": user, "item_id": f"item_toys_{run}_0", "session_id": f"session_{run}_1"}
    url = lstack.gateway_url
    before = httpx.post(f"{url}/score/personalization", json=pair, timeout=30).json()
    assert before["user_segment"] == "new_visitor" and "cold_start_user" in before["behavioral_signals"]

    events = events_of(user, run)
    r = httpx.post(f"{url}/events", json={"events": events}, timeout=30)
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": len(events), "duplicates": 0, "stream": "FRAUD_CLICKS"}
    again = httpx.post(f"{url}/events", json={"events": events}, timeout=30)
    assert again.status_code == 202 and again.json()["duplicates"] == len(events)

    deadline = time.monotonic() + 60
    after = before
    while time.monotonic() < deadline:  # the feature workers apply the batch asynchronously (micro-batches)
        after = httpx.post(f"{url}/score/personalization", json=pair, timeout=30).json()
        if after["user_segment"] != "new_visitor" and after["feature_freshness_sec"] is not None:
            break
        time.sleep(0.2)
    assert after["user_segment"] != "new_visitor", after
    assert "cold_start_user" not in after["behavioral_signals"]
    assert after["features_used"] > before["features_used"]
    assert after["engagement_score"] > before["engagement_score"]


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"event_type": "click"}, "$.events[0].event_type"),
        ({"item_category": "weapons"}, "$.events[0].item_category"),
        ({"item_price": 0}, "$.events[0].item_price"),
        ({"user_id": "customer_1"}, "$.events[0].user_id"),
        ({"timestamp": "yesterday"}, "$.events[0].timestamp"),
    ],
)
def test_a_bad_event_is_a_400_naming_its_field(lstack: Stack, change: dict[str, Any], path: str) -> None:
    event = {**events_of("user_bad", "bad")[0], **change}
    r = httpx.post(f"{lstack.gateway_url}/events", json={"events": [event]}, timeout=30)
    assert r.status_code == 400, r.text
    assert any(e["path"] == path for e in r.json()["errors"]), r.json()
