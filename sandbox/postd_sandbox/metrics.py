"""Deterministic analytics that grow plausibly from a post's creation.

Every figure is a pure function of (post id, metric, age, kind), so a test can
predict it with `cumulative()`: a post's reach saturates over its first day or two
(a fast start, then a long tail), and each metric is a fixed, per-post share of the
post's impressions. Figures never decrease as the post ages.

The kind of post (a photo, a carousel, a reel, as each platform records it) moves
its interactions, not its reach: people engage more with pictures and video than
with plain text, as platforms' own studies report. So analytics on the sandbox have
a content-type effect for insights to find, and no effect on a text post's figures.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

# Share of impressions each normalised metric comes to (before a per-post wobble).
DEFAULT_RATIOS: Mapping[str, float] = {
    "impressions": 1.0,
    "reach": 0.72,
    "views": 1.15,
    "video_views": 0.55,
    "engagements": 0.065,
    "likes": 0.04,
    "reactions": 0.045,
    "comments": 0.006,
    "shares": 0.004,
    "saves": 0.003,
    "clicks": 0.018,
    "conversions": 0.002,
    "profile_visits": 0.01,
    "follows": 0.0015,
    # E-mail campaigns: per recipient-ish figures.
    "emails_sent": 1.0,
    "opens": 0.42,
    "unique_opens": 0.35,
    "email_clicks": 0.05,
    "unique_clicks": 0.04,
    "unsubscribes": 0.002,
    "bounces": 0.01,
    # Business Profile: per location-day.
    "business_impressions": 1.0,
    "website_clicks": 0.03,
    "call_clicks": 0.01,
    "direction_requests": 0.015,
}


# Interaction metrics, and how much more of them each kind of post draws than text.
INTERACTIONS = frozenset({"engagements", "likes", "reactions", "comments", "shares", "saves"})
KIND_INTERACTION_FACTOR: Mapping[str, float] = {
    "page_photo": 1.6,
    "ig_media": 1.0,
    "ig_carousel": 1.7,
    "ig_reel": 1.5,
}


def unit(*parts: str) -> float:
    """A stable pseudo-random number in [0, 1) for the given parts."""
    digest = hashlib.sha256(":".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def reach_potential(post_id: str) -> float:
    """How many impressions a post eventually gets (200 to 5,000)."""
    return 200.0 + 4800.0 * unit(post_id, "potential") ** 2


def time_constant(post_id: str) -> float:
    """Seconds for a post to reach ~63% of its eventual impressions (3 to 15 hours)."""
    return 3600.0 * (3.0 + 12.0 * unit(post_id, "tau"))


def cumulative(
    post_id: str,
    metric: str,
    age_seconds: float,
    ratios: Mapping[str, float] = DEFAULT_RATIOS,
    kind: str = "",
) -> int:
    """Total of `metric` for a post `age_seconds` after it was created; `kind` is the
    post's kind as recorded (interactions of photos, carousels and reels are higher)."""
    if age_seconds <= 0:
        return 0
    ratio = ratios.get(metric, 0.01)
    if metric in INTERACTIONS:
        ratio *= KIND_INTERACTION_FACTOR.get(kind, 1.0)
    wobble = 0.7 + 0.6 * unit(post_id, metric)
    eventual = reach_potential(post_id) * ratio * (1.0 if metric == "impressions" else wobble)
    grown = 1.0 - math.exp(-age_seconds / time_constant(post_id))
    return int(eventual * grown)


def between(
    post_id: str,
    metric: str,
    start_age: float,
    end_age: float,
    ratios: Mapping[str, float] = DEFAULT_RATIOS,
    kind: str = "",
) -> int:
    """How much of `metric` a post gained between two ages (a daily value)."""
    return max(
        0,
        cumulative(post_id, metric, end_age, ratios, kind)
        - cumulative(post_id, metric, max(0.0, start_age), ratios, kind),
    )


def daily_account_value(account: str, metric: str, day_index: int, base: float = 400.0) -> int:
    """An account-level daily figure with a weekly rhythm (Business Profile and the like)."""
    weekday_factor = 0.8 + 0.4 * math.sin(2 * math.pi * (day_index % 7) / 7)
    ratio = DEFAULT_RATIOS.get(metric, 0.02)
    noise = 0.75 + 0.5 * unit(account, metric, str(day_index))
    return int(base * ratio * weekday_factor * noise)
