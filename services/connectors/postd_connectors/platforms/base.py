"""The connector interface: what every platform module provides, and its vocabulary.

One module per platform implements :class:`Connector`. What differs between
platforms is data (``data/capabilities/*.toml``, ``data/errors/*.toml``); the code of
a connector only maps its platform's wire format to these types.

Every coroutine of a connector may raise :class:`PlatformFailure` (the platform
refused or could not be reached; ``outcome_unknown`` tells whether a write may have
happened anyway). None raises anything else on a platform's behalf. All of them do
network I/O and may take as long as the configured HTTP timeouts allow; polling
ones (Instagram containers, TikTok status) are bounded by their own budgets.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

from postd_connectors.domain.capabilities import PlatformCapabilities
from postd_connectors.domain.catalogue import ErrorCatalogue
from postd_connectors.domain.model import PlatformError, PostContent, TokenBundle


@dataclass(frozen=True)
class OAuthRequest:
    """What the platform's authorize URL must carry."""

    state: str
    redirect_uri: str
    scopes: tuple[str, ...]
    code_challenge: str | None


@dataclass(frozen=True)
class CodeGrant:
    """The callback's code and what the token request must repeat exactly."""

    code: str
    redirect_uri: str
    code_verifier: str | None
    params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TokenGrant:
    """Tokens from a code exchange. ``granted_scopes`` is None when the platform
    does not say (then the accounts step asks it)."""

    bundle: TokenBundle
    granted_scopes: tuple[str, ...] | None = None
    subject: str = ""


@dataclass(frozen=True)
class PlatformAccount:
    """An account a consent covers, with the tokens that act for it."""

    platform: str
    external_id: str
    kind: str
    name: str
    bundle: TokenBundle
    username: str = ""
    avatar_url: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    granted_scopes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class AccountContext:
    """What a connector needs to act for one connection."""

    connection_id: str
    tenant_id: str
    platform: str
    external_id: str
    kind: str
    account_name: str
    bundle: TokenBundle
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RateUsage:
    name: str
    scope: str
    used: int = 0
    limit: int = 0
    remaining: int = 0
    used_percent: float = 0.0
    resets_at: datetime | None = None
    retry_after: float | None = None


class PublishState(StrEnum):
    PUBLISHED = "published"
    PROCESSING = "processing"


Checkpoint = Callable[[Mapping[str, str]], Awaitable[None]]


class MediaSource(Protocol):
    """Fetches user media for upload (SSRF-guarded, size- and time-capped).

    ``read`` raises :class:`PlatformFailure` (category CONTENT_REJECTED) when the URL
    is refused, too large or unreachable. Blocks for the download."""

    async def read(self, url: str, *, max_bytes: int) -> tuple[bytes, str]:
        """The bytes and the content type."""
        ...


@dataclass(frozen=True)
class PublishRequest:
    content: PostContent
    idempotency_key: str
    fingerprint: str
    # What an earlier attempt saved with ``checkpoint`` (a container id, a publish id),
    # so an interrupted asynchronous publish resumes instead of starting again.
    progress: Mapping[str, str] = field(default_factory=dict)
    checkpoint: Checkpoint | None = None
    scheduled_at: datetime | None = None


@dataclass(frozen=True)
class PublishOutcome:
    state: PublishState
    platform_post_id: str = ""
    url: str = ""
    published_at: datetime | None = None
    usage: tuple[RateUsage, ...] = ()
    progress: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PostQuery:
    """FindPost: a post with this fingerprint published within [since, until)."""

    fingerprint: str
    since: datetime
    until: datetime
    idempotency_key: str = ""
    progress: Mapping[str, str] = field(default_factory=dict)


class MatchKind(StrEnum):
    IDEMPOTENCY_KEY = "idempotency_key"
    CONTENT_FINGERPRINT = "content_fingerprint"


@dataclass(frozen=True)
class FoundPost:
    platform_post_id: str
    matched_by: MatchKind
    state: PublishState = PublishState.PUBLISHED
    url: str = ""
    published_at: datetime | None = None


@dataclass(frozen=True)
class PostMetrics:
    impressions: int | None = None
    reach: int | None = None
    engagements: int | None = None
    clicks: int | None = None
    video_views: int | None = None
    conversions: int | None = None
    breakdown: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PostAnalytics:
    platform_post_id: str
    metrics: PostMetrics | None = None
    error: PlatformError | None = None


@dataclass(frozen=True)
class AccountDay:
    """An account's own figures for one day, dated as the platform dates them."""

    day: date
    metrics: PostMetrics


@dataclass(frozen=True)
class AccountAnalytics:
    """An account's figures per day, and lifetime totals where the platform reports
    only those (TikTok's follower and like counts)."""

    days: tuple[AccountDay, ...] = ()
    totals: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    latency_seconds: float
    granted_scopes: tuple[str, ...] = ()
    error: PlatformError | None = None


@dataclass(frozen=True)
class LiveLimits:
    """An account's limits right now, where the platform reports them."""

    max_video_duration: float | None = None
    publish_remaining: int | None = None
    options: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class WebhookEvent:
    """One normalized event from a platform webhook body."""

    kind: str
    account_id: str
    object_id: str = ""
    occurred_at: datetime | None = None
    data: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Review:
    review_id: str
    reviewer: str
    star_rating: int
    comment: str
    created_at: datetime | None = None
    reply: str = ""


@dataclass(frozen=True)
class ReviewPage:
    reviews: tuple[Review, ...]
    next_page_token: str = ""
    average_rating: float = 0.0
    error: PlatformError | None = None


@runtime_checkable
class ReviewSource(Protocol):
    """A connector whose accounts receive reviews (Business Profile). Both calls do
    network I/O and raise PlatformFailure."""

    async def list_reviews(self, ctx: AccountContext, *, page_token: str = "") -> ReviewPage:
        """One page of reviews, newest first."""
        ...

    async def reply_to_review(self, ctx: AccountContext, review_id: str, comment: str) -> None:
        """Create or replace the owner's reply."""
        ...


class Unsupported(Exception):
    """The platform has no such operation (see the capability matrix)."""


class Connector(Protocol):
    """One platform's API mapped to POSTD's vocabulary."""

    platform: str
    app: str
    capabilities: PlatformCapabilities
    catalogue: ErrorCatalogue
    supports_pkce: bool

    def authorize_url(self, request: OAuthRequest) -> str:
        """The consent URL: client id, exact redirect URI, scopes, state, PKCE."""
        ...

    def denial_message(self, error: str, description: str) -> str:
        """Plain words for an ``error`` the platform put on the callback."""
        ...

    async def exchange_code(self, grant: CodeGrant) -> TokenGrant:
        """Code (+ verifier) -> tokens (Meta: then a long-lived user token)."""
        ...

    async def fetch_accounts(self, grant: TokenGrant) -> list[PlatformAccount]:
        """The accounts the consent covers, each with its own tokens."""
        ...

    async def verify_permissions(self, ctx: AccountContext) -> tuple[str, ...] | None:
        """Scopes granted now, as the platform reports them (None: it cannot say)."""
        ...

    def can_refresh(self, bundle: TokenBundle) -> bool:
        """Whether :meth:`refresh` can renew this bundle without a person."""
        ...

    async def refresh(self, ctx: AccountContext) -> TokenBundle:
        """New tokens. An empty refresh token in the result keeps the stored one."""
        ...

    async def publish(self, ctx: AccountContext, request: PublishRequest) -> PublishOutcome:
        """Create (or, with ``request.scheduled_at``, schedule) a post."""
        ...

    async def edit_post(
        self, ctx: AccountContext, platform_post_id: str, content: PostContent
    ) -> None:
        """Change a published post's text (Unsupported where the platform cannot)."""
        ...

    async def delete_post(self, ctx: AccountContext, platform_post_id: str) -> bool:
        """Delete a post; True also when it was already gone."""
        ...

    async def find_post(self, ctx: AccountContext, query: PostQuery) -> FoundPost | None:
        """A post already made, by idempotency key or fingerprint within the window."""
        ...

    async def analytics(self, ctx: AccountContext, post_ids: Sequence[str]) -> list[PostAnalytics]:
        """Normalized metrics, one entry per id, in order."""
        ...

    async def account_analytics(
        self, ctx: AccountContext, since: date, until: date
    ) -> AccountAnalytics:
        """The account's own figures for the days ``since`` to ``until`` (inclusive,
        UTC), from the platform's documented account insights endpoint."""
        ...

    async def health_check(self, ctx: AccountContext) -> HealthResult:
        """The cheapest authenticated call the platform has ("who am I")."""
        ...

    async def revoke(self, ctx: AccountContext) -> bool:
        """Revoke the token at the platform (best effort)."""
        ...

    async def live_limits(self, ctx: AccountContext) -> LiveLimits:
        """The account's current limits (creator max duration, remaining quota)."""
        ...

    def verify_webhook(
        self, headers: Mapping[str, str], body: bytes, *, now: float | None = None
    ) -> bool:
        """Whether a webhook body is authentic (constant-time, on raw bytes)."""
        ...

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[WebhookEvent]:
        """The events in an authentic webhook body."""
        ...
