"""The time split of the clickstream: history (graph, features), head training (later views, labelled by whether
they were bought in the same session) and test (the ranking and conversion questions of the last days)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from feature_svc.world.personalization.features import (
    ITEM_FEATURES,
    USER_FEATURES,
    as_mapping,
    context_vector,
    item_features,
    user_features,
)
from feature_svc.world.personalization.world import CATEGORIES, PURCHASE, SECONDS_PER_DAY, VIEW, World

HISTORY_SHARE = 0.7
HEAD_SHARE = 0.83


@dataclass(frozen=True)
class Views:
    """Views with their label (bought in the same session) and the head's context at the cut-off."""

    user: np.ndarray
    item: np.ndarray
    context: np.ndarray  # float32 [N, F]
    bought: np.ndarray  # float32 [N]


@dataclass(frozen=True)
class Split:
    t_history: float
    t_head: float
    edges: np.ndarray  # int64 [E, 2]: unique (user, item) interactions before t_history
    head: Views
    test: Views
    test_items: dict[int, set[int]]  # user -> items first interacted with in the test period
    seen: dict[int, set[int]]  # user -> items of the history


def _views(world: World, lo: float, hi: float, users: np.ndarray, items: np.ndarray) -> Views:
    m = (world.event_time >= lo) & (world.event_time < hi)
    u, i, s, t = world.event_user[m], world.event_item[m], world.event_session[m], world.event_type[m]
    p = t == PURCHASE
    bought = {(int(a), int(b), int(c)) for a, b, c in zip(u[p], i[p], s[p], strict=True)}
    v = t == VIEW
    vu, vi, vs = u[v], i[v], s[v]
    keys = zip(vu, vi, vs, strict=True)
    labels = np.array([(int(a), int(b), int(c)) in bought for a, b, c in keys], dtype=np.float32)
    ctx = (
        np.stack(
            [
                context_vector(
                    as_mapping(USER_FEATURES, users[a]),
                    as_mapping(ITEM_FEATURES, items[b]),
                    float(world.item_price[b]),
                    CATEGORIES[int(world.item_category[b])],
                )
                for a, b in zip(vu, vi, strict=True)
            ]
        )
        if len(vu)
        else np.zeros((0, 9), np.float32)
    )
    return Views(user=vu, item=vi, context=ctx, bought=labels)


def split(world: World) -> Split:
    horizon = world.options.days * SECONDS_PER_DAY
    t1, t2 = HISTORY_SHARE * horizon, HEAD_SHARE * horizon
    users, items = user_features(world, t1), item_features(world, t1)
    hist = world.event_time < t1
    edges = np.unique(np.stack([world.event_user[hist], world.event_item[hist]], axis=1), axis=0)
    seen: dict[int, set[int]] = {}
    for a, b in edges:
        seen.setdefault(int(a), set()).add(int(b))
    test_items: dict[int, set[int]] = {}
    late = world.event_time >= t2
    for a, b in zip(world.event_user[late], world.event_item[late], strict=True):
        if int(b) not in seen.get(int(a), ()):
            test_items.setdefault(int(a), set()).add(int(b))
    return Split(
        t_history=t1,
        t_head=t2,
        edges=edges.astype(np.int64),
        head=_views(world, t1, t2, users, items),
        test=_views(world, t2, horizon + 1.0, users, items),
        test_items=test_items,
        seen=seen,
    )
