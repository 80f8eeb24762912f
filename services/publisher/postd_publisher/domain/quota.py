"""The per-account quota ledger: platform limits as data, and the dispatch plan.

Each rule mirrors one documented platform limit per account (Instagram's 50 posts
per 24 hours, TikTok's 6 video inits per minute, Business Profile's ~10 edits per
minute). The ledger remembers when each dispatch used a slot; before dispatching,
jobs of a connection whose window is full are deferred to the moment the oldest
slot in the window frees — never failed. Rules come from connectors'
GetCapabilities (account-scoped rate limits) with the bundled ones as fallback.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

# Rate-limit scopes that count against one connected account (not the whole app).
ACCOUNT_SCOPES = frozenset({"account", "user_token", "location", "page"})
# Rate-limit names that a publish call spends (GetCapabilities may list others,
# such as read limits, which publishing does not touch).
PUBLISH_LIMIT_NAMES = frozenset(
    {
        "publish_per_24h",
        "posts_per_24h",
        "posts_per_day",
        "video_init_per_minute",
        "edits_per_minute",
        "pins_per_day",
        "uploads_per_day",
    }
)


# Who spends a rule's slots: publishing (every publish rule), analytics collection
# (reads), or both (an account's call budget that every call counts against).
PUBLISH = "publish"
ANALYTICS = "analytics"
PUBLISH_ONLY = frozenset({PUBLISH})
EVERY_CALL = frozenset({PUBLISH, ANALYTICS})


@dataclass(frozen=True)
class QuotaRule:
    platform: str
    name: str
    limit: int
    window: timedelta
    description: str
    spent_by: frozenset[str] = PUBLISH_ONLY


DEFAULT_RULES: tuple[QuotaRule, ...] = (
    QuotaRule(
        "instagram",
        "publish_per_24h",
        50,
        timedelta(hours=24),
        "Instagram allows 50 posts per account in 24 hours",
    ),
    QuotaRule(
        "tiktok",
        "video_init_per_minute",
        6,
        timedelta(minutes=1),
        "TikTok allows 6 video uploads per account per minute",
    ),
    QuotaRule(
        "google_business",
        "edits_per_minute",
        10,
        timedelta(minutes=1),
        "Google Business Profile allows about 10 edits per profile per minute",
    ),
)


# Account call budgets that reads spend as well as publishes (documented per account),
# or POSTD's own pacing of reads where a platform documents none per account. Analytics
# collection may take only a share of these (domain/analytics.py), so a due publish
# always finds room.
DEFAULT_CALL_RULES: tuple[QuotaRule, ...] = (
    QuotaRule(
        "facebook",
        "page_calls_per_24h",
        4800,
        timedelta(hours=24),
        "Meta allows a Page at least 4,800 calls in 24 hours (Business Use Case limit: "
        "4,800 times its engaged users)",
        EVERY_CALL,
    ),
    QuotaRule(
        "instagram",
        "account_calls_per_24h",
        4800,
        timedelta(hours=24),
        "Meta allows an Instagram account at least 4,800 calls in 24 hours (Business "
        "Use Case limit: 4,800 times its impressions)",
        EVERY_CALL,
    ),
    QuotaRule(
        "linkedin",
        "analytics_calls_per_hour",
        60,
        timedelta(hours=1),
        "POSTD reads LinkedIn statistics at most 60 times per account per hour",
        frozenset({ANALYTICS}),
    ),
    QuotaRule(
        "tiktok",
        "analytics_calls_per_minute",
        20,
        timedelta(minutes=1),
        "POSTD reads TikTok video and creator figures at most 20 times per account per minute",
        frozenset({ANALYTICS}),
    ),
    QuotaRule(
        "google_business",
        "analytics_calls_per_minute",
        10,
        timedelta(minutes=1),
        "POSTD reads Business Profile performance at most 10 times per location per minute",
        frozenset({ANALYTICS}),
    ),
    QuotaRule(
        "mailchimp",
        "analytics_calls_per_minute",
        30,
        timedelta(minutes=1),
        "POSTD reads Mailchimp reports at most 30 times per account per minute",
        frozenset({ANALYTICS}),
    ),
)


class QuotaBook:
    """The rules in force, by platform: the bundled ones, replaced per platform by
    those connectors reports, and by operator overrides (configuration) last; and the
    account call budgets (the service passes DEFAULT_CALL_RULES), which connectors'
    publish limits do not replace."""

    def __init__(
        self,
        rules: Iterable[QuotaRule] = DEFAULT_RULES,
        overrides: Iterable[QuotaRule] = (),
        *,
        calls: Iterable[QuotaRule] = (),
        call_overrides: Iterable[QuotaRule] = (),
    ) -> None:
        self._overrides = tuple(overrides)
        self._by_platform: dict[str, tuple[QuotaRule, ...]] = {}
        self._calls: dict[str, tuple[QuotaRule, ...]] = {
            platform: tuple(r for r in grouped if r.limit > 0 and r.window > timedelta(0))
            for platform, grouped in (
                _by_platform(calls) | _by_platform(tuple(call_overrides))
            ).items()
        }
        self._set(_by_platform(rules) | _by_platform(self._overrides))

    def _set(self, grouped: dict[str, list[QuotaRule]]) -> None:
        self._by_platform = {
            platform: tuple(r for r in rules if r.limit > 0 and r.window > timedelta(0))
            for platform, rules in grouped.items()
        }

    def merge(self, rules: Iterable[QuotaRule]) -> None:
        """Rules from connectors replace the bundled ones of the same platform."""
        current = {p: list(r) for p, r in self._by_platform.items()}
        self._set(current | _by_platform(rules) | _by_platform(self._overrides))

    def for_platform(self, platform: str) -> tuple[QuotaRule, ...]:
        """Every rule of the platform: publish limits and call budgets."""
        return self._by_platform.get(platform, ()) + self._calls.get(platform, ())

    def spent_by(self, platform: str, who: str) -> tuple[QuotaRule, ...]:
        """The rules a publish (``PUBLISH``) or a read (``ANALYTICS``) spends."""
        return tuple(r for r in self.for_platform(platform) if who in r.spent_by)

    @property
    def platforms(self) -> frozenset[str]:
        return frozenset(self._by_platform) | frozenset(self._calls)

    def longest_window(self) -> timedelta:
        windows = [
            r.window
            for grouped in (self._by_platform, self._calls)
            for rules in grouped.values()
            for r in rules
        ]
        return max(windows, default=timedelta(0))


@dataclass(frozen=True)
class QuotaDemand:
    """A claimed job asking for a slot."""

    job_id: str
    tenant_id: str
    connection_id: str
    platform: str


@dataclass(frozen=True)
class Deferral:
    job_id: str
    until: datetime
    reason: str


@dataclass(frozen=True)
class LedgerEntry:
    tenant_id: str
    connection_id: str
    limit_name: str
    job_id: str


@dataclass(frozen=True)
class QuotaPlan:
    admitted: frozenset[str]
    deferred: tuple[Deferral, ...]
    entries: tuple[LedgerEntry, ...]


def _by_platform(rules: Iterable[QuotaRule]) -> dict[str, list[QuotaRule]]:
    grouped: dict[str, list[QuotaRule]] = defaultdict(list)
    for rule in rules:
        grouped[rule.platform].append(rule)
    return dict(grouped)


def window_words(window: timedelta) -> str:
    """ "24 hours", "minute", "10 minutes": a window as people say it."""
    seconds = int(window.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds % size == 0 and seconds >= size:
            count = seconds // size
            if unit == "day" and count == 1:
                return "24 hours"
            return unit if count == 1 else f"{count} {unit}s"
    return f"{seconds} seconds"


def parse_rules(text: str, spent_by: frozenset[str] = PUBLISH_ONLY) -> list[QuotaRule]:
    """Operator overrides: ``platform:name:limit:window_seconds`` separated by commas.
    Raises ValueError naming the bad entry."""
    rules: list[QuotaRule] = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        parts = entry.split(":")
        if len(parts) != 4 or not parts[0] or not parts[1]:
            raise ValueError(f"quota rule {entry!r} is not platform:name:limit:window_seconds")
        try:
            limit, seconds = int(parts[2]), int(parts[3])
        except ValueError as exc:
            raise ValueError(f"quota rule {entry!r} needs whole numbers") from exc
        window = timedelta(seconds=seconds)
        description = (
            f"{parts[0]} allows {limit} posts per account in {window_words(window)}"
            if spent_by == PUBLISH_ONLY
            else f"{parts[0]} allows {limit} calls per account every {window_words(window)}"
        )
        rules.append(QuotaRule(parts[0], parts[1], limit, window, description, spent_by))
    return rules


UsageKey = tuple[str, str, str]  # tenant, connection, limit name


def plan_dispatch(
    demands: Sequence[QuotaDemand],
    used: Mapping[UsageKey, Sequence[datetime]],
    book: QuotaBook,
    now: datetime,
) -> QuotaPlan:
    """Admit jobs in order while their accounts have room; defer the rest.

    ``demands`` are in dispatch order; ``used`` holds the ledger's times inside each
    rule's window. Once one job of a connection is deferred, its later jobs are too
    (to at least the same time), so an account's posts keep their order.
    """
    admitted: set[str] = set()
    deferred: list[Deferral] = []
    entries: list[LedgerEntry] = []
    taken: dict[UsageKey, list[datetime]] = {}
    held: dict[tuple[str, str], Deferral] = {}
    for demand in demands:
        rules = book.spent_by(demand.platform, PUBLISH)
        account = (demand.tenant_id, demand.connection_id)
        if not rules:
            admitted.add(demand.job_id)
            continue
        if account in held:
            first = held[account]
            deferred.append(Deferral(demand.job_id, first.until, first.reason))
            continue
        blocking: Deferral | None = None
        for rule in rules:
            key = (demand.tenant_id, demand.connection_id, rule.name)
            times = taken.setdefault(
                key, sorted(t for t in used.get(key, ()) if t > now - rule.window)
            )
            if len(times) >= rule.limit:
                frees = times[len(times) - rule.limit] + rule.window
                if blocking is None or frees > blocking.until:
                    blocking = Deferral(
                        demand.job_id,
                        frees,
                        f"Deferred: {rule.description}; the next slot frees at "
                        f"{frees:%Y-%m-%d %H:%M:%S} UTC.",
                    )
        if blocking is not None:
            held[account] = blocking
            deferred.append(blocking)
            continue
        admitted.add(demand.job_id)
        for rule in rules:
            key = (demand.tenant_id, demand.connection_id, rule.name)
            taken[key].append(now)
            entries.append(
                LedgerEntry(demand.tenant_id, demand.connection_id, rule.name, demand.job_id)
            )
    return QuotaPlan(frozenset(admitted), tuple(deferred), tuple(entries))
