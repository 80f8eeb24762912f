"""TikTok: Login Kit OAuth v2, user info, and the Content Posting API (direct post and
inbox upload) with chunked FILE_UPLOAD transfers, status polling and video metrics.

Hosts: www.tiktok.com -> /tiktok/www, open.tiktokapis.com -> /tiktok/open,
open-upload.tiktokapis.com -> /tiktok/upload.

Doc facts relied on (developers.tiktok.com):
- Authorize: `GET /v2/auth/authorize/?client_key&scope&response_type=code&redirect_uri
  &state[&code_challenge&code_challenge_method=S256]`, comma-separated scopes; people
  may agree to a subset; the redirect carries `code`, `scopes`, `state` (or
  `error`, `error_description`).
- Token: `POST /v2/oauth/token/` (form: client_key, client_secret, code,
  grant_type=authorization_code, redirect_uri[, code_verifier]) -> flat JSON
  `{"access_token","expires_in","open_id","refresh_expires_in","refresh_token",
  "scope","token_type":"Bearer"}`. Current pages: access token 2 hours, refresh
  token 180 days (older pages: 24 h / 365 days) — read them from the response.
  Refresh tokens ROTATE: each refresh returns a new one; the previous one stops
  working. OAuth errors: `{"error","error_description","log_id"}`.
- API envelope `{"data": {...}, "error": {"code": "ok", "message": "", "log_id"}}`;
  error codes with HTTP status: access_token_invalid 401, scope_not_authorized 401,
  scope_permission_missed 401, invalid_params 400, invalid_file_upload 400,
  rate_limit_exceeded 429, internal_error 500, and for posting
  spam_risk_too_many_posts, spam_risk_too_many_pending_share,
  spam_risk_user_banned_from_posting, reached_active_user_cap,
  unaudited_client_can_only_post_to_private_accounts, url_ownership_unverified,
  privacy_level_option_mismatch.
- `POST /v2/post/publish/creator_info/query/` returns privacy_level_options,
  comment/duet/stitch_disabled, max_video_post_duration_sec.
- `POST /v2/post/publish/video/init/` (scope video.publish; 6 requests per minute
  per user access token) with post_info and source_info {FILE_UPLOAD, video_size,
  chunk_size, total_chunk_count} -> `{"publish_id", "upload_url"}`. Unaudited
  clients may only post SELF_ONLY.
- Chunk rules: total_chunk_count = floor(video_size / chunk_size); chunks 5-64 MB,
  the last one may be bigger (up to 128 MB) to hold the trailing bytes; videos
  under 5 MB go whole (chunk_size = video_size); over 64 MB must be chunked; 1 to
  1000 chunks, uploaded sequentially with `Content-Range: bytes a-b/total`.
  Partial uploads answer 206, the final chunk 201.
- `POST /v2/post/publish/status/fetch/ {publish_id}` (30 per minute) -> status
  PROCESSING_UPLOAD | PROCESSING_DOWNLOAD | SEND_TO_USER_INBOX | PUBLISH_COMPLETE |
  FAILED with fail_reason, `publicaly_available_post_id` (TikTok's spelling),
  uploaded_bytes.
- `POST /v2/video/list/` and `/v2/video/query/` (scope video.list, fields in the
  query string) return view_count, like_count, comment_count, share_count.
- Webhooks: `TikTok-Signature: t=<ts>,s=<hex HMAC-SHA256(client secret, "t.body")>`,
  body `{"client_key","event","create_time","user_openid","content"}` where content
  is a JSON-encoded string.

Sandbox conventions: an uploaded file whose first bytes are not an MP4/MOV (`ftyp`)
or WebM header fails with fail_reason `file_format_check_failed`; a PULL_FROM_URL
video URL containing `sandbox_error` fails the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlencode

from aiohttp import web

from postd_sandbox import errors, metrics, signing
from postd_sandbox.clock import IdSource
from postd_sandbox.errors import ApiError, ErrorSpec
from postd_sandbox.faults import FaultKind
from postd_sandbox.oauth import (
    CODE_EXPIRED,
    CODE_USED,
    AuthorizationCode,
    CodeProblem,
    OAuthProfile,
    PendingAuthorization,
)
from postd_sandbox.platforms.base import (
    DEFAULT_FAULT_ERRORS,
    Directory,
    Person,
    Platform,
    SeedError,
    WebhookDelivery,
    read_json,
)
from postd_sandbox.state import RecordedPost, SandboxState, TokenRecord, Upload

NAME = "tiktok"
WWW = "/tiktok/www"
OPEN = "/tiktok/open"
UPLOAD = "/tiktok/upload"

ACCESS_TOKEN_SECONDS = 2 * 3600
REFRESH_TOKEN_SECONDS = 180 * 86400
MB = 1024 * 1024
CHUNK_MIN = 5 * MB
CHUNK_MAX = 64 * MB
LAST_CHUNK_MAX = 128 * MB
CHUNKS_MAX = 1000
VIDEO_SIZE_MAX = 4 * 1024 * MB
TITLE_LIMIT = 2_200
INIT_PER_MINUTE = 6
STATUS_PER_MINUTE = 30
CREATOR_POSTS_PER_DAY = 15
PENDING_SHARES_MAX = 5
UNAUDITED_ACTIVE_USERS_PER_DAY = 5
VIDEO_TYPES = {"video/mp4", "video/quicktime", "video/webm"}
PRIVACY_LEVELS = ("PUBLIC_TO_EVERYONE", "MUTUAL_FOLLOW_FRIENDS", "FOLLOWER_OF_CREATOR", "SELF_ONLY")

SCOPES: Mapping[str, str] = {
    "user.info.basic": "Read your profile info (avatar, display name)",
    "user.info.profile": "Read your profile details (bio, profile link, verification)",
    "user.info.stats": "Read your statistics (likes, followers, following, videos)",
    "video.list": "Read your public videos",
    "video.upload": "Upload videos to your drafts",
    "video.publish": "Post content directly to your profile",
}


def _api(status: int, code: str, message: str) -> ErrorSpec:
    return ErrorSpec(status=status, fields={"code": code, "message": message})


def _oauth(status: int, error: str, description: str) -> ErrorSpec:
    return ErrorSpec(
        status=status, fields={"error": error, "error_description": description, "oauth": True}
    )


ERRORS: Mapping[str, ErrorSpec] = {
    errors.INVALID_TOKEN: _api(
        401,
        "access_token_invalid",
        "The access token is invalid or not found in the request.",
    ),
    errors.EXPIRED_TOKEN: _api(
        401, "access_token_invalid", "The access token has expired. Please refresh the token."
    ),
    errors.REVOKED_TOKEN: _api(
        401, "access_token_invalid", "The access token has been revoked by the user."
    ),
    errors.PERMISSION: _api(
        401,
        "scope_not_authorized",
        "The user did not authorize the scope required for completing this request.",
    ),
    "scope_permission_missed": _api(
        401,
        "scope_permission_missed",
        "Access token is invalid, some fields need additional scopes: {fields}",
    ),
    errors.RATE_LIMIT: _api(
        429, "rate_limit_exceeded", "The API rate limit was exceeded. Please try again later."
    ),
    errors.SERVER_ERROR: _api(
        500, "internal_error", "Something went wrong. Please try again later."
    ),
    errors.OUTAGE: _api(503, "internal_error", "Service is temporarily unavailable."),
    errors.TIMEOUT: _api(504, "internal_error", "The request timed out."),
    errors.NOT_FOUND: _api(404, "invalid_params", "No such endpoint: {path}"),
    errors.INVALID_PARAM: _api(400, "invalid_params", "{detail}"),
    "invalid_file_upload": _api(400, "invalid_file_upload", "{detail}"),
    "spam_risk_too_many_posts": _api(
        403,
        "spam_risk_too_many_posts",
        "The daily post cap from the API is reached for the current user.",
    ),
    "spam_risk_too_many_pending_share": _api(
        403,
        "spam_risk_too_many_pending_share",
        "The number of pending shares in the past 24 hours is reached.",
    ),
    "spam_risk_user_banned_from_posting": _api(
        403,
        "spam_risk_user_banned_from_posting",
        "The user is banned from making new posts.",
    ),
    "reached_active_user_cap": _api(
        403,
        "reached_active_user_cap",
        "The daily quota for active publishing users from your client is reached.",
    ),
    "unaudited_client_can_only_post_to_private_accounts": _api(
        403,
        "unaudited_client_can_only_post_to_private_accounts",
        "Unaudited clients can only post to a private account.",
    ),
    "url_ownership_unverified": _api(
        403,
        "url_ownership_unverified",
        "Please verify the ownership of the domain or URL prefix of video_url.",
    ),
    "privacy_level_option_mismatch": _api(
        400,
        "privacy_level_option_mismatch",
        "privacy_level {privacy_level} is not among the creator's privacy_level_options.",
    ),
    # OAuth endpoint (flat body).
    "oauth_invalid_request": _oauth(400, "invalid_request", "{detail}"),
    "oauth_invalid_client": _oauth(401, "invalid_client", "Client key or secret is incorrect."),
    "oauth_code_expired": _oauth(400, "invalid_grant", "Authorization code is expired."),
    "oauth_code_invalid": _oauth(400, "invalid_grant", "Authorization code is invalid."),
    "oauth_code_used": _oauth(400, "invalid_grant", "Authorization code has been used."),
    "oauth_refresh_invalid": _oauth(400, "invalid_grant", "Refresh token is invalid or expired."),
    "oauth_unsupported_grant": _oauth(
        400, "unsupported_grant_type", "The grant type is not supported."
    ),
}

_CODE_ERRORS = {CODE_EXPIRED: "oauth_code_expired", CODE_USED: "oauth_code_used"}


@dataclass
class Creator:
    open_id: str
    union_id: str
    username: str
    display_name: str
    private_account: bool = False
    max_duration: int = 600
    followers: int = 5200
    banned: bool = False

    def privacy_options(self) -> list[str]:
        if self.private_account:
            return ["FOLLOWER_OF_CREATOR", "MUTUAL_FOLLOW_FRIENDS", "SELF_ONLY"]
        return ["PUBLIC_TO_EVERYONE", "MUTUAL_FOLLOW_FRIENDS", "SELF_ONLY"]


@dataclass
class PublishJob:
    publish_id: str
    open_id: str
    mode: str  # DIRECT_POST | MEDIA_UPLOAD
    source: str  # FILE_UPLOAD | PULL_FROM_URL
    post_info: dict[str, Any]
    created_at: float
    upload_id: str | None = None
    video_size: int = 0
    chunk_size: int = 0
    total_chunks: int = 0
    video_url: str | None = None
    upload_completed_at: float | None = None
    failed_reason: str | None = None
    video_id: str | None = None
    chunk_statuses: list[int] = field(default_factory=list)

    def expected_range(self, index: int) -> tuple[int, int]:
        start = index * self.chunk_size
        if index == self.total_chunks - 1:
            return start, self.video_size - 1
        return start, start + self.chunk_size - 1


class TikTokDirectory(Directory):
    def __init__(self) -> None:
        self.creators: dict[str, Creator] = {}
        self.jobs: dict[str, PublishJob] = {}

    def people(self) -> list[Person]:
        return [
            Person(c.open_id, f"{c.display_name} (@{c.username})") for c in self.creators.values()
        ]

    def add(self, ids: IdSource, spec: Mapping[str, Any]) -> Creator:
        n = ids.next_int()
        creator = Creator(
            open_id=str(spec.get("open_id") or f"-000{secrets.token_hex(4)}-{n:012d}"),
            union_id=str(spec.get("union_id") or f"u-{n:012d}"),
            username=str(spec.get("username") or f"creator{n}"),
            display_name=str(spec.get("display_name") or f"Creator {n}"),
            private_account=bool(spec.get("private_account", False)),
            max_duration=int(spec.get("max_video_post_duration_sec", 600)),
            banned=bool(spec.get("banned", False)),
        )
        self.creators[creator.open_id] = creator
        return creator

    def seed(self, payload: Mapping[str, Any], ids: IdSource) -> dict[str, Any]:
        specs = payload.get("creators", [])
        bulk = payload.get("bulk")
        if isinstance(bulk, dict):
            count = int(bulk.get("creators", 1))
            if not 1 <= count <= 100_000:
                raise SeedError("bulk sizes out of range")
            specs = [{} for _ in range(count)]
        if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
            raise SeedError("creators must be a list of objects")
        return {"creators": [self.add(ids, spec).open_id for spec in specs]}

    def to_json(self) -> dict[str, Any]:
        return {
            "creators": [
                {
                    "open_id": c.open_id,
                    "username": c.username,
                    "display_name": c.display_name,
                    "private_account": c.private_account,
                    "privacy_level_options": c.privacy_options(),
                }
                for c in self.creators.values()
            ]
        }


def default_directory(ids: IdSource) -> TikTokDirectory:
    d = TikTokDirectory()
    d.add(
        ids,
        {
            "open_id": "-000SbxOpenId0001",
            "union_id": "SbxUnion0001",
            "username": "sandboxcoffee",
            "display_name": "Sandbox Coffee Co",
        },
    )
    d.add(
        ids,
        {
            "open_id": "-000SbxOpenId0002",
            "union_id": "SbxUnion0002",
            "username": "privatebaker",
            "display_name": "Private Baker",
            "private_account": True,
            "max_video_post_duration_sec": 180,
        },
    )
    return d


def chunk_plan_error(video_size: int, chunk_size: int, total: int) -> str | None:
    """Why a FILE_UPLOAD source_info breaks TikTok's chunk rules (None if it's fine)."""
    if video_size <= 0 or chunk_size <= 0 or total <= 0:
        return "video_size, chunk_size and total_chunk_count must be positive"
    if video_size > VIDEO_SIZE_MAX:
        return "video_size exceeds the 4 GB limit"
    if video_size < CHUNK_MIN:
        if chunk_size != video_size or total != 1:
            return (
                "videos smaller than 5 MB must be uploaded whole: chunk_size must equal "
                "video_size and total_chunk_count must be 1"
            )
        return None
    if not CHUNK_MIN <= chunk_size <= CHUNK_MAX:
        return "chunk_size must be between 5 MB and 64 MB"
    if total != video_size // chunk_size:
        return (
            f"total_chunk_count must be video_size / chunk_size rounded down "
            f"({video_size // chunk_size}), got {total}"
        )
    if not 1 <= total <= CHUNKS_MAX:
        return "total_chunk_count must be between 1 and 1000"
    if video_size > CHUNK_MAX and total < 2:
        return "videos larger than 64 MB must be uploaded in multiple chunks"
    last = video_size - chunk_size * (total - 1)
    if last > LAST_CHUNK_MAX:
        return "the final chunk may not exceed 128 MB"
    return None


def looks_like_video(data: bytes) -> bool:
    return data[4:8] == b"ftyp" or data[:4] == b"\x1a\x45\xdf\xa3"


_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


def _log_id() -> str:
    return "2026" + secrets.token_hex(14).upper()


class TikTokPlatform(Platform):
    name: ClassVar[str] = NAME
    prefix: ClassVar[str] = "/tiktok"
    oauth: ClassVar[OAuthProfile] = OAuthProfile(
        authorize_path=WWW + "/v2/auth/authorize/",
        client_id_param="client_key",
        scope_separator=",",
        pkce="optional",
        pkce_methods=("S256",),
        # TikTok's desktop flow documents a hex-encoded SHA-256 challenge.
        pkce_hex_ok=True,
        partial_grants=True,
        code_ttl=300,
        scopes=SCOPES,
        default_scopes=("user.info.basic",),
        deny_params={
            "error": "access_denied",
            "error_description": "The user denied the authorization request",
        },
        invalid_scope_error="invalid_scope",
        display_name="TikTok",
    )
    errors: ClassVar[Mapping[str, ErrorSpec]] = ERRORS
    fault_errors: ClassVar[Mapping[FaultKind, str]] = DEFAULT_FAULT_ERRORS
    token_paths: ClassVar[tuple[str, ...]] = ("/open/v2/oauth/token/",)
    token_endpoint_fault_errors: ClassVar[Mapping[FaultKind, str]] = {
        FaultKind.TOKEN_EXPIRED: "oauth_refresh_invalid",
        FaultKind.TOKEN_REVOKED: "oauth_refresh_invalid",
        FaultKind.PERMISSION_REMOVED: "oauth_invalid_client",
    }
    signature_header: ClassVar[str | None] = "TikTok-Signature"

    def new_directory(self, ids: IdSource) -> TikTokDirectory:
        return default_directory(ids)

    def _dir(self, state: SandboxState) -> TikTokDirectory:
        return state.directory(NAME, TikTokDirectory)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(OPEN + "/v2/oauth/token/", self.token_endpoint),
            web.post(OPEN + "/v2/oauth/revoke/", self.revoke_endpoint),
            web.get(OPEN + "/v2/user/info/", self.user_info),
            web.post(OPEN + "/v2/post/publish/creator_info/query/", self.creator_info),
            web.post(OPEN + "/v2/post/publish/video/init/", self.direct_post_init),
            web.post(OPEN + "/v2/post/publish/inbox/video/init/", self.inbox_init),
            web.post(OPEN + "/v2/post/publish/status/fetch/", self.status_fetch),
            web.post(OPEN + "/v2/video/list/", self.video_list),
            web.post(OPEN + "/v2/video/query/", self.video_query),
            web.put(UPLOAD + "/video/", self.upload_chunk),
        ]

    def authorize_redirect_params(
        self, pending: PendingAuthorization, code: AuthorizationCode
    ) -> dict[str, str]:
        return {"scopes": ",".join(code.granted_scopes)}

    def error_body(self, spec: ErrorSpec, err: ApiError, request: web.Request) -> Any:
        filled: dict[str, Any] = errors.fill(
            dict(spec.fields), {"path": request.path, **err.params}
        )
        if filled.pop("oauth", False):
            return {**filled, "log_id": _log_id()}
        return {"data": {}, "error": {**filled, "log_id": _log_id()}}

    def extra_accounts(self, request: web.Request, state: SandboxState) -> set[str]:
        upload = state.uploads.get(request.query.get("upload_id", ""))
        return {upload.account} if upload is not None else set()

    def _ok(self, data: Mapping[str, Any], status: int = 200) -> web.Response:
        return web.json_response(
            {"data": dict(data), "error": {"code": "ok", "message": "", "log_id": _log_id()}},
            status=status,
        )

    def _rate(self, state: SandboxState, key: str, limit: int) -> None:
        now = state.clock.now()
        calls = [t for t in state.counters.get(key, []) if now - t < 60]
        if len(calls) >= limit:
            state.counters[key] = calls
            retry = int(60 - (now - calls[0])) + 1
            raise ApiError(errors.RATE_LIMIT, retry_after=retry)
        calls.append(now)
        state.counters[key] = calls

    # -- OAuth ------------------------------------------------------------------------

    async def token_endpoint(self, request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        state = self.state(request)
        if form.get("client_key") != self.app.client_id or not hmac.compare_digest(
            form.get("client_secret", ""), self.app.client_secret
        ):
            raise ApiError("oauth_invalid_client")
        grant = form.get("grant_type")
        now = state.clock.now()
        if grant == "refresh_token":
            old = state.tokens.get(form.get("refresh_token"))
            if (
                old is None
                or old.platform != NAME
                or old.kind != "refresh"
                or old.rotated
                or old.status(now) != "valid"
            ):
                raise ApiError("oauth_refresh_invalid")
            old.rotated = True
            return self._issue(state, old.subject, old.scopes, old.grant, now)
        if grant != "authorization_code":
            raise ApiError("oauth_unsupported_grant")
        if not form.get("code") or not form.get("redirect_uri"):
            raise ApiError("oauth_invalid_request", detail="code and redirect_uri are required")
        try:
            code = state.oauth.redeem(
                form.get("code"),
                profile=self.oauth,
                client_id=form.get("client_key"),
                redirect_uri=form.get("redirect_uri"),
                code_verifier=form.get("code_verifier"),
            )
        except CodeProblem as problem:
            raise ApiError(_CODE_ERRORS.get(problem.reason, "oauth_code_invalid")) from problem
        return self._issue(state, code.subject, code.granted_scopes, code.grant, now)

    def _issue(
        self, state: SandboxState, open_id: str, scopes: tuple[str, ...], grant: str, now: float
    ) -> web.Response:
        access = state.tokens.issue(
            platform=NAME,
            kind="access",
            subject=open_id,
            scopes=scopes,
            client_id=self.app.client_id,
            lifetime=ACCESS_TOKEN_SECONDS,
            grant=grant,
            prefix="act.",
        )
        refresh = state.tokens.issue(
            platform=NAME,
            kind="refresh",
            subject=open_id,
            scopes=scopes,
            client_id=self.app.client_id,
            lifetime=REFRESH_TOKEN_SECONDS,
            grant=grant,
            prefix="rft.",
        )
        return web.json_response(
            {
                "access_token": access.value,
                "expires_in": access.expires_in(now),
                "open_id": open_id,
                "refresh_expires_in": refresh.expires_in(now),
                "refresh_token": refresh.value,
                "scope": ",".join(scopes),
                "token_type": "Bearer",
            }
        )

    async def revoke_endpoint(self, request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        if form.get("client_key") != self.app.client_id or not hmac.compare_digest(
            form.get("client_secret", ""), self.app.client_secret
        ):
            raise ApiError("oauth_invalid_client")
        state = self.state(request)
        record = state.tokens.get(form.get("token"))
        if record is not None and record.platform == NAME:
            state.tokens.revoke_grant(record.grant)
        return web.json_response({})

    # -- users ------------------------------------------------------------------------

    def _creator(self, request: web.Request, token: TokenRecord) -> Creator:
        return self._dir(self.state(request)).creators[token.subject]

    async def user_info(self, request: web.Request) -> web.Response:
        token = await self.authenticate(request, scopes=("user.info.basic",))
        creator = self._creator(request, token)
        state = self.state(request)
        fields_ = [f for f in request.query.get("fields", "").split(",") if f]
        if not fields_:
            raise ApiError(errors.INVALID_PARAM, detail="fields is required")
        videos = [p for p in state.posts.find(platform=NAME, account=creator.open_id)]
        available: dict[str, tuple[str, Any]] = {
            "open_id": ("user.info.basic", creator.open_id),
            "union_id": ("user.info.basic", creator.union_id),
            "avatar_url": ("user.info.basic", f"https://p16.tiktokcdn.com/sbx/{creator.open_id}"),
            "avatar_url_100": (
                "user.info.basic",
                f"https://p16.tiktokcdn.com/sbx/{creator.open_id}~100",
            ),
            "avatar_large_url": (
                "user.info.basic",
                f"https://p16.tiktokcdn.com/sbx/{creator.open_id}~720",
            ),
            "display_name": ("user.info.basic", creator.display_name),
            "bio_description": ("user.info.profile", "Sandbox creator"),
            "profile_deep_link": (
                "user.info.profile",
                f"https://vm.tiktok.com/sbx-{creator.username}",
            ),
            "is_verified": ("user.info.profile", False),
            "username": ("user.info.profile", creator.username),
            "follower_count": ("user.info.stats", creator.followers),
            "following_count": ("user.info.stats", 180),
            # Likes over all the creator's videos: a base, plus what its videos drew.
            "likes_count": (
                "user.info.stats",
                24_000
                + sum(
                    metrics.cumulative(
                        str(v.extra.get("video_id")), "likes", state.clock.now() - v.created_at
                    )
                    for v in videos
                    if v.extra.get("video_id")
                ),
            ),
            "video_count": ("user.info.stats", len(videos)),
        }
        unknown = [f for f in fields_ if f not in available]
        if unknown:
            raise ApiError(errors.INVALID_PARAM, detail=f"unknown fields: {','.join(unknown)}")
        missing = [f for f in fields_ if available[f][0] not in token.scopes]
        if missing:
            raise ApiError("scope_permission_missed", fields=",".join(missing))
        return self._ok({"user": {f: available[f][1] for f in fields_}})

    async def creator_info(self, request: web.Request) -> web.Response:
        token = await self.authenticate(request, scopes=("video.publish",))
        creator = self._creator(request, token)
        if creator.banned:
            raise ApiError("spam_risk_user_banned_from_posting")
        return self._ok(
            {
                "creator_avatar_url": f"https://p16.tiktokcdn.com/sbx/{creator.open_id}",
                "creator_username": creator.username,
                "creator_nickname": creator.display_name,
                "privacy_level_options": creator.privacy_options(),
                "comment_disabled": False,
                "duet_disabled": False,
                "stitch_disabled": True,
                "max_video_post_duration_sec": creator.max_duration,
            }
        )

    # -- posting ----------------------------------------------------------------------

    async def direct_post_init(self, request: web.Request) -> web.Response:
        token = await self.authenticate(request, scopes=("video.publish",))
        return await self._init(request, token, mode="DIRECT_POST")

    async def inbox_init(self, request: web.Request) -> web.Response:
        token = await self.authenticate(request, scopes=("video.upload",))
        return await self._init(request, token, mode="MEDIA_UPLOAD")

    def _check_post_limits(self, state: SandboxState, creator: Creator) -> None:
        now = state.clock.now()
        d = self._dir(state)
        if creator.banned:
            raise ApiError("spam_risk_user_banned_from_posting")
        recent = [j for j in d.jobs.values() if now - j.created_at < 86400]
        mine = [j for j in recent if j.open_id == creator.open_id]
        if len(mine) >= CREATOR_POSTS_PER_DAY:
            raise ApiError("spam_risk_too_many_posts")
        pending = [j for j in mine if j.upload_completed_at is None and j.failed_reason is None]
        if len(pending) >= PENDING_SHARES_MAX:
            raise ApiError("spam_risk_too_many_pending_share")
        if not self.settings.tiktok_audited:
            active = {j.open_id for j in recent} | {creator.open_id}
            if len(active) > UNAUDITED_ACTIVE_USERS_PER_DAY:
                raise ApiError("reached_active_user_cap")

    async def _init(self, request: web.Request, token: TokenRecord, *, mode: str) -> web.Response:
        state = self.state(request)
        self._rate(state, f"tiktok:init:{token.value}", INIT_PER_MINUTE)
        body = await read_json(request)
        creator = self._creator(request, token)
        post_info = body.get("post_info") or {}
        source_info = body.get("source_info")
        if not isinstance(post_info, dict) or not isinstance(source_info, dict):
            raise ApiError(errors.INVALID_PARAM, detail="source_info is required")
        if mode == "DIRECT_POST":
            privacy = post_info.get("privacy_level")
            if privacy not in PRIVACY_LEVELS:
                raise ApiError(errors.INVALID_PARAM, detail="post_info.privacy_level is invalid")
            if privacy not in creator.privacy_options():
                raise ApiError("privacy_level_option_mismatch", privacy_level=privacy)
            if not self.settings.tiktok_audited and privacy != "SELF_ONLY":
                raise ApiError("unaudited_client_can_only_post_to_private_accounts")
            title = post_info.get("title", "")
            if not isinstance(title, str) or len(title.encode("utf-16-le")) // 2 > TITLE_LIMIT:
                raise ApiError(
                    errors.INVALID_PARAM, detail=f"title exceeds {TITLE_LIMIT} characters"
                )
        self._check_post_limits(state, creator)
        source = source_info.get("source")
        publish_kind = "v_pub_file" if source == "FILE_UPLOAD" else "v_pub_url"
        if mode == "MEDIA_UPLOAD":
            publish_kind = "v_inbox_file" if source == "FILE_UPLOAD" else "v_inbox_url"
        job = PublishJob(
            publish_id=f"{publish_kind}~v2-1.{state.ids.numeric(19)}",
            open_id=creator.open_id,
            mode=mode,
            source=str(source),
            post_info=dict(post_info),
            created_at=state.clock.now(),
        )
        data: dict[str, Any] = {"publish_id": job.publish_id}
        if source == "FILE_UPLOAD":
            try:
                size = int(source_info.get("video_size", 0))
                chunk = int(source_info.get("chunk_size", 0))
                total = int(source_info.get("total_chunk_count", 0))
            except (TypeError, ValueError) as exc:
                raise ApiError(errors.INVALID_PARAM, detail="sizes must be integers") from exc
            problem = chunk_plan_error(size, chunk, total)
            if problem:
                raise ApiError(errors.INVALID_PARAM, detail=problem)
            job.video_size, job.chunk_size, job.total_chunks = size, chunk, total
            job.upload_id = state.ids.numeric(19)
            upload_token = secrets.token_urlsafe(24)
            state.uploads[job.upload_id] = Upload(
                id=job.upload_id,
                platform=NAME,
                account=creator.open_id,
                expected_size=size,
                extra={"aliases": [job.publish_id], "upload_token": upload_token},
            )
            query = urlencode({"upload_id": job.upload_id, "upload_token": upload_token})
            data["upload_url"] = self.url(f"/upload/video/?{query}")
        elif source == "PULL_FROM_URL":
            url = source_info.get("video_url")
            if not isinstance(url, str) or not url.startswith("https://"):
                raise ApiError(errors.INVALID_PARAM, detail="video_url must be an https URL")
            job.video_url = url
            job.upload_completed_at = state.clock.now()
            if "sandbox_error" in url:
                job.failed_reason = "file_format_check_failed"
        else:
            raise ApiError(
                errors.INVALID_PARAM,
                detail="source_info.source must be FILE_UPLOAD or PULL_FROM_URL",
            )
        self._dir(state).jobs[job.publish_id] = job
        state.posts.add(
            RecordedPost(
                id=job.publish_id,
                platform=NAME,
                account=creator.open_id,
                kind="tiktok_video" if mode == "DIRECT_POST" else "tiktok_inbox_upload",
                text=str(post_info.get("title", "")),
                media=[job.video_url] if job.video_url else [f"upload:{job.upload_id}"],
                created_at=job.created_at,
                request_fields={"post_info": dict(post_info), "source_info": dict(source_info)},
                status="processing",
            )
        )
        return self._ok(data)

    async def upload_chunk(self, request: web.Request) -> web.Response:
        state = self.state(request)
        upload = state.uploads.get(request.query.get("upload_id", ""))
        if (
            upload is None
            or upload.platform != NAME
            or request.query.get("upload_token") != upload.extra.get("upload_token")
        ):
            raise ApiError(
                "invalid_file_upload", status=404, detail="upload_id is invalid or expired"
            )
        d = self._dir(state)
        job = d.jobs[upload.extra["aliases"][0]]
        content_type = request.content_type
        if content_type not in VIDEO_TYPES:
            raise ApiError(
                "invalid_file_upload",
                detail="Content-Type must be video/mp4, video/quicktime or video/webm",
            )
        match = _RANGE.fullmatch(request.headers.get("Content-Range", "").strip())
        if match is None:
            raise ApiError(
                "invalid_file_upload",
                detail="Content-Range must be 'bytes {first}-{last}/{total}'",
            )
        first, last, total = (int(g) for g in match.groups())
        data = await request.read()
        if total != job.video_size:
            raise ApiError(
                "invalid_file_upload",
                detail=f"total size {total} differs from video_size {job.video_size}",
            )
        if last - first + 1 != len(data):
            raise ApiError(
                "invalid_file_upload",
                detail=f"Content-Range covers {last - first + 1} bytes but the body has "
                f"{len(data)}",
            )
        received = len(upload.data)
        if last < received:
            # A chunk sent again (its first answer was lost): accept it if identical.
            if bytes(upload.data[first : last + 1]) != data:
                raise ApiError("invalid_file_upload", detail="chunk differs from the one received")
            index = first // job.chunk_size if job.chunk_size else 0
            return web.Response(status=job.chunk_statuses[min(index, len(job.chunk_statuses) - 1)])
        if upload.complete:
            raise ApiError("invalid_file_upload", detail="the upload is already complete")
        index = received // job.chunk_size if job.chunk_size else 0
        expected = job.expected_range(index)
        if first != received:
            raise ApiError(
                "invalid_file_upload",
                detail=f"chunks must be uploaded in order: expected first byte {received}, "
                f"got {first}",
            )
        if (first, last) != expected:
            raise ApiError(
                "invalid_file_upload",
                detail=f"chunk {index + 1} of {job.total_chunks} must cover bytes "
                f"{expected[0]}-{expected[1]}",
            )
        upload.data.extend(data)
        upload.content_type = content_type
        if len(upload.data) < job.video_size:
            job.chunk_statuses.append(206)
            return web.Response(status=206)
        upload.complete = True
        job.chunk_statuses.append(201)
        job.upload_completed_at = state.clock.now()
        if not looks_like_video(bytes(upload.data[:16])):
            job.failed_reason = "file_format_check_failed"
        return web.Response(status=201)

    def _status(self, state: SandboxState, job: PublishJob) -> dict[str, Any]:
        now = state.clock.now()
        delay = self.settings.tiktok_processing_delay_ms / 1000
        uploaded = len(state.uploads[job.upload_id].data) if job.upload_id else 0
        data: dict[str, Any] = {"fail_reason": "", "publicaly_available_post_id": []}
        if job.source == "FILE_UPLOAD":
            data["uploaded_bytes"] = uploaded
        else:
            data["downloaded_bytes"] = 0
        if job.upload_completed_at is None:
            data["status"] = "PROCESSING_UPLOAD"
            return data
        if now - job.upload_completed_at < delay:
            data["status"] = (
                "PROCESSING_UPLOAD" if job.source == "FILE_UPLOAD" else "PROCESSING_DOWNLOAD"
            )
            return data
        if job.source == "PULL_FROM_URL":
            data["downloaded_bytes"] = 8 * MB
        post = state.posts.get(job.publish_id)
        if job.failed_reason:
            data["status"] = "FAILED"
            data["fail_reason"] = job.failed_reason
            if post is not None:
                post.status = "failed"
            return data
        if job.mode == "MEDIA_UPLOAD":
            data["status"] = "SEND_TO_USER_INBOX"
            if post is not None:
                post.status = "in_inbox"
            return data
        if job.video_id is None:
            job.video_id = "7" + state.ids.numeric(18)
        if post is not None:
            post.status = "published"
            post.extra["video_id"] = job.video_id
        data["status"] = "PUBLISH_COMPLETE"
        if job.post_info.get("privacy_level") == "PUBLIC_TO_EVERYONE":
            data["publicaly_available_post_id"] = [int(job.video_id)]
        return data

    async def status_fetch(self, request: web.Request) -> web.Response:
        token = await self.authenticate(request, any_scope=("video.publish", "video.upload"))
        state = self.state(request)
        self._rate(state, f"tiktok:status:{token.value}", STATUS_PER_MINUTE)
        body = await read_json(request)
        job = self._dir(state).jobs.get(str(body.get("publish_id", "")))
        if job is None or job.open_id != token.subject:
            raise ApiError(errors.INVALID_PARAM, detail="publish_id is invalid")
        return self._ok(self._status(state, job))

    # -- metrics ----------------------------------------------------------------------

    def _video_json(
        self, state: SandboxState, post: RecordedPost, fields_: list[str]
    ) -> dict[str, Any]:
        video_id = str(post.extra.get("video_id"))
        age = state.clock.now() - post.created_at
        creator = self._dir(state).creators.get(post.account)
        full: dict[str, Any] = {
            "id": video_id,
            "title": post.text,
            "video_description": post.text,
            "create_time": int(post.created_at),
            "cover_image_url": f"https://p16.tiktokcdn.com/sbx/cover/{video_id}",
            "share_url": "https://www.tiktok.com/@"
            + (creator.username if creator else "user")
            + f"/video/{video_id}",
            "embed_link": f"https://www.tiktok.com/player/v1/{video_id}",
            "duration": 15,
            "height": 1920,
            "width": 1080,
            "view_count": metrics.cumulative(video_id, "video_views", age),
            "like_count": metrics.cumulative(video_id, "likes", age),
            "comment_count": metrics.cumulative(video_id, "comments", age),
            "share_count": metrics.cumulative(video_id, "shares", age),
        }
        return {f: full[f] for f in fields_ if f in full} | {"id": video_id}

    def _published(self, state: SandboxState, open_id: str) -> list[RecordedPost]:
        for job in self._dir(state).jobs.values():
            if job.open_id == open_id:
                self._status(state, job)
        return [
            p
            for p in state.posts.find(platform=NAME, account=open_id)
            if p.status == "published" and p.extra.get("video_id") and not p.deleted
        ]

    async def video_list(self, request: web.Request) -> web.Response:
        token = await self.authenticate(request, scopes=("video.list",))
        state = self.state(request)
        fields_ = [f for f in request.query.get("fields", "").split(",") if f]
        if not fields_:
            raise ApiError(errors.INVALID_PARAM, detail="fields is required")
        body = await read_json(request) if request.can_read_body else {}
        max_count = min(int(body.get("max_count", 10)), 20)
        videos = list(reversed(self._published(state, token.subject)))
        return self._ok(
            {
                "videos": [self._video_json(state, p, fields_) for p in videos[:max_count]],
                "cursor": int(state.clock.now() * 1000),
                "has_more": len(videos) > max_count,
            }
        )

    async def video_query(self, request: web.Request) -> web.Response:
        token = await self.authenticate(request, scopes=("video.list",))
        state = self.state(request)
        fields_ = [f for f in request.query.get("fields", "").split(",") if f]
        body = await read_json(request)
        filters = body.get("filters") or {}
        wanted = [str(v) for v in filters.get("video_ids", [])] if isinstance(filters, dict) else []
        if not wanted or len(wanted) > 20:
            raise ApiError(errors.INVALID_PARAM, detail="filters.video_ids needs 1 to 20 ids")
        videos = [
            self._video_json(state, p, fields_)
            for p in self._published(state, token.subject)
            if str(p.extra.get("video_id")) in wanted
        ]
        return self._ok({"videos": videos})

    # -- webhooks ---------------------------------------------------------------------

    def webhook(
        self,
        state: SandboxState,
        event: str,
        account: str,
        payload: Any | None,
        timestamp: int,
        audience: str,
    ) -> WebhookDelivery:
        d = self._dir(state)
        open_id = account or next(iter(d.creators))
        if payload is None:
            jobs = [j for j in d.jobs.values() if j.open_id == open_id]
            publish_id = jobs[-1].publish_id if jobs else f"v_pub_file~v2-1.{state.ids.numeric(19)}"
            events: dict[str, tuple[str, dict[str, Any]]] = {
                "deauthorize": ("authorization.removed", {"reason": 1}),
                "post_published": (
                    "post.publish.complete",
                    {"publish_id": publish_id, "publish_type": "DIRECT_PUBLISH"},
                ),
                "post_failed": (
                    "post.publish.failed",
                    {
                        "publish_id": publish_id,
                        "reason": "file_format_check_failed",
                        "publish_type": "DIRECT_PUBLISH",
                    },
                ),
                "publicly_available": (
                    "post.publish.publicly_available",
                    {
                        "publish_id": publish_id,
                        "post_id": str(
                            jobs[-1].video_id
                            if jobs and jobs[-1].video_id
                            else "7" + state.ids.numeric(18)
                        ),
                        "publish_type": "DIRECT_PUBLISH",
                    },
                ),
                "inbox_delivered": (
                    "post.publish.inbox_delivered",
                    {"publish_id": publish_id, "publish_type": "INBOX_SHARE"},
                ),
            }
            if event not in events:
                raise ValueError(f"tiktok events: {', '.join(events)} (not {event})")
            name, content = events[event]
            payload = {
                "client_key": self.app.client_id,
                "event": name,
                "create_time": timestamp,
                "user_openid": open_id,
                "content": json.dumps(content, separators=(",", ":")),
            }
        body = signing.canonical_json(payload)
        return WebhookDelivery(
            body=body,
            headers={
                "Content-Type": "application/json",
                "TikTok-Signature": signing.tiktok_signature(
                    self.app.client_secret, body, timestamp
                ),
            },
        )


def upload_sha256(state: SandboxState, publish_id: str) -> str | None:
    """sha256 of the bytes assembled for a publish id (None if there is no upload)."""
    for upload in state.uploads.values():
        if publish_id in upload.extra.get("aliases", ()):
            return hashlib.sha256(bytes(upload.data)).hexdigest()
    return None
