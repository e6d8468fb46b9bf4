"""User, item and session features of the personalization world, computed from the clickstream before a cut-off
(point in time: an event at or after `cutoff` is never used), and the head's context vector built from them.

The same definitions serve training (`trainer/personalization/`), the online store (entity types `user`, `item`,
`session` in Redis, written by `load_online`) and scoring (`inference_svc/personalization/`): one definition of
every number.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from feature_svc.world.personalization.world import CART, CATEGORIES, PURCHASE, VIEW


class Clickstream(Protocol):
    """What the feature definitions read: events (user, item, session as dense indices, type, time in seconds) and
    the catalogue (price, category index per item). A simulated `World` is one; so is the event log of the entities
    a live ingest batch touched (feature_svc/ingest/clicks.py), so both compute every number the same way."""

    @property
    def event_user(self) -> np.ndarray: ...
    @property
    def event_item(self) -> np.ndarray: ...
    @property
    def event_type(self) -> np.ndarray: ...
    @property
    def event_session(self) -> np.ndarray: ...
    @property
    def event_time(self) -> np.ndarray: ...
    @property
    def item_price(self) -> np.ndarray: ...
    @property
    def item_category(self) -> np.ndarray: ...
    @property
    def n_users(self) -> int: ...
    @property
    def n_items(self) -> int: ...
    @property
    def n_sessions(self) -> int: ...


FEATURE_SET_VERSION = "personalization-fs-1"
USER_FEATURES: tuple[str, ...] = (
    "views",
    "carts",
    "purchases",
    "sessions",
    "cart_rate",
    "purchase_rate",
    "events_per_session",
    "avg_log_price",
    *(f"share_{c}" for c in CATEGORIES),
)
ITEM_FEATURES: tuple[str, ...] = ("views", "carts", "purchases", "conversion_rate", "price", "category")
SESSION_FEATURES: tuple[str, ...] = ("events", "views", "carts", "purchases", "duration_s")
CONTEXT_FEATURES: tuple[str, ...] = (
    "user_log_views",
    "user_cart_rate",
    "user_purchase_rate",
    "user_events_per_session",
    "user_category_share",
    "price_vs_user_usual",
    "item_log_views",
    "item_conversion_rate",
    "item_log_price",
)
"""The conversion head's side inputs, in this order (`context_vector`)."""
PRIOR_VIEWS = 20.0
PRIOR_CONVERSION = 0.08


def _counts(index: np.ndarray, n: int, mask: np.ndarray) -> np.ndarray:
    return np.bincount(index[mask], minlength=n).astype(np.float64)


def user_features(world: Clickstream, cutoff: float) -> np.ndarray:
    """[U, len(USER_FEATURES)] from the events before `cutoff`."""
    m = world.event_time < cutoff
    u, t = world.event_user[m], world.event_type[m]
    n = world.n_users
    views = np.bincount(u[t == VIEW], minlength=n).astype(np.float64)
    carts = np.bincount(u[t == CART], minlength=n).astype(np.float64)
    buys = np.bincount(u[t == PURCHASE], minlength=n).astype(np.float64)
    pairs = np.unique(np.stack([u, world.event_session[m]], axis=1), axis=0) if len(u) else np.zeros((0, 2), int)
    sessions = np.bincount(pairs[:, 0], minlength=n).astype(np.float64)
    events = views + carts + buys
    item = world.event_item[m]
    logp = np.log(world.item_price[item[t == VIEW]])
    sum_logp = np.bincount(u[t == VIEW], weights=logp, minlength=n)
    cats = world.item_category[item[t == VIEW]]
    share = np.zeros((n, len(CATEGORIES)))
    np.add.at(share, (u[t == VIEW], cats), 1.0)
    share /= np.maximum(views, 1.0)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        cols = [
            views,
            carts,
            buys,
            sessions,
            np.where(views > 0, carts / np.maximum(views, 1.0), 0.0),
            np.where(views > 0, buys / np.maximum(views, 1.0), 0.0),
            np.where(sessions > 0, events / np.maximum(sessions, 1.0), 0.0),
            np.where(views > 0, sum_logp / np.maximum(views, 1.0), np.nan),
        ]
    return np.column_stack([*cols, share])


def item_features(world: Clickstream, cutoff: float) -> np.ndarray:
    """[I, len(ITEM_FEATURES)] from the events before `cutoff` (conversion rate smoothed towards a prior)."""
    m = world.event_time < cutoff
    i, t = world.event_item[m], world.event_type[m]
    n = world.n_items
    views = _counts(i, n, t == VIEW)
    carts = _counts(i, n, t == CART)
    buys = _counts(i, n, t == PURCHASE)
    conv = (buys + PRIOR_CONVERSION * PRIOR_VIEWS) / (views + PRIOR_VIEWS)
    return np.column_stack([views, carts, buys, conv, world.item_price, world.item_category.astype(np.float64)])


def session_features(world: Clickstream, cutoff: float) -> np.ndarray:
    """[S, len(SESSION_FEATURES)] from the events before `cutoff`."""
    m = world.event_time < cutoff
    s, t, when = world.event_session[m], world.event_type[m], world.event_time[m]
    n = world.n_sessions
    first = np.full(n, np.inf)
    last = np.full(n, -np.inf)
    np.minimum.at(first, s, when)
    np.maximum.at(last, s, when)
    duration = np.where(np.isfinite(first), last - first, 0.0)
    return np.column_stack(
        [
            _counts(s, n, np.ones(len(s), bool)),
            _counts(s, n, t == VIEW),
            _counts(s, n, t == CART),
            _counts(s, n, t == PURCHASE),
            duration,
        ]
    )


def context_vector(
    user: Mapping[str, float] | None, item: Mapping[str, float] | None, price: float | None, category: str | None
) -> np.ndarray:
    """The head's side inputs (`CONTEXT_FEATURES`) for one (user, item): unknown user or item values are the
    cold-start defaults (0 counts, prior rates). `price` and `category` from the request win over the item's."""
    u = user or {}
    it = item or {}
    if category is None and "category" in it:
        c = int(it["category"])
        category = CATEGORIES[c] if 0 <= c < len(CATEGORIES) else None
    if price is None:
        price = it.get("price")
    log_price = float(np.log(max(price, 0.01))) if price is not None else float("nan")
    usual = u.get("avg_log_price", float("nan"))
    gap = log_price - usual if np.isfinite(log_price) and np.isfinite(usual) else 0.0
    share = u.get(f"share_{category}", 0.0) if category is not None else 0.0
    return np.array(
        [
            np.log1p(u.get("views", 0.0)),
            u.get("cart_rate", 0.0),
            u.get("purchase_rate", 0.0),
            u.get("events_per_session", 0.0),
            share,
            gap,
            np.log1p(it.get("views", 0.0)),
            it.get("conversion_rate", PRIOR_CONVERSION),
            log_price if np.isfinite(log_price) else 0.0,
        ],
        dtype=np.float32,
    )


def as_mapping(names: tuple[str, ...], row: np.ndarray) -> dict[str, float]:
    return {n: float(v) for n, v in zip(names, row, strict=True) if np.isfinite(v)}
