"""TikTok: Login Kit OAuth v2 and the Content Posting API (direct post, FILE_UPLOAD).

Documented behaviour relied on (developers.tiktok.com):
- Authorize ``GET www.tiktok.com/v2/auth/authorize/`` with ``client_key`` (not
  client_id), comma-separated ``scope``, ``response_type=code``, ``redirect_uri``,
  ``state`` and PKCE; the callback carries ``code`` and the granted ``scopes``.
- Token ``POST open.tiktokapis.com/v2/oauth/token/`` (form): flat JSON with
  ``access_token``, ``expires_in``, ``open_id``, ``refresh_token``,
  ``refresh_expires_in``, ``scope``. Refresh tokens rotate: each refresh returns a
  new one and the old one stops working; lifetimes are read from the response.
- ``POST /v2/post/publish/creator_info/query/`` before posting: privacy options and
  the creator's longest allowed video.
- ``POST /v2/post/publish/video/init/`` (post_info + source_info FILE_UPLOAD with
  video_size, chunk_size, total_chunk_count) -> publish_id, upload_url; then
  ``PUT upload_url`` each chunk in order with ``Content-Range: bytes a-b/total``
  (chunks 5-64 MB, total = floor(size / chunk), the last chunk takes the remainder
  up to 128 MB; files under 5 MB go whole); then ``POST /v2/post/publish/status/
  fetch/`` until PUBLISH_COMPLETE or FAILED (fail_reason).
- Envelope ``{"data": ..., "error": {"code": "ok" | <code>, "message", "log_id"}}``.
- Webhooks: ``TikTok-Signature: t=<unix>,s=<hex HMAC-SHA256(client secret,
  "<t>.<body>")>``; stale timestamps are refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
from postd_connectors.platforms.app import AppConfig, PollSettings
from postd_connectors.platforms.base import (
    AccountAnalytics,
    AccountContext,
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

MB = 1024 * 1024
CHUNK_MIN = 5 * MB
CHUNK_MAX = 64 * MB
LAST_CHUNK_MAX = 128 * MB
MAX_CHUNKS = 1000
SIGNATURE_TOLERANCE_SECONDS = 300
CHUNK_ATTEMPTS = 3


@dataclass(frozen=True)
class ChunkPlan:
    video_size: int
    chunk_size: int
    total: int

    def range(self, index: int) -> tuple[int, int]:
        first = index * self.chunk_size
        last = self.video_size - 1 if index == self.total - 1 else first + self.chunk_size - 1
        return first, last


def plan_chunks(video_size: int, preferred: int = 10 * MB) -> ChunkPlan:
    """TikTok's chunk rules: under 5 MB the file goes whole; otherwise chunks of
    5-64 MB, their count rounded down, the remainder riding on the last chunk (which
    stays under 128 MB because it is less than two chunks), at most 1000 chunks."""
    chunk = max(CHUNK_MIN, min(CHUNK_MAX, preferred))
    if video_size < CHUNK_MIN or video_size <= chunk:
        return ChunkPlan(video_size, video_size, 1)
    if video_size // chunk > MAX_CHUNKS:
        chunk = min(CHUNK_MAX, -(-video_size // MAX_CHUNKS))
    return ChunkPlan(video_size, chunk, video_size // chunk)


def read_error(response: PlatformResponse) -> RawFailure:
    body = response.json()
    if not isinstance(body, dict):
        body = {}
    error = body.get("error")
    if isinstance(error, dict):
        return RawFailure(
            http_status=response.status,
            code=str(error.get("code", "")),
            platform_message=str(error.get("message", "")),
            request_id=str(error.get("log_id", "")),
        )
    return RawFailure(
        http_status=response.status,
        code=str(error or ""),
        platform_message=str(body.get("error_description", "")),
        request_id=str(body.get("log_id", "")),
    )


class TikTokConnector:
    platform = "tiktok"
    app = "tiktok"
    supports_pkce = True

    def __init__(
        self,
        app: AppConfig,
        session: aiohttp.ClientSession,
        catalogue: ErrorCatalogue,
        capabilities: PlatformCapabilities,
        *,
        timeout: aiohttp.ClientTimeout,
        media: MediaSource,
        poll: PollSettings,
        chunk_size: int = 10 * MB,
        max_video_bytes: int = 512 * MB,
    ) -> None:
        self.config = app
        self.capabilities = capabilities
        self.catalogue = catalogue
        self.media = media
        self.poll = poll
        self.chunk_size = chunk_size
        self.max_video_bytes = max_video_bytes
        self.http = PlatformHttp(
            session,
            platform=self.platform,
            display_name=capabilities.display_name,
            catalogue=catalogue,
            read_error=read_error,
            timeout=timeout,
        )
        # Uploads may take longer than an API call.
        self.upload_timeout = aiohttp.ClientTimeout(total=max(120.0, (timeout.total or 20) * 6))

    # -- OAuth ------------------------------------------------------------------------

    def authorize_url(self, request: OAuthRequest) -> str:
        params = {
            "client_key": self.config.client_id,
            "scope": ",".join(request.scopes),
            "response_type": "code",
            "redirect_uri": request.redirect_uri,
            "state": request.state,
        }
        if request.code_challenge:
            params["code_challenge"] = request.code_challenge
            params["code_challenge_method"] = "S256"
        return self.config.url("www", "/v2/auth/authorize/?") + urlencode(params, quote_via=quote)

    def denial_message(self, error: str, description: str) -> str:
        if error == "access_denied":
            return "You declined the TikTok authorization, so nothing was connected."
        return f"TikTok did not authorize POSTD ({error}); nothing was connected."

    async def _token(self, form: Mapping[str, str], account: str = "") -> tuple[TokenBundle, str]:
        response = await self.http.call(
            "POST",
            self.config.url("api", "/v2/oauth/token/"),
            data={
                **form,
                "client_key": self.config.client_id,
                "client_secret": self.config.client_secret.reveal(),
            },
            account=account,
        )
        body = response.json()
        if not body.get("access_token"):
            raise self.http.failure(read_error(response), account=account)
        now = datetime.now(UTC)
        expires_in = body.get("expires_in")
        refresh_in = body.get("refresh_expires_in")
        bundle = TokenBundle(
            access_token=Secret(str(body["access_token"])),
            refresh_token=Secret(str(body.get("refresh_token", ""))),
            expires_at=now + timedelta(seconds=int(expires_in)) if expires_in else None,
            refresh_expires_at=now + timedelta(seconds=int(refresh_in)) if refresh_in else None,
            scopes=tuple(s for s in str(body.get("scope", "")).split(",") if s),
            issued_at=now,
        )
        return bundle, str(body.get("open_id", ""))

    async def exchange_code(self, grant: CodeGrant) -> TokenGrant:
        form = {
            "code": grant.code,
            "grant_type": "authorization_code",
            "redirect_uri": grant.redirect_uri,
        }
        if grant.code_verifier:
            form["code_verifier"] = grant.code_verifier
        bundle, open_id = await self._token(form)
        return TokenGrant(bundle, bundle.scopes or None, subject=open_id)

    def can_refresh(self, bundle: TokenBundle) -> bool:
        return bundle.has_refresh_token

    async def refresh(self, ctx: AccountContext) -> TokenBundle:
        """A new access token and a NEW refresh token (the old one is spent)."""
        bundle, _ = await self._token(
            {"grant_type": "refresh_token", "refresh_token": ctx.bundle.refresh_token.reveal()},
            account=ctx.account_name,
        )
        return bundle

    async def verify_permissions(self, ctx: AccountContext) -> tuple[str, ...] | None:
        return ctx.bundle.scopes or None

    # -- API helpers ------------------------------------------------------------------

    def _headers(self, ctx: AccountContext | TokenBundle) -> dict[str, str]:
        bundle = ctx if isinstance(ctx, TokenBundle) else ctx.bundle
        return {"Authorization": f"Bearer {bundle.access_token.reveal()}"}

    async def _api(
        self,
        ctx: AccountContext,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        query: Mapping[str, str] | None = None,
        method: str = "POST",
    ) -> dict[str, Any]:
        response = await self.http.call(
            method,
            self.config.url("api", path),
            params=query,
            json_body=body if method == "POST" else None,
            headers={**self._headers(ctx), "Content-Type": "application/json; charset=UTF-8"},
            account=ctx.account_name,
        )
        return self._data(response, ctx.account_name)

    def _data(self, response: PlatformResponse, account: str) -> dict[str, Any]:
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and error.get("code") not in (None, "", "ok"):
            raise self.http.failure(read_error(response), account=account)
        data = body.get("data") if isinstance(body, dict) else None
        return data if isinstance(data, dict) else {}

    async def _user(self, bundle: TokenBundle, account: str = "") -> dict[str, Any]:
        fields = "open_id,union_id,avatar_url,display_name"
        if "user.info.profile" in bundle.scopes:
            fields += ",username"
        response = await self.http.call(
            "GET",
            self.config.url("api", "/v2/user/info/"),
            params={"fields": fields},
            headers=self._headers(bundle),
            account=account,
        )
        user = self._data(response, account).get("user")
        return user if isinstance(user, dict) else {}

    async def fetch_accounts(self, grant: TokenGrant) -> list[PlatformAccount]:
        user = await self._user(grant.bundle)
        username = str(user.get("username", ""))
        return [
            PlatformAccount(
                platform=self.platform,
                external_id=str(user.get("open_id") or grant.subject),
                kind="creator",
                name=str(user.get("display_name", "")),
                username=f"@{username}" if username else "",
                avatar_url=str(user.get("avatar_url", "")),
                bundle=grant.bundle,
                attributes={"username": username} if username else {},
            )
        ]

    async def creator_info(self, ctx: AccountContext) -> dict[str, Any]:
        return await self._api(ctx, "/v2/post/publish/creator_info/query/", {})

    async def live_limits(self, ctx: AccountContext) -> LiveLimits:
        info = await self.creator_info(ctx)
        longest = info.get("max_video_post_duration_sec")
        return LiveLimits(
            max_video_duration=float(longest) if longest else None,
            options={"privacy_level": tuple(info.get("privacy_level_options") or ())},
        )

    # -- publishing -------------------------------------------------------------------

    def _refuse(self, message: str, action_message: str = "") -> PlatformFailure:
        return PlatformFailure(
            PlatformError(
                category=ErrorCategory.CONTENT_REJECTED,
                platform=self.platform,
                message=message,
                action=ErrorAction.EDIT_CONTENT,
                action_message=action_message,
                retryable=False,
            )
        )

    async def publish(self, ctx: AccountContext, request: PublishRequest) -> PublishOutcome:
        if request.scheduled_at is not None:
            raise Unsupported("TikTok cannot schedule posts through the API")
        content = request.content
        videos = [
            m for m in content.media if m.effective_kind in (MediaKind.VIDEO, MediaKind.UNSPECIFIED)
        ]
        if len(videos) != 1:
            raise self._refuse("TikTok posts need exactly one video.")
        progress = dict(request.progress)
        publish_id = progress.get("publish_id", "")
        if publish_id and progress.get("upload_done") == "true":
            return await self._await_publish(ctx, publish_id)
        data, content_type = await self.media.read(videos[0].url, max_bytes=self.max_video_bytes)
        if (
            publish_id
            and progress.get("upload_url")
            and progress.get("video_size") == str(len(data))
        ):
            # Resume the upload TikTok already knows, with the plan it was given.
            chunk = int(progress["chunk_size"])
            plan = ChunkPlan(len(data), chunk, len(data) // chunk)
        else:
            publish_id, upload_url, plan = await self._init(
                ctx, content, plan_chunks(len(data), self.chunk_size)
            )
            progress = {
                "publish_id": publish_id,
                "upload_url": upload_url,
                "video_size": str(plan.video_size),
                "chunk_size": str(plan.chunk_size),
                "chunks_done": "0",
            }
            await _save(request, progress)
        await self._upload(ctx, request, progress, plan, data, content_type)
        return await self._await_publish(ctx, publish_id)

    async def _init(
        self, ctx: AccountContext, content: PostContent, plan: ChunkPlan
    ) -> tuple[str, str, ChunkPlan]:
        info = await self.creator_info(ctx)
        allowed = [str(o) for o in info.get("privacy_level_options") or []]
        privacy = content.option("tiktok", "privacy_level")
        if not privacy:
            raise self._refuse(
                "TikTok needs a privacy level chosen for every post.",
                f"Choose one of: {', '.join(allowed)}.",
            )
        if allowed and privacy not in allowed:
            raise self._refuse(
                f"This TikTok account offers the privacy levels {', '.join(allowed)}; "
                f"the post asks for {privacy}.",
                "Pick one the account offers.",
            )
        post_info: dict[str, Any] = {"title": content.text, "privacy_level": privacy}
        for flag in ("disable_comment", "disable_duet", "disable_stitch"):
            value = content.option("tiktok", flag)
            if value:
                post_info[flag] = value == "true"
        cover = content.option("tiktok", "video_cover_timestamp_ms")
        if cover.isdigit():
            post_info["video_cover_timestamp_ms"] = int(cover)
        data = await self._api(
            ctx,
            "/v2/post/publish/video/init/",
            {
                "post_info": post_info,
                "source_info": {
                    "source": "FILE_UPLOAD",
                    "video_size": plan.video_size,
                    "chunk_size": plan.chunk_size,
                    "total_chunk_count": plan.total,
                },
            },
        )
        return str(data["publish_id"]), str(data["upload_url"]), plan

    async def _upload(
        self,
        ctx: AccountContext,
        request: PublishRequest,
        progress: dict[str, str],
        plan: ChunkPlan,
        data: bytes,
        content_type: str,
    ) -> None:
        """Upload the chunks in order, from the first one not yet acknowledged. A
        failed chunk is sent again (a few times); the ones before it never are."""
        upload_url = progress["upload_url"]
        mime = content_type.split(";")[0].strip() if content_type else ""
        if mime not in ("video/mp4", "video/quicktime", "video/webm"):
            mime = "video/mp4"
        start = int(progress.get("chunks_done", "0"))
        for index in range(start, plan.total):
            first, last = plan.range(index)
            for attempt in range(1, CHUNK_ATTEMPTS + 1):
                try:
                    await self.http.call(
                        "PUT",
                        upload_url,
                        data=data[first : last + 1],
                        headers={
                            "Content-Type": mime,
                            "Content-Range": f"bytes {first}-{last}/{plan.video_size}",
                        },
                        timeout=self.upload_timeout,
                        account=ctx.account_name,
                        ok=lambda status: status in (200, 201, 206),
                    )
                    break
                except PlatformFailure as failure:
                    passing = failure.error.category in (
                        ErrorCategory.TRANSIENT,
                        ErrorCategory.PLATFORM_OUTAGE,
                        ErrorCategory.RATE_LIMITED,
                    )
                    if not passing or attempt == CHUNK_ATTEMPTS:
                        raise
                    await asyncio.sleep(min(5.0, self.poll.interval * 2**attempt))
            progress["chunks_done"] = str(index + 1)
            await _save(request, {"chunks_done": progress["chunks_done"]})
        progress["upload_done"] = "true"
        await _save(request, {"upload_done": "true"})

    async def publish_status(self, ctx: AccountContext, publish_id: str) -> dict[str, Any]:
        return await self._api(ctx, "/v2/post/publish/status/fetch/", {"publish_id": publish_id})

    def _outcome(
        self, ctx: AccountContext, publish_id: str, status: Mapping[str, Any]
    ) -> PublishOutcome:
        public = (
            status.get("publicaly_available_post_id")
            or status.get("publicly_available_post_id")
            or []
        )
        if public:
            video_id = str(public[0])
            username = ctx.attributes.get("username", "")
            url = f"https://www.tiktok.com/@{username}/video/{video_id}" if username else ""
            return PublishOutcome(
                PublishState.PUBLISHED,
                video_id,
                url,
                datetime.now(UTC),
                progress={"video_id": video_id},
            )
        return PublishOutcome(PublishState.PUBLISHED, publish_id, published_at=datetime.now(UTC))

    async def _await_publish(self, ctx: AccountContext, publish_id: str) -> PublishOutcome:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.poll.budget
        delay = self.poll.interval
        while True:
            status = await self.publish_status(ctx, publish_id)
            state = str(status.get("status", ""))
            if state == "PUBLISH_COMPLETE":
                return self._outcome(ctx, publish_id, status)
            if state == "FAILED":
                reason = str(status.get("fail_reason", "")) or "internal"
                raise self.http.failure(
                    RawFailure(200, code=reason, platform_message=reason), account=ctx.account_name
                )
            if state == "SEND_TO_USER_INBOX":
                return PublishOutcome(
                    PublishState.PUBLISHED, publish_id, published_at=datetime.now(UTC)
                )
            if loop.time() + delay > deadline:
                return PublishOutcome(
                    PublishState.PROCESSING, publish_id, progress={"publish_id": publish_id}
                )
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 10.0)

    async def find_post(self, ctx: AccountContext, query: PostQuery) -> FoundPost | None:
        publish_id = query.progress.get("publish_id", "")
        if publish_id:
            status = await self.publish_status(ctx, publish_id)
            state = str(status.get("status", ""))
            if state == "PUBLISH_COMPLETE":
                outcome = self._outcome(ctx, publish_id, status)
                return FoundPost(
                    outcome.platform_post_id, MatchKind.IDEMPOTENCY_KEY, url=outcome.url
                )
            if state.startswith("PROCESSING") and query.progress.get("upload_done") == "true":
                return FoundPost(publish_id, MatchKind.IDEMPOTENCY_KEY, PublishState.PROCESSING)
            return None
        if not query.fingerprint or "video.list" not in ctx.bundle.scopes:
            return None
        data = await self._api(
            ctx,
            "/v2/video/list/",
            {"max_count": 20},
            query={"fields": "id,title,create_time,share_url"},
        )
        for video in data.get("videos", []):
            created = datetime.fromtimestamp(int(video.get("create_time", 0)), UTC)
            if not query.since <= created < query.until:
                continue
            if content_fingerprint(str(video.get("title", ""))) == query.fingerprint:
                return FoundPost(
                    str(video["id"]),
                    MatchKind.CONTENT_FINGERPRINT,
                    url=str(video.get("share_url", "")),
                    published_at=created,
                )
        return None

    async def edit_post(
        self, ctx: AccountContext, platform_post_id: str, content: PostContent
    ) -> None:
        raise Unsupported("TikTok posts cannot be edited through the API")

    async def delete_post(self, ctx: AccountContext, platform_post_id: str) -> bool:
        raise Unsupported("TikTok posts cannot be deleted through the API")

    async def analytics(self, ctx: AccountContext, post_ids: Sequence[str]) -> list[PostAnalytics]:
        video_ids = [p for p in post_ids if p.isdigit()]
        by_id: dict[str, PostMetrics] = {}
        for start in range(0, len(video_ids), 20):
            data = await self._api(
                ctx,
                "/v2/video/query/",
                {"filters": {"video_ids": video_ids[start : start + 20]}},
                query={"fields": "id,view_count,like_count,comment_count,share_count"},
            )
            for video in data.get("videos", []):
                likes, comments, shares = (
                    int(video.get(k, 0)) for k in ("like_count", "comment_count", "share_count")
                )
                by_id[str(video["id"])] = PostMetrics(
                    video_views=int(video.get("view_count", 0)),
                    engagements=likes + comments + shares,
                    breakdown={"likes": likes, "comments": comments, "shares": shares},
                )
        missing = PlatformError(
            category=ErrorCategory.NOT_FOUND,
            platform=self.platform,
            message="TikTok reports metrics for public videos only.",
            action=ErrorAction.NONE,
            retryable=False,
        )
        return [
            PostAnalytics(p, metrics=by_id[p]) if p in by_id else PostAnalytics(p, error=missing)
            for p in post_ids
        ]

    async def account_analytics(
        self, ctx: AccountContext, since: date, until: date
    ) -> AccountAnalytics:
        """A creator's lifetime counts (``/v2/user/info/`` with ``user.info.stats``):
        TikTok reports no daily figures for an account, so there are totals only."""
        data = await self._api(
            ctx,
            "/v2/user/info/",
            query={"fields": "open_id,follower_count,following_count,likes_count,video_count"},
            method="GET",
        )
        user = data.get("user") or {}
        totals = {
            name: int(user[key])
            for name, key in (
                ("followers", "follower_count"),
                ("following", "following_count"),
                ("likes", "likes_count"),
                ("videos", "video_count"),
            )
            if isinstance(user.get(key), int)
        }
        return AccountAnalytics(totals=totals)

    async def health_check(self, ctx: AccountContext) -> HealthResult:
        started = asyncio.get_running_loop().time()
        try:
            await self._user(ctx.bundle, ctx.account_name)
        except PlatformFailure as failure:
            return HealthResult(
                False, asyncio.get_running_loop().time() - started, error=failure.error
            )
        return HealthResult(True, asyncio.get_running_loop().time() - started, ctx.bundle.scopes)

    async def revoke(self, ctx: AccountContext) -> bool:
        await self.http.call(
            "POST",
            self.config.url("api", "/v2/oauth/revoke/"),
            data={
                "client_key": self.config.client_id,
                "client_secret": self.config.client_secret.reveal(),
                "token": ctx.bundle.access_token.reveal(),
            },
        )
        return True

    # -- webhooks ---------------------------------------------------------------------

    def verify_webhook(
        self, headers: Mapping[str, str], body: bytes, *, now: float | None = None
    ) -> bool:
        header = next((v for k, v in headers.items() if k.lower() == "tiktok-signature"), "")
        parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
        stamp, given = parts.get("t", ""), parts.get("s", "")
        if not stamp.isdigit():
            return False
        if (
            abs((now if now is not None else time.time()) - int(stamp))
            > SIGNATURE_TOLERANCE_SECONDS
        ):
            return False
        try:
            signature = bytes.fromhex(given)
        except ValueError:
            return False
        expected = hmac.new(
            self.config.client_secret.reveal_bytes(), stamp.encode() + b"." + body, hashlib.sha256
        ).digest()
        return hmac.compare_digest(signature, expected)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[WebhookEvent]:
        try:
            payload = json.loads(body)
            content = json.loads(payload.get("content") or "{}")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            return []
        return [
            WebhookEvent(
                kind=f"tiktok.{payload.get('event', '')}",
                account_id=str(payload.get("user_openid", "")),
                object_id=str(content.get("publish_id") or content.get("post_id") or ""),
                occurred_at=datetime.fromtimestamp(int(payload.get("create_time", 0)), UTC),
                data={k: str(v) for k, v in content.items()},
            )
        ]


async def _save(request: PublishRequest, values: Mapping[str, str]) -> None:
    if request.checkpoint is not None:
        await request.checkpoint(values)
