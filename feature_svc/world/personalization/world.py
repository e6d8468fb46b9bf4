"""A seeded shop: who sees, carts and buys what, and when.

Structure the models can learn (and that a popularity ranking cannot):
- each user's taste is a sparse mix of categories (Dirichlet, concentration `taste_concentration`) plus a latent
  vector of sub-category preferences that items of every category share (e.g. "budget", "premium", "outdoor");
- items have a popularity (log-normal) and a price (log-normal around their category's typical price);
- each user has a price sensitivity: sensitive users view the cheaper items of a category, and an item priced above
  its category's typical price is less often carted and bought by them;
- a session has one category intent (drawn from the taste), views a few items of it (by affinity), and each view
  may be added to the cart and bought; users come back for several sessions over `days` days.

`generate(WorldOptions())` is the default world; the same seed gives the same events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

EVENT_TYPES = ("view", "add_to_cart", "purchase")
VIEW, CART, PURCHASE = 0, 1, 2
CATEGORIES = (
    "electronics",
    "books",
    "fashion",
    "home",
    "sports",
    "beauty",
    "toys",
    "grocery",
    "garden",
    "automotive",
    "music",
    "health",
)
SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class WorldOptions:
    seed: int = 7
    users: int = 3000
    items: int = 1200
    days: int = 60
    sessions_per_user: float = 7.0
    views_per_session: float = 4.0
    latent_dim: int = 6
    taste_concentration: float = 0.25
    latent_weight: float = 1.6
    popularity_weight: float = 0.8


def options_of(metadata: Mapping[str, Any]) -> WorldOptions:
    """The world a personalization model was trained on (its metadata's `training.world`): the users and items its
    tables know, whose features are loaded into Redis. Unknown keys (event counts) are ignored."""
    raw = metadata.get("training", {}).get("world", {})
    names = {f.name for f in fields(WorldOptions)}
    return WorldOptions(**{k: v for k, v in raw.items() if k in names})


@dataclass(frozen=True)
class World:
    options: WorldOptions
    # items
    item_category: np.ndarray  # int64 [I], index into CATEGORIES
    item_price: np.ndarray  # float64 [I]
    item_popularity: np.ndarray  # float64 [I], log scale
    # users
    user_taste: np.ndarray  # float64 [U, C], rows sum to 1
    user_price_sensitivity: np.ndarray  # float64 [U], 0 (indifferent) .. ~2
    # events, sorted by time
    event_user: np.ndarray  # int64 [E]
    event_item: np.ndarray  # int64 [E]
    event_type: np.ndarray  # int64 [E]: VIEW, CART, PURCHASE
    event_session: np.ndarray  # int64 [E]
    event_time: np.ndarray  # float64 [E], seconds since the world's start

    @property
    def n_users(self) -> int:
        return int(self.user_taste.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_category.shape[0])

    @property
    def n_sessions(self) -> int:
        return int(self.event_session.max()) + 1 if len(self.event_session) else 0

    def user_id(self, u: int) -> str:
        return f"user_{u:06d}"

    def item_id(self, i: int) -> str:
        return f"item_{CATEGORIES[int(self.item_category[i])]}_{i:05d}"

    def session_id(self, s: int) -> str:
        return f"session_{s:07d}"


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return out


def generate(opts: WorldOptions) -> World:
    rng = np.random.default_rng(opts.seed)
    n_c = len(CATEGORIES)
    # ---------------------------------------------------------------------------------------- items
    cat_price = np.exp(rng.uniform(np.log(8.0), np.log(400.0), n_c))
    item_category = rng.integers(0, n_c, opts.items).astype(np.int64)
    item_price = np.round(cat_price[item_category] * np.exp(rng.normal(0.0, 0.5, opts.items)), 2)
    item_popularity = rng.normal(0.0, 1.0, opts.items)
    item_latent = rng.normal(0.0, 1.0, (opts.items, opts.latent_dim)) / np.sqrt(opts.latent_dim)
    # ---------------------------------------------------------------------------------------- users
    taste = rng.dirichlet(np.full(n_c, opts.taste_concentration), opts.users)
    user_latent = rng.normal(0.0, 1.0, (opts.users, opts.latent_dim)) / np.sqrt(opts.latent_dim)
    sensitivity = rng.gamma(2.0, 0.4, opts.users)
    activity = rng.lognormal(0.0, 0.6, opts.users)
    price_z = (np.log(item_price) - np.log(cat_price[item_category])) / 0.5  # item price within its category
    by_cat = [np.flatnonzero(item_category == c) for c in range(n_c)]
    # -------------------------------------------------------------------------------------- sessions
    users_l: list[np.ndarray] = []
    items_l: list[np.ndarray] = []
    types_l: list[np.ndarray] = []
    sess_l: list[np.ndarray] = []
    time_l: list[np.ndarray] = []
    n_sessions = rng.poisson(opts.sessions_per_user * activity / activity.mean())
    session = 0
    horizon = opts.days * SECONDS_PER_DAY
    for u in range(opts.users):
        starts = np.sort(rng.uniform(0.0, horizon, n_sessions[u]))
        intents = rng.choice(n_c, size=n_sessions[u], p=taste[u])
        for start, c in zip(starts, intents, strict=True):
            pool = by_cat[int(c)]
            if len(pool) == 0:
                continue
            affinity = (
                opts.latent_weight * (item_latent[pool] @ user_latent[u]) * 3.0
                + opts.popularity_weight * item_popularity[pool]
                - 0.5 * sensitivity[u] * price_z[pool]
            )
            p = np.exp(affinity - affinity.max())
            p /= p.sum()
            k = min(len(pool), 1 + rng.poisson(opts.views_per_session - 1.0))
            idx = np.argpartition(-(affinity + rng.gumbel(size=len(pool))), k - 1)[:k]  # k draws without replacement
            viewed = pool[idx]
            t = start + np.cumsum(rng.exponential(40.0, k))
            lift = affinity[idx] - float(p @ affinity)  # above the session's expected affinity: a better match
            carted = rng.random(k) < _sigmoid(-1.7 + 0.9 * lift - 0.5 * sensitivity[u] * price_z[viewed])
            bought = carted & (rng.random(k) < _sigmoid(0.3 - 0.9 * sensitivity[u] * np.maximum(price_z[viewed], 0.0)))
            n_cart, n_buy = int(carted.sum()), int(bought.sum())
            n = k + n_cart + n_buy
            users_l.append(np.full(n, u))
            items_l.append(np.concatenate([viewed, viewed[carted], viewed[bought]]))
            types_l.append(np.repeat(np.array([VIEW, CART, PURCHASE]), [k, n_cart, n_buy]))
            sess_l.append(np.full(n, session))
            time_l.append(np.concatenate([t, t[carted] + 5.0, t[-1] + 30.0 + np.arange(n_buy)]))
            session += 1
    ev_t = np.concatenate(time_l)
    order = np.argsort(ev_t, kind="stable")
    return World(
        options=opts,
        item_category=item_category,
        item_price=item_price,
        item_popularity=item_popularity,
        user_taste=taste,
        user_price_sensitivity=sensitivity,
        event_user=np.concatenate(users_l)[order].astype(np.int64),
        event_item=np.concatenate(items_l)[order].astype(np.int64),
        event_type=np.concatenate(types_l)[order].astype(np.int64),
        event_session=np.concatenate(sess_l)[order].astype(np.int64),
        event_time=ev_t[order],
    )
