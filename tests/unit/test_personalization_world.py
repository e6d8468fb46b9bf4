"""The clickstream world and its features (no servers): reproducible, structured the way the report says, and
point in time (a feature at a cut-off never sees an event at or after it)."""

from __future__ import annotations

import numpy as np
import pytest

from feature_svc.world.personalization.features import (
    CONTEXT_FEATURES,
    PRIOR_CONVERSION,
    USER_FEATURES,
    as_mapping,
    context_vector,
    item_features,
    user_features,
)
from feature_svc.world.personalization.world import CART, CATEGORIES, PURCHASE, VIEW, World, WorldOptions, generate

SMALL = WorldOptions(users=400, items=200, days=30)


@pytest.fixture(scope="module")
def world() -> World:
    return generate(SMALL)


def test_the_same_seed_gives_the_same_events_and_another_seed_others(world: World) -> None:
    again = generate(SMALL)
    for name in ("event_user", "event_item", "event_type", "event_session", "event_time"):
        assert np.array_equal(getattr(world, name), getattr(again, name)), name
    other = generate(WorldOptions(users=400, items=200, days=30, seed=SMALL.seed + 1))
    assert not np.array_equal(world.event_item[:100], other.event_item[:100])


def test_every_purchase_follows_a_cart_of_the_same_item_in_the_same_session(world: World) -> None:
    carts = {
        (int(u), int(i), int(s))
        for u, i, s, t in zip(world.event_user, world.event_item, world.event_session, world.event_type, strict=True)
        if t == CART
    }
    buys = [
        (int(u), int(i), int(s))
        for u, i, s, t in zip(world.event_user, world.event_item, world.event_session, world.event_type, strict=True)
        if t == PURCHASE
    ]
    assert buys and all(b in carts for b in buys)
    assert np.all(np.diff(world.event_time) >= 0)


def test_users_view_the_categories_of_their_taste(world: World) -> None:
    views = world.event_type == VIEW
    share = np.zeros((world.n_users, len(CATEGORIES)))
    np.add.at(share, (world.event_user[views], world.item_category[world.event_item[views]]), 1.0)
    active = share.sum(1) >= 5
    share = share[active] / share[active].sum(1, keepdims=True)
    favourite = world.user_taste[active].argmax(1)
    on_favourite = share[np.arange(len(share)), favourite]
    assert on_favourite.mean() > 3.0 / len(CATEGORIES)  # far above a taste-blind user's 1/12


def test_price_sensitive_users_view_cheaper_items_of_a_category(world: World) -> None:
    median = np.array([np.median(world.item_price[world.item_category == c]) for c in range(len(CATEGORIES))])
    rel = np.log(world.item_price / median[world.item_category])  # price within the item's category
    v = world.event_type == VIEW
    s = world.user_price_sensitivity[world.event_user[v]]
    low, high = s <= np.quantile(s, 0.25), s >= np.quantile(s, 0.75)
    viewed = rel[world.event_item[v]]
    assert viewed[high].mean() < viewed[low].mean()


def test_features_at_a_cut_off_ignore_later_events(world: World) -> None:
    assert not user_features(world, 0.0)[:, USER_FEATURES.index("views")].any()
    k = len(world.event_time) // 2
    cut = float(world.event_time[k])
    before = world.event_time < cut
    views = np.bincount(world.event_user[before & (world.event_type == VIEW)], minlength=world.n_users)
    assert np.array_equal(user_features(world, cut)[:, 0], views)
    later = user_features(world, cut + 86_400.0)[:, 0]
    assert later.sum() > views.sum()  # the next day's views count only from the next day's cut-off on


def test_context_of_unknown_user_and_item_is_the_cold_start_and_the_request_price_wins(world: World) -> None:
    cold = context_vector(None, None, None, None)
    assert cold.shape == (len(CONTEXT_FEATURES),) and np.isfinite(cold).all()
    assert cold[CONTEXT_FEATURES.index("item_conversion_rate")] == pytest.approx(PRIOR_CONVERSION)
    items = item_features(world, 1e12)
    item = {"price": float(items[0, 4]), "category": float(items[0, 5])}
    user = as_mapping(USER_FEATURES, user_features(world, 1e12)[0])
    shown = context_vector(user, item, None, None)
    cheaper = context_vector(user, item, item["price"] / 4, None)
    log_price = CONTEXT_FEATURES.index("item_log_price")
    assert cheaper[log_price] == pytest.approx(shown[log_price] - np.log(4.0), rel=1e-5)
