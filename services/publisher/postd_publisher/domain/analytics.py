"""Analytics collection: what is collected, when, and how much of an account's
call budget it may take.

* **Figures** are the normalized metrics of a post or an account at one moment.
  Platforms report lifetime totals for a post, so each snapshot is cumulative and
  the rollups take the *delta* from the post's previous snapshot (negative when a
  platform revises a count down, so the rollups always sum to the latest totals).
* **The schedule** decays with a post's age (often in its first day, daily after,
  nothing after a configurable age) and is data: ``POSTD_ANALYTICS_POST_SCHEDULE``.
  Accounts are read daily, the last few days again (platforms revise them).
* **The budget**: a collection round costs platform calls (per platform, as data);
  it is charged to the same per-account quota ledger as publishing, and admitted only
  while the account's use of each call budget it spends stays under a share of the
  limit (``POSTD_ANALYTICS_QUOTA_SHARE``, half by default). Past that share analytics
  backs off until enough slots free, so the rest of the window is always left for
  publishing, which the dispatcher serves first anyway.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from postd.common.v1.common_pb2 import MediaKind, PostContent
from postd_publisher.domain.quota import (
    ANALYTICS,
    Deferral,
    LedgerEntry,
    QuotaBook,
    QuotaRule,
    UsageKey,
    window_words,
)

POST = "post"
ACCOUNT = "account"

CONTENT_TYPES = ("text", "image", "video", "carousel")
METRICS = ("impressions", "reach", "engagements", "clicks", "video_views", "conversions")
# Interactions kept as their own rollup columns, from each platform's breakdown.
INTERACTIONS = ("likes", "comments", "shares", "saves")
ROLLUP_METRICS = METRICS + INTERACTIONS
# Breakdown keys (as connectors report them) that count towards each interaction:
# Facebook reports reactions by type, the others a "likes" count.
INTERACTION_KEYS: Mapping[str, frozenset[str]] = {
    "likes": frozenset({"likes", "like", "love", "wow", "haha", "sad", "angry", "care"}),
    "comments": frozenset({"comments"}),
    "shares": frozenset({"shares"}),
    "saves": frozenset({"saves", "saved"}),
}


def content_type(content: PostContent) -> str:
    """text, image, video or carousel: several media make a carousel; one video (by
    kind or MIME type) a video; one picture an image; none (text, links, e-mails) text."""
    media = list(content.media)
    if len(media) > 1:
        return "carousel"
    if not media:
        return "text"
    item = media[0]
    if item.kind == MediaKind.MEDIA_KIND_VIDEO or item.mime_type.startswith("video/"):
        return "video"
    return "image"


@dataclass(frozen=True)
class Figures:
    """Normalized figures; None means the platform does not report that metric."""

    impressions: int | None = None
    reach: int | None = None
    engagements: int | None = None
    clicks: int | None = None
    video_views: int | None = None
    conversions: int | None = None
    likes: int | None = None
    comments: int | None = None
    shares: int | None = None
    saves: int | None = None
    breakdown: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_platform(
        cls, values: Mapping[str, int | None], breakdown: Mapping[str, int]
    ) -> Figures:
        """From connectors' PostMetrics fields and breakdown: the interaction columns
        are summed from the breakdown keys that mean them."""
        interactions: dict[str, int | None] = {}
        for column, keys in INTERACTION_KEYS.items():
            found = [v for k, v in breakdown.items() if k in keys]
            interactions[column] = sum(found) if found else None
        return cls(
            **{m: values.get(m) for m in METRICS},
            **interactions,
            breakdown=dict(breakdown),
        )

    def value(self, metric: str) -> int | None:
        found: int | None = getattr(self, metric)
        return found

    def minus(self, earlier: Figures | None) -> Figures:
        """What was gained since ``earlier`` (a metric the platform stopped reporting
        counts as unreported, not as a loss)."""
        if earlier is None:
            return replace(self, breakdown={})
        gained: dict[str, int | None] = {}
        for metric in ROLLUP_METRICS:
            now, before = self.value(metric), earlier.value(metric)
            gained[metric] = None if now is None else now - (before or 0)
        return figures_of(gained)

    @property
    def empty(self) -> bool:
        return all(self.value(m) in (None, 0) for m in ROLLUP_METRICS)


def figures_of(
    values: Mapping[str, int | None], breakdown: Mapping[str, int] | None = None
) -> Figures:
    """Figures from a mapping of metric name to value (rollup rows, deltas)."""
    return Figures(
        impressions=values.get("impressions"),
        reach=values.get("reach"),
        engagements=values.get("engagements"),
        clicks=values.get("clicks"),
        video_views=values.get("video_views"),
        conversions=values.get("conversions"),
        likes=values.get("likes"),
        comments=values.get("comments"),
        shares=values.get("shares"),
        saves=values.get("saves"),
        breakdown=dict(breakdown or {}),
    )


# --------------------------------------------------------------------------- schedule


@dataclass(frozen=True)
class CollectionSchedule:
    """When to take the next snapshot of a post: ``steps`` are (until this age, every
    this long), in order; past the last step's age the post is done."""

    steps: tuple[tuple[timedelta, timedelta], ...] = (
        (timedelta(hours=24), timedelta(hours=1)),
        (timedelta(days=30), timedelta(hours=24)),
    )
    account_every: timedelta = timedelta(hours=24)
    # How many days an account's reading covers: the first one backfills, later ones
    # re-read the last few days, which platforms still revise.
    account_backfill_days: int = 28
    account_reread_days: int = 3

    @property
    def stop_after(self) -> timedelta:
        return self.steps[-1][0] if self.steps else timedelta(0)

    def first_post_run(self, published_at: datetime) -> datetime | None:
        if not self.steps:
            return None
        return published_at + self.steps[0][1]

    def next_post_run(self, published_at: datetime, now: datetime) -> datetime | None:
        """The next snapshot after one taken at ``now``; None when the post is old
        enough to stop (a last snapshot is taken at the stop age)."""
        age = now - published_at
        for until, every in self.steps:
            if age < until:
                return min(now + every, published_at + self.stop_after)
        return None


def parse_schedule(text: str) -> tuple[tuple[timedelta, timedelta], ...]:
    """``until_age_seconds:every_seconds,...`` (ages increasing). Raises ValueError."""
    steps: list[tuple[timedelta, timedelta]] = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        parts = entry.split(":")
        try:
            until, every = (float(p) for p in parts)
        except ValueError as exc:
            raise ValueError(f"schedule step {entry!r} is not until_seconds:every_seconds") from exc
        if every <= 0 or until <= 0:
            raise ValueError(f"schedule step {entry!r} needs positive seconds")
        if steps and timedelta(seconds=until) <= steps[-1][0]:
            raise ValueError("schedule steps must go to increasing ages")
        steps.append((timedelta(seconds=until), timedelta(seconds=every)))
    if not steps:
        raise ValueError("the schedule needs at least one step")
    return tuple(steps)


# --------------------------------------------------------------------------- budget


@dataclass(frozen=True)
class CollectionCost:
    """Platform calls a collection round costs: one per ``posts_per_call`` posts
    (Meta's insights and Mailchimp's reports are one call per post; LinkedIn takes a
    list of posts, TikTok 20 videos a call), ``account_calls`` for an account."""

    posts_per_call: int = 1
    account_calls: int = 1
    # Most posts in one round (connectors takes at most 100 ids a call).
    max_posts: int = 25


COSTS: Mapping[str, CollectionCost] = {
    "facebook": CollectionCost(posts_per_call=1, account_calls=1, max_posts=25),
    "instagram": CollectionCost(posts_per_call=1, account_calls=1, max_posts=25),
    "linkedin": CollectionCost(posts_per_call=100, account_calls=1, max_posts=100),
    "tiktok": CollectionCost(posts_per_call=20, account_calls=1, max_posts=100),
    "google_business": CollectionCost(posts_per_call=100, account_calls=1, max_posts=100),
    "mailchimp": CollectionCost(posts_per_call=1, account_calls=4, max_posts=10),
}


def round_cost(platform: str, kind: str, posts: int) -> int:
    cost = COSTS.get(platform, CollectionCost())
    if kind == ACCOUNT:
        return cost.account_calls
    return max(1, math.ceil(posts / cost.posts_per_call))


@dataclass(frozen=True)
class AnalyticsShare:
    """How much of each call budget analytics may use, per platform (``*``: the rest)."""

    shares: Mapping[str, float] = field(default_factory=lambda: {"*": 0.5})

    def of(self, platform: str) -> float:
        return self.shares.get(platform, self.shares.get("*", 0.5))

    def allowed(self, rule: QuotaRule) -> int:
        """Slots analytics may bring the rule's window up to."""
        return math.floor(rule.limit * self.of(rule.platform) + 1e-9)


def parse_shares(text: str) -> AnalyticsShare:
    """``0.5`` or ``facebook:0.3,*:0.5``. Raises ValueError."""
    shares: dict[str, float] = {"*": 0.5}
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        platform, _, value = entry.rpartition(":")
        try:
            share = float(value)
        except ValueError as exc:
            raise ValueError(f"analytics share {entry!r} is not a number") from exc
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"analytics share {entry!r} must be between 0 and 1")
        shares[platform or "*"] = share
    return AnalyticsShare(shares)


def max_posts_per_round(platform: str, book: QuotaBook, share: AnalyticsShare) -> int:
    """Posts one round may carry so that its cost fits in the analytics share of
    every call budget (at least one)."""
    cost = COSTS.get(platform, CollectionCost())
    calls = min(
        (share.allowed(r) for r in book.spent_by(platform, ANALYTICS)), default=cost.max_posts
    )
    return max(1, min(cost.max_posts, max(1, calls) * cost.posts_per_call))


@dataclass(frozen=True)
class CollectionDemand:
    """A claimed collection round asking for ledger slots."""

    round_id: str
    tenant_id: str
    connection_id: str
    platform: str
    cost: int


@dataclass(frozen=True)
class CollectionPlan:
    admitted: frozenset[str]
    deferred: tuple[Deferral, ...]
    entries: tuple[LedgerEntry, ...]


def plan_collections(
    demands: Sequence[CollectionDemand],
    used: Mapping[UsageKey, Sequence[datetime]],
    book: QuotaBook,
    share: AnalyticsShare,
    now: datetime,
) -> CollectionPlan:
    """Admit rounds while every call budget they spend stays within analytics' share
    (counting publishes and reads alike); defer the others to when enough slots free.

    ``used`` holds the ledger's times within each rule's window, publishes included
    (they were admitted first, this very round included)."""
    admitted: set[str] = set()
    deferred: list[Deferral] = []
    entries: list[LedgerEntry] = []
    taken: dict[UsageKey, list[datetime]] = {}
    for demand in demands:
        rules = book.spent_by(demand.platform, ANALYTICS)
        blocking: Deferral | None = None
        for rule in rules:
            key = (demand.tenant_id, demand.connection_id, rule.name)
            times = taken.setdefault(
                key, sorted(t for t in used.get(key, ()) if t > now - rule.window)
            )
            allowed = share.allowed(rule)
            over = len(times) + demand.cost - allowed
            if over <= 0:
                continue
            # The slot whose expiry brings the window back under the share.
            frees = times[min(over, len(times)) - 1] + rule.window if times else now + rule.window
            if blocking is None or frees > blocking.until:
                blocking = Deferral(
                    demand.round_id,
                    frees,
                    f"Analytics backs off: {rule.description}; {len(times)} of "
                    f"{rule.limit} used in the last {window_words(rule.window)}, and "
                    f"analytics takes at most {share.of(rule.platform):.0%} so publishing "
                    f"keeps the rest. Next try at {frees:%Y-%m-%d %H:%M:%S} UTC.",
                )
        if blocking is not None:
            deferred.append(blocking)
            continue
        admitted.add(demand.round_id)
        for rule in rules:
            key = (demand.tenant_id, demand.connection_id, rule.name)
            taken[key].extend([now] * demand.cost)
            entries.extend(
                LedgerEntry(demand.tenant_id, demand.connection_id, rule.name, demand.round_id)
                for _ in range(demand.cost)
            )
    return CollectionPlan(frozenset(admitted), tuple(deferred), tuple(entries))
