"""LinkedIn: members and organization pages through the versioned Posts API.

Documented behaviour relied on (learn.microsoft.com/linkedin):
- 3-legged OAuth: ``GET www.linkedin.com/oauth/v2/authorization`` (response_type=code,
  client_id, redirect_uri, state, space-separated scope); ``POST
  www.linkedin.com/oauth/v2/accessToken`` (form) returns ``access_token`` and
  ``expires_in`` (60 days); only apps approved for programmatic refresh also get
  ``refresh_token`` / ``refresh_token_expires_in`` (365 days, not extended by
  refreshing). PKCE is offered to native (mobile) clients only, so web flows rely on
  the state and the client secret.
- ``GET api.linkedin.com/v2/userinfo`` (OpenID Connect) names the member.
- Versioned APIs under ``/rest/`` need ``LinkedIn-Version: YYYYMM`` and
  ``X-Restli-Protocol-Version: 2.0.0``; URNs in paths and query values are
  URL-encoded.
- ``POST /rest/posts`` answers 201 with the post URN in ``x-restli-id``;
  ``DELETE /rest/posts/{urn}`` answers 204; ``GET /rest/posts?q=author`` lists an
  author's posts; the commentary is "little text": reserved characters are escaped
  with a backslash.
- Images: ``POST /rest/images?action=initializeUpload`` gives ``uploadUrl`` and the
  image URN; the bytes are PUT to ``uploadUrl``.
- ``GET /rest/organizationAcls?q=roleAssignee`` lists the member's organization
  roles; ``GET /rest/organizationalEntityShareStatistics`` gives post statistics of
  organization pages.
- Errors ``{"status", "serviceErrorCode", "code", "message"}``; the token endpoint
  answers RFC 6749 ``{"error", "error_description"}``.
- Webhooks: ``X-LI-Signature`` is the hex HMAC-SHA256 of the raw body keyed by the
  client secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from yarl import URL

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
    MediaSource,
    OAuthRequest,
    PlatformAccount,
    PostAnalytics,
    PostMetrics,
    PostQuery,
    PublishOutcome,
    PublishRequest,
    PublishState,
    TokenGrant,
    Unsupported,
    WebhookEvent,
)
from postd_connectors.platforms.http import PlatformHttp, PlatformResponse

POSTING_ROLES = frozenset(
    {"ADMINISTRATOR", "CONTENT_ADMINISTRATOR", "DIRECT_SPONSORSHIP_CONTENT_POSTER"}
)
ORG_SCOPES = frozenset(
    {
        "w_organization_social",
        "r_organization_admin",
        "rw_organization_admin",
        "r_organization_social",
    }
)
MAX_IMAGE_BYTES = 36 * 1024 * 1024
_RESERVED = re.compile(r"([\\|{}@\[\]()<>#*_~])")
_ESCAPED = re.compile(r"\\([\\|{}@\[\]()<>#*_~])")


def escape_little_text(text: str) -> str:
    """LinkedIn's "little text" format: reserved characters are backslash-escaped."""
    return _RESERVED.sub(r"\\\1", text)


def unescape_little_text(text: str) -> str:
    return _ESCAPED.sub(r"\1", text)


def read_error(response: PlatformResponse) -> RawFailure:
    body = response.json()
    if not isinstance(body, dict):
        body = {}
    code = str(body.get("code") or body.get("error") or "")
    message = str(body.get("message") or body.get("error_description") or "")
    if not message and response.body:
        message = response.body[:200].decode(errors="replace")
    return RawFailure(
        http_status=response.status,
        code=code,
        subcode=str(body.get("serviceErrorCode", "")),
        platform_message=message.strip(),
        request_id=response.header("x-li-uuid") or response.header("x-li-request-id"),
    )


def _split_scopes(raw: str) -> tuple[str, ...]:
    return tuple(s for s in re.split(r"[ ,]+", raw or "") if s)


class LinkedInConnector:
    platform = "linkedin"
    app = "linkedin"
    supports_pkce = False

    def __init__(
        self,
        app: AppConfig,
        session: aiohttp.ClientSession,
        catalogue: ErrorCatalogue,
        capabilities: PlatformCapabilities,
        *,
        timeout: aiohttp.ClientTimeout,
        media: MediaSource,
        version: str,
    ) -> None:
        self.config = app
        self.capabilities = capabilities
        self.catalogue = catalogue
        self.version = version
        self.media = media
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
            "response_type": "code",
            "client_id": self.config.client_id,
            "redirect_uri": request.redirect_uri,
            "state": request.state,
            "scope": " ".join(request.scopes),
        }
        return self.config.url("www", "/oauth/v2/authorization?") + urlencode(
            params, quote_via=quote
        )

    def denial_message(self, error: str, description: str) -> str:
        if error in ("user_cancelled_authorize", "user_cancelled_login", "access_denied"):
            return "You cancelled the LinkedIn authorization, so nothing was connected."
        if error == "unauthorized_scope_error":
            return (
                "LinkedIn refused a permission POSTD asked for (the app is not approved for it); "
                "nothing was connected."
            )
        return f"LinkedIn did not authorize POSTD ({error}); nothing was connected."

    async def _token(self, form: Mapping[str, str]) -> TokenBundle:
        response = await self.http.call(
            "POST",
            self.config.url("www", "/oauth/v2/accessToken"),
            data={
                **form,
                "client_id": self.config.client_id,
                "client_secret": self.config.client_secret.reveal(),
            },
        )
        body = response.json()
        now = datetime.now(UTC)
        expires_in = body.get("expires_in")
        refresh_in = body.get("refresh_token_expires_in")
        refresh = str(body.get("refresh_token", ""))
        return TokenBundle(
            access_token=Secret(str(body.get("access_token", ""))),
            refresh_token=Secret(refresh),
            expires_at=now + timedelta(seconds=int(expires_in)) if expires_in else None,
            refresh_expires_at=now + timedelta(seconds=int(refresh_in))
            if refresh and refresh_in
            else None,
            scopes=_split_scopes(str(body.get("scope", ""))),
            extra={"id_token": Secret(str(body["id_token"]))} if body.get("id_token") else {},
            issued_at=now,
        )

    async def exchange_code(self, grant: CodeGrant) -> TokenGrant:
        bundle = await self._token(
            {
                "grant_type": "authorization_code",
                "code": grant.code,
                "redirect_uri": grant.redirect_uri,
            }
        )
        return TokenGrant(bundle, bundle.scopes or None)

    def can_refresh(self, bundle: TokenBundle) -> bool:
        return bundle.has_refresh_token

    async def refresh(self, ctx: AccountContext) -> TokenBundle:
        if not ctx.bundle.has_refresh_token:
            raise Unsupported("this LinkedIn app has no refresh tokens")
        fresh = await self._token(
            {"grant_type": "refresh_token", "refresh_token": ctx.bundle.refresh_token.reveal()}
        )
        # The refresh token keeps its original expiry; LinkedIn reports what remains.
        return fresh

    async def verify_permissions(self, ctx: AccountContext) -> tuple[str, ...] | None:
        return None

    # -- accounts ---------------------------------------------------------------------

    def _rest_headers(self, token: Secret, *, restli: bool = True) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {token.reveal()}", "LinkedIn-Version": self.version}
        if restli:
            headers["X-Restli-Protocol-Version"] = "2.0.0"
        return headers

    def _rest(self, path: str, query: Mapping[str, str] | None = None) -> URL:
        """A /rest/ URL with query values encoded as Rest.li 2.0 wants them."""
        url = self.config.url("api", "/rest" + path)
        if query:
            url += "?" + "&".join(f"{k}={_encode_query_value(v)}" for k, v in query.items())
        return URL(url, encoded=True)

    async def _userinfo(self, token: Secret, account: str = "") -> dict[str, Any]:
        response = await self.http.call(
            "GET",
            self.config.url("api", "/v2/userinfo"),
            headers={"Authorization": f"Bearer {token.reveal()}"},
            account=account,
        )
        body = response.json()
        return body if isinstance(body, dict) else {}

    async def fetch_accounts(self, grant: TokenGrant) -> list[PlatformAccount]:
        token = grant.bundle.access_token
        me = await self._userinfo(token)
        member_urn = f"urn:li:person:{me.get('sub', '')}"
        accounts = [
            PlatformAccount(
                platform=self.platform,
                external_id=member_urn,
                kind="member",
                name=str(me.get("name", "")),
                avatar_url=str(me.get("picture", "")),
                bundle=grant.bundle,
                attributes={"member_urn": member_urn},
            )
        ]
        granted = set(grant.granted_scopes or ())
        if not granted & ORG_SCOPES:
            return accounts
        acls = (
            await self.http.call(
                "GET",
                self._rest("/organizationAcls", {"q": "roleAssignee", "state": "APPROVED"}),
                headers=self._rest_headers(token),
            )
        ).json()
        seen: set[str] = set()
        for element in acls.get("elements", []):
            org_urn = str(element.get("organization") or element.get("organizationTarget") or "")
            if element.get("role") not in POSTING_ROLES or not org_urn or org_urn in seen:
                continue
            seen.add(org_urn)
            org_id = org_urn.rsplit(":", 1)[-1]
            org = (
                await self.http.call(
                    "GET",
                    self._rest(f"/organizations/{org_id}"),
                    headers=self._rest_headers(token, restli=False),
                )
            ).json()
            accounts.append(
                PlatformAccount(
                    platform=self.platform,
                    external_id=org_urn,
                    kind="organization",
                    name=str(org.get("localizedName", "")),
                    username=str(org.get("vanityName", "")),
                    bundle=grant.bundle,
                    attributes={"member_urn": member_urn, "role": str(element.get("role"))},
                )
            )
        return accounts

    # -- publishing -------------------------------------------------------------------

    async def _upload_image(self, ctx: AccountContext, url: str) -> str:
        init = (
            await self.http.call(
                "POST",
                self._rest("/images", {"action": "initializeUpload"}),
                json_body={"initializeUploadRequest": {"owner": ctx.external_id}},
                headers=self._rest_headers(ctx.bundle.access_token),
                account=ctx.account_name,
            )
        ).json()
        value = init.get("value", {})
        data, content_type = await self.media.read(url, max_bytes=MAX_IMAGE_BYTES)
        await self.http.call(
            "PUT",
            str(value["uploadUrl"]),
            data=data,
            headers={
                "Authorization": f"Bearer {ctx.bundle.access_token.reveal()}",
                "Content-Type": content_type or "application/octet-stream",
            },
            account=ctx.account_name,
        )
        return str(value["image"])

    async def publish(self, ctx: AccountContext, request: PublishRequest) -> PublishOutcome:
        if request.scheduled_at is not None:
            raise Unsupported("LinkedIn cannot schedule posts through the API")
        content = request.content
        body: dict[str, Any] = {
            "author": ctx.external_id,
            "commentary": escape_little_text(content.text),
            "visibility": content.option("linkedin", "visibility", "PUBLIC"),
            "distribution": {
                "feedDistribution": "MAIN_FEED",
                "targetEntities": [],
                "thirdPartyDistributionChannels": [],
            },
            "lifecycleState": "PUBLISHED",
            "isReshareDisabledByAuthor": False,
        }
        # Media of unknown kind are taken as images (the pre-flight checked them).
        images = [
            m
            for m in content.media
            if m.effective_kind not in (MediaKind.VIDEO, MediaKind.DOCUMENT)
        ]
        if images:
            uploaded = [u for u in request.progress.get("images", "").split(",") if u]
            if len(uploaded) != len(images):
                uploaded = [await self._upload_image(ctx, m.url) for m in images]
                if request.checkpoint:
                    await request.checkpoint({"images": ",".join(uploaded)})
            if len(uploaded) == 1:
                body["content"] = {"media": {"id": uploaded[0], "altText": images[0].alt_text}}
            else:
                body["content"] = {
                    "multiImage": {
                        "images": [
                            {"id": urn, "altText": m.alt_text}
                            for urn, m in zip(uploaded, images, strict=True)
                        ]
                    }
                }
        elif content.link:
            article: dict[str, str] = {"source": content.link}
            if content.title:
                article["title"] = content.title
            body["content"] = {"article": article}
        response = await self.http.call(
            "POST",
            self._rest("/posts"),
            json_body=body,
            headers=self._rest_headers(ctx.bundle.access_token),
            account=ctx.account_name,
        )
        urn = response.header("x-restli-id") or response.header("x-linkedin-id")
        return PublishOutcome(
            PublishState.PUBLISHED,
            urn,
            url=f"https://www.linkedin.com/feed/update/{urn}/",
            published_at=datetime.now(UTC),
        )

    async def edit_post(
        self, ctx: AccountContext, platform_post_id: str, content: PostContent
    ) -> None:
        await self.http.call(
            "POST",
            self._rest(f"/posts/{quote(platform_post_id, safe='')}"),
            json_body={"patch": {"$set": {"commentary": escape_little_text(content.text)}}},
            headers={
                **self._rest_headers(ctx.bundle.access_token),
                "X-RestLi-Method": "PARTIAL_UPDATE",
            },
            account=ctx.account_name,
        )

    async def delete_post(self, ctx: AccountContext, platform_post_id: str) -> bool:
        await self.http.call(
            "DELETE",
            self._rest(f"/posts/{quote(platform_post_id, safe='')}"),
            headers={**self._rest_headers(ctx.bundle.access_token), "X-RestLi-Method": "DELETE"},
            account=ctx.account_name,
        )
        return True

    async def find_post(self, ctx: AccountContext, query: PostQuery) -> FoundPost | None:
        if not query.fingerprint:
            return None
        body = (
            await self.http.call(
                "GET",
                self._rest("/posts", {"q": "author", "author": ctx.external_id, "count": "50"}),
                headers=self._rest_headers(ctx.bundle.access_token),
                account=ctx.account_name,
            )
        ).json()
        for post in body.get("elements", []):
            created_ms = post.get("createdAt") or post.get("publishedAt")
            created = datetime.fromtimestamp(int(created_ms) / 1000, UTC) if created_ms else None
            if created is not None and not query.since <= created < query.until:
                continue
            text = unescape_little_text(str(post.get("commentary", "")))
            article = ((post.get("content") or {}).get("article") or {}).get("source", "")
            if query.fingerprint in {
                content_fingerprint(text, str(article)),
                content_fingerprint(text),
            }:
                urn = str(post.get("id"))
                return FoundPost(
                    urn,
                    MatchKind.CONTENT_FINGERPRINT,
                    url=f"https://www.linkedin.com/feed/update/{urn}/",
                    published_at=created,
                )
        return None

    async def analytics(self, ctx: AccountContext, post_ids: Sequence[str]) -> list[PostAnalytics]:
        if ctx.kind != "organization":
            error = PlatformError(
                category=ErrorCategory.INVALID_REQUEST,
                platform=self.platform,
                message="LinkedIn reports post statistics for organization pages only.",
                action=ErrorAction.NONE,
                retryable=False,
            )
            return [PostAnalytics(p, error=error) for p in post_ids]
        shares = [p for p in post_ids if ":share:" in p]
        ugc = [p for p in post_ids if ":share:" not in p]
        query = {"q": "organizationalEntity", "organizationalEntity": ctx.external_id}
        url = self._rest("/organizationalEntityShareStatistics", query)
        parts = []
        if shares:
            parts.append("shares=List(" + ",".join(quote(s, safe="") for s in shares) + ")")
        if ugc:
            parts.append("ugcPosts=List(" + ",".join(quote(s, safe="") for s in ugc) + ")")
        if parts:
            url = URL(str(url) + "&" + "&".join(parts), encoded=True)
        body = (
            await self.http.call(
                "GET",
                url,
                headers=self._rest_headers(ctx.bundle.access_token),
                account=ctx.account_name,
            )
        ).json()
        by_id: dict[str, PostMetrics] = {}
        for element in body.get("elements", []):
            post_id = str(element.get("share") or element.get("ugcPost") or "")
            stats = element.get("totalShareStatistics", {})
            likes, comments, shares_n, clicks = (
                int(stats.get(k, 0))
                for k in ("likeCount", "commentCount", "shareCount", "clickCount")
            )
            by_id[post_id] = PostMetrics(
                impressions=int(stats.get("impressionCount", 0)),
                reach=int(stats.get("uniqueImpressionsCount", 0)),
                engagements=likes + comments + shares_n + clicks,
                clicks=clicks,
                breakdown={"likes": likes, "comments": comments, "shares": shares_n},
            )
        return [
            PostAnalytics(p, metrics=by_id[p])
            if p in by_id
            else PostAnalytics(
                p,
                error=PlatformError(
                    category=ErrorCategory.NOT_FOUND,
                    platform=self.platform,
                    message="LinkedIn has no statistics for this post.",
                    action=ErrorAction.NONE,
                    retryable=False,
                ),
            )
            for p in post_ids
        ]

    async def account_analytics(
        self, ctx: AccountContext, since: date, until: date
    ) -> AccountAnalytics:
        """Time-bound share statistics of an organization, per day
        (``organizationalEntityShareStatistics`` with ``timeIntervals``, DAY
        granularity, from and to UTC midnights as LinkedIn requires)."""
        if ctx.kind != "organization":
            raise PlatformFailure(
                PlatformError(
                    category=ErrorCategory.INVALID_REQUEST,
                    platform=self.platform,
                    message="LinkedIn reports statistics for organization pages only.",
                    action=ErrorAction.NONE,
                    retryable=False,
                )
            )
        start = int(datetime(since.year, since.month, since.day, tzinfo=UTC).timestamp()) * 1000
        end_day = until + timedelta(days=1)
        end = int(datetime(end_day.year, end_day.month, end_day.day, tzinfo=UTC).timestamp())
        query = {"q": "organizationalEntity", "organizationalEntity": ctx.external_id}
        # Rest.li 2.0: the structure of a complex value stays unencoded.
        interval = f"(timeRange:(start:{start},end:{end * 1000}),timeGranularityType:DAY)"
        url = URL(
            str(self._rest("/organizationalEntityShareStatistics", query))
            + "&timeIntervals="
            + interval,
            encoded=True,
        )
        body = (
            await self.http.call(
                "GET",
                url,
                headers=self._rest_headers(ctx.bundle.access_token),
                account=ctx.account_name,
            )
        ).json()
        days = []
        for element in body.get("elements", []):
            started = (element.get("timeRange") or {}).get("start")
            if started is None:
                continue
            stats = element.get("totalShareStatistics", {})
            likes, comments, shares, clicks = (
                int(stats.get(k, 0))
                for k in ("likeCount", "commentCount", "shareCount", "clickCount")
            )
            days.append(
                AccountDay(
                    datetime.fromtimestamp(int(started) / 1000, UTC).date(),
                    PostMetrics(
                        impressions=int(stats.get("impressionCount", 0)),
                        reach=int(stats.get("uniqueImpressionsCount", 0)),
                        engagements=likes + comments + shares + clicks,
                        clicks=clicks,
                        breakdown={"likes": likes, "comments": comments, "shares": shares},
                    ),
                )
            )
        return AccountAnalytics(days=tuple(sorted(days, key=lambda d: d.day)))

    async def health_check(self, ctx: AccountContext) -> HealthResult:
        started = asyncio.get_running_loop().time()
        try:
            await self._userinfo(ctx.bundle.access_token, ctx.account_name)
        except PlatformFailure as failure:
            return HealthResult(
                False, asyncio.get_running_loop().time() - started, error=failure.error
            )
        return HealthResult(True, asyncio.get_running_loop().time() - started, ctx.bundle.scopes)

    async def revoke(self, ctx: AccountContext) -> bool:
        await self.http.call(
            "POST",
            self.config.url("www", "/oauth/v2/revoke"),
            data={
                "client_id": self.config.client_id,
                "client_secret": self.config.client_secret.reveal(),
                "token": ctx.bundle.access_token.reveal(),
            },
        )
        return True

    async def live_limits(self, ctx: AccountContext) -> LiveLimits:
        return LiveLimits()

    # -- webhooks ---------------------------------------------------------------------

    def verify_webhook(
        self, headers: Mapping[str, str], body: bytes, *, now: float | None = None
    ) -> bool:
        given = ""
        for key, value in headers.items():
            if key.lower() == "x-li-signature":
                given = value.strip()
        if given.lower().startswith("hmacsha256="):
            given = given.split("=", 1)[1]
        try:
            signature = bytes.fromhex(given)
        except ValueError:
            return False
        expected = hmac.new(self.config.client_secret.reveal_bytes(), body, hashlib.sha256).digest()
        return bool(signature) and hmac.compare_digest(signature, expected)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[WebhookEvent]:
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return []
        events = []
        for note in payload.get("notifications", []) if isinstance(payload, dict) else []:
            when = note.get("lastModifiedAt")
            events.append(
                WebhookEvent(
                    kind=f"linkedin.{str(note.get('action', '')).lower()}",
                    account_id=str(note.get("organizationalEntity", "")),
                    object_id=str(note.get("sourcePost", "")),
                    occurred_at=datetime.fromtimestamp(int(when) / 1000, UTC) if when else None,
                    data={"notification_id": str(note.get("notificationId", ""))},
                )
            )
        return events

    def challenge_response(self, challenge_code: str) -> str:
        return hmac.new(
            self.config.client_secret.reveal_bytes(), challenge_code.encode(), hashlib.sha256
        ).hexdigest()


def _encode_query_value(value: str) -> str:
    return quote(value, safe="")
