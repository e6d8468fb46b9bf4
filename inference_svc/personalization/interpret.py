"""What a personalization score means for people: the engagement score, the user segment and the behavioural
signals, from the user, item and session rows of the online store (rules, stated here once)."""

from __future__ import annotations

import math
from collections.abc import Mapping

from shared.personalization_messages import UserSegment

Row = Mapping[str, float]
MAX_SIGNALS = 5


def engagement(user: Row | None, session: Row | None) -> float:
    """0..1: how often and how deeply the user browses (sessions, events per session), blended half and half with
    the current session's depth when the session is known."""
    u = 0.0
    if user:
        sessions = user.get("sessions", 0.0)
        depth = user.get("events_per_session", 0.0)
        u = 0.5 * min(1.0, math.log1p(sessions) / math.log1p(20.0)) + 0.5 * min(1.0, depth / 8.0)
    if session:
        s = min(1.0, session.get("events", 0.0) / 10.0)
        return round(0.5 * u + 0.5 * s if user else s, 6)
    return round(u, 6)


def segment(user: Row | None, engagement_score: float) -> UserSegment:
    if not user or user.get("views", 0.0) == 0.0:
        return "new_visitor"
    if user.get("purchases", 0.0) >= 3 and engagement_score >= 0.6:
        return "high_value_engaged"
    if engagement_score >= 0.5:
        return "engaged"
    if user.get("views", 0.0) >= 10 and user.get("purchases", 0.0) == 0:
        return "browser"
    return "casual"


def signals(
    user: Row | None,
    item: Row | None,
    session: Row | None,
    category_share: float,
    price_gap: float,
    conversion: float,
) -> list[str]:
    """Codes, strongest first, at most MAX_SIGNALS."""
    out: list[str] = []
    if not user:
        out.append("cold_start_user")
    if not item:
        out.append("unknown_item")
    if conversion >= 0.3:
        out.append("conversion_likely")
    if user and category_share >= 0.3:
        out.append("category_affinity")
    if user and price_gap > 0.5:
        out.append("price_above_usual")
    elif user and abs(price_gap) <= 0.3:
        out.append("price_within_usual")
    if session and session.get("events", 0.0) >= 8:
        out.append("high_engagement_session")
    if session and session.get("views", 0.0) >= 3:
        out.append("multi_page_session")
    if user and user.get("purchase_rate", 0.0) >= 0.15:
        out.append("frequent_buyer")
    carts = user.get("cart_rate", 0.0) if user else 0.0
    if user and carts >= 0.2 and user.get("purchase_rate", 0.0) < 0.4 * carts:
        out.append("cart_abandoner")
    if item and item.get("views", 0.0) >= 150:
        out.append("popular_item")
    return out[:MAX_SIGNALS]
