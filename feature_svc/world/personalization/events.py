"""The simulated world's clickstream as the messages of the live path (shared/click_messages.py `ClickEvent`), so
that it can be streamed through FRAUD_CLICKS like any shop's events: `click_events(world, start)` in time order,
event `k` of the world with `event_id` `<tag>e<k>`, its time `start + event_time` seconds, and the item's category
and price from the catalogue."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from feature_svc.world.personalization.world import CATEGORIES, EVENT_TYPES, World
from shared.click_messages import ClickEvent


def tagged(entity_id: str, tag: str) -> str:
    """`user_000001` -> `user_<tag>000001`: ids of their own for one run (the prefix before `_` is kept)."""
    head, _, rest = entity_id.partition("_")
    return f"{head}_{tag}{rest}"


def click_events(world: World, start: datetime, tag: str = "") -> Iterator[ClickEvent]:
    order = sorted(range(len(world.event_user)), key=lambda k: (float(world.event_time[k]), k))
    for k in order:
        item = int(world.event_item[k])
        yield ClickEvent(
            event_id=f"{tag}e{k}",
            user_id=tagged(world.user_id(int(world.event_user[k])), tag),
            item_id=tagged(world.item_id(item), tag),
            session_id=tagged(world.session_id(int(world.event_session[k])), tag),
            event_type=EVENT_TYPES[int(world.event_type[k])],  # type: ignore[arg-type]  # the same three names
            timestamp=start + timedelta(seconds=float(world.event_time[k])),
            item_category=CATEGORIES[int(world.item_category[item])],  # type: ignore[arg-type]  # checked by a test
            item_price=float(world.item_price[item]),
        )
