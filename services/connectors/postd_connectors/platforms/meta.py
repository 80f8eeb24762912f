"""Meta: Facebook Pages and Instagram business accounts on the Graph API.

Documented behaviour relied on (developers.facebook.com):
- Login dialog ``GET www.facebook.com/{v}/dialog/oauth`` (client_id, redirect_uri,
  state, comma-separated scope, response_type=code, PKCE S256); the code exchange
  ``GET graph.facebook.com/{v}/oauth/access_token`` gives a short-lived user token,
  ``grant_type=fb_exchange_token`` a long-lived one (~60 days). ``/me/accounts``
  read with a long-lived user token gives Page tokens that do not expire; POSTD keeps
  the user token to derive a new Page token when one stops working.
- Pages: ``POST /{page-id}/feed`` (message, link), ``POST /{page-id}/photos`` (url,
  caption; published=false for multi-photo posts attached with ``attached_media``),
  ``DELETE /{post-id}``, ``POST /{post-id}`` (message) to edit,
  ``GET /{page-id}/published_posts``, ``GET /{post-id}/insights``.
- Instagram: ``POST /{ig-user-id}/media`` creates a container (image_url, or
  media_type=REELS + video_url, or media_type=CAROUSEL + children made with
  is_carousel_item=true); ``GET /{container-id}?fields=status_code`` until FINISHED
  (never publish before); ``POST /{ig-user-id}/media_publish?creation_id=``;
  ``GET /{ig-user-id}/content_publishing_limit`` for the 24-hour quota.
- Errors ``{"error": {message, type, code, error_subcode, error_user_msg,
  fbtrace_id}}``; usage in ``X-App-Usage`` (percent of the app's hourly allowance)
  and ``X-Business-Use-Case-Usage`` (per Page, with
  ``estimated_time_to_regain_access`` in minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import aiohttp

from postd_common.secrets import Secret
from postd_connectors.domain.capabilities import PlatformCapabilities
from postd_connectors.domain.catalogue import ErrorCatalogue, RawFailure
from postd_connectors.domain.fingerprint import content_fingerprint
from postd_connectors.domain.model import (
    ErrorAction,
    ErrorCategory,
    MediaKind,
    PlatformError,
    PlatformFailure,
    PostContent,
    TokenBundle,
)
from postd_connectors.platforms.app import AppConfig, PollSettings
from postd_connectors.platforms.base import (
    AccountAnalytics,
    AccountContext,
    AccountDay,
    CodeGrant,
    FoundPost,
    HealthResult,
    LiveLimits,
    MatchKind,
    OAuthRequest,
    PlatformAccount,
    PostAnalytics,
    PostMetrics,
    PostQuery,
    PublishOutcome,
    PublishRequest,
    PublishState,
    RateUsage,
    TokenGrant,
    Unsupported,
    WebhookEvent,
)
from postd_connectors.platforms.http import PlatformHttp, PlatformResponse, parse_iso

USER_TOKEN = "user_access_token"  # noqa: S105 - a key name
DEFAULT_VERSION = "v23.0"
# When X-App-Usage reports the allowance used up, pause calls this long.
APP_USAGE_PAUSE_SECONDS = 60.0


def read_error(response: PlatformResponse) -> RawFailure:
    body = response.json()
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return RawFailure(
            response.status, platform_message=response.body[:200].decode(errors="replace")
        )
    retry_after = None
    for usage in _buc_usage(response.header("X-Business-Use-Case-Usage")):
        if usage.retry_after:
            retry_after = max(retry_after or 0.0, usage.retry_after)
    subcode = error.get("error_subcode")
    return RawFailure(
        http_status=response.status,
        code=str(error.get("code", "")),
        subcode=str(subcode) if subcode is not None else "",
        platform_message=str(error.get("message", "")),
        user_message=str(error.get("error_user_msg", "")),
        retry_after=retry_after,
        request_id=str(error.get("fbtrace_id", "")),
    )


def _buc_usage(header: str) -> list[RateUsage]:
    if not header:
        return []
    try:
        parsed = json.loads(header)
    except json.JSONDecodeError:
        return []
    out: list[RateUsage] = []
    if not isinstance(parsed, dict):
        return out
    for entries in parsed.values():
        for entry in entries if isinstance(entries, list) else []:
            pct = max(
                float(entry.get(k, 0) or 0) for k in ("call_count", "total_cputime", "total_time")
            )
            minutes = float(entry.get("estimated_time_to_regain_access", 0) or 0)
            out.append(
                RateUsage(
                    name="page_calls_per_24h",
                    scope="account",
                    used_percent=pct,
                    retry_after=minutes * 60 if minutes > 0 else None,
                )
            )
    return out


def usage_from_headers(response: PlatformResponse) -> tuple[RateUsage, ...]:
    """X-App-Usage and X-Business-Use-Case-Usage as POSTD usage records."""
    usage: list[RateUsage] = []
    raw = response.header("X-App-Usage")
    if raw:
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            parsed = {}
        if isinstance(parsed, dict) and parsed:
            pct = max(
                float(parsed.get(k, 0) or 0) for k in ("call_count", "total_cputime", "total_time")
            )
            usage.append(
                RateUsage(
                    name="app_calls_per_hour",
                    scope="app",
                    used_percent=pct,
                    retry_after=APP_USAGE_PAUSE_SECONDS if pct >= 100 else None,
                )
            )
    usage += _buc_usage(response.header("X-Business-Use-Case-Usage"))
    return tuple(usage)


class MetaGraph:
    """What Facebook and Instagram share: the app, OAuth, Graph calls, webhooks."""

    def __init__(
        self,
        app: AppConfig,
        session: aiohttp.ClientSession,
        catalogue: ErrorCatalogue,
        *,
        timeout: aiohttp.ClientTimeout,
        poll: PollSettings,
    ) -> None:
        self.app = app
        self.version = app.options.get("graph_version", DEFAULT_VERSION)
        self.catalogue = catalogue
        self.poll = poll
        self._session = session
        self._timeout = timeout

    def http(self, platform: str, display: str) -> PlatformHttp:
        return PlatformHttp(
            self._session,
            platform=platform,
            display_name=display,
            catalogue=self.catalogue,
            read_error=read_error,
            timeout=self._timeout,
        )

    def graph(self, path: str) -> str:
        return self.app.url("graph", f"/{self.version}{path}")

    def authorize_url(self, request: OAuthRequest) -> str:
        params = {
            "client_id": self.app.client_id,
            "redirect_uri": request.redirect_uri,
            "state": request.state,
            "scope": ",".join(request.scopes),
            "response_type": "code",
        }
        if request.code_challenge:
            params["code_challenge"] = request.code_challenge
            params["code_challenge_method"] = "S256"
        return self.app.url("www", f"/{self.version}/dialog/oauth?") + urlencode(params)

    async def exchange_code(self, http: PlatformHttp, grant: CodeGrant) -> TokenGrant:
        params = {
            "client_id": self.app.client_id,
            "client_secret": self.app.client_secret.reveal(),
            "redirect_uri": grant.redirect_uri,
            "code": grant.code,
        }
        if grant.code_verifier:
            params["code_verifier"] = grant.code_verifier
        short = (await http.call("GET", self.graph("/oauth/access_token"), params=params)).json()
        long = (
            await http.call(
                "GET",
                self.graph("/oauth/access_token"),
                params={
                    "grant_type": "fb_exchange_token",
                    "client_id": self.app.client_id,
                    "client_secret": self.app.client_secret.reveal(),
                    "fb_exchange_token": str(short.get("access_token", "")),
                },
            )
        ).json()
        token = Secret(str(long.get("access_token", "")))
        now = datetime.now(UTC)
        expires_in = long.get("expires_in")
        bundle = TokenBundle(
            access_token=token,
            expires_at=now + timedelta(seconds=int(expires_in)) if expires_in else None,
            issued_at=now,
        )
        granted = await self.permissions(http, token)
        return TokenGrant(replace_scopes(bundle, granted), granted)

    async def permissions(self, http: PlatformHttp, token: Secret) -> tuple[str, ...]:
        body = (await http.call("GET", self.graph("/me/permissions"), headers=_auth(token))).json()
        return tuple(
            str(p.get("permission"))
            for p in body.get("data", [])
            if isinstance(p, dict) and p.get("status") == "granted"
        )

    async def pages(self, http: PlatformHttp, user_token: Secret) -> list[dict[str, Any]]:
        pages: list[dict[str, Any]] = []
        params = {
            "fields": "id,name,category,access_token,picture{url},instagram_business_account",
            "limit": "100",
        }
        for _ in range(20):
            body = (
                await http.call(
                    "GET", self.graph("/me/accounts"), params=params, headers=_auth(user_token)
                )
            ).json()
            pages += [p for p in body.get("data", []) if isinstance(p, dict)]
            paging = body.get("paging") or {}
            after = (paging.get("cursors") or {}).get("after")
            if not paging.get("next") or not after:
                break
            params = {**params, "after": str(after)}
        return pages

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> bool:
        given = _header(headers, "X-Hub-Signature-256")
        if not given.startswith("sha256="):
            return False
        try:
            signature = bytes.fromhex(given[len("sha256=") :])
        except ValueError:
            return False
        expected = hmac.new(self.app.client_secret.reveal_bytes(), body, hashlib.sha256).digest()
        return hmac.compare_digest(signature, expected)

    def parse_webhook(self, body: bytes) -> list[WebhookEvent]:
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return []
        events: list[WebhookEvent] = []
        kind_prefix = str(payload.get("object", ""))
        for entry in payload.get("entry", []) if isinstance(payload, dict) else []:
            account = str(entry.get("id", ""))
            when = datetime.fromtimestamp(int(entry.get("time", 0) or 0), UTC)
            if "changed_fields" in entry:
                events.append(
                    WebhookEvent(
                        kind=f"{kind_prefix}.{','.join(entry['changed_fields'])}",
                        account_id=account,
                        occurred_at=when,
                    )
                )
            for change in entry.get("changes", []):
                value = change.get("value", {}) or {}
                item = value.get("item") or change.get("field", "")
                events.append(
                    WebhookEvent(
                        kind=f"{kind_prefix}.{change.get('field', '')}.{item}",
                        account_id=account,
                        object_id=str(value.get("post_id") or value.get("id") or ""),
                        occurred_at=when,
                        data={k: str(v) for k, v in value.items() if isinstance(v, str | int)},
                    )
                )
        return events


def replace_scopes(bundle: TokenBundle, scopes: tuple[str, ...]) -> TokenBundle:
    from dataclasses import replace

    return replace(bundle, scopes=scopes)


def _auth(token: Secret) -> dict[str, str]:
    return {"Authorization": f"Bearer {token.reveal()}"}


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return ""


def _when(value: Any) -> datetime | None:
    return parse_iso(str(value)) if value else None


class _MetaConnector:
    """Behaviour Facebook and Instagram connectors share."""

    platform: str
    app = "meta"
    supports_pkce = True
    account_kind: str

    def __init__(self, graph: MetaGraph, capabilities: PlatformCapabilities) -> None:
        self.meta = graph
        self.capabilities = capabilities
        self.catalogue = graph.catalogue
        self.http = graph.http(self.platform, capabilities.display_name)

    # -- OAuth ------------------------------------------------------------------------

    def authorize_url(self, request: OAuthRequest) -> str:
        return self.meta.authorize_url(request)

    def denial_message(self, error: str, description: str) -> str:
        if error == "access_denied":
            return "You declined the Facebook permissions, so nothing was connected."
        return f"Facebook did not authorize POSTD ({error}); nothing was connected."

    async def exchange_code(self, grant: CodeGrant) -> TokenGrant:
        return await self.meta.exchange_code(self.http, grant)

    async def verify_permissions(self, ctx: AccountContext) -> tuple[str, ...] | None:
        token = ctx.bundle.extra.get(USER_TOKEN) or ctx.bundle.access_token
        return await self.meta.permissions(self.http, token)

    def can_refresh(self, bundle: TokenBundle) -> bool:
        return USER_TOKEN in bundle.extra

    async def refresh(self, ctx: AccountContext) -> TokenBundle:
        """A new Page token, derived from the stored long-lived user token."""
        user_token = ctx.bundle.extra.get(USER_TOKEN)
        if not user_token:
            raise Unsupported("no user token to derive a Page token from")
        page_id = ctx.attributes.get("page_id", ctx.external_id)
        for page in await self.meta.pages(self.http, user_token):
            if str(page.get("id")) == page_id and page.get("access_token"):
                from dataclasses import replace

                return replace(
                    ctx.bundle,
                    access_token=Secret(str(page["access_token"])),
                    issued_at=datetime.now(UTC),
                )
        raise PlatformFailure(
            PlatformError(
                category=ErrorCategory.PERMISSION_MISSING,
                platform=self.platform,
                message=f"The person who connected {ctx.account_name or 'this account'} no longer "
                "manages its Facebook Page.",
                action=ErrorAction.RECONNECT,
                action_message="Reconnect with a Facebook account that manages the Page.",
                retryable=False,
            )
        )

    async def health_check(self, ctx: AccountContext) -> HealthResult:
        started = asyncio.get_running_loop().time()
        try:
            await self.http.call(
                "GET",
                self.meta.graph("/me"),
                params={"fields": "id,name"},
                headers=_auth(ctx.bundle.access_token),
                account=ctx.account_name,
            )
            granted = await self.meta.permissions(self.http, ctx.bundle.access_token)
        except PlatformFailure as failure:
            return HealthResult(
                False, asyncio.get_running_loop().time() - started, error=failure.error
            )
        return HealthResult(True, asyncio.get_running_loop().time() - started, granted)

    async def revoke(self, ctx: AccountContext) -> bool:
        token = ctx.bundle.extra.get(USER_TOKEN) or ctx.bundle.access_token
        response = await self.http.call(
            "DELETE", self.meta.graph("/me/permissions"), headers=_auth(token)
        )
        return bool(response.json().get("success"))

    def verify_webhook(
        self, headers: Mapping[str, str], body: bytes, *, now: float | None = None
    ) -> bool:
        return self.meta.verify_webhook(headers, body)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[WebhookEvent]:
        return self.meta.parse_webhook(body)

    # -- shared helpers ---------------------------------------------------------------

    async def _call(
        self, ctx: AccountContext, method: str, path: str, **kw: Any
    ) -> PlatformResponse:
        return await self.http.call(
            method,
            self.meta.graph(path),
            headers=_auth(ctx.bundle.access_token),
            account=ctx.account_name,
            **kw,
        )

    async def _insights(
        self, ctx: AccountContext, post_ids: Sequence[str], metrics: str, build: Any
    ) -> list[PostAnalytics]:
        semaphore = asyncio.Semaphore(4)

        async def one(post_id: str) -> PostAnalytics:
            async with semaphore:
                try:
                    body = (
                        await self._call(
                            ctx, "GET", f"/{post_id}/insights", params={"metric": metrics}
                        )
                    ).json()
                except PlatformFailure as failure:
                    if failure.error.category is ErrorCategory.AUTH_EXPIRED:
                        raise
                    return PostAnalytics(post_id, error=failure.error)
                values: dict[str, Any] = {}
                for item in body.get("data", []):
                    entries = item.get("values") or [{}]
                    values[str(item.get("name"))] = entries[-1].get("value")
                return PostAnalytics(post_id, metrics=build(values))

        return list(await asyncio.gather(*(one(p) for p in post_ids)))

    async def _daily_insights(
        self,
        ctx: AccountContext,
        params: Mapping[str, str],
        build: Any,
    ) -> AccountAnalytics:
        """``GET /{node}/insights`` with daily values: one AccountDay per day.

        A daily value's ``end_time`` is the end of its day (the next midnight), so the
        day it counts is the day before ``end_time``."""
        body = (
            await self._call(ctx, "GET", f"/{ctx.external_id}/insights", params=dict(params))
        ).json()
        by_day: dict[date, dict[str, Any]] = {}
        for item in body.get("data", []):
            for entry in item.get("values") or []:
                ended = parse_iso(str(entry.get("end_time", "")))
                if ended is None:
                    continue
                day = (ended - timedelta(seconds=1)).date()
                by_day.setdefault(day, {})[str(item.get("name"))] = entry.get("value")
        return AccountAnalytics(
            days=tuple(AccountDay(day, build(values)) for day, values in sorted(by_day.items()))
        )

    def fingerprint_of(self, text: str, link: str = "") -> str:
        return content_fingerprint(text, link)

    async def edit_post(
        self, ctx: AccountContext, platform_post_id: str, content: PostContent
    ) -> None:
        raise Unsupported(
            f"{self.capabilities.display_name} posts cannot be edited through the API"
        )


def _int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return sum(int(v) for v in value.values() if isinstance(v, int | float))
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class FacebookConnector(_MetaConnector):
    platform = "facebook"
    account_kind = "page"

    async def fetch_accounts(self, grant: TokenGrant) -> list[PlatformAccount]:
        user_token = grant.bundle.access_token
        accounts = []
        for page in await self.meta.pages(self.http, user_token):
            accounts.append(
                PlatformAccount(
                    platform=self.platform,
                    external_id=str(page["id"]),
                    kind="page",
                    name=str(page.get("name", "")),
                    avatar_url=str(((page.get("picture") or {}).get("data") or {}).get("url", "")),
                    bundle=_page_bundle(grant.bundle, str(page.get("access_token", ""))),
                    attributes={
                        "page_id": str(page["id"]),
                        "category": str(page.get("category", "")),
                    },
                )
            )
        return accounts

    async def publish(self, ctx: AccountContext, request: PublishRequest) -> PublishOutcome:
        content = request.content
        page = ctx.external_id
        extra: dict[str, str] = {}
        if request.scheduled_at is not None:
            extra = {
                "published": "false",
                "scheduled_publish_time": str(int(request.scheduled_at.timestamp())),
            }
        # Media of unknown kind are taken as images (the pre-flight checked them).
        images = [
            m
            for m in content.media
            if m.effective_kind not in (MediaKind.VIDEO, MediaKind.DOCUMENT)
        ]
        if len(images) == 1 and not request.scheduled_at:
            response = await self._call(
                ctx,
                "POST",
                f"/{page}/photos",
                data={"url": images[0].url, "caption": content.text, **extra},
            )
            body = response.json()
            post_id = str(body.get("post_id") or body.get("id"))
        else:
            data: dict[str, str] = {"message": content.text, **extra}
            if content.link and not images:
                data["link"] = content.link
            for index, image in enumerate(images):
                photo = await self._call(
                    ctx,
                    "POST",
                    f"/{page}/photos",
                    data={"url": image.url, "published": "false", "temporary": "true"},
                )
                data[f"attached_media[{index}]"] = json.dumps(
                    {"media_fbid": str(photo.json().get("id"))}
                )
            response = await self._call(ctx, "POST", f"/{page}/feed", data=data)
            post_id = str(response.json().get("id"))
        return PublishOutcome(
            state=PublishState.PUBLISHED,
            platform_post_id=post_id,
            url=f"https://www.facebook.com/{post_id}",
            published_at=datetime.now(UTC) if not request.scheduled_at else request.scheduled_at,
            usage=usage_from_headers(response),
        )

    async def edit_post(
        self, ctx: AccountContext, platform_post_id: str, content: PostContent
    ) -> None:
        await self._call(ctx, "POST", f"/{platform_post_id}", data={"message": content.text})

    async def delete_post(self, ctx: AccountContext, platform_post_id: str) -> bool:
        response = await self._call(ctx, "DELETE", f"/{platform_post_id}")
        return bool(response.json().get("success", True))

    async def find_post(self, ctx: AccountContext, query: PostQuery) -> FoundPost | None:
        if not query.fingerprint:
            return None
        body = (
            await self._call(
                ctx,
                "GET",
                f"/{ctx.external_id}/published_posts",
                params={
                    "fields": "id,message,link,created_time,permalink_url",
                    "since": str(int(query.since.timestamp())),
                    "until": str(int(query.until.timestamp())),
                    "limit": "100",
                },
            )
        ).json()
        for post in body.get("data", []):
            created = _when(post.get("created_time"))
            if created is not None and not query.since <= created < query.until:
                continue
            candidates = {
                content_fingerprint(str(post.get("message", "")), str(post.get("link", ""))),
                content_fingerprint(str(post.get("message", ""))),
            }
            if query.fingerprint in candidates:
                return FoundPost(
                    platform_post_id=str(post["id"]),
                    matched_by=MatchKind.CONTENT_FINGERPRINT,
                    url=str(post.get("permalink_url", "")),
                    published_at=created,
                )
        return None

    async def analytics(self, ctx: AccountContext, post_ids: Sequence[str]) -> list[PostAnalytics]:
        def build(v: Mapping[str, Any]) -> PostMetrics:
            reactions = v.get("post_reactions_by_type_total")
            return PostMetrics(
                impressions=_int(v.get("post_impressions")),
                reach=_int(v.get("post_impressions_unique")),
                engagements=_int(v.get("post_engaged_users")),
                clicks=_int(v.get("post_clicks")),
                video_views=_int(v.get("post_media_view")),
                breakdown={str(k): int(n) for k, n in reactions.items()}
                if isinstance(reactions, dict)
                else {},
            )

        return await self._insights(
            ctx,
            post_ids,
            "post_impressions,post_impressions_unique,post_engaged_users,post_clicks,"
            "post_media_view,post_reactions_by_type_total",
            build,
        )

    async def account_analytics(
        self, ctx: AccountContext, since: date, until: date
    ) -> AccountAnalytics:
        """Page insights, ``period=day`` between ``since`` and ``until``."""

        def build(v: Mapping[str, Any]) -> PostMetrics:
            new_likes = _int(v.get("page_fan_adds"))
            return PostMetrics(
                impressions=_int(v.get("page_impressions")),
                reach=_int(v.get("page_impressions_unique")),
                engagements=_int(v.get("page_post_engagements")),
                clicks=_int(v.get("page_total_actions")),
                breakdown={"page_likes_added": new_likes} if new_likes is not None else {},
            )

        return await self._daily_insights(
            ctx,
            {
                "metric": "page_impressions,page_impressions_unique,page_post_engagements,"
                "page_total_actions,page_fan_adds",
                "period": "day",
                "since": since.isoformat(),
                "until": until.isoformat(),
            },
            build,
        )

    async def live_limits(self, ctx: AccountContext) -> LiveLimits:
        return LiveLimits()


class InstagramConnector(_MetaConnector):
    platform = "instagram"
    account_kind = "ig_business"

    async def fetch_accounts(self, grant: TokenGrant) -> list[PlatformAccount]:
        accounts = []
        for page in await self.meta.pages(self.http, grant.bundle.access_token):
            ig = page.get("instagram_business_account") or {}
            ig_id = str(ig.get("id", "")) if isinstance(ig, dict) else ""
            if not ig_id:
                continue
            page_token = Secret(str(page.get("access_token", "")))
            profile = (
                await self.http.call(
                    "GET",
                    self.meta.graph(f"/{ig_id}"),
                    params={"fields": "id,username,name,profile_picture_url"},
                    headers=_auth(page_token),
                )
            ).json()
            username = str(profile.get("username", ""))
            accounts.append(
                PlatformAccount(
                    platform=self.platform,
                    external_id=ig_id,
                    kind="ig_business",
                    name=str(profile.get("name") or username or page.get("name", "")),
                    username=f"@{username}" if username else "",
                    avatar_url=str(profile.get("profile_picture_url", "")),
                    bundle=_page_bundle(grant.bundle, page_token.reveal()),
                    attributes={"page_id": str(page["id"])},
                )
            )
        return accounts

    async def publishing_limit(self, ctx: AccountContext) -> tuple[int, int]:
        body = (
            await self._call(
                ctx,
                "GET",
                f"/{ctx.external_id}/content_publishing_limit",
                params={"fields": "quota_usage,config"},
            )
        ).json()
        entry = (body.get("data") or [{}])[0]
        total = int((entry.get("config") or {}).get("quota_total", 50) or 50)
        return int(entry.get("quota_usage", 0) or 0), total

    async def live_limits(self, ctx: AccountContext) -> LiveLimits:
        used, total = await self.publishing_limit(ctx)
        return LiveLimits(publish_remaining=max(0, total - used))

    async def publish(self, ctx: AccountContext, request: PublishRequest) -> PublishOutcome:
        if request.scheduled_at is not None:
            raise Unsupported("Instagram cannot schedule posts through the API")
        progress = dict(request.progress)
        container = progress.get("container_id", "")
        if not container:
            used, total = await self.publishing_limit(ctx)
            if used >= total:
                raise self.http.failure(
                    RawFailure(
                        400,
                        code="9",
                        subcode="2207042",
                        platform_message="content_publishing_limit reached",
                    ),
                    account=ctx.account_name,
                )
            container = await self._create_container(ctx, request.content)
            if request.checkpoint:
                await request.checkpoint({"container_id": container})
        status = await self._wait_for(ctx, container)
        if status == "PUBLISHED":
            # An earlier media_publish went through but its answer was lost.
            found = await self._find_by_fingerprint(ctx, request.fingerprint, None)
            if found is not None:
                return PublishOutcome(
                    PublishState.PUBLISHED, found.platform_post_id, found.url, found.published_at
                )
            raise self.http.failure(
                RawFailure(0, platform_message="container published but media not listed yet"),
                account=ctx.account_name,
                outcome_unknown=True,
            )
        if status == "EXPIRED":
            if request.checkpoint:
                await request.checkpoint({"container_id": ""})
            raise self.http.failure(
                RawFailure(400, code="-2", subcode="2207020", platform_message="container expired")
            )
        if status == "ERROR":
            raise self.http.failure(
                RawFailure(
                    400, code="9004", subcode="2207052", platform_message="media processing failed"
                ),
                account=ctx.account_name,
            )
        if status != "FINISHED":
            return PublishOutcome(
                PublishState.PROCESSING, container, progress={"container_id": container}
            )
        response = await self._call(
            ctx, "POST", f"/{ctx.external_id}/media_publish", data={"creation_id": container}
        )
        media_id = str(response.json().get("id"))
        if request.checkpoint:
            await request.checkpoint({"media_id": media_id})
        permalink = ""
        with contextlib.suppress(PlatformFailure):  # the post exists; its link is a nicety
            permalink = str(
                (await self._call(ctx, "GET", f"/{media_id}", params={"fields": "permalink"}))
                .json()
                .get("permalink", "")
            )
        return PublishOutcome(
            PublishState.PUBLISHED,
            media_id,
            url=permalink,
            published_at=datetime.now(UTC),
            usage=usage_from_headers(response),
        )

    async def _create_container(self, ctx: AccountContext, content: PostContent) -> str:
        media = content.media
        if len(media) == 1:
            item = media[0]
            data = {"caption": content.text}
            if item.effective_kind is MediaKind.VIDEO:
                data.update({"media_type": "REELS", "video_url": item.url})
            else:
                data["image_url"] = item.url
                if item.alt_text:
                    data["alt_text"] = item.alt_text
            return str(
                (await self._call(ctx, "POST", f"/{ctx.external_id}/media", data=data)).json()["id"]
            )
        children = []
        for item in media:
            data = {"is_carousel_item": "true"}
            if item.effective_kind is MediaKind.VIDEO:
                data.update({"media_type": "VIDEO", "video_url": item.url})
            else:
                data["image_url"] = item.url
            children.append(
                str(
                    (await self._call(ctx, "POST", f"/{ctx.external_id}/media", data=data)).json()[
                        "id"
                    ]
                )
            )
        response = await self._call(
            ctx,
            "POST",
            f"/{ctx.external_id}/media",
            data={
                "media_type": "CAROUSEL",
                "children": ",".join(children),
                "caption": content.text,
            },
        )
        return str(response.json()["id"])

    async def container_status(self, ctx: AccountContext, container: str) -> str:
        body = (
            await self._call(ctx, "GET", f"/{container}", params={"fields": "status_code,status"})
        ).json()
        return str(body.get("status_code", ""))

    async def _wait_for(self, ctx: AccountContext, container: str) -> str:
        """Poll the container until it leaves IN_PROGRESS or the budget runs out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.meta.poll.budget
        delay = self.meta.poll.interval
        while True:
            status = await self.container_status(ctx, container)
            if status != "IN_PROGRESS" or loop.time() + delay > deadline:
                return status
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 10.0)

    async def _find_by_fingerprint(
        self, ctx: AccountContext, fingerprint: str, query: PostQuery | None
    ) -> FoundPost | None:
        body = (
            await self._call(
                ctx,
                "GET",
                f"/{ctx.external_id}/media",
                params={"fields": "id,caption,timestamp,permalink", "limit": "50"},
            )
        ).json()
        for media in body.get("data", []):
            created = _when(media.get("timestamp"))
            if (
                query is not None
                and created is not None
                and not query.since <= created < query.until
            ):
                continue
            if content_fingerprint(str(media.get("caption", ""))) == fingerprint:
                return FoundPost(
                    platform_post_id=str(media["id"]),
                    matched_by=MatchKind.CONTENT_FINGERPRINT,
                    url=str(media.get("permalink", "")),
                    published_at=created,
                )
        return None

    async def find_post(self, ctx: AccountContext, query: PostQuery) -> FoundPost | None:
        container = query.progress.get("container_id", "")
        if container:
            status = await self.container_status(ctx, container)
            if status == "IN_PROGRESS":
                return FoundPost(container, MatchKind.IDEMPOTENCY_KEY, PublishState.PROCESSING)
            if status == "FINISHED":
                # Prepared but never published: not a post yet; publishing resumes it.
                return None
        if not query.fingerprint:
            return None
        return await self._find_by_fingerprint(ctx, query.fingerprint, query)

    async def delete_post(self, ctx: AccountContext, platform_post_id: str) -> bool:
        raise Unsupported("Instagram media cannot be deleted through the API")

    async def analytics(self, ctx: AccountContext, post_ids: Sequence[str]) -> list[PostAnalytics]:
        def build(v: Mapping[str, Any]) -> PostMetrics:
            breakdown = {
                name: n
                for name, key in (
                    ("likes", "likes"),
                    ("comments", "comments"),
                    ("shares", "shares"),
                    ("saves", "saved"),
                )
                if (n := _int(v.get(key))) is not None
            }
            return PostMetrics(
                impressions=_int(v.get("impressions")),
                reach=_int(v.get("reach")),
                engagements=_int(v.get("total_interactions")),
                video_views=_int(v.get("views")),
                breakdown=breakdown,
            )

        return await self._insights(
            ctx,
            post_ids,
            "impressions,reach,views,likes,comments,shares,saved,total_interactions",
            build,
        )

    async def account_analytics(
        self, ctx: AccountContext, since: date, until: date
    ) -> AccountAnalytics:
        """Instagram account insights (``period=day``, ``metric_type=total_value``)."""

        def build(v: Mapping[str, Any]) -> PostMetrics:
            visits = _int(v.get("profile_views"))
            return PostMetrics(
                reach=_int(v.get("reach")),
                impressions=_int(v.get("views")),
                engagements=_int(v.get("total_interactions")),
                breakdown={"profile_visits": visits} if visits is not None else {},
            )

        return await self._daily_insights(
            ctx,
            {
                "metric": "reach,views,total_interactions,profile_views",
                "period": "day",
                "metric_type": "total_value",
                "since": since.isoformat(),
                "until": until.isoformat(),
            },
            build,
        )


def _page_bundle(user: TokenBundle, page_token: str) -> TokenBundle:
    """A Page token bundle that keeps the user token to derive a new one later."""
    return TokenBundle(
        access_token=Secret(page_token),
        expires_at=None,
        scopes=user.scopes,
        extra={USER_TOKEN: user.access_token},
        issued_at=user.issued_at,
    )
