# The words people read use typography (the multiplication sign, the en dash).
# ruff: noqa: RUF001
"""Insights from a tenant's own history, each with its sample sizes and confidence.

Honest by construction: a comparison is made only with at least ``min_posts`` posts
old enough in each group (their figures have mostly settled), it is tested (Mann-Whitney
U on the posts' figures, Welch on log daily totals, a robust z-score for one post), the
p-values of comparisons made together are Holm-adjusted, and the effect comes with a
95% bootstrap interval. Too little data is said so ("not enough data yet"), and enough
data with no clear difference is said so too; nothing else is claimed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from postd_publisher.domain.stats import (
    RankTest,
    bootstrap_ratio,
    confidence_word,
    holm,
    mann_whitney,
    mann_whitney_from_ranks,
    ranks,
    ratio_of_medians,
    robust_outliers,
    welch,
)

PLATFORM_NAMES: Mapping[str, str] = {
    "facebook": "Facebook",
    "instagram": "Instagram",
    "linkedin": "LinkedIn",
    "tiktok": "TikTok",
    "google_business": "Google Business Profile",
    "mailchimp": "Mailchimp",
}
TYPE_WORDS: Mapping[str, str] = {
    "text": "text posts",
    "image": "images",
    "video": "videos",
    "carousel": "carousels",
}
METRIC_WORDS: Mapping[str, str] = {
    "reach": "reach",
    "impressions": "impressions",
    "video_views": "views",
    "engagement_rate": "engagement rate",
}
# The figure that says how far a post got, per platform (others: reach).
AUDIENCE_METRIC: Mapping[str, str] = {
    "tiktok": "video_views",
    "linkedin": "impressions",
    "mailchimp": "impressions",
}
HOUR_WINDOWS = tuple((h, h + 3) for h in range(0, 24, 3))


class Kind(StrEnum):
    BEST_HOURS = "BEST_HOURS"
    CONTENT_TYPE = "CONTENT_TYPE"
    WEEK_OVER_WEEK = "WEEK_OVER_WEEK"
    STANDOUT_POST = "STANDOUT_POST"


class Verdict(StrEnum):
    FINDING = "FINDING"
    NO_CLEAR_DIFFERENCE = "NO_CLEAR_DIFFERENCE"
    NOT_ENOUGH_DATA = "NOT_ENOUGH_DATA"


@dataclass(frozen=True)
class InsightRules:
    min_posts: int = 10  # per group
    min_age: timedelta = timedelta(hours=48)  # a post's last snapshot, after publishing
    alpha: float = 0.05
    min_change: float = 0.2  # week over week: at least ±20 %
    min_days: int = 5  # days with figures in each week
    standout_z: float = 3.0
    bootstrap: int = 1000

    def describe(self) -> str:
        hours = self.min_age.total_seconds() / 3600
        return (
            f"Posts count once their last snapshot is at least {hours:g} hours after "
            f"publishing; a comparison needs {self.min_posts} posts in each group. Groups "
            "are compared with the Mann-Whitney U test and the ratio of their medians "
            "(95% bootstrap interval); weeks with Welch's t-test on log daily totals "
            f"(at least {self.min_days} days with figures in each, and a change of "
            f"{self.min_change:.0%} or more); a standout post is {self.standout_z:g} robust "
            "standard deviations above its account's median. p-values of comparisons "
            f"made together are Holm-adjusted; a finding needs p < {self.alpha:g}."
        )


@dataclass(frozen=True)
class PostFigure:
    """One published post (target) with its latest lifetime figures."""

    post_id: str
    connection_id: str
    platform: str
    content_type: str
    published_at: datetime
    impressions: int | None
    reach: int | None
    engagements: int | None
    video_views: int | None

    def value(self, metric: str) -> float | None:
        if metric == "engagement_rate":
            base = self.impressions or self.reach or self.video_views
            if not base or self.engagements is None:
                return None
            return self.engagements / base
        found: int | None = getattr(self, metric)
        return None if found is None else float(found)


@dataclass(frozen=True)
class DayFigure:
    """One platform's figures gained on one local day (from the rollups)."""

    day: date
    platform: str
    impressions: int | None
    reach: int | None
    video_views: int | None


@dataclass(frozen=True)
class Insight:
    kind: Kind
    verdict: Verdict
    platform: str
    metric: str
    summary: str
    subject: str = ""
    baseline: str = ""
    n: int = 0
    baseline_n: int = 0
    ratio: float = 0.0
    ci_low: float = 0.0
    ci_high: float = 0.0
    p_value: float = 1.0
    confidence: str = ""
    method: str = ""
    connection_id: str = ""
    post_id: str = ""


def audience_metric(platform: str) -> str:
    return AUDIENCE_METRIC.get(platform, "reach")


def _x(value: float) -> str:
    return "∞" if math.isinf(value) else f"{value:.1f}"


def _p(value: float) -> str:
    return "p < 0.001" if value < 0.001 else f"p = {value:.3f}"


def _name(platform: str) -> str:
    return PLATFORM_NAMES.get(platform, platform)


@dataclass
class _Comparison:
    """A pending comparison: its test is made now, its verdict after Holm."""

    insight: Insight
    raw_p: float


def _compare(
    kind: Kind,
    platform: str,
    metric: str,
    subject: str,
    baseline: str,
    a: Sequence[float],
    b: Sequence[float],
    rules: InsightRules,
    method: str,
    test: RankTest | None = None,
) -> _Comparison:
    test = test or mann_whitney(a, b)
    ratio = ratio_of_medians(a, b)
    # Only a difference the test already finds can become a finding (Holm only raises
    # p-values), so only those get the bootstrap's interval: the rest cost nothing.
    low = high = 0.0
    if test.p_value < rules.alpha:
        low, high = bootstrap_ratio(a, b, resamples=rules.bootstrap)
    return _Comparison(
        Insight(
            kind=kind,
            verdict=Verdict.NO_CLEAR_DIFFERENCE,
            platform=platform,
            metric=metric,
            summary="",
            subject=subject,
            baseline=baseline,
            n=len(a),
            baseline_n=len(b),
            ratio=ratio,
            ci_low=low,
            ci_high=high,
            method=method,
        ),
        test.p_value,
    )


def _settle(
    comparisons: Sequence[_Comparison], rules: InsightRules, words: Callable[[Insight], str]
) -> list[Insight]:
    adjusted = holm([c.raw_p for c in comparisons])
    out = []
    for comparison, p in zip(comparisons, adjusted, strict=True):
        insight = comparison.insight
        excludes_one = insight.ci_low > 1.0 or insight.ci_high < 1.0
        verdict = (
            Verdict.FINDING if p < rules.alpha and excludes_one else Verdict.NO_CLEAR_DIFFERENCE
        )
        settled = replace(insight, verdict=verdict, p_value=p, confidence=confidence_word(p))
        out.append(replace(settled, summary=words(settled)))
    return out


# --------------------------------------------------------------------------- content types


def content_types(posts: Sequence[PostFigure], rules: InsightRules) -> list[Insight]:
    """Per platform, each content type against the platform's most common one, on
    the audience figure and on the engagement rate."""
    pending: list[_Comparison] = []
    short: list[Insight] = []
    by_platform: dict[str, list[PostFigure]] = defaultdict(list)
    for post in posts:
        by_platform[post.platform].append(post)
    for platform, items in sorted(by_platform.items()):
        by_type: dict[str, list[PostFigure]] = defaultdict(list)
        for post in items:
            by_type[post.content_type].append(post)
        if len(by_type) < 2:
            continue
        baseline = max(by_type, key=lambda t: (len(by_type[t]), t))
        for ctype in sorted(by_type):
            if ctype == baseline:
                continue
            for metric in (audience_metric(platform), "engagement_rate"):
                a = [v for p in by_type[ctype] if (v := p.value(metric)) is not None]
                b = [v for p in by_type[baseline] if (v := p.value(metric)) is not None]
                if len(a) < rules.min_posts or len(b) < rules.min_posts:
                    if metric == audience_metric(platform):
                        short.append(_short_types(platform, ctype, baseline, len(a), len(b), rules))
                    continue
                pending.append(
                    _compare(
                        Kind.CONTENT_TYPE,
                        platform,
                        metric,
                        ctype,
                        baseline,
                        a,
                        b,
                        rules,
                        "Mann-Whitney U; ratio of medians, 95% bootstrap interval; "
                        "Holm-adjusted over every content-type comparison",
                    )
                )
    return _settle(pending, rules, _type_words) + short


def _type_words(i: Insight) -> str:
    what = METRIC_WORDS.get(i.metric, i.metric)
    sub, base = TYPE_WORDS.get(i.subject, i.subject), TYPE_WORDS.get(i.baseline, i.baseline)
    interval = f"95% CI {_x(i.ci_low)}–{_x(i.ci_high)}×; " if i.ci_high else ""
    evidence = f"n = {i.n} and {i.baseline_n}; {interval}{_p(i.p_value)}"
    if i.verdict is Verdict.FINDING:
        return (
            f"On {_name(i.platform)} your {sub} get {_x(i.ratio)}× the {what} of your "
            f"{base} ({evidence}; {i.confidence} confidence)."
        )
    return (
        f"On {_name(i.platform)}, {sub} and {base} get about the same {what} so far "
        f"(ratio {_x(i.ratio)}×, {evidence}): no clear difference."
    )


def _short_types(
    platform: str, ctype: str, baseline: str, n: int, baseline_n: int, rules: InsightRules
) -> Insight:
    return Insight(
        kind=Kind.CONTENT_TYPE,
        verdict=Verdict.NOT_ENOUGH_DATA,
        platform=platform,
        metric=audience_metric(platform),
        subject=ctype,
        baseline=baseline,
        n=n,
        baseline_n=baseline_n,
        summary=(
            f"Not enough data yet to compare {TYPE_WORDS.get(ctype, ctype)} with "
            f"{TYPE_WORDS.get(baseline, baseline)} on {_name(platform)}: {n} and "
            f"{baseline_n} posts old enough; {rules.min_posts} of each are needed."
        ),
    )


# --------------------------------------------------------------------------- best hours


def best_hours(posts: Sequence[PostFigure], zone: ZoneInfo, rules: InsightRules) -> list[Insight]:
    """Per platform, the 3-hour window of the day (local time of publishing) whose
    posts do best against the platform's other posts, if one clearly does."""
    out: list[Insight] = []
    by_platform: dict[str, list[PostFigure]] = defaultdict(list)
    for post in posts:
        by_platform[post.platform].append(post)
    for platform, items in sorted(by_platform.items()):
        metric = audience_metric(platform)
        pooled: list[float] = []
        slots: list[int] = []
        for post in items:
            value = post.value(metric)
            if value is None:
                continue
            pooled.append(value)
            slots.append(post.published_at.astimezone(zone).hour // 3)
        everyone = len(pooled)
        # One ranking of the platform's posts serves every window against the rest.
        ranked, ties = ranks(pooled)
        pending = []
        for slot in sorted(set(slots)):
            inside = [i for i, s in enumerate(slots) if s == slot]
            n1 = len(inside)
            if n1 < rules.min_posts or everyone - n1 < rules.min_posts:
                continue
            window = HOUR_WINDOWS[slot]
            values = [pooled[i] for i in inside]
            rest = [pooled[i] for i, s in enumerate(slots) if s != slot]
            test = mann_whitney_from_ranks(sum(ranked[i] for i in inside), n1, everyone - n1, ties)
            pending.append(
                _compare(
                    Kind.BEST_HOURS,
                    platform,
                    metric,
                    f"{window[0]:02d}:00–{window[1] % 24:02d}:00",
                    "other hours",
                    values,
                    rest,
                    rules,
                    "Mann-Whitney U of each 3-hour window against the other hours; "
                    "Holm-adjusted over the windows",
                    test,
                )
            )
        if not pending:
            out.append(
                Insight(
                    kind=Kind.BEST_HOURS,
                    verdict=Verdict.NOT_ENOUGH_DATA,
                    platform=platform,
                    metric=metric,
                    n=everyone,
                    summary=(
                        f"Not enough data yet for the best time to post on "
                        f"{_name(platform)}: {everyone} posts old enough; a 3-hour window "
                        f"needs {rules.min_posts}, and {rules.min_posts} more at other hours."
                    ),
                )
            )
            continue
        settled = _settle(pending, rules, _hour_words)
        winners = [i for i in settled if i.verdict is Verdict.FINDING and i.ratio > 1]
        if winners:
            out.append(max(winners, key=lambda i: i.ratio))
        else:
            best = max(settled, key=lambda i: i.ratio)
            out.append(
                replace(
                    best,
                    verdict=Verdict.NO_CLEAR_DIFFERENCE,
                    summary=(
                        f"No time of day clearly does better on {_name(platform)} yet: the "
                        f"best window, {best.subject}, gets {_x(best.ratio)}× the "
                        f"{METRIC_WORDS.get(metric, metric)} of other hours (n = {best.n} and "
                        f"{best.baseline_n}; {_p(best.p_value)}), within chance."
                    ),
                )
            )
    return out


def _hour_words(i: Insight) -> str:
    what = METRIC_WORDS.get(i.metric, i.metric)
    return (
        f"On {_name(i.platform)} your posts published {i.subject} get {_x(i.ratio)}× the "
        f"{what} of those at other hours (n = {i.n} and {i.baseline_n}; 95% CI "
        f"{_x(i.ci_low)}–{_x(i.ci_high)}×; {_p(i.p_value)}; {i.confidence} confidence)."
    )


# --------------------------------------------------------------------------- weeks


def week_over_week(days: Sequence[DayFigure], today: date, rules: InsightRules) -> list[Insight]:
    """Per platform, the last 7 complete local days against the 7 before."""
    last = {today - timedelta(days=d) for d in range(1, 8)}
    previous = {today - timedelta(days=d) for d in range(8, 15)}
    by_platform: dict[str, dict[date, float]] = defaultdict(dict)
    for day in days:
        metric = audience_metric(day.platform)
        value = getattr(day, metric)
        if value is not None:
            by_platform[day.platform][day.day] = by_platform[day.platform].get(day.day, 0) + value
    pending: list[tuple[Insight, float]] = []
    out: list[Insight] = []
    for platform, values in sorted(by_platform.items()):
        metric = audience_metric(platform)
        a = [values[d] for d in sorted(last) if values.get(d)]
        b = [values[d] for d in sorted(previous) if values.get(d)]
        if len(a) < rules.min_days or len(b) < rules.min_days:
            out.append(
                Insight(
                    kind=Kind.WEEK_OVER_WEEK,
                    verdict=Verdict.NOT_ENOUGH_DATA,
                    platform=platform,
                    metric=metric,
                    n=len(a),
                    baseline_n=len(b),
                    subject="last 7 days",
                    baseline="previous 7 days",
                    summary=(
                        f"Not enough data yet for a week-over-week change on "
                        f"{_name(platform)}: figures on {len(a)} and {len(b)} of the last "
                        f"two weeks' days; {rules.min_days} in each are needed."
                    ),
                )
            )
            continue
        test = welch([math.log1p(v) for v in a], [math.log1p(v) for v in b])
        ratio = sum(a) / sum(b) if sum(b) else math.inf
        low, high = bootstrap_ratio(
            a,
            b,
            statistic=lambda x, y: sum(x) / len(x) / (sum(y) / len(y)),
            resamples=rules.bootstrap,
        )
        pending.append(
            (
                Insight(
                    kind=Kind.WEEK_OVER_WEEK,
                    verdict=Verdict.NO_CLEAR_DIFFERENCE,
                    platform=platform,
                    metric=metric,
                    summary="",
                    subject="last 7 days",
                    baseline="previous 7 days",
                    n=len(a),
                    baseline_n=len(b),
                    ratio=ratio,
                    ci_low=low,
                    ci_high=high,
                    method="Welch's t-test on log daily totals; Holm-adjusted over platforms",
                ),
                test.p_value,
            )
        )
    adjusted = holm([p for _, p in pending])
    for (insight, _), p in zip(pending, adjusted, strict=True):
        big = abs(insight.ratio - 1.0) >= rules.min_change
        verdict = Verdict.FINDING if p < rules.alpha and big else Verdict.NO_CLEAR_DIFFERENCE
        settled = replace(insight, verdict=verdict, p_value=p, confidence=confidence_word(p))
        what = METRIC_WORDS.get(settled.metric, settled.metric)
        change = (settled.ratio - 1.0) * 100
        if verdict is Verdict.FINDING:
            words = (
                f"Worth a look: your {what} on {_name(settled.platform)} "
                f"{'rose' if change > 0 else 'fell'} {abs(change):.0f}% over the last 7 days "
                f"against the 7 before (n = {settled.n} and {settled.baseline_n} days; 95% "
                f"CI {_x(settled.ci_low)}–{_x(settled.ci_high)}×; {_p(p)}; "
                f"{settled.confidence} confidence)."
            )
        else:
            words = (
                f"Your {what} on {_name(settled.platform)} changed {change:+.0f}% from the "
                f"week before, within its usual day-to-day variation ({_p(p)})."
            )
        out.append(replace(settled, summary=words))
    return out


# --------------------------------------------------------------------------- standouts


def standout_posts(
    posts: Sequence[PostFigure], rules: InsightRules, most: int = 3
) -> list[Insight]:
    """Posts far above their account's median (robust z-score of log values)."""
    by_account: dict[str, list[PostFigure]] = defaultdict(list)
    for post in posts:
        by_account[post.connection_id].append(post)
    found: list[Insight] = []
    enough = False
    for connection_id, items in sorted(by_account.items()):
        platform = items[0].platform
        metric = audience_metric(platform)
        scored = [(p, v) for p in items if (v := p.value(metric)) is not None]
        if len(scored) < rules.min_posts:
            continue
        enough = True
        for outlier in robust_outliers([v for _, v in scored], rules.standout_z):
            post, _ = scored[outlier.index]
            what = METRIC_WORDS.get(metric, metric)
            found.append(
                Insight(
                    kind=Kind.STANDOUT_POST,
                    verdict=Verdict.FINDING
                    if outlier.p_value < rules.alpha
                    else Verdict.NO_CLEAR_DIFFERENCE,
                    platform=platform,
                    metric=metric,
                    connection_id=connection_id,
                    post_id=post.post_id,
                    subject=post.post_id,
                    baseline="account median",
                    n=1,
                    baseline_n=len(scored),
                    ratio=outlier.ratio,
                    p_value=outlier.p_value,
                    confidence=confidence_word(outlier.p_value),
                    method="robust z-score of log values (median, MAD); Bonferroni over the "
                    "account's posts",
                    summary=(
                        f"A {post.content_type} post on {_name(platform)} got "
                        f"{_x(outlier.ratio)}× the {what} of the account's typical post "
                        f"({outlier.z:.1f} robust standard deviations above the median of "
                        f"n = {len(scored)} posts; {_p(outlier.p_value)})."
                    ),
                )
            )
    found = [f for f in found if f.verdict is Verdict.FINDING]
    found.sort(key=lambda i: -i.ratio)
    if not enough:
        return [
            Insight(
                kind=Kind.STANDOUT_POST,
                verdict=Verdict.NOT_ENOUGH_DATA,
                platform="",
                metric="reach",
                summary=(
                    "Not enough data yet to tell which posts beat their account's norm: "
                    f"an account needs {rules.min_posts} posts old enough."
                ),
            )
        ]
    return found[:most]


def insights(
    posts: Sequence[PostFigure],
    days: Sequence[DayFigure],
    *,
    zone: ZoneInfo,
    today: date,
    rules: InsightRules,
) -> list[Insight]:
    """Everything, findings first (strongest first), then no clear difference, then
    not enough data."""
    every = [
        *content_types(posts, rules),
        *best_hours(posts, zone, rules),
        *week_over_week(days, today, rules),
        *standout_posts(posts, rules),
    ]
    rank = {Verdict.FINDING: 0, Verdict.NO_CLEAR_DIFFERENCE: 1, Verdict.NOT_ENOUGH_DATA: 2}
    return sorted(every, key=lambda i: (rank[i.verdict], i.p_value, i.kind.value, i.platform))
