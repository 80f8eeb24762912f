"""Google Business Profile: Google OAuth and the Business Profile APIs.

Documented behaviour relied on (developers.google.com/identity/protocols/oauth2 and
developers.google.com/my-business):
- ``GET accounts.google.com/o/oauth2/v2/auth`` with ``access_type=offline`` (a refresh
  token), ``prompt=consent`` (a refresh token on every consent, not only the first),
  ``include_granted_scopes=true``, space-separated ``scope``, ``state`` and PKCE S256;
  ``POST oauth2.googleapis.com/token`` answers ``access_token`` (about 3,600 s),
  ``refresh_token``, ``scope``; a refresh returns no new refresh token.
- Accounts: ``GET mybusinessaccountmanagement.googleapis.com/v1/accounts``;
  locations: ``GET mybusinessbusinessinformation.googleapis.com/v1/{account}/locations``
  with a ``readMask``.
- Local posts: ``POST mybusiness.googleapis.com/v4/{account}/{location}/localPosts``
  with ``topicType`` STANDARD / EVENT / OFFER, ``summary`` (1,500 characters),
  ``callToAction`` {actionType, url}, ``media`` [{mediaFormat, sourceUrl}], ``event``
  {title, schedule} and ``offer``; PATCH with ``updateMask``; DELETE.
- Reviews: ``GET .../reviews`` and ``PUT .../reviews/{id}/reply`` {comment}.
- Errors: ``{"error": {"code", "message", "status", "details"}}`` with an ErrorInfo
  ``reason``; about 10 edits per minute per profile.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

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
from postd_connectors.platforms.app import AppConfig
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
    Review,
    ReviewPage,
    TokenGrant,
    Unsupported,
    WebhookEvent,
)
from postd_connectors.platforms.http import PlatformHttp, PlatformResponse, parse_iso

BUSINESS_SCOPE = "https://www.googleapis.com/auth/business.manage"


def read_error(response: PlatformResponse) -> RawFailure:
    body = response.json()
    if not isinstance(body, dict):
        body = {}
    error = body.get("error")
    if isinstance(error, dict):
        reason, violations = "", []
        for detail in error.get("details", []) or []:
            if not isinstance(detail, dict):
                continue
            reason = reason or str(detail.get("reason", ""))
            for violation in detail.get("fieldViolations", []) or []:
                violations.append(f"{violation.get('field')}: {violation.get('description')}")
        return RawFailure(
            http_status=response.status,
            code=str(error.get("status", "")),
            subcode=reason,
            platform_message=str(error.get("message", "")),
            user_message="; ".join(violations),
        )
    return RawFailure(
        http_status=response.status,
        code=str(error or ""),
        platform_message=str(body.get("error_description", "")),
    )


_STARS = {"ONE": 1, "TWO": 2, "THREE": 3, "FOUR": 4, "FIVE": 5}


def _date_time(value: str) -> tuple[dict[str, int], dict[str, int]]:
    moment = parse_iso(value)
    if moment is None:
        raise ValueError(value)
    return (
        {"year": moment.year, "month": moment.month, "day": moment.day},
        {"hours": moment.hour, "minutes": moment.minute, "seconds": 0, "nanos": 0},
    )


# The daily metrics asked of the Performance API (names as Google documents them).
PERFORMANCE_METRICS = (
    "BUSINESS_IMPRESSIONS_DESKTOP_MAPS",
    "BUSINESS_IMPRESSIONS_DESKTOP_SEARCH",
    "BUSINESS_IMPRESSIONS_MOBILE_MAPS",
    "BUSINESS_IMPRESSIONS_MOBILE_SEARCH",
    "BUSINESS_CONVERSATIONS",
    "BUSINESS_DIRECTION_REQUESTS",
    "CALL_CLICKS",
    "WEBSITE_CLICKS",
    "BUSINESS_BOOKINGS",
)


class GoogleBusinessConnector:
    platform = "google_business"
    app = "google"
    supports_pkce = True

    def __init__(
        self,
        app: AppConfig,
        session: aiohttp.ClientSession,
        catalogue: ErrorCatalogue,
        capabilities: PlatformCapabilities,
        *,
        timeout: aiohttp.ClientTimeout,
    ) -> None:
        self.config = app
        self.capabilities = capabilities
        self.catalogue = catalogue
        self.http = PlatformHttp(
            session,
            platform=self.platform,
            display_name=capabilities.display_name,
            catalogue=catalogue,
            read_error=read_error,
            timeout=timeout,
        )

    # -- OAuth ------------------------------------------------------------------------

    def authorize_url(self, request: OAuthRequest) -> str:
        params = {
            "client_id": self.config.client_id,
            "redirect_uri": request.redirect_uri,
            "response_type": "code",
            "scope": " ".join(request.scopes),
            "access_type": "offline",
            "prompt": "consent",
            "include_granted_scopes": "true",
            "state": request.state,
        }
        if request.code_challenge:
            params["code_challenge"] = request.code_challenge
            params["code_challenge_method"] = "S256"
        return self.config.url("accounts", "/o/oauth2/v2/auth?") + urlencode(
            params, quote_via=quote
        )

    def denial_message(self, error: str, description: str) -> str:
        if error == "access_denied":
            return "You declined the Google permissions, so nothing was connected."
        return f"Google did not authorize POSTD ({error}); nothing was connected."

    async def _token(self, form: Mapping[str, str], account: str = "") -> TokenBundle:
        response = await self.http.call(
            "POST",
            self.config.url("oauth2", "/token"),
            data={
                **form,
                "client_id": self.config.client_id,
                "client_secret": self.config.client_secret.reveal(),
            },
            account=account,
        )
        body = response.json()
        now = datetime.now(UTC)
        expires_in = body.get("expires_in")
        refresh_in = body.get("refresh_token_expires_in")
        extra = {"id_token": Secret(str(body["id_token"]))} if body.get("id_token") else {}
        return TokenBundle(
            access_token=Secret(str(body.get("access_token", ""))),
            refresh_token=Secret(str(body.get("refresh_token", ""))),
            expires_at=now + timedelta(seconds=int(expires_in)) if expires_in else None,
            refresh_expires_at=now + timedelta(seconds=int(refresh_in)) if refresh_in else None,
            scopes=tuple(s for s in str(body.get("scope", "")).split() if s),
            extra=extra,
            issued_at=now,
        )

    async def exchange_code(self, grant: CodeGrant) -> TokenGrant:
        form = {
            "code": grant.code,
            "grant_type": "authorization_code",
            "redirect_uri": grant.redirect_uri,
        }
        if grant.code_verifier:
            form["code_verifier"] = grant.code_verifier
        bundle = await self._token(form)
        return TokenGrant(bundle, bundle.scopes or None)

    def can_refresh(self, bundle: TokenBundle) -> bool:
        return bundle.has_refresh_token

    async def refresh(self, ctx: AccountContext) -> TokenBundle:
        # Google returns no new refresh token: the empty one keeps the stored one.
        return await self._token(
            {"grant_type": "refresh_token", "refresh_token": ctx.bundle.refresh_token.reveal()},
            account=ctx.account_name,
        )

    async def verify_permissions(self, ctx: AccountContext) -> tuple[str, ...] | None:
        response = await self.http.call(
            "GET",
            self.config.url("userinfo", "/v3/tokeninfo"),
            params={"access_token": ctx.bundle.access_token.reveal()},
        )
        return tuple(str(response.json().get("scope", "")).split())

    # -- accounts ---------------------------------------------------------------------

    def _auth(self, bundle: TokenBundle) -> dict[str, str]:
        return {"Authorization": f"Bearer {bundle.access_token.reveal()}"}

    async def _get(
        self,
        bundle: TokenBundle,
        url: str,
        params: Mapping[str, str] | None = None,
        account: str = "",
    ) -> dict[str, Any]:
        body = (
            await self.http.call(
                "GET", url, params=params, headers=self._auth(bundle), account=account
            )
        ).json()
        return body if isinstance(body, dict) else {}

    async def fetch_accounts(self, grant: TokenGrant) -> list[PlatformAccount]:
        bundle = grant.bundle
        accounts = await self._get(bundle, self.config.url("account_management", "/v1/accounts"))
        found: list[PlatformAccount] = []
        for account in accounts.get("accounts", []):
            account_name = str(account.get("name", ""))
            params = {"readMask": "name,title,storefrontAddress,metadata", "pageSize": "100"}
            for _ in range(50):
                page = await self._get(
                    bundle,
                    self.config.url("business_information", f"/v1/{account_name}/locations"),
                    params,
                )
                for location in page.get("locations", []):
                    name = str(location.get("name", ""))
                    found.append(
                        PlatformAccount(
                            platform=self.platform,
                            external_id=name,
                            kind="location",
                            name=str(location.get("title", "")),
                            bundle=bundle,
                            attributes={
                                "account": account_name,
                                "account_display_name": str(account.get("accountName", "")),
                                "maps_uri": str(
                                    (location.get("metadata") or {}).get("mapsUri", "")
                                ),
                            },
                        )
                    )
                token = page.get("nextPageToken")
                if not token:
                    break
                params = {**params, "pageToken": str(token)}
        return found

    def _location_path(self, ctx: AccountContext) -> str:
        # v4 paths name the account and the location: accounts/{a}/locations/{l}.
        return f"{ctx.attributes.get('account', '')}/{ctx.external_id}"

    # -- local posts ------------------------------------------------------------------

    def _refuse(self, message: str) -> PlatformFailure:
        return PlatformFailure(
            PlatformError(
                category=ErrorCategory.CONTENT_REJECTED,
                platform=self.platform,
                message=message,
                action=ErrorAction.EDIT_CONTENT,
                retryable=False,
            )
        )

    def local_post(self, content: PostContent) -> dict[str, Any]:
        """The LocalPost body for a content (its shape per topic type)."""
        topic = (content.option("google_business", "topic_type") or "STANDARD").upper()
        body: dict[str, Any] = {
            "languageCode": "en-US",
            "summary": content.text,
            "topicType": topic,
        }
        cta = content.option("google_business", "cta_type").upper()
        if content.link or cta:
            action = cta or "LEARN_MORE"
            body["callToAction"] = {"actionType": action}
            if action != "CALL":
                body["callToAction"]["url"] = content.link
        photos = [m for m in content.media if m.effective_kind is not MediaKind.VIDEO]
        if photos:
            body["media"] = [{"mediaFormat": "PHOTO", "sourceUrl": m.url} for m in photos]
        if topic in ("EVENT", "OFFER"):
            try:
                start_date, start_time = _date_time(
                    content.option("google_business", "event_start")
                )
                end_date, end_time = _date_time(content.option("google_business", "event_end"))
            except ValueError:
                raise self._refuse(
                    "Google Business Profile events and offers need a start and an end "
                    "(google_business.event_start / event_end, ISO 8601)."
                ) from None
            body["event"] = {
                "title": content.title,
                "schedule": {
                    "startDate": start_date,
                    "startTime": start_time,
                    "endDate": end_date,
                    "endTime": end_time,
                },
            }
        if topic == "OFFER":
            offer = {
                "couponCode": content.option("google_business", "coupon_code"),
                "redeemOnlineUrl": content.option("google_business", "redeem_url"),
                "termsConditions": content.option("google_business", "terms"),
            }
            body["offer"] = {k: v for k, v in offer.items() if v}
        return body

    async def publish(self, ctx: AccountContext, request: PublishRequest) -> PublishOutcome:
        if request.scheduled_at is not None:
            raise Unsupported("Business Profile posts cannot be scheduled through the API")
        response = await self.http.call(
            "POST",
            self.config.url("mybusiness", f"/v4/{self._location_path(ctx)}/localPosts"),
            json_body=self.local_post(request.content),
            headers=self._auth(ctx.bundle),
            account=ctx.account_name,
        )
        post = response.json()
        return PublishOutcome(
            PublishState.PUBLISHED,
            str(post.get("name", "")),
            url=str(post.get("searchUrl", "")),
            published_at=parse_iso(str(post.get("createTime", ""))) or datetime.now(UTC),
        )

    async def edit_post(
        self, ctx: AccountContext, platform_post_id: str, content: PostContent
    ) -> None:
        await self.http.call(
            "PATCH",
            self.config.url("mybusiness", f"/v4/{platform_post_id}"),
            params={"updateMask": "summary"},
            json_body={"summary": content.text},
            headers=self._auth(ctx.bundle),
            account=ctx.account_name,
        )

    async def delete_post(self, ctx: AccountContext, platform_post_id: str) -> bool:
        await self.http.call(
            "DELETE",
            self.config.url("mybusiness", f"/v4/{platform_post_id}"),
            headers=self._auth(ctx.bundle),
            account=ctx.account_name,
        )
        return True

    async def find_post(self, ctx: AccountContext, query: PostQuery) -> FoundPost | None:
        if not query.fingerprint:
            return None
        body = await self._get(
            ctx.bundle,
            self.config.url("mybusiness", f"/v4/{self._location_path(ctx)}/localPosts"),
            {"pageSize": "100"},
            ctx.account_name,
        )
        for post in body.get("localPosts", []):
            created = parse_iso(str(post.get("createTime", "")))
            if created is not None and not query.since <= created < query.until:
                continue
            summary = str(post.get("summary", ""))
            link = str((post.get("callToAction") or {}).get("url", ""))
            if query.fingerprint in {
                content_fingerprint(summary, link),
                content_fingerprint(summary),
            }:
                return FoundPost(
                    str(post["name"]),
                    MatchKind.CONTENT_FINGERPRINT,
                    url=str(post.get("searchUrl", "")),
                    published_at=created,
                )
        return None

    async def analytics(self, ctx: AccountContext, post_ids: Sequence[str]) -> list[PostAnalytics]:
        error = PlatformError(
            category=ErrorCategory.INVALID_REQUEST,
            platform=self.platform,
            message="Google reports Business Profile performance per location, not per post.",
            action=ErrorAction.NONE,
            retryable=False,
        )
        return [PostAnalytics(p, error=error) for p in post_ids]

    async def account_analytics(
        self, ctx: AccountContext, since: date, until: date
    ) -> AccountAnalytics:
        """Business Profile performance (``fetchMultiDailyMetricsTimeSeries``): the
        four impression series summed, website clicks, calls, directions, bookings."""
        params: list[tuple[str, str]] = [("dailyMetrics", m) for m in PERFORMANCE_METRICS]
        for which, day in (("start", since), ("end", until)):
            params += [
                (f"dailyRange.{which}Date.year", str(day.year)),
                (f"dailyRange.{which}Date.month", str(day.month)),
                (f"dailyRange.{which}Date.day", str(day.day)),
            ]
        location = ctx.external_id.removeprefix("locations/")
        url = self.config.url(
            "performance", f"/v1/locations/{location}:fetchMultiDailyMetricsTimeSeries"
        )
        body = (
            await self.http.call(
                "GET",
                url + "?" + urlencode(params),
                headers=self._auth(ctx.bundle),
                account=ctx.account_name,
            )
        ).json()
        per_day: dict[date, dict[str, int]] = {}
        for multi in body.get("multiDailyMetricTimeSeries", []):
            for series in multi.get("dailyMetricTimeSeries", []):
                metric = str(series.get("dailyMetric", ""))
                for dated in (series.get("timeSeries") or {}).get("datedValues", []):
                    d = dated.get("date") or {}
                    try:
                        day = date(int(d["year"]), int(d["month"]), int(d["day"]))
                    except (KeyError, TypeError, ValueError):
                        continue
                    # A day without "value" had none of it (Google leaves zeros out).
                    per_day.setdefault(day, {})[metric] = int(dated.get("value", 0) or 0)
        days = []
        for day, values in sorted(per_day.items()):
            impressions = sum(v for k, v in values.items() if k.startswith("BUSINESS_IMPRESSIONS"))
            website, calls = values.get("WEBSITE_CLICKS", 0), values.get("CALL_CLICKS", 0)
            directions = values.get("BUSINESS_DIRECTION_REQUESTS", 0)
            conversations = values.get("BUSINESS_CONVERSATIONS", 0)
            bookings = values.get("BUSINESS_BOOKINGS", 0)
            days.append(
                AccountDay(
                    day,
                    PostMetrics(
                        impressions=impressions,
                        engagements=website + calls + directions + conversations,
                        clicks=website,
                        conversions=bookings,
                        breakdown={
                            "website_clicks": website,
                            "call_clicks": calls,
                            "direction_requests": directions,
                            "conversations": conversations,
                            "bookings": bookings,
                        },
                    ),
                )
            )
        return AccountAnalytics(days=tuple(days))

    # -- reviews ----------------------------------------------------------------------

    async def list_reviews(self, ctx: AccountContext, *, page_token: str = "") -> ReviewPage:
        params = {"pageSize": "50", **({"pageToken": page_token} if page_token else {})}
        body = await self._get(
            ctx.bundle,
            self.config.url("mybusiness", f"/v4/{self._location_path(ctx)}/reviews"),
            params,
            ctx.account_name,
        )
        reviews = tuple(
            Review(
                review_id=str(r.get("reviewId", "")),
                reviewer=str((r.get("reviewer") or {}).get("displayName", "")),
                star_rating=_STARS.get(str(r.get("starRating", "")), 0),
                comment=str(r.get("comment", "")),
                created_at=parse_iso(str(r.get("createTime", ""))),
                reply=str((r.get("reviewReply") or {}).get("comment", "")),
            )
            for r in body.get("reviews", [])
        )
        return ReviewPage(
            reviews, str(body.get("nextPageToken", "")), float(body.get("averageRating", 0))
        )

    async def reply_to_review(self, ctx: AccountContext, review_id: str, comment: str) -> None:
        """Create or replace the owner's reply (PUT is idempotent)."""
        if not comment.strip() or len(comment) > 4096:
            raise self._refuse("A review reply needs 1 to 4,096 characters.")
        await self.http.call(
            "PUT",
            self.config.url(
                "mybusiness",
                f"/v4/{self._location_path(ctx)}/reviews/{quote(review_id, safe='')}/reply",
            ),
            json_body={"comment": comment},
            headers=self._auth(ctx.bundle),
            account=ctx.account_name,
        )

    # -- health and the rest ----------------------------------------------------------

    async def health_check(self, ctx: AccountContext) -> HealthResult:
        started = asyncio.get_running_loop().time()
        try:
            await self._get(
                ctx.bundle,
                self.config.url("account_management", "/v1/accounts"),
                account=ctx.account_name,
            )
        except PlatformFailure as failure:
            return HealthResult(
                False, asyncio.get_running_loop().time() - started, error=failure.error
            )
        return HealthResult(True, asyncio.get_running_loop().time() - started, ctx.bundle.scopes)

    async def revoke(self, ctx: AccountContext) -> bool:
        token = ctx.bundle.refresh_token or ctx.bundle.access_token
        await self.http.call(
            "POST", self.config.url("oauth2", "/revoke"), data={"token": token.reveal()}
        )
        return True

    async def live_limits(self, ctx: AccountContext) -> LiveLimits:
        return LiveLimits()

    def verify_webhook(
        self, headers: Mapping[str, str], body: bytes, *, now: float | None = None
    ) -> bool:
        # Business Profile notifications arrive through Pub/Sub push, authenticated by
        # an OIDC token that webhook-router verifies (issuer, audience, email).
        raise Unsupported("Business Profile notifications are verified by their OIDC token")

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[WebhookEvent]:
        try:
            envelope = json.loads(body)
            data = json.loads(base64.b64decode(envelope["message"]["data"]))
        except (ValueError, KeyError, TypeError):
            return []
        location = str(data.get("location", ""))
        return [
            WebhookEvent(
                kind=f"google_business.{str(data.get('type', '')).lower()}",
                account_id=location.split("/", 2)[-1]
                if location.startswith("accounts/")
                else location,
                object_id=str(data.get("review") or data.get("localPost") or ""),
                occurred_at=parse_iso(str(envelope["message"].get("publishTime", ""))),
            )
        ]
