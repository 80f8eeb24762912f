"""Meta: Facebook Login, Pages and Instagram business accounts on the Graph API.

Hosts: www.facebook.com -> /meta/www, graph.facebook.com -> /meta/graph.

Doc facts relied on (developers.facebook.com, Graph API and Instagram Platform):
- Login dialog `GET /{version}/dialog/oauth?client_id&redirect_uri&state&scope`
  (comma or space separated scopes; people may decline individual permissions);
  a denial redirects with `error_reason=user_denied&error=access_denied&
  error_description=Permissions+error.`.
- `GET /{version}/oauth/access_token?client_id&redirect_uri&client_secret&code`
  returns `{"access_token","token_type":"bearer","expires_in"}` (a short-lived user
  token); `grant_type=fb_exchange_token&fb_exchange_token=` returns a long-lived one
  (~60 days). Page tokens from `/me/accounts` fetched with a long-lived user token
  do not expire.
- Error body `{"error":{"message","type","code","error_subcode","fbtrace_id"}}`;
  190 invalid/expired token (subcodes 458 app removed, 460 password changed,
  463 expired, 467 invalid), 4/17/32/613 rate limits, 10/200 permissions,
  100 invalid parameter (subcode 33: object does not exist), 368 blocked as abusive,
  506 duplicate status, 1/2 transient. Code-exchange errors: 100 with subcodes
  36007 (expired), 36008 (redirect_uri differs), 36009 (already used).
- `X-App-Usage: {"call_count","total_cputime","total_time"}` in percent of the
  app's hourly allowance; page-token calls report `X-Business-Use-Case-Usage`
  keyed by the page id with `estimated_time_to_regain_access` in minutes.
- Pages: `POST /{page-id}/feed` (message, link) -> `{"id": "<page>_<post>"}`;
  `POST /{page-id}/photos` (url, caption) -> `{"id","post_id"}`; `DELETE /{post-id}`
  -> `{"success": true}`.
- Instagram: `POST /{ig-user-id}/media` (image_url | video_url + media_type=REELS |
  media_type=CAROUSEL + children, caption, is_carousel_item) -> container id;
  `GET /{container}?fields=status_code` is IN_PROGRESS, FINISHED, ERROR, EXPIRED
  or PUBLISHED; `POST /{ig-user-id}/media_publish?creation_id=` publishes (9007 /
  2207027 "Media ID is not available" while not ready); carousels take 2-10
  children; `GET /{ig-user-id}/content_publishing_limit` reports `quota_usage` and
  `config {quota_total, quota_duration}`; limit code 9 / 2207042. Caption 2,200
  characters, Page post 63,206.

Sandbox conventions: a media URL containing `sandbox_error` makes its container end
in ERROR (media could not be fetched).
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from aiohttp import web

from postd_sandbox import errors, metrics, signing
from postd_sandbox.clock import IdSource
from postd_sandbox.errors import ApiError, ErrorSpec
from postd_sandbox.faults import FaultKind
from postd_sandbox.oauth import (
    CODE_CLIENT_MISMATCH,
    CODE_EXPIRED,
    CODE_PKCE_MISMATCH,
    CODE_PKCE_MISSING,
    CODE_REDIRECT_MISMATCH,
    CODE_USED,
    AuthorizationCode,
    CodeProblem,
    OAuthProfile,
    PendingAuthorization,
)
from postd_sandbox.platforms.base import (
    DEFAULT_FAULT_ERRORS,
    Directory,
    Handshake,
    Person,
    Platform,
    SeedError,
    WebhookDelivery,
    bearer_token,
    read_params,
)
from postd_sandbox.state import RecordedPost, SandboxState, TokenRecord

NAME = "meta"
# Set on a request answered with a rate-limit error, so usage headers show 100%.
THROTTLED_KEY = web.RequestKey("meta_throttled", int)
PREFIX = "/meta"
WWW = "/meta/www"
GRAPH = "/meta/graph"

SHORT_LIVED_USER_TOKEN_SECONDS = 2 * 3600
LONG_LIVED_USER_TOKEN_SECONDS = 60 * 24 * 3600
PAGE_TEXT_LIMIT = 63_206
IG_CAPTION_LIMIT = 2_200
IG_CAROUSEL_MIN, IG_CAROUSEL_MAX = 2, 10
IG_PUBLISH_LIMIT_24H = 50
IG_CONTAINER_TTL = 24 * 3600
# Hourly allowance behind the X-App-Usage percentages (sandbox-sized by default;
# ``POSTD_SANDBOX_META_APP_CALLS_PER_HOUR`` sets it: Meta grants an app 200 calls an
# hour per daily user, so an app with thousands of users has far more), and the
# daily one behind X-Business-Use-Case-Usage for page tokens.
APP_CALLS_PER_HOUR = 2_000
PAGE_CALLS_PER_DAY = 4_800

SCOPES: Mapping[str, str] = {
    "public_profile": "Your name and profile picture",
    "email": "Your email address",
    "pages_show_list": "Show a list of the Pages you manage",
    "pages_read_engagement": "Read content posted on your Pages",
    "pages_manage_posts": "Create and manage content on your Pages",
    "pages_manage_metadata": "Manage settings and webhooks of your Pages",
    "pages_read_user_content": "Read user content on your Pages",
    "pages_manage_engagement": "Manage comments on your Pages",
    "read_insights": "Read Page insights",
    "business_management": "Manage your business",
    "instagram_basic": "Access your Instagram profile and media",
    "instagram_content_publish": "Publish content to your Instagram account",
    "instagram_manage_comments": "Manage comments on your Instagram account",
    "instagram_manage_insights": "Read insights of your Instagram account",
}


def _err(
    status: int,
    code: int,
    message: str,
    *,
    type_: str = "OAuthException",
    subcode: int | None = None,
    transient: bool | None = None,
    user_title: str | None = None,
    user_msg: str | None = None,
) -> ErrorSpec:
    fields_: dict[str, Any] = {"message": message, "type": type_, "code": code}
    if subcode is not None:
        fields_["error_subcode"] = subcode
    if transient is not None:
        fields_["is_transient"] = transient
    if user_title is not None:
        fields_["error_user_title"] = user_title
    if user_msg is not None:
        fields_["error_user_msg"] = user_msg
    return ErrorSpec(status=status, fields=fields_)


_TOKEN_PREFIX = "Error validating access token: "

ERRORS: Mapping[str, ErrorSpec] = {
    errors.INVALID_TOKEN: _err(400, 190, "Invalid OAuth access token - Cannot parse access token"),
    errors.EXPIRED_TOKEN: _err(
        400,
        190,
        _TOKEN_PREFIX + "Session has expired on {expired_text}. The current time is {now_text}.",
        subcode=463,
    ),
    errors.REVOKED_TOKEN: _err(
        400,
        190,
        _TOKEN_PREFIX + "The session has been invalidated because the user changed their "
        "password or Facebook has changed the session for security reasons.",
        subcode=460,
    ),
    "meta_session_invalid": _err(
        400,
        190,
        _TOKEN_PREFIX + "The session is invalid because the user logged out.",
        subcode=467,
    ),
    "meta_app_not_authorized": _err(
        400,
        190,
        _TOKEN_PREFIX + "The user has not authorized application {app_id}.",
        subcode=458,
    ),
    errors.PERMISSION: _err(
        403, 200, "(#200) The user hasn't authorized the application to perform this action"
    ),
    "meta_page_publish_permission": _err(
        403,
        200,
        "(#200) If posting to a page, requires both pages_read_engagement and "
        "pages_manage_posts as an admin with sufficient administrative permission",
    ),
    "meta_app_permission": _err(
        403, 10, "(#10) Application does not have permission for this action"
    ),
    errors.RATE_LIMIT: _err(400, 4, "(#4) Application request limit reached", transient=True),
    "meta_user_rate_limit": _err(400, 17, "(#17) User request limit reached", transient=True),
    "meta_page_rate_limit": _err(400, 32, "(#32) Page request limit reached", transient=True),
    "meta_api_rate_limit": _err(
        400, 613, "(#613) Calls to this api have exceeded the rate limit.", transient=True
    ),
    "meta_buc_rate_limit": _err(
        400,
        80001,
        "(#80001) There have been too many calls to this Page account. Wait a bit and try "
        "again. For more info, please refer to "
        "https://developers.facebook.com/docs/graph-api/overview/rate-limiting.",
        transient=True,
    ),
    errors.SERVER_ERROR: _err(
        500,
        2,
        "An unexpected error has occurred. Please retry your request later.",
        transient=True,
    ),
    "meta_unknown_error": _err(500, 1, "An unknown error occurred", transient=True),
    errors.OUTAGE: _err(503, 2, "Service temporarily unavailable", transient=True),
    errors.TIMEOUT: _err(
        504,
        2,
        "An unexpected error has occurred. Please retry your request later.",
        transient=True,
    ),
    errors.NOT_FOUND: _err(
        400,
        100,
        "Unsupported {method} request. Object with ID '{object_id}' does not exist, cannot "
        "be loaded due to missing permissions, or does not support this operation. Please "
        "read the Graph API documentation at https://developers.facebook.com/docs/graph-api",
        type_="GraphMethodException",
        subcode=33,
    ),
    "meta_unknown_path": _err(400, 2500, "Unknown path components: {path}"),
    errors.INVALID_PARAM: _err(400, 100, "(#100) {detail}"),
    "meta_blocked": _err(
        400,
        368,
        "(#368) The action attempted has been deemed abusive or is otherwise disallowed",
    ),
    "meta_duplicate_post": _err(400, 506, "(#506) Duplicate status message"),
    "meta_ig_not_ready": _err(
        400,
        9007,
        "Media ID is not available",
        subcode=2207027,
        user_title="Media not ready for publishing",
        user_msg="The media is not ready for publishing, please wait for a moment",
    ),
    "meta_ig_media_failed": _err(
        400,
        9004,
        "The media could not be fetched from this uri: {uri}",
        subcode=2207052,
        user_title="Media download has failed.",
        user_msg="The media could not be fetched from this uri: {uri}",
    ),
    "meta_ig_expired": _err(
        400,
        -2,
        "The media you are trying to access has expired. Please try to upload again.",
        subcode=2207020,
    ),
    "meta_ig_already_published": _err(
        400, 100, "(#100) The media container {container_id} has already been published"
    ),
    "meta_ig_publish_limit": _err(
        400,
        9,
        "Application request limit reached",
        subcode=2207042,
        user_title="Reached publishing limit",
        user_msg="You reached maximum number of posts that is allowed to be published by "
        "Content Publishing API.",
    ),
    "meta_ig_spam": _err(
        400,
        4,
        "Application request limit reached",
        subcode=2207051,
        user_title="Action is blocked",
        user_msg="We restrict certain activity to protect our community. Tell us if you "
        "think we made a mistake.",
    ),
    # Token endpoint.
    "meta_code_used": _err(400, 100, "This authorization code has been used.", subcode=36009),
    "meta_code_expired": _err(400, 100, "This authorization code has expired.", subcode=36007),
    "meta_code_invalid": _err(400, 100, "Invalid verification code format."),
    "meta_redirect_mismatch": _err(
        400,
        100,
        "Error validating verification code. Please make sure your redirect_uri is identical "
        "to the one you used in the OAuth dialog request",
        subcode=36008,
    ),
    "meta_code_verifier": _err(
        400, 100, "Error validating verification code. Invalid code verifier."
    ),
    "meta_bad_secret": _err(400, 1, "Error validating client secret."),
    "meta_bad_app": _err(400, 101, "Error validating application. Invalid application ID."),
    "meta_missing_param": _err(400, 100, "Missing {param} parameter"),
}

_CODE_ERRORS = {
    CODE_USED: "meta_code_used",
    CODE_EXPIRED: "meta_code_expired",
    CODE_REDIRECT_MISMATCH: "meta_redirect_mismatch",
    CODE_CLIENT_MISMATCH: "meta_code_invalid",
    CODE_PKCE_MISSING: "meta_code_verifier",
    CODE_PKCE_MISMATCH: "meta_code_verifier",
}


def graph_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


@dataclass
class MetaPage:
    id: str
    name: str
    category: str
    ig_user_id: str | None = None
    followers: int = 1200


@dataclass
class MetaUser:
    id: str
    name: str
    email: str
    page_ids: list[str] = field(default_factory=list)


@dataclass
class IgUser:
    id: str
    username: str
    name: str
    page_id: str
    followers: int = 3400


@dataclass
class IgContainer:
    id: str
    ig_user_id: str
    media_type: str
    media_url: str | None
    caption: str
    is_carousel_item: bool
    children: list[str]
    created_at: float
    ready_at: float
    failed: bool = False
    published_media_id: str | None = None
    params: dict[str, str] = field(default_factory=dict)

    def status_code(self, now: float) -> str:
        if self.published_media_id:
            return "PUBLISHED"
        if now - self.created_at > IG_CONTAINER_TTL:
            return "EXPIRED"
        if now < self.ready_at:
            return "IN_PROGRESS"
        return "ERROR" if self.failed else "FINISHED"


class MetaDirectory(Directory):
    def __init__(self) -> None:
        self.users: dict[str, MetaUser] = {}
        self.pages: dict[str, MetaPage] = {}
        self.ig_users: dict[str, IgUser] = {}
        self.containers: dict[str, IgContainer] = {}
        # (grant, page id) -> page token value, so /me/accounts is stable.
        self.page_tokens: dict[tuple[str, str], str] = {}

    def people(self) -> list[Person]:
        return [Person(u.id, f"{u.name} ({u.email})") for u in self.users.values()]

    def accounts_of(self, subject: str) -> set[str]:
        page = self.pages.get(subject)
        if page is not None:
            return {page.id} | ({page.ig_user_id} if page.ig_user_id else set())
        user = self.users.get(subject)
        if user is None:
            return {subject}
        found = {subject, *user.page_ids}
        for page_id in user.page_ids:
            page = self.pages.get(page_id)
            if page and page.ig_user_id:
                found.add(page.ig_user_id)
        return found

    def add_page(
        self,
        ids: IdSource,
        *,
        name: str,
        category: str = "Local Business",
        page_id: str | None = None,
        instagram: Mapping[str, Any] | None = None,
    ) -> MetaPage:
        page = MetaPage(id=page_id or ids.numeric(15), name=name, category=category)
        self.pages[page.id] = page
        if instagram is not None:
            ig = IgUser(
                id=str(instagram.get("id") or "178414" + ids.numeric(11)),
                username=str(instagram.get("username") or f"page{page.id[-6:]}"),
                name=str(instagram.get("name") or name),
                page_id=page.id,
            )
            self.ig_users[ig.id] = ig
            page.ig_user_id = ig.id
        return page

    def add_user(
        self, ids: IdSource, *, name: str, email: str | None = None, user_id: str | None = None
    ) -> MetaUser:
        user = MetaUser(
            id=user_id or ids.numeric(14),
            name=name,
            email=email or f"{name.lower().replace(' ', '.')}@example.com",
        )
        self.users[user.id] = user
        return user

    def seed(self, payload: Mapping[str, Any], ids: IdSource) -> dict[str, Any]:
        created: dict[str, list[str]] = {"users": [], "pages": [], "instagram": []}
        bulk = payload.get("bulk")
        users = payload.get("users", [])
        if bulk is not None:
            if not isinstance(bulk, dict):
                raise SeedError("bulk must be an object")
            count = int(bulk.get("users", 1))
            per_user = int(bulk.get("pages_per_user", 1))
            with_ig = bool(bulk.get("instagram", True))
            if count < 1 or count > 100_000 or per_user < 0 or per_user > 100:
                raise SeedError("bulk sizes out of range")
            users = [
                {
                    "name": f"Bulk User {ids.next_int()}",
                    "pages": [
                        {"name": f"Bulk Page {j}", "instagram": {} if with_ig else None}
                        for j in range(per_user)
                    ],
                }
                for _ in range(count)
            ]
        if not isinstance(users, list):
            raise SeedError("users must be a list")
        for spec in users:
            if not isinstance(spec, dict) or not isinstance(spec.get("name", ""), str):
                raise SeedError("each user needs a name")
            user = self.add_user(
                ids,
                name=str(spec.get("name") or "Sandbox User"),
                email=spec.get("email"),
                user_id=spec.get("id"),
            )
            created["users"].append(user.id)
            for page_spec in spec.get("pages", []):
                if isinstance(page_spec, str):
                    if page_spec not in self.pages:
                        raise SeedError(f"unknown page {page_spec}")
                    user.page_ids.append(page_spec)
                    continue
                page = self.add_page(
                    ids,
                    name=str(page_spec.get("name") or "Sandbox Page"),
                    category=str(page_spec.get("category") or "Local Business"),
                    page_id=page_spec.get("id"),
                    instagram=page_spec.get("instagram"),
                )
                user.page_ids.append(page.id)
                created["pages"].append(page.id)
                if page.ig_user_id:
                    created["instagram"].append(page.ig_user_id)
        return created

    def to_json(self) -> dict[str, Any]:
        return {
            "users": [
                {"id": u.id, "name": u.name, "email": u.email, "pages": u.page_ids}
                for u in self.users.values()
            ],
            "pages": [
                {
                    "id": p.id,
                    "name": p.name,
                    "category": p.category,
                    "instagram_business_account": p.ig_user_id,
                }
                for p in self.pages.values()
            ],
            "instagram": [
                {"id": i.id, "username": i.username, "page_id": i.page_id}
                for i in self.ig_users.values()
            ],
        }


def default_directory(ids: IdSource) -> MetaDirectory:
    d = MetaDirectory()
    coffee = d.add_page(
        ids,
        name="Sandbox Coffee Co",
        category="Coffee Shop",
        page_id="200000000000001",
        instagram={"id": "17841400000000001", "username": "sandboxcoffee"},
    )
    bakery = d.add_page(ids, name="Sandbox Bakery", category="Bakery", page_id="200000000000002")
    books = d.add_page(
        ids,
        name="Sandbox Bookshop",
        category="Book Store",
        page_id="200000000000003",
        instagram={"id": "17841400000000003", "username": "sandboxbooks"},
    )
    first = d.add_user(
        ids, name="Sandbox Marketer", email="marketer@example.com", user_id="10000000000001"
    )
    first.page_ids = [coffee.id, bakery.id]
    second = d.add_user(
        ids, name="Second Tester", email="tester@example.com", user_id="10000000000002"
    )
    second.page_ids = [books.id]
    return d


def _split_fields(raw: str | None) -> list[str]:
    """Top-level names of a Graph `fields` parameter (nested `{...}` and `.x()` ignored)."""
    if not raw:
        return []
    out, depth, current = [], 0, ""
    for ch in raw:
        if ch in "{(":
            depth += 1
        elif ch in "})":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(current)
            current = ""
        else:
            current += ch
    out.append(current)
    names = []
    for item in out:
        name = item.strip().split("{")[0].split(".")[0].split("(")[0]
        if name:
            names.append(name)
    return names


def _pick(
    node: Mapping[str, Any], fields_raw: str | None, default: tuple[str, ...]
) -> dict[str, Any]:
    wanted = _split_fields(fields_raw) or list(default)
    picked = {k: node[k] for k in wanted if k in node}
    picked["id"] = node["id"]
    return picked


def _window_count(state: SandboxState, key: str, window: float) -> int:
    """Calls under ``key`` within the last ``window`` seconds, this one included.
    The times are kept in order, so the expired ones are cut at a bisection: an
    app making 100,000 calls an hour costs no more per call than one making ten."""
    now = state.clock.now()
    calls = state.counters.setdefault(key, [])
    del calls[: bisect.bisect_right(calls, now - window)]
    calls.append(now)
    return len(calls)


class MetaPlatform(Platform):
    name: ClassVar[str] = NAME
    prefix: ClassVar[str] = PREFIX
    oauth: ClassVar[OAuthProfile] = OAuthProfile(
        authorize_path=WWW + "/{version}/dialog/oauth",
        scope_separator=", ",
        pkce="optional",
        pkce_methods=("S256", "plain"),
        partial_grants=True,
        code_ttl=600,
        scopes=SCOPES,
        default_scopes=("public_profile",),
        deny_params={
            "error_reason": "user_denied",
            "error": "access_denied",
            "error_description": "Permissions error.",
        },
        requires_response_type=False,
        display_name="Facebook",
    )
    errors: ClassVar[Mapping[str, ErrorSpec]] = ERRORS
    fault_errors: ClassVar[Mapping[FaultKind, str]] = DEFAULT_FAULT_ERRORS
    token_endpoint_fault_errors: ClassVar[Mapping[FaultKind, str]] = {
        FaultKind.TOKEN_EXPIRED: "meta_code_expired",
        FaultKind.TOKEN_REVOKED: "meta_code_used",
        FaultKind.PERMISSION_REMOVED: "meta_bad_app",
    }
    signature_header: ClassVar[str | None] = "X-Hub-Signature-256"

    def new_directory(self, ids: IdSource) -> MetaDirectory:
        return default_directory(ids)

    def is_token_endpoint(self, path: str) -> bool:
        return path.startswith(GRAPH + "/") and path.endswith("/oauth/access_token")

    def directory(self, request: web.Request) -> MetaDirectory:
        return self.state(request).directory(NAME, MetaDirectory)

    def routes(self) -> list[web.RouteDef]:
        g = GRAPH + "/{version}"
        return [
            web.get(g + "/oauth/access_token", self.access_token_endpoint),
            web.post(g + "/oauth/access_token", self.access_token_endpoint),
            web.get(g + "/debug_token", self.debug_token),
            web.get(g + "/me", self.me),
            web.get(g + "/me/accounts", self.me_accounts),
            web.get(g + "/me/permissions", self.me_permissions),
            web.delete(g + "/me/permissions", self.revoke_permissions),
            web.get(g + "/{node}", self.get_node),
            web.delete(g + "/{node}", self.delete_node),
            web.post(g + "/{node}/feed", self.page_feed_post),
            web.get(g + "/{node}/feed", self.page_feed_list),
            web.get(g + "/{node}/published_posts", self.page_feed_list),
            web.post(g + "/{node}/photos", self.page_photo_post),
            web.post(g + "/{node}/media", self.ig_media_create),
            web.get(g + "/{node}/media", self.ig_media_list),
            web.post(g + "/{node}/media_publish", self.ig_media_publish),
            web.get(g + "/{node}/content_publishing_limit", self.ig_publishing_limit),
            web.get(g + "/{node}/insights", self.insights),
            web.route("*", g + "/{node}/{edge:.*}", self.unknown_path),
        ]

    # -- protocol bits ----------------------------------------------------------------

    async def access_token(self, request: web.Request) -> str | None:
        token = bearer_token(request)
        if token:
            return token
        if "access_token" in request.query:
            return request.query["access_token"]
        if request.method == "POST" and request.content_type in {
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        }:
            form = await request.post()
            value = form.get("access_token")
            if isinstance(value, str):
                return value
        return None

    def error_body(self, spec: ErrorSpec, err: ApiError, request: web.Request) -> Any:
        now = self.state(request).clock.now()
        expired_at = err.params.get("expired_at") or now
        params = {
            "method": request.method.lower(),
            "app_id": self.app.client_id,
            "expired_text": datetime.fromtimestamp(float(expired_at), UTC).strftime(
                "%A, %d-%b-%y %H:%M:%S UTC"
            ),
            "now_text": datetime.fromtimestamp(now, UTC).strftime("%A, %d-%b-%y %H:%M:%S UTC"),
            **err.params,
        }
        body = errors.fill(dict(spec.fields), params)
        body["fbtrace_id"] = "A" + secrets.token_urlsafe(16)
        return {"error": body}

    def error_response(self, request: web.Request, err: ApiError) -> web.Response:
        response = super().error_response(request, err)
        spec = self.errors.get(err.key)
        if spec is not None and spec.fields.get("code") == 190:
            response.headers["WWW-Authenticate"] = (
                'OAuth "Facebook Platform" "invalid_token" "'
                + str(spec.fields.get("message", "")).split(":")[0]
                + '"'
            )
        if spec is not None and spec.fields.get("code") in {4, 17, 32, 613, 80001}:
            request[THROTTLED_KEY] = err.retry_after or 60
        return response

    def decorate(
        self, request: web.Request, response: web.StreamResponse, token: TokenRecord | None
    ) -> None:
        if not request.path.startswith(GRAPH + "/"):
            return
        state = self.state(request)
        throttled = request.get(THROTTLED_KEY)
        app_calls = _window_count(state, "meta:app", 3600)
        allowance = self.settings.meta_app_calls_per_hour
        pct = 100 if throttled else min(100, app_calls * 100 // allowance)
        response.headers["X-App-Usage"] = json.dumps(
            {"call_count": pct, "total_cputime": pct // 2, "total_time": pct // 2}
        )
        if token is not None and token.kind == "page":
            page_calls = _window_count(state, f"meta:page:{token.account}", 86400)
            page_pct = 100 if throttled else min(100, page_calls * 100 // PAGE_CALLS_PER_DAY)
            regain = (int(throttled) + 59) // 60 if throttled else 0
            response.headers["X-Business-Use-Case-Usage"] = json.dumps(
                {
                    token.account: [
                        {
                            "type": "pages",
                            "call_count": page_pct,
                            "total_cputime": page_pct // 2,
                            "total_time": page_pct // 2,
                            "estimated_time_to_regain_access": regain,
                        }
                    ]
                }
            )

    def authorize_redirect_params(
        self, pending: PendingAuthorization, code: AuthorizationCode
    ) -> dict[str, str]:
        # With return_scopes=true Facebook lists granted and declined permissions.
        if pending.params.get("return_scopes") != "true":
            return {}
        declined = [s for s in pending.scopes if s not in code.granted_scopes]
        return {"granted_scopes": ",".join(code.granted_scopes)} | (
            {"denied_scopes": ",".join(declined)} if declined else {}
        )

    # -- OAuth ------------------------------------------------------------------------

    async def access_token_endpoint(self, request: web.Request) -> web.Response:
        params = await read_params(request)
        state = self.state(request)
        client_id = params.get("client_id")
        if not client_id:
            raise ApiError("meta_missing_param", param="client_id")
        if client_id != self.app.client_id:
            raise ApiError("meta_bad_app")
        if not hmac.compare_digest(params.get("client_secret", ""), self.app.client_secret):
            raise ApiError("meta_bad_secret")
        grant_type = params.get("grant_type")
        if grant_type == "fb_exchange_token":
            short = state.tokens.get(params.get("fb_exchange_token"))
            if short is None or short.platform != NAME or short.kind != "access":
                raise ApiError(errors.INVALID_TOKEN)
            status = short.status(state.clock.now())
            if status == "expired":
                raise ApiError(errors.EXPIRED_TOKEN, expired_at=short.expires_at or 0)
            if status == "revoked":
                raise ApiError(errors.REVOKED_TOKEN)
            long = state.tokens.issue(
                platform=NAME,
                kind="access",
                subject=short.subject,
                scopes=short.scopes,
                client_id=client_id,
                lifetime=LONG_LIVED_USER_TOKEN_SECONDS,
                grant=short.grant,
                prefix="EAAG",
                extra={"long_lived": True},
            )
            return web.json_response(
                {
                    "access_token": long.value,
                    "token_type": "bearer",
                    "expires_in": long.expires_in(state.clock.now()),
                }
            )
        if grant_type not in (None, "", "authorization_code"):
            raise ApiError(errors.INVALID_PARAM, detail=f"Unsupported grant_type {grant_type}")
        if not params.get("code"):
            raise ApiError("meta_missing_param", param="code")
        if "redirect_uri" not in params:
            raise ApiError("meta_missing_param", param="redirect_uri")
        try:
            code = state.oauth.redeem(
                params.get("code"),
                profile=self.oauth,
                client_id=client_id,
                redirect_uri=params.get("redirect_uri"),
                code_verifier=params.get("code_verifier"),
            )
        except CodeProblem as problem:
            raise ApiError(_CODE_ERRORS.get(problem.reason, "meta_code_invalid")) from problem
        token = state.tokens.issue(
            platform=NAME,
            kind="access",
            subject=code.subject,
            scopes=code.granted_scopes,
            client_id=client_id,
            lifetime=SHORT_LIVED_USER_TOKEN_SECONDS,
            grant=code.grant,
            prefix="EAAG",
        )
        return web.json_response(
            {
                "access_token": token.value,
                "token_type": "bearer",
                "expires_in": token.expires_in(state.clock.now()),
            }
        )

    async def debug_token(self, request: web.Request) -> web.Response:
        state = self.state(request)
        app_token = request.query.get("access_token", "")
        if app_token != f"{self.app.client_id}|{self.app.client_secret}":
            await self.authenticate(request)
        record = state.tokens.get(request.query.get("input_token"))
        if record is None or record.platform != NAME:
            raise ApiError(errors.INVALID_PARAM, detail="Invalid input_token")
        now = state.clock.now()
        data: dict[str, Any] = {
            "app_id": self.app.client_id,
            "type": "PAGE" if record.kind == "page" else "USER",
            "application": "POSTD (sandbox)",
            "expires_at": int(record.expires_at) if record.expires_at else 0,
            "data_access_expires_at": int(record.issued_at + 90 * 86400),
            "is_valid": record.status(now) == "valid",
            "issued_at": int(record.issued_at),
            "scopes": list(record.scopes),
            "user_id": record.subject,
        }
        if record.kind == "page":
            data["profile_id"] = record.account
        return web.json_response({"data": data})

    # -- users and pages --------------------------------------------------------------

    async def me(self, request: web.Request) -> web.Response:
        token = await self.authenticate(request)
        d = self.directory(request)
        if token.kind == "page":
            page = d.pages[token.account]
            node: dict[str, Any] = {"id": page.id, "name": page.name, "category": page.category}
        else:
            user = d.users[token.subject]
            node = {"id": user.id, "name": user.name}
            if "email" in token.scopes:
                node["email"] = user.email
        return web.json_response(_pick(node, request.query.get("fields"), ("id", "name")))

    def _page_token(
        self, state: SandboxState, d: MetaDirectory, user_token: TokenRecord, page_id: str
    ) -> TokenRecord:
        key = (user_token.grant, page_id)
        existing = state.tokens.get(d.page_tokens.get(key))
        if existing is not None and existing.status(state.clock.now()) == "valid":
            return existing
        long_lived = bool(user_token.extra.get("long_lived"))
        record = state.tokens.issue(
            platform=NAME,
            kind="page",
            subject=user_token.subject,
            account=page_id,
            scopes=user_token.scopes,
            client_id=user_token.client_id,
            lifetime=None,
            # A page token from a short-lived user token dies with it.
            expires_at=None if long_lived else user_token.expires_at,
            grant=user_token.grant,
            prefix="EAAG",
        )
        d.page_tokens[key] = record.value
        return record

    async def me_accounts(self, request: web.Request) -> web.Response:
        token = await self.authenticate(request)
        if token.kind == "page":
            raise ApiError(
                errors.INVALID_PARAM, detail="Tried accessing nonexisting field (accounts)"
            )
        if "pages_show_list" not in token.scopes:
            return web.json_response({"data": []})
        state = self.state(request)
        d = self.directory(request)
        user = d.users[token.subject]
        data = []
        for page_id in user.page_ids:
            page = d.pages[page_id]
            page_token = self._page_token(state, d, token, page_id)
            entry: dict[str, Any] = {
                "access_token": page_token.value,
                "category": page.category,
                "category_list": [{"id": "2500", "name": page.category}],
                "name": page.name,
                "id": page.id,
                "tasks": [
                    "ADVERTISE",
                    "ANALYZE",
                    "CREATE_CONTENT",
                    "MESSAGING",
                    "MODERATE",
                    "MANAGE",
                ],
            }
            if page.ig_user_id and "instagram_basic" in token.scopes:
                entry["instagram_business_account"] = {"id": page.ig_user_id}
            data.append(entry)
        cursor = base64.b64encode(b"sandbox").decode()
        return web.json_response(
            {"data": data, "paging": {"cursors": {"before": cursor, "after": cursor}}}
        )

    async def me_permissions(self, request: web.Request) -> web.Response:
        token = await self.authenticate(request)
        state = self.state(request)
        grant_scopes = set(token.scopes)
        requested: set[str] = set()
        for code in state.oauth.codes.values():
            if code.grant == token.grant:
                requested = set(code.request.scopes)
        data = [{"permission": s, "status": "granted"} for s in token.scopes]
        data += [{"permission": s, "status": "declined"} for s in sorted(requested - grant_scopes)]
        return web.json_response({"data": data})

    async def revoke_permissions(self, request: web.Request) -> web.Response:
        token = await self.authenticate(request)
        self.state(request).tokens.revoke_grant(token.grant)
        return web.json_response({"success": True})

    def _can_manage_page(self, d: MetaDirectory, token: TokenRecord, page_id: str) -> bool:
        if token.kind == "page":
            return token.account == page_id
        user = d.users.get(token.subject)
        return user is not None and page_id in user.page_ids

    def _require_page_token(self, token: TokenRecord, page_id: str) -> None:
        if token.kind != "page" or token.account != page_id:
            raise ApiError("meta_page_publish_permission")
        if "pages_manage_posts" not in token.scopes:
            raise ApiError("meta_page_publish_permission")

    def _require_ig(self, d: MetaDirectory, token: TokenRecord, ig_id: str, scope: str) -> IgUser:
        ig = d.ig_users.get(ig_id)
        if ig is None:
            raise ApiError(errors.NOT_FOUND, object_id=ig_id)
        if not self._can_manage_page(d, token, ig.page_id):
            raise ApiError(errors.NOT_FOUND, object_id=ig_id)
        if scope not in token.scopes:
            raise ApiError(errors.PERMISSION)
        return ig

    # -- nodes ------------------------------------------------------------------------

    async def get_node(self, request: web.Request) -> web.Response:
        node_id = request.match_info["node"]
        token = await self.authenticate(request)
        state = self.state(request)
        d = self.directory(request)
        now = state.clock.now()
        fields_raw = request.query.get("fields")
        if node_id in d.pages:
            page = d.pages[node_id]
            node: dict[str, Any] = {
                "id": page.id,
                "name": page.name,
                "category": page.category,
                "followers_count": page.followers,
                "fan_count": page.followers,
                "link": f"https://www.facebook.com/{page.id}",
            }
            if page.ig_user_id:
                node["instagram_business_account"] = {"id": page.ig_user_id}
            return web.json_response(_pick(node, fields_raw, ("id", "name")))
        if node_id in d.ig_users:
            ig = self._require_ig(d, token, node_id, "instagram_basic")
            media_count = len(state.posts.find(platform=NAME, account=ig.id))
            node = {
                "id": ig.id,
                "username": ig.username,
                "name": ig.name,
                "followers_count": ig.followers,
                "media_count": media_count,
                "profile_picture_url": f"https://sandbox.invalid/ig/{ig.id}.jpg",
            }
            return web.json_response(_pick(node, fields_raw, ("id",)))
        if node_id in d.users:
            user = d.users[node_id]
            return web.json_response(
                _pick({"id": user.id, "name": user.name}, fields_raw, ("id", "name"))
            )
        container = d.containers.get(node_id)
        if container is not None:
            self._require_ig(d, token, container.ig_user_id, "instagram_basic")
            code = container.status_code(now)
            status_text = {
                "IN_PROGRESS": "In Progress: Media is still being processed.",
                "FINISHED": "Finished: Media has been uploaded and it is complete.",
                "PUBLISHED": "Published: Media has been successfully published.",
                "EXPIRED": "Expired: Media was not published within 24 hours.",
                "ERROR": "Error: Media upload has failed with error code 2207052",
            }[code]
            node = {"id": container.id, "status_code": code, "status": status_text}
            return web.json_response(_pick(node, fields_raw, ("status_code",)))
        post = self._find_post(state, node_id)
        if post is not None and not post.deleted:
            return web.json_response(_pick(self._post_node(post, now), fields_raw, ("id",)))
        raise ApiError(errors.NOT_FOUND, object_id=node_id)

    def _find_post(self, state: SandboxState, node_id: str) -> RecordedPost | None:
        post = state.posts.get(node_id)
        if post is not None and post.platform == NAME:
            return post
        for candidate in state.posts.find(platform=NAME):
            if candidate.extra.get("photo_id") == node_id:
                return candidate
        return None

    def _post_node(self, post: RecordedPost, now: float) -> dict[str, Any]:
        if post.kind.startswith("ig_"):
            age = now - post.created_at
            return {
                "id": post.id,
                "caption": post.text,
                "media_type": post.extra.get("media_type", "IMAGE"),
                "media_product_type": "REELS"
                if post.extra.get("media_type") == "REELS"
                else "FEED",
                "media_url": post.media[0] if post.media else None,
                "permalink": f"https://www.instagram.com/p/{post.extra.get('shortcode')}/",
                "shortcode": post.extra.get("shortcode"),
                "timestamp": graph_time(post.created_at),
                "like_count": metrics.cumulative(post.id, "likes", age, kind=post.kind),
                "comments_count": metrics.cumulative(post.id, "comments", age, kind=post.kind),
                "owner": {"id": post.account},
                "username": post.extra.get("username"),
            }
        node: dict[str, Any] = {
            "id": post.id,
            "message": post.text,
            "created_time": graph_time(post.created_at),
            "updated_time": graph_time(post.created_at),
            "permalink_url": f"https://www.facebook.com/{post.id.replace('_', '/posts/')}",
            "is_published": post.status == "published",
            "from": {"id": post.account},
        }
        if post.extra.get("link"):
            node["link"] = post.extra["link"]
        if post.media:
            node["full_picture"] = post.media[0]
        return node

    async def delete_node(self, request: web.Request) -> web.Response:
        node_id = request.match_info["node"]
        token = await self.authenticate(request)
        state = self.state(request)
        post = self._find_post(state, node_id)
        if post is None or post.deleted:
            raise ApiError(errors.NOT_FOUND, object_id=node_id)
        if post.kind.startswith("ig_"):
            # The Instagram API cannot delete published media.
            raise ApiError(errors.NOT_FOUND, object_id=node_id)
        self._require_page_token(token, post.account)
        post.deleted = True
        return web.json_response({"success": True})

    # -- Pages publishing -------------------------------------------------------------

    def _check_duplicate(self, state: SandboxState, page_id: str, message: str, link: str) -> None:
        recent = [p for p in state.posts.find(platform=NAME, account=page_id) if not p.deleted]
        last = recent[-1] if recent else None
        if last and last.text == message and last.extra.get("link", "") == link:
            raise ApiError("meta_duplicate_post")

    async def page_feed_post(self, request: web.Request) -> web.Response:
        page_id = request.match_info["node"]
        token = await self.authenticate(request)
        d = self.directory(request)
        if page_id not in d.pages:
            raise ApiError(errors.NOT_FOUND, object_id=page_id, method="post")
        self._require_page_token(token, page_id)
        params = await read_params(request)
        message = params.get("message", "")
        link = params.get("link", "")
        if not message and not link:
            raise ApiError(errors.INVALID_PARAM, detail="Missing message or attachment")
        if len(message) > PAGE_TEXT_LIMIT:
            raise ApiError(
                errors.INVALID_PARAM,
                detail=f"Param message must be at most {PAGE_TEXT_LIMIT} characters long",
            )
        state = self.state(request)
        self._check_duplicate(state, page_id, message, link)
        published = params.get("published", "true").lower() not in {"false", "0"}
        scheduled = params.get("scheduled_publish_time")
        post = RecordedPost(
            id=f"{page_id}_{state.ids.numeric(16)}",
            platform=NAME,
            account=page_id,
            kind="page_feed",
            text=message,
            media=[],
            created_at=state.clock.now(),
            request_fields=_request_fields(params),
            status="published" if published else "scheduled" if scheduled else "unpublished",
            extra={"link": link} if link else {},
        )
        state.posts.add(post)
        return web.json_response({"id": post.id})

    async def page_feed_list(self, request: web.Request) -> web.Response:
        page_id = request.match_info["node"]
        token = await self.authenticate(request)
        d = self.directory(request)
        if page_id not in d.pages or not self._can_manage_page(d, token, page_id):
            raise ApiError(errors.NOT_FOUND, object_id=page_id)
        state = self.state(request)
        now = state.clock.now()
        posts = [
            _pick(
                self._post_node(p, now),
                request.query.get("fields"),
                ("id", "message", "created_time"),
            )
            for p in reversed(state.posts.find(platform=NAME, account=page_id))
            if not p.deleted and p.kind in {"page_feed", "page_photo"}
        ]
        limit = int(request.query.get("limit", "25"))
        return web.json_response({"data": posts[:limit], "paging": {}})

    async def page_photo_post(self, request: web.Request) -> web.Response:
        page_id = request.match_info["node"]
        token = await self.authenticate(request)
        d = self.directory(request)
        if page_id not in d.pages:
            raise ApiError(errors.NOT_FOUND, object_id=page_id, method="post")
        self._require_page_token(token, page_id)
        params = await read_params(request)
        url = params.get("url", "")
        media: list[str] = []
        if url:
            media.append(url)
        elif request.content_type == "multipart/form-data":
            form = await request.post()
            source = form.get("source")
            if not isinstance(source, web.FileField):
                raise ApiError(errors.INVALID_PARAM, detail="Missing url or source")
            data = source.file.read()
            media.append("sha256:" + hashlib.sha256(data).hexdigest())
        else:
            raise ApiError(errors.INVALID_PARAM, detail="Missing url or source")
        caption = params.get("caption", params.get("message", ""))
        if len(caption) > PAGE_TEXT_LIMIT:
            raise ApiError(errors.INVALID_PARAM, detail="Param caption is too long")
        state = self.state(request)
        photo_id = state.ids.numeric(16)
        published = params.get("published", "true").lower() not in {"false", "0"}
        post = RecordedPost(
            id=f"{page_id}_{state.ids.numeric(16)}",
            platform=NAME,
            account=page_id,
            kind="page_photo",
            text=caption,
            media=media,
            created_at=state.clock.now(),
            request_fields=_request_fields(params),
            status="published" if published else "unpublished",
            extra={"photo_id": photo_id},
        )
        state.posts.add(post)
        if not published:
            return web.json_response({"id": photo_id})
        return web.json_response({"id": photo_id, "post_id": post.id})

    # -- Instagram publishing ---------------------------------------------------------

    async def ig_media_create(self, request: web.Request) -> web.Response:
        ig_id = request.match_info["node"]
        token = await self.authenticate(request)
        d = self.directory(request)
        state = self.state(request)
        self._require_ig(d, token, ig_id, "instagram_content_publish")
        params = await read_params(request)
        media_type = params.get("media_type", "").upper() or "IMAGE"
        caption = params.get("caption", "")
        if len(caption) > IG_CAPTION_LIMIT:
            raise ApiError(
                errors.INVALID_PARAM,
                detail=f"The caption must be at most {IG_CAPTION_LIMIT} characters long",
            )
        is_item = params.get("is_carousel_item", "false").lower() == "true"
        now = state.clock.now()
        delay = self.settings.ig_container_delay_ms / 1000
        children: list[str] = []
        url: str | None = None
        failed = False
        if media_type == "CAROUSEL":
            children = [c.strip() for c in params.get("children", "").split(",") if c.strip()]
            if not IG_CAROUSEL_MIN <= len(children) <= IG_CAROUSEL_MAX:
                raise ApiError(
                    errors.INVALID_PARAM,
                    detail=f"The parameter children must contain between {IG_CAROUSEL_MIN} "
                    f"and {IG_CAROUSEL_MAX} items",
                )
            for child_id in children:
                child = d.containers.get(child_id)
                if child is None or child.ig_user_id != ig_id or not child.is_carousel_item:
                    raise ApiError(
                        errors.INVALID_PARAM,
                        detail=f"Param children contains an invalid carousel item: {child_id}",
                    )
                failed = failed or child.failed
            ready = max([now + delay] + [d.containers[c].ready_at for c in children])
        else:
            if media_type in {"IMAGE", "STORIES"} and "image_url" in params:
                url = params["image_url"]
            elif media_type in {"REELS", "VIDEO", "STORIES"} and "video_url" in params:
                url = params["video_url"]
            elif media_type == "IMAGE" and "video_url" in params:
                raise ApiError(
                    errors.INVALID_PARAM,
                    detail="The media_type VIDEO is not supported; use REELS for video",
                )
            else:
                raise ApiError(
                    errors.INVALID_PARAM, detail="Param image_url or video_url is required"
                )
            if media_type == "VIDEO" and not is_item:
                raise ApiError(
                    errors.INVALID_PARAM,
                    detail="The VIDEO media_type is no longer supported; use REELS",
                )
            failed = "sandbox_error" in url
            ready = now + (delay * (3 if media_type in {"REELS", "VIDEO"} else 1))
        container = IgContainer(
            id="17" + state.ids.numeric(15),
            ig_user_id=ig_id,
            media_type=media_type,
            media_url=url,
            caption=caption,
            is_carousel_item=is_item,
            children=children,
            created_at=now,
            ready_at=ready,
            failed=failed,
            params=_request_fields(params),
        )
        d.containers[container.id] = container
        return web.json_response({"id": container.id})

    def _published_last_24h(self, state: SandboxState, ig_id: str) -> int:
        now = state.clock.now()
        return sum(
            1
            for p in state.posts.find(platform=NAME, account=ig_id)
            if p.kind.startswith("ig_") and now - p.created_at < 86400
        )

    async def ig_media_publish(self, request: web.Request) -> web.Response:
        ig_id = request.match_info["node"]
        token = await self.authenticate(request)
        d = self.directory(request)
        state = self.state(request)
        ig = self._require_ig(d, token, ig_id, "instagram_content_publish")
        params = await read_params(request)
        creation_id = params.get("creation_id", "")
        container = d.containers.get(creation_id)
        if container is None or container.ig_user_id != ig_id or container.is_carousel_item:
            raise ApiError(errors.NOT_FOUND, object_id=creation_id, method="post")
        now = state.clock.now()
        status = container.status_code(now)
        if status == "PUBLISHED":
            raise ApiError("meta_ig_already_published", container_id=creation_id)
        if status == "EXPIRED":
            raise ApiError("meta_ig_expired")
        if status == "IN_PROGRESS":
            raise ApiError("meta_ig_not_ready")
        if status == "ERROR":
            raise ApiError("meta_ig_media_failed", uri=container.media_url or "")
        if self._published_last_24h(state, ig_id) >= IG_PUBLISH_LIMIT_24H:
            raise ApiError("meta_ig_publish_limit")
        media_id = "179" + state.ids.numeric(14)
        if container.media_type == "CAROUSEL":
            media = [d.containers[c].media_url or "" for c in container.children]
            kind = "ig_carousel"
        else:
            media = [container.media_url or ""]
            kind = "ig_reel" if container.media_type == "REELS" else "ig_media"
        post = RecordedPost(
            id=media_id,
            platform=NAME,
            account=ig_id,
            kind=kind,
            text=container.caption,
            media=media,
            created_at=now,
            request_fields={"creation_id": creation_id, **container.params},
            extra={
                "media_type": "CAROUSEL_ALBUM" if kind == "ig_carousel" else container.media_type,
                "shortcode": base64.urlsafe_b64encode(media_id.encode()).decode()[:11],
                "username": ig.username,
                "container_id": creation_id,
            },
        )
        state.posts.add(post)
        container.published_media_id = media_id
        return web.json_response({"id": media_id})

    async def ig_media_list(self, request: web.Request) -> web.Response:
        ig_id = request.match_info["node"]
        token = await self.authenticate(request)
        d = self.directory(request)
        self._require_ig(d, token, ig_id, "instagram_basic")
        state = self.state(request)
        now = state.clock.now()
        items = [
            _pick(self._post_node(p, now), request.query.get("fields"), ("id",))
            for p in reversed(state.posts.find(platform=NAME, account=ig_id))
            if p.kind.startswith("ig_")
        ]
        limit = int(request.query.get("limit", "25"))
        return web.json_response({"data": items[:limit], "paging": {}})

    async def ig_publishing_limit(self, request: web.Request) -> web.Response:
        ig_id = request.match_info["node"]
        token = await self.authenticate(request)
        d = self.directory(request)
        self._require_ig(d, token, ig_id, "instagram_basic")
        used = self._published_last_24h(self.state(request), ig_id)
        entry: dict[str, Any] = {"quota_usage": used}
        wanted = _split_fields(request.query.get("fields")) or ["quota_usage"]
        if "config" in wanted:
            entry["config"] = {"quota_total": IG_PUBLISH_LIMIT_24H, "quota_duration": 86400}
        return web.json_response({"data": [entry]})

    # -- insights ---------------------------------------------------------------------

    async def insights(self, request: web.Request) -> web.Response:
        node_id = request.match_info["node"]
        token = await self.authenticate(request)
        state = self.state(request)
        d = self.directory(request)
        now = state.clock.now()
        metric_names = [m for m in request.query.get("metric", "").split(",") if m]
        if not metric_names:
            raise ApiError(errors.INVALID_PARAM, detail="The parameter metric is required")
        if node_id in d.pages:
            if not self._can_manage_page(d, token, node_id):
                raise ApiError(errors.NOT_FOUND, object_id=node_id)
            if "read_insights" not in token.scopes:
                raise ApiError(errors.PERMISSION)
            return web.json_response(
                {"data": self._page_insights(state, node_id, metric_names, request), "paging": {}}
            )
        if node_id in d.ig_users:
            self._require_ig(d, token, node_id, "instagram_manage_insights")
            return web.json_response(
                {"data": self._account_insights(state, node_id, metric_names, IG_USER_METRICS)}
            )
        post = self._find_post(state, node_id)
        if post is None or post.deleted:
            raise ApiError(errors.NOT_FOUND, object_id=node_id)
        table = IG_MEDIA_METRICS if post.kind.startswith("ig_") else PAGE_POST_METRICS
        needed = "instagram_manage_insights" if post.kind.startswith("ig_") else "read_insights"
        if needed not in token.scopes:
            raise ApiError(errors.PERMISSION)
        data = []
        age = now - post.created_at
        for name in metric_names:
            if name not in table:
                raise ApiError(
                    errors.INVALID_PARAM,
                    detail=f"The value must be a valid insights metric: {name}",
                )
            normalised, title = table[name]
            value: Any = metrics.cumulative(post.id, normalised, age, kind=post.kind)
            if name == "post_reactions_by_type_total":
                likes = metrics.cumulative(post.id, "likes", age, kind=post.kind)
                value = {"like": likes, "love": likes // 5, "wow": likes // 20}
            data.append(
                {
                    "name": name,
                    "period": "lifetime",
                    "values": [{"value": value}],
                    "title": title,
                    "description": title,
                    "id": f"{post.id}/insights/{name}/lifetime",
                }
            )
        return web.json_response({"data": data})

    def _page_insights(
        self, state: SandboxState, page_id: str, names: list[str], request: web.Request
    ) -> list[dict[str, Any]]:
        period = request.query.get("period", "day")
        now = state.clock.now()
        posts = [p for p in state.posts.find(platform=NAME, account=page_id) if not p.deleted]
        ends = _day_ends(request.query, now)
        out = []
        for name in names:
            if name not in PAGE_METRICS:
                raise ApiError(
                    errors.INVALID_PARAM,
                    detail=f"The value must be a valid insights metric: {name}",
                )
            normalised, title = PAGE_METRICS[name]
            values = []
            for end in ends:
                start = end - 86400
                total = sum(
                    metrics.between(
                        p.id, normalised, start - p.created_at, end - p.created_at, kind=p.kind
                    )
                    for p in posts
                )
                total += metrics.daily_account_value(page_id, normalised, int(end // 86400))
                values.append({"value": total, "end_time": graph_time(end)})
            out.append(
                {
                    "name": name,
                    "period": period,
                    "values": values,
                    "title": title,
                    "description": title,
                    "id": f"{page_id}/insights/{name}/{period}",
                }
            )
        return out

    def _account_insights(
        self,
        state: SandboxState,
        account: str,
        names: list[str],
        table: Mapping[str, tuple[str, str]],
    ) -> list[dict[str, Any]]:
        now = state.clock.now()
        posts = state.posts.find(platform=NAME, account=account)
        out = []
        for name in names:
            if name not in table:
                raise ApiError(
                    errors.INVALID_PARAM,
                    detail=f"The value must be a valid insights metric: {name}",
                )
            normalised, title = table[name]
            total = sum(
                metrics.between(
                    p.id, normalised, now - 86400 - p.created_at, now - p.created_at, kind=p.kind
                )
                for p in posts
            ) + metrics.daily_account_value(account, normalised, int(now // 86400))
            out.append(
                {
                    "name": name,
                    "period": "day",
                    "total_value": {"value": total},
                    "values": [{"value": total, "end_time": graph_time(now)}],
                    "title": title,
                    "description": title,
                    "id": f"{account}/insights/{name}/day",
                }
            )
        return out

    async def unknown_path(self, request: web.Request) -> web.Response:
        await self.authenticate(request)
        raise ApiError("meta_unknown_path", path=request.match_info.get("edge", ""))

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
        secret = self.app.client_secret
        d = state.directory(NAME, MetaDirectory)
        if event == "deauthorize":
            # The Deauthorize Callback: a form POST with a signed_request, not X-Hub.
            user_id = account or next(iter(d.users))
            signed = meta_signed_request(
                secret,
                payload
                if isinstance(payload, dict)
                else {"algorithm": "HMAC-SHA256", "issued_at": timestamp, "user_id": user_id},
            )
            body = ("signed_request=" + signed).encode()
            return WebhookDelivery(
                body=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
            )
        if payload is not None:
            body_obj = payload
        else:
            body_obj = self._webhook_body(state, d, event, account, timestamp)
        body = signing.canonical_json(body_obj)
        return WebhookDelivery(
            body=body,
            headers={
                "Content-Type": "application/json",
                "X-Hub-Signature-256": signing.meta_signature(secret, body),
                "X-Hub-Signature": "sha1="
                + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest(),
            },
        )

    def handshake(self, state: SandboxState, url: str) -> Handshake | None:
        challenge = str(state.ids.next_int())
        return Handshake(
            params={
                "hub.mode": "subscribe",
                "hub.challenge": challenge,
                "hub.verify_token": self.settings.meta_verify_token,
            },
            expected_body=challenge,
        )

    def _webhook_body(
        self, state: SandboxState, d: MetaDirectory, event: str, account: str, timestamp: int
    ) -> dict[str, Any]:
        ig = d.ig_users.get(account)
        if event == "permissions":
            user_id = account or next(iter(d.users))
            return {
                "object": "user",
                "entry": [
                    {
                        "uid": user_id,
                        "id": user_id,
                        "time": timestamp,
                        "changed_fields": ["permissions"],
                    }
                ],
            }
        latest = [p for p in state.posts.find(platform=NAME, account=account) if not p.deleted]
        post_id = latest[-1].id if latest else f"{account}_{state.ids.numeric(16)}"
        if ig is not None:
            if event != "comment":
                raise ValueError(f"instagram webhooks here: comment (not {event})")
            return {
                "object": "instagram",
                "entry": [
                    {
                        "id": ig.id,
                        "time": timestamp,
                        "changes": [
                            {
                                "field": "comments",
                                "value": {
                                    "from": {"id": "1790000000000001", "username": "a_fan"},
                                    "media": {"id": post_id, "media_product_type": "FEED"},
                                    "id": "1800" + state.ids.numeric(13),
                                    "text": "Love this!",
                                },
                            }
                        ],
                    }
                ],
            }
        page_id = account or next(iter(d.pages))
        if event == "comment":
            value: dict[str, Any] = {
                "from": {"id": "5000000000000001", "name": "A Fan"},
                "post_id": post_id,
                "comment_id": f"{post_id.split('_')[-1]}_{state.ids.numeric(16)}",
                "parent_id": post_id,
                "created_time": timestamp,
                "item": "comment",
                "verb": "add",
                "message": "Love this!",
            }
        elif event == "post_published":
            value = {
                "from": {
                    "id": page_id,
                    "name": d.pages[page_id].name if page_id in d.pages else "",
                },
                "post_id": post_id,
                "created_time": timestamp,
                "item": "status",
                "verb": "add",
                "published": 1,
                "message": latest[-1].text if latest else "",
            }
        else:
            raise ValueError(
                f"meta events: deauthorize, permissions, comment, post_published (not {event})"
            )
        return {
            "object": "page",
            "entry": [
                {"id": page_id, "time": timestamp, "changes": [{"field": "feed", "value": value}]}
            ],
        }


def meta_signed_request(app_secret: str, payload: Mapping[str, Any]) -> str:
    """Meta's `signed_request`: base64url(HMAC-SHA256 sig) "." base64url(JSON payload)."""
    encoded = base64.urlsafe_b64encode(signing.canonical_json(payload)).rstrip(b"=")
    sig = hmac.new(app_secret.encode(), encoded, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(sig).rstrip(b"=").decode() + "." + encoded.decode()


def _day_ends(query: Mapping[str, str], now: float) -> list[float]:
    """The ``end_time`` of each daily value a Page insights request asks for.

    With ``since`` and ``until`` (Unix seconds or YYYY-MM-DD), one value per whole day
    between them, each ending at the next midnight (UTC here; Meta uses the Page's
    zone), as Meta does: the first ``end_time`` is ``since`` plus one day. Days that
    have not ended are left out; at most 90 days. Without them, the last two 24-hour
    periods up to now."""
    since, until = _graph_day(query.get("since")), _graph_day(query.get("until"))
    if since is None or until is None:
        return [now - 86400, now]
    if until - since > 90 * 86400:
        raise ApiError(
            errors.INVALID_PARAM,
            detail="There cannot be more than 90 days (7776000 s) between since and until",
        )
    ends = []
    end = since + 86400
    while end <= until + 86400 and end <= now:
        ends.append(end)
        end += 86400
    return ends


def _graph_day(value: str | None) -> float | None:
    """Midnight (UTC) of the day a ``since`` / ``until`` value names."""
    if not value:
        return None
    try:
        if value.isdigit():
            moment = float(value)
        else:
            parsed = datetime.fromisoformat(value)
            moment = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    except ValueError as exc:
        raise ApiError(errors.INVALID_PARAM, detail=f"Invalid time value: {value}") from exc
    return float(int(moment // 86400) * 86400)


def _request_fields(params: Mapping[str, str]) -> dict[str, str]:
    """What a client sent, minus credentials (kept to reconcile retries)."""
    return {k: v for k, v in params.items() if k not in {"access_token", "appsecret_proof"}}


# Insights metric name -> (normalised metric in postd_sandbox.metrics, title).
PAGE_POST_METRICS: Mapping[str, tuple[str, str]] = {
    "post_impressions": ("impressions", "Lifetime Post Total Impressions"),
    "post_impressions_unique": ("reach", "Lifetime Post Total Reach"),
    "post_media_view": ("views", "Lifetime Post Media Views"),
    "post_clicks": ("clicks", "Lifetime Post Clicks"),
    "post_engaged_users": ("engagements", "Lifetime Engaged Users"),
    "post_reactions_by_type_total": ("reactions", "Lifetime Total post Reactions by Type"),
}
PAGE_METRICS: Mapping[str, tuple[str, str]] = {
    "page_impressions": ("impressions", "Daily Total Impressions"),
    "page_impressions_unique": ("reach", "Daily Total Reach"),
    "page_media_view": ("views", "Daily Media Views"),
    "page_post_engagements": ("engagements", "Daily Post Engagements"),
    "page_total_actions": ("clicks", "Daily Total Action Count"),
    "page_fan_adds": ("follows", "Daily New Likes"),
}
IG_MEDIA_METRICS: Mapping[str, tuple[str, str]] = {
    "impressions": ("impressions", "Impressions"),
    "reach": ("reach", "Accounts reached"),
    "views": ("views", "Views"),
    "likes": ("likes", "Likes"),
    "comments": ("comments", "Comments"),
    "shares": ("shares", "Shares"),
    "saved": ("saves", "Saved"),
    "total_interactions": ("engagements", "Interactions"),
}
IG_USER_METRICS: Mapping[str, tuple[str, str]] = {
    "reach": ("reach", "Accounts reached"),
    "views": ("views", "Views"),
    "impressions": ("impressions", "Impressions"),
    "total_interactions": ("engagements", "Interactions"),
    "profile_views": ("profile_visits", "Profile visits"),
    "follower_count": ("follows", "Follower count"),
}
