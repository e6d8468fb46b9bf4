"""The personalization family's clickstream on the live path: one `ClickEvent` per message on `fraud.clicks.ingest`
(stream FRAUD_CLICKS), msgpack or JSON (a body starting with `{` is JSON), with `Nats-Msg-Id` = `event_id` so that
JetStream drops a re-publish within its dedupe window; the event log's write is idempotent on `event_id` as well, so
a replay outside the window never counts twice. Schema rules as in shared/messages.py.

Feature workers consume the stream in micro-batches: the events go into the event log (PostgreSQL `click_events`),
then the user, item and session features of every entity the batch touched are recomputed from the log with the
definitions the simulator's loader uses (feature_svc/world/personalization/features.py) and written to Redis."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from msgspec import Meta, Struct

from shared.personalization_messages import ItemId, SessionId, UserId

EventType = Literal["view", "add_to_cart", "purchase"]
EVENT_TYPES: tuple[EventType, ...] = ("view", "add_to_cart", "purchase")
"""In the order of the feature definitions' event codes (VIEW=0, CART=1, PURCHASE=2)."""
CategoryName = Literal[
    "electronics", "books", "fashion", "home", "sports", "beauty", "toys", "grocery", "garden", "automotive", "music",
    "health",
]  # fmt: skip
"""The catalogue's categories the personalization features know (feature_svc/world/personalization/world.py
CATEGORIES: a user's `share_<category>` columns); tests/test_clicks_ingest.py checks that the two agree."""
EventId = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")]
MAX_CLICK_BATCH = 10_000
"""Most events in one POST /events."""


class ClickEvent(Struct, kw_only=True, omit_defaults=True):
    """A shopper's view, add-to-cart or purchase of an item, in a session, at a time; with the item's category and
    price as the catalogue shows them (the item features keep the latest)."""

    event_id: EventId
    user_id: UserId
    item_id: ItemId
    session_id: SessionId
    event_type: EventType
    timestamp: datetime
    """RFC 3339; without a zone it is UTC. Features are point in time: an event counts from its timestamp on."""
    item_category: CategoryName
    item_price: Annotated[float, Meta(gt=0.0, le=1e9)]
    published_at: float = 0.0
    """Epoch seconds when the producer published it; 0 when unknown."""


class ClickBatch(Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of POST /events."""

    events: Annotated[list[ClickEvent], Meta(min_length=1, max_length=MAX_CLICK_BATCH)]
