"""LinkedIn: OAuth 2.0 (3-legged, OpenID Connect), the versioned Posts and Images
APIs, organization ACLs and share statistics.

Hosts: www.linkedin.com -> /linkedin/www, api.linkedin.com -> /linkedin/api.

Doc facts relied on (learn.microsoft.com/linkedin):
- `GET /oauth/v2/authorization?response_type=code&client_id&redirect_uri&state&scope`
  (space-delimited scopes, all granted or none); a cancelled consent redirects with
  `error=user_cancelled_authorize&error_description=...`; an unauthorized scope with
  `error=unauthorized_scope_error`.
- `POST /oauth/v2/accessToken` (form: grant_type, code, redirect_uri, client_id,
  client_secret) -> `{"access_token","expires_in":5184000,"scope"}` (60 days), plus
  `id_token` with `openid`; approved partners also get `refresh_token` and
  `refresh_token_expires_in` (365 days, not extended by refreshing: the same refresh
  token comes back with its remaining lifetime). Code errors are
  `{"error":"invalid_request","error_description":"Unable to retrieve access token:
  appid/redirect uri/code verifier does not match authorization code. Or
  authorization code expired. ..."}`; a bad secret `invalid_client`.
- `GET /v2/userinfo` (OpenID): sub, name, given_name, family_name, picture, locale,
  email, email_verified.
- Versioned APIs under `/rest/` need `LinkedIn-Version: YYYYMM` (400 VERSION_MISSING
  when absent, 426 NONEXISTENT_VERSION when not active; a version lives about a
  year) and `X-Restli-Protocol-Version: 2.0.0`.
- `POST /rest/posts` -> 201 with the URN in `x-restli-id`; GET/DELETE
  `/rest/posts/{encoded urn}` (DELETE answers 204); commentary up to 3,000 chars.
- `POST /rest/images?action=initializeUpload` -> `{"value": {"uploadUrl",
  "uploadUrlExpiresAt", "image"}}`, then PUT the bytes to uploadUrl.
- `GET /rest/organizationAcls?q=roleAssignee` lists the member's organization roles;
  `GET /rest/organizationalEntityShareStatistics?q=organizationalEntity` returns
  `totalShareStatistics` (impressionCount, uniqueImpressionsCount, clickCount,
  likeCount, commentCount, shareCount, engagement).
- Error body `{"status", "serviceErrorCode", "code", "message"}`; 401
  INVALID_ACCESS_TOKEN (65600), REVOKED_ACCESS_TOKEN (65601), EXPIRED_ACCESS_TOKEN
  (65602 — the number is from memory, not a page I could read); 403 ACCESS_DENIED
  (serviceErrorCode 100); 429 on throttling.
- Webhooks: `X-LI-Signature` hex HMAC-SHA256(client secret, raw body); the endpoint
  validation GET carries `challengeCode`, answered with `challengeResponse`.
"""

from __future__ import annotations

import hmac
import json
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote

import jwt
from aiohttp import web

from postd_sandbox import errors, metrics, signing
from postd_sandbox.clock import IdSource
from postd_sandbox.errors import ApiError, ErrorSpec
from postd_sandbox.faults import FaultKind
from postd_sandbox.oauth import CodeProblem, OAuthProfile
from postd_sandbox.platforms.base import (
    DEFAULT_FAULT_ERRORS,
    Directory,
    Handshake,
    Person,
    Platform,
    SeedError,
    WebhookDelivery,
    read_json,
)
from postd_sandbox.state import RecordedPost, SandboxState, TokenRecord, Upload

NAME = "linkedin"
WWW = "/linkedin/www"
API = "/linkedin/api"

ACCESS_TOKEN_SECONDS = 60 * 86400
REFRESH_TOKEN_SECONDS = 365 * 86400
COMMENTARY_LIMIT = 3_000
VERSION_SUPPORT_MONTHS = 12
MEMBER_POSTS_PER_DAY = 150
MULTI_IMAGE_MIN, MULTI_IMAGE_MAX = 2, 20
ID_TOKEN_ISSUER = "https://www.linkedin.com/oauth"

SCOPES: Mapping[str, str] = {
    "openid": "Use your name and photo (OpenID Connect)",
    "profile": "Use your name and photo",
    "email": "Use the primary email address associated with your LinkedIn account",
    "w_member_social": "Create, modify, and delete posts, comments, and reactions on your behalf",
    "r_organization_social": "Retrieve your organizations' posts, comments, reactions",
    "w_organization_social": "Create, modify, and delete posts, comments, and reactions on "
    "your organizations' behalf",
    "r_organization_admin": "Retrieve your organizations' pages and their reporting data",
    "rw_organization_admin": "Manage your organizations' pages and retrieve reporting data",
    "r_basicprofile": "Use your basic profile",
}

POST_ROLES = {"ADMINISTRATOR", "CONTENT_ADMINISTRATOR", "DIRECT_SPONSORSHIP_CONTENT_POSTER"}


def _api(status: int, code: str, message: str, service_code: int | None = None) -> ErrorSpec:
    fields_: dict[str, Any] = {"code": code, "message": message}
    if service_code is not None:
        fields_["serviceErrorCode"] = service_code
    return ErrorSpec(status=status, fields=fields_)


def _oauth(status: int, error: str, description: str) -> ErrorSpec:
    return ErrorSpec(status=status, fields={"error": error, "error_description": description})


ERRORS: Mapping[str, ErrorSpec] = {
    errors.INVALID_TOKEN: _api(401, "INVALID_ACCESS_TOKEN", "Invalid access token", 65600),
    errors.REVOKED_TOKEN: _api(
        401,
        "REVOKED_ACCESS_TOKEN",
        "The token used in the request has been revoked by the user",
        65601,
    ),
    errors.EXPIRED_TOKEN: _api(
        401, "EXPIRED_ACCESS_TOKEN", "The token used in the request has expired", 65602
    ),
    "linkedin_empty_token": _api(401, "EMPTY_ACCESS_TOKEN", "Empty oauth2_access_token", 401),
    errors.PERMISSION: _api(
        403, "ACCESS_DENIED", "Not enough permissions to access: {resource}", 100
    ),
    errors.RATE_LIMIT: _api(
        429,
        "TOO_MANY_REQUESTS",
        "Resource level throttle APPLICATION DAY limit for calls to this resource is reached.",
    ),
    "linkedin_member_throttle": _api(
        429,
        "TOO_MANY_REQUESTS",
        "Resource level throttle MEMBER DAY limit for calls to this resource is reached.",
    ),
    errors.SERVER_ERROR: _api(500, "INTERNAL_SERVER_ERROR", "Internal Server Error"),
    errors.OUTAGE: _api(503, "SERVICE_UNAVAILABLE", "Service Unavailable"),
    errors.TIMEOUT: _api(504, "GATEWAY_TIMEOUT", "Gateway Timeout"),
    errors.NOT_FOUND: _api(404, "NOT_FOUND", "Not Found: {path}"),
    errors.INVALID_PARAM: _api(400, "INVALID_PARAM", "{detail}"),
    "linkedin_unprocessable": ErrorSpec(status=422, fields={"message": "ERROR :: {detail}\n"}),
    "linkedin_duplicate": _api(422, "DUPLICATE_POST", "Content is a duplicate of {urn}"),
    "linkedin_version_missing": _api(
        400,
        "VERSION_MISSING",
        "A version must be present. Please specify a version by adding the LinkedIn-Version "
        "header.",
    ),
    "linkedin_version_inactive": _api(
        426, "NONEXISTENT_VERSION", "Requested version {version} is not active"
    ),
    "linkedin_protocol_version": _api(
        400,
        "INVALID_PROTOCOL_VERSION",
        "X-Restli-Protocol-Version must be 2.0.0 for this resource",
    ),
    # OAuth endpoint errors (RFC 6749 shape).
    "linkedin_code_invalid": _oauth(
        400,
        "invalid_request",
        "Unable to retrieve access token: appid/redirect uri/code verifier does not match "
        "authorization code. Or authorization code expired. Or external member binding "
        "exists",
    ),
    "linkedin_missing_param": _oauth(
        400, "invalid_request", 'A required parameter "{param}" is missing'
    ),
    "linkedin_invalid_client": _oauth(401, "invalid_client", "Client authentication failed"),
    "linkedin_unsupported_grant": _oauth(
        400, "unsupported_grant_type", "The grant type {grant_type} is not supported"
    ),
    "linkedin_refresh_invalid": _oauth(
        400, "invalid_request", "The provided refresh token is invalid"
    ),
    "linkedin_refresh_expired": _oauth(
        400, "invalid_request", "The provided refresh token has expired"
    ),
    "linkedin_refresh_revoked": _oauth(
        400, "invalid_request", "The provided refresh token has been revoked"
    ),
}


def active_versions(now: float) -> list[str]:
    """The YYYYMM versions LinkedIn serves at `now` (about the last year)."""
    moment = datetime.fromtimestamp(now, UTC)
    year, month = moment.year, moment.month
    out = []
    for _ in range(VERSION_SUPPORT_MONTHS):
        out.append(f"{year:04d}{month:02d}")
        month -= 1
        if month == 0:
            year, month = year - 1, 12
    return out


@dataclass
class Member:
    id: str
    given_name: str
    family_name: str
    email: str
    org_roles: dict[str, str] = field(default_factory=dict)

    @property
    def urn(self) -> str:
        return f"urn:li:person:{self.id}"

    @property
    def name(self) -> str:
        return f"{self.given_name} {self.family_name}"


@dataclass
class Organization:
    id: str
    name: str
    vanity: str

    @property
    def urn(self) -> str:
        return f"urn:li:organization:{self.id}"


class LinkedInDirectory(Directory):
    def __init__(self) -> None:
        self.members: dict[str, Member] = {}
        self.organizations: dict[str, Organization] = {}

    def people(self) -> list[Person]:
        return [Person(m.id, f"{m.name} ({m.email})") for m in self.members.values()]

    def accounts_of(self, subject: str) -> set[str]:
        member = self.members.get(subject)
        if member is None:
            return {subject}
        found = {subject, member.urn}
        for org_id in member.org_roles:
            found |= {org_id, f"urn:li:organization:{org_id}"}
        return found

    def add_member(
        self,
        ids: IdSource,
        *,
        given: str,
        family: str,
        email: str | None = None,
        member_id: str | None = None,
    ) -> Member:
        member = Member(
            id=member_id or f"m{ids.next_int():x}Sbx",
            given_name=given,
            family_name=family,
            email=email or f"{given.lower()}.{family.lower()}@example.com",
        )
        self.members[member.id] = member
        return member

    def add_org(self, ids: IdSource, *, name: str, org_id: str | None = None) -> Organization:
        org = Organization(
            id=org_id or str(90_000_000 + ids.next_int()),
            name=name,
            vanity=re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-"),
        )
        self.organizations[org.id] = org
        return org

    def seed(self, payload: Mapping[str, Any], ids: IdSource) -> dict[str, Any]:
        created: dict[str, list[str]] = {"members": [], "organizations": []}
        members = payload.get("members", [])
        bulk = payload.get("bulk")
        if isinstance(bulk, dict):
            count = int(bulk.get("members", 1))
            orgs = int(bulk.get("organizations_per_member", 1))
            if not 1 <= count <= 100_000 or not 0 <= orgs <= 100:
                raise SeedError("bulk sizes out of range")
            members = [
                {
                    "given_name": "Bulk",
                    "family_name": f"Member{ids.next_int()}",
                    "organizations": [{"name": f"Bulk Org {j}"} for j in range(orgs)],
                }
                for _ in range(count)
            ]
        if not isinstance(members, list):
            raise SeedError("members must be a list")
        for spec in members:
            if not isinstance(spec, dict):
                raise SeedError("each member must be an object")
            member = self.add_member(
                ids,
                given=str(spec.get("given_name") or "Sandbox"),
                family=str(spec.get("family_name") or "Member"),
                email=spec.get("email"),
                member_id=spec.get("id"),
            )
            created["members"].append(member.id)
            for org_spec in spec.get("organizations", []):
                if isinstance(org_spec, str):
                    if org_spec not in self.organizations:
                        raise SeedError(f"unknown organization {org_spec}")
                    member.org_roles[org_spec] = "ADMINISTRATOR"
                    continue
                org = self.add_org(
                    ids, name=str(org_spec.get("name") or "Sandbox Org"), org_id=org_spec.get("id")
                )
                member.org_roles[org.id] = str(org_spec.get("role") or "ADMINISTRATOR")
                created["organizations"].append(org.id)
        return created

    def to_json(self) -> dict[str, Any]:
        return {
            "members": [
                {"id": m.id, "name": m.name, "email": m.email, "organizations": m.org_roles}
                for m in self.members.values()
            ],
            "organizations": [
                {"id": o.id, "name": o.name, "vanity_name": o.vanity}
                for o in self.organizations.values()
            ],
        }


def default_directory(ids: IdSource) -> LinkedInDirectory:
    d = LinkedInDirectory()
    org = d.add_org(ids, name="Sandbox Coffee Co", org_id="90000001")
    first = d.add_member(
        ids,
        given="Sandbox",
        family="Marketer",
        email="marketer@example.com",
        member_id="SbxM1mbr01",
    )
    first.org_roles[org.id] = "ADMINISTRATOR"
    d.add_member(
        ids, given="Second", family="Tester", email="tester@example.com", member_id="SbxM2mbr02"
    )
    return d


def _ms(ts: float) -> int:
    return int(ts * 1000)


def _parse_list(raw: str | None) -> list[str]:
    """Rest.li 2.0 `List(a,b)` query values (already percent-decoded)."""
    if not raw:
        return []
    inner = raw[5:-1] if raw.startswith("List(") and raw.endswith(")") else raw
    return [item for item in inner.split(",") if item]


class LinkedInPlatform(Platform):
    name: ClassVar[str] = NAME
    prefix: ClassVar[str] = "/linkedin"
    oauth: ClassVar[OAuthProfile] = OAuthProfile(
        authorize_path=WWW + "/oauth/v2/authorization",
        scope_separator=" ",
        pkce="optional",
        pkce_methods=("S256",),
        partial_grants=False,
        code_ttl=1800,
        scopes=SCOPES,
        default_scopes=(),
        deny_params={
            "error": "user_cancelled_authorize",
            "error_description": "The user cancelled the authorization",
        },
        invalid_scope_error="unauthorized_scope_error",
        display_name="LinkedIn",
    )
    errors: ClassVar[Mapping[str, ErrorSpec]] = ERRORS
    fault_errors: ClassVar[Mapping[FaultKind, str]] = DEFAULT_FAULT_ERRORS
    token_paths: ClassVar[tuple[str, ...]] = ("/www/oauth/v2/accessToken",)
    token_endpoint_fault_errors: ClassVar[Mapping[FaultKind, str]] = {
        FaultKind.TOKEN_EXPIRED: "linkedin_refresh_expired",
        FaultKind.TOKEN_REVOKED: "linkedin_refresh_revoked",
        FaultKind.PERMISSION_REMOVED: "linkedin_invalid_client",
    }
    signature_header: ClassVar[str | None] = "X-LI-Signature"

    def new_directory(self, ids: IdSource) -> LinkedInDirectory:
        return default_directory(ids)

    def directory(self, request: web.Request) -> LinkedInDirectory:
        return self.state(request).directory(NAME, LinkedInDirectory)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(WWW + "/oauth/v2/accessToken", self.access_token_endpoint),
            web.get(WWW + "/oauth/openid/jwks", self.jwks),
            web.put(WWW + "/dms-uploads/{image_id}", self.image_upload),
            web.get(API + "/v2/userinfo", self.userinfo),
            web.get(API + "/v2/me", self.me),
            web.post(API + "/rest/posts", self.create_post),
            web.get(API + "/rest/posts", self.find_posts),
            web.get(API + "/rest/posts/{urn}", self.get_post),
            web.delete(API + "/rest/posts/{urn}", self.delete_post),
            web.post(API + "/rest/images", self.images_action),
            web.get(API + "/rest/images/{urn}", self.get_image),
            web.get(API + "/rest/organizationAcls", self.organization_acls),
            web.get(API + "/rest/organizations/{org_id}", self.get_organization),
            web.get(API + "/rest/organizationalEntityShareStatistics", self.share_statistics),
            web.get(API + "/rest/socialActions/{urn}", self.social_actions),
        ]

    def error_body(self, spec: ErrorSpec, err: ApiError, request: web.Request) -> Any:
        params = {"path": request.path, **err.params}
        body: dict[str, Any] = errors.fill(dict(spec.fields), params)
        if "error" not in body:
            body["status"] = err.status or spec.status
        return body

    # -- OAuth ------------------------------------------------------------------------

    async def access_token_endpoint(self, request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        state = self.state(request)
        grant_type = form.get("grant_type")
        for param in ("grant_type", "client_id", "client_secret"):
            if not form.get(param):
                raise ApiError("linkedin_missing_param", param=param)
        if form["client_id"] != self.app.client_id or not hmac.compare_digest(
            form["client_secret"], self.app.client_secret
        ):
            raise ApiError("linkedin_invalid_client")
        now = state.clock.now()
        if grant_type == "refresh_token":
            return self._refresh(state, form.get("refresh_token"), now)
        if grant_type != "authorization_code":
            raise ApiError("linkedin_unsupported_grant", grant_type=grant_type)
        for param in ("code", "redirect_uri"):
            if not form.get(param):
                raise ApiError("linkedin_missing_param", param=param)
        try:
            code = state.oauth.redeem(
                form.get("code"),
                profile=self.oauth,
                client_id=form["client_id"],
                redirect_uri=form.get("redirect_uri"),
                code_verifier=form.get("code_verifier"),
            )
        except CodeProblem as problem:
            # LinkedIn answers every code problem (expired, reused, wrong redirect URI
            # or verifier) with the same message.
            raise ApiError("linkedin_code_invalid") from problem
        access = state.tokens.issue(
            platform=NAME,
            kind="access",
            subject=code.subject,
            scopes=code.granted_scopes,
            client_id=form["client_id"],
            lifetime=ACCESS_TOKEN_SECONDS,
            grant=code.grant,
            prefix="AQV",
            nbytes=48,
        )
        body: dict[str, Any] = {
            "access_token": access.value,
            "expires_in": access.expires_in(now),
            "scope": ",".join(code.granted_scopes),
            "token_type": "Bearer",
        }
        if self.settings.linkedin_partner:
            refresh = state.tokens.issue(
                platform=NAME,
                kind="refresh",
                subject=code.subject,
                scopes=code.granted_scopes,
                client_id=form["client_id"],
                lifetime=REFRESH_TOKEN_SECONDS,
                grant=code.grant,
                prefix="AQX",
                nbytes=48,
            )
            body["refresh_token"] = refresh.value
            body["refresh_token_expires_in"] = refresh.expires_in(now)
        if "openid" in code.granted_scopes:
            body["id_token"] = self._id_token(state, code.subject, now)
        return web.json_response(body)

    def _refresh(self, state: SandboxState, value: str | None, now: float) -> web.Response:
        if not value:
            raise ApiError("linkedin_missing_param", param="refresh_token")
        record = state.tokens.get(value)
        if record is None or record.platform != NAME or record.kind != "refresh":
            raise ApiError("linkedin_refresh_invalid")
        status = record.status(now)
        if status == "revoked":
            raise ApiError("linkedin_refresh_revoked")
        if status == "expired":
            raise ApiError("linkedin_refresh_expired")
        access = state.tokens.issue(
            platform=NAME,
            kind="access",
            subject=record.subject,
            scopes=record.scopes,
            client_id=record.client_id,
            lifetime=ACCESS_TOKEN_SECONDS,
            grant=record.grant,
            prefix="AQV",
            nbytes=48,
        )
        # The refresh token keeps its original expiry: refreshing does not extend it.
        return web.json_response(
            {
                "access_token": access.value,
                "expires_in": access.expires_in(now),
                "refresh_token": record.value,
                "refresh_token_expires_in": record.expires_in(now),
                "scope": ",".join(record.scopes),
                "token_type": "Bearer",
            }
        )

    def _id_token(self, state: SandboxState, subject: str, now: float) -> str:
        member = state.directory(NAME, LinkedInDirectory).members[subject]
        claims = {
            "iss": ID_TOKEN_ISSUER,
            "aud": self.app.client_id,
            "iat": int(now),
            "exp": int(now) + 3600,
            "sub": member.id,
            "name": member.name,
            "given_name": member.given_name,
            "family_name": member.family_name,
            "email": member.email,
            "email_verified": True,
            "locale": "en_US",
        }
        return jwt.encode(
            claims, state.signing_key, algorithm="RS256", headers={"kid": state.signing_kid}
        )

    async def jwks(self, request: web.Request) -> web.Response:
        state = self.state(request)
        return web.json_response(
            {"keys": [signing.public_jwk(state.signing_key, state.signing_kid)]}
        )

    # -- profile ----------------------------------------------------------------------

    async def userinfo(self, request: web.Request) -> web.Response:
        token = await self.authenticate(request, any_scope=("openid", "profile"))
        member = self.directory(request).members[token.subject]
        body: dict[str, Any] = {
            "sub": member.id,
            "name": member.name,
            "given_name": member.given_name,
            "family_name": member.family_name,
            "picture": f"https://media.licdn.com/dms/image/sandbox/{member.id}.jpg",
            "locale": {"country": "US", "language": "en"},
        }
        if "email" in token.scopes:
            body["email"] = member.email
            body["email_verified"] = True
        return web.json_response(body)

    async def me(self, request: web.Request) -> web.Response:
        token = await self.authenticate(request, any_scope=("profile", "r_basicprofile"))
        member = self.directory(request).members[token.subject]
        return web.json_response(
            {
                "id": member.id,
                "localizedFirstName": member.given_name,
                "localizedLastName": member.family_name,
            }
        )

    # -- versioned API helpers --------------------------------------------------------

    def _check_versions(self, request: web.Request, *, restli: bool = True) -> None:
        version = request.headers.get("LinkedIn-Version")
        if not version:
            raise ApiError("linkedin_version_missing")
        now = self.state(request).clock.now()
        if version.split(".")[0] not in active_versions(now):
            raise ApiError("linkedin_version_inactive", version=version)
        if restli and request.headers.get("X-Restli-Protocol-Version") != "2.0.0":
            raise ApiError("linkedin_protocol_version")

    def _member(self, request: web.Request, token: TokenRecord) -> Member:
        return self.directory(request).members[token.subject]

    def _can_post_as(self, request: web.Request, token: TokenRecord, author: str) -> bool:
        member = self._member(request, token)
        if author == member.urn:
            return "w_member_social" in token.scopes
        match = re.fullmatch(r"urn:li:organization:(\d+)", author)
        if match is None:
            return False
        role = member.org_roles.get(match.group(1))
        return role in POST_ROLES and "w_organization_social" in token.scopes

    def _can_read_as(self, request: web.Request, token: TokenRecord, author: str) -> bool:
        member = self._member(request, token)
        if author == member.urn:
            return True
        match = re.fullmatch(r"urn:li:organization:(\d+)", author)
        return bool(match and match.group(1) in member.org_roles)

    # -- posts ------------------------------------------------------------------------

    async def create_post(self, request: web.Request) -> web.Response:
        token = await self.authenticate(request)
        self._check_versions(request)
        body = await read_json(request)
        state = self.state(request)
        author = body.get("author")
        if not isinstance(author, str):
            raise ApiError(
                "linkedin_unprocessable",
                detail="/author :: field is required but not found and has no default value",
            )
        if not re.fullmatch(r"urn:li:(person|organization):[A-Za-z0-9_-]+", author):
            raise ApiError(
                "linkedin_unprocessable",
                detail=f'/author :: "{author}" does not match '
                "urn:li:person:\\w+|urn:li:organization:\\d+",
            )
        if not self._can_post_as(request, token, author):
            raise ApiError(errors.PERMISSION, resource="partnerApiPostsExternal.CREATE.20240101")
        commentary = body.get("commentary", "")
        if not isinstance(commentary, str):
            raise ApiError("linkedin_unprocessable", detail="/commentary :: not a string")
        if len(commentary) > COMMENTARY_LIMIT:
            raise ApiError(
                "linkedin_unprocessable",
                detail=f"/commentary :: length {len(commentary)} exceeds the maximum allowed "
                f"length of {COMMENTARY_LIMIT}",
            )
        for required in ("visibility", "distribution", "lifecycleState"):
            if required not in body:
                raise ApiError(
                    "linkedin_unprocessable",
                    detail=f"/{required} :: field is required but not found and has no "
                    "default value",
                )
        if body["visibility"] not in {"PUBLIC", "CONNECTIONS", "LOGGED_IN", "CONTAINER"}:
            raise ApiError("linkedin_unprocessable", detail="/visibility :: invalid enum value")
        if body["lifecycleState"] not in {"PUBLISHED", "DRAFT"}:
            raise ApiError("linkedin_unprocessable", detail="/lifecycleState :: invalid enum value")
        media = self._validate_content(state, body.get("content"), author)
        now = state.clock.now()
        member_posts_today = [
            p for p in state.posts.by_member(NAME, token.subject) if now - p.created_at < 86400
        ]
        if len(member_posts_today) >= MEMBER_POSTS_PER_DAY:
            raise ApiError("linkedin_member_throttle", retry_after=3600)
        for previous in reversed(state.posts.find(platform=NAME, account=author)):
            if previous.deleted:
                continue
            if previous.text == commentary and previous.media == media:
                raise ApiError("linkedin_duplicate", urn=previous.id)
            break
        urn = f"urn:li:share:{state.ids.numeric(19)}"
        post = RecordedPost(
            id=urn,
            platform=NAME,
            account=author,
            kind="linkedin_post",
            text=commentary,
            media=media,
            created_at=now,
            request_fields={k: v for k, v in body.items() if k != "commentary"},
            status="published" if body["lifecycleState"] == "PUBLISHED" else "draft",
            extra={"member": token.subject, "body": body},
        )
        state.posts.add(post)
        return web.Response(status=201, headers={"x-restli-id": urn, "x-linkedin-id": urn})

    def _validate_content(self, state: SandboxState, content: Any, author: str) -> list[str]:
        if content is None:
            return []
        if not isinstance(content, dict):
            raise ApiError("linkedin_unprocessable", detail="/content :: must be an object")
        image_ids: list[str] = []
        if "media" in content:
            media = content["media"]
            if not isinstance(media, dict) or not isinstance(media.get("id"), str):
                raise ApiError("linkedin_unprocessable", detail="/content/media/id :: required")
            image_ids = [media["id"]]
        elif "multiImage" in content:
            images = content["multiImage"].get("images", [])
            if not MULTI_IMAGE_MIN <= len(images) <= MULTI_IMAGE_MAX:
                raise ApiError(
                    "linkedin_unprocessable",
                    detail=f"/content/multiImage/images :: needs {MULTI_IMAGE_MIN} to "
                    f"{MULTI_IMAGE_MAX} images",
                )
            image_ids = [str(i.get("id")) for i in images]
        elif "article" in content:
            article = content["article"]
            if not isinstance(article, dict) or not article.get("source"):
                raise ApiError(
                    "linkedin_unprocessable", detail="/content/article/source :: required"
                )
            return [str(article["source"])]
        for image_id in image_ids:
            upload = state.uploads.get(image_id)
            if upload is None or upload.platform != NAME:
                raise ApiError(
                    "linkedin_unprocessable",
                    detail=f"/content/media/id :: {image_id} does not exist",
                )
            if not upload.complete:
                raise ApiError(
                    "linkedin_unprocessable",
                    detail=f"/content/media/id :: {image_id} is not AVAILABLE (WAITING_UPLOAD)",
                )
            if upload.account != author:
                raise ApiError(
                    "linkedin_unprocessable",
                    detail=f"/content/media/id :: {image_id} is owned by another entity",
                )
        return image_ids

    def _post_json(self, post: RecordedPost) -> dict[str, Any]:
        body = dict(post.extra.get("body", {}))
        body.update(
            {
                "id": post.id,
                "author": post.account,
                "commentary": post.text,
                "createdAt": _ms(post.created_at),
                "publishedAt": _ms(post.created_at),
                "lastModifiedAt": _ms(post.created_at),
                "lifecycleStateInfo": {"isEditedByAuthor": False},
                "isReshareDisabledByAuthor": bool(body.get("isReshareDisabledByAuthor", False)),
            }
        )
        return body

    def _post_or_404(self, request: web.Request, urn: str) -> RecordedPost:
        post = self.state(request).posts.get(urn)
        if post is None or post.platform != NAME:
            raise ApiError(errors.NOT_FOUND, path=request.path)
        return post

    async def get_post(self, request: web.Request) -> web.Response:
        token = await self.authenticate(request)
        self._check_versions(request, restli=False)
        post = self._post_or_404(request, request.match_info["urn"])
        if post.deleted:
            raise ApiError(errors.NOT_FOUND, path=request.path)
        if not self._can_read_as(request, token, post.account):
            raise ApiError(errors.PERMISSION, resource="partnerApiPostsExternal.GET.20240101")
        return web.json_response(self._post_json(post))

    async def delete_post(self, request: web.Request) -> web.Response:
        token = await self.authenticate(request)
        self._check_versions(request, restli=False)
        post = self._post_or_404(request, request.match_info["urn"])
        if not self._can_post_as(request, token, post.account):
            raise ApiError(errors.PERMISSION, resource="partnerApiPostsExternal.DELETE.20240101")
        post.deleted = True
        return web.Response(status=204)

    async def find_posts(self, request: web.Request) -> web.Response:
        token = await self.authenticate(request)
        self._check_versions(request)
        if request.query.get("q") != "author":
            raise ApiError(errors.INVALID_PARAM, detail="q=author is required")
        author = request.query.get("author", "")
        if not self._can_read_as(request, token, author):
            raise ApiError(errors.PERMISSION, resource="partnerApiPostsExternal.FINDER-author")
        posts = [
            self._post_json(p)
            for p in reversed(self.state(request).posts.find(platform=NAME, account=author))
            if not p.deleted
        ]
        start = int(request.query.get("start", "0"))
        count = int(request.query.get("count", "10"))
        return web.json_response(
            {
                "paging": {"start": start, "count": count, "total": len(posts), "links": []},
                "elements": posts[start : start + count],
            }
        )

    # -- images -----------------------------------------------------------------------

    async def images_action(self, request: web.Request) -> web.Response:
        token = await self.authenticate(request)
        self._check_versions(request)
        if request.query.get("action") != "initializeUpload":
            raise ApiError(errors.INVALID_PARAM, detail="action=initializeUpload is required")
        body = await read_json(request)
        init = body.get("initializeUploadRequest")
        owner = init.get("owner") if isinstance(init, dict) else None
        if not isinstance(owner, str):
            raise ApiError(
                "linkedin_unprocessable",
                detail="/initializeUploadRequest/owner :: field is required",
            )
        if not self._can_post_as(request, token, owner):
            raise ApiError(errors.PERMISSION, resource="images.ACTION-initializeUpload")
        state = self.state(request)
        image_urn = f"urn:li:image:C4E10AQ{state.ids.numeric(12)}"
        state.uploads[image_urn] = Upload(
            id=image_urn, platform=NAME, account=owner, expected_size=None
        )
        upload_url = self.url(f"/www/dms-uploads/{quote(image_urn, safe='')}")
        now = state.clock.now()
        return web.json_response(
            {
                "value": {
                    "uploadUrlExpiresAt": _ms(now + 86400),
                    "uploadUrl": upload_url,
                    "image": image_urn,
                }
            }
        )

    async def image_upload(self, request: web.Request) -> web.Response:
        await self.authenticate(request)
        state = self.state(request)
        upload = state.uploads.get(request.match_info["image_id"])
        if upload is None or upload.platform != NAME:
            raise ApiError(errors.NOT_FOUND, path=request.path)
        data = await request.read()
        if not data:
            raise ApiError(errors.INVALID_PARAM, detail="empty upload")
        upload.data = bytearray(data)
        upload.complete = True
        upload.content_type = request.content_type
        return web.Response(status=201)

    async def get_image(self, request: web.Request) -> web.Response:
        await self.authenticate(request)
        self._check_versions(request, restli=False)
        upload = self.state(request).uploads.get(request.match_info["urn"])
        if upload is None or upload.platform != NAME:
            raise ApiError(errors.NOT_FOUND, path=request.path)
        return web.json_response(
            {
                "id": upload.id,
                "owner": upload.account,
                "status": "AVAILABLE" if upload.complete else "WAITING_UPLOAD",
                "downloadUrl": self.url(f"/www/dms-uploads/{quote(upload.id, safe='')}"),
                "downloadUrlExpiresAt": _ms(time.time() + 3600),
            }
        )

    # -- organizations and statistics -------------------------------------------------

    async def organization_acls(self, request: web.Request) -> web.Response:
        token = await self.authenticate(
            request,
            any_scope=(
                "rw_organization_admin",
                "r_organization_admin",
                "w_organization_social",
                "r_organization_social",
            ),
        )
        self._check_versions(request)
        if request.query.get("q") != "roleAssignee":
            raise ApiError(errors.INVALID_PARAM, detail="q=roleAssignee is required")
        member = self._member(request, token)
        role = request.query.get("role")
        elements = [
            {
                "roleAssignee": member.urn,
                "state": "APPROVED",
                "role": r,
                "organization": f"urn:li:organization:{org_id}",
                "organizationTarget": f"urn:li:organization:{org_id}",
            }
            for org_id, r in member.org_roles.items()
            if role is None or r == role
        ]
        return web.json_response(
            {
                "paging": {"start": 0, "count": 10, "total": len(elements), "links": []},
                "elements": elements,
            }
        )

    async def get_organization(self, request: web.Request) -> web.Response:
        await self.authenticate(request)
        self._check_versions(request, restli=False)
        org = self.directory(request).organizations.get(request.match_info["org_id"])
        if org is None:
            raise ApiError(errors.NOT_FOUND, path=request.path)
        return web.json_response(
            {
                "id": int(org.id),
                "localizedName": org.name,
                "vanityName": org.vanity,
                "name": {"localized": {"en_US": org.name}},
            }
        )

    async def share_statistics(self, request: web.Request) -> web.Response:
        token = await self.authenticate(
            request, any_scope=("rw_organization_admin", "r_organization_admin")
        )
        self._check_versions(request)
        if request.query.get("q") != "organizationalEntity":
            raise ApiError(errors.INVALID_PARAM, detail="q=organizationalEntity is required")
        org_urn = request.query.get("organizationalEntity", "")
        if not self._can_read_as(request, token, org_urn) or "organization" not in org_urn:
            raise ApiError(errors.PERMISSION, resource="organizationalEntityShareStatistics.FINDER")
        state = self.state(request)
        now = state.clock.now()
        wanted = _parse_list(request.query.get("shares")) + _parse_list(
            request.query.get("ugcPosts")
        )
        posts = [p for p in state.posts.find(platform=NAME, account=org_urn) if not p.deleted]
        elements = []
        intervals = _time_intervals(request.query)
        if intervals is not None and not wanted:
            start, end, granularity = intervals
            step = 86400 if granularity == "DAY" else 30 * 86400
            moment = start
            while moment < min(end, now):
                stop = min(moment + step, end)
                day: dict[str, float] = {}
                for recorded in posts:
                    later = share_statistics(recorded.id, stop - recorded.created_at)
                    earlier = share_statistics(recorded.id, moment - recorded.created_at)
                    for k, v in later.items():
                        if k != "engagement":
                            day[k] = day.get(k, 0) + v - earlier[k]
                impressions = day.get("impressionCount", 0)
                engaged = sum(
                    day.get(k, 0) for k in ("clickCount", "likeCount", "commentCount", "shareCount")
                )
                stats: dict[str, Any] = {k: int(v) for k, v in day.items()}
                stats["engagement"] = round(engaged / impressions, 6) if impressions else 0.0
                for k in ("impressionCount", "uniqueImpressionsCount", "clickCount"):
                    stats.setdefault(k, 0)
                elements.append(
                    {
                        "organizationalEntity": org_urn,
                        "timeRange": {"start": int(moment * 1000), "end": int(stop * 1000)},
                        "totalShareStatistics": stats,
                    }
                )
                moment = stop
        elif wanted:
            for urn in wanted:
                post = state.posts.get(urn)
                if post is None or post.account != org_urn:
                    continue
                key = "share" if ":share:" in urn else "ugcPost"
                elements.append(
                    {
                        "organizationalEntity": org_urn,
                        key: urn,
                        "totalShareStatistics": share_statistics(post.id, now - post.created_at),
                    }
                )
        else:
            totals: dict[str, float] = {}
            for post in posts:
                for k, v in share_statistics(post.id, now - post.created_at).items():
                    totals[k] = totals.get(k, 0) + v
            impressions = totals.get("impressionCount", 0)
            engaged = sum(
                totals.get(k, 0) for k in ("clickCount", "likeCount", "commentCount", "shareCount")
            )
            totals["engagement"] = round(engaged / impressions, 6) if impressions else 0.0
            elements.append(
                {
                    "organizationalEntity": org_urn,
                    "totalShareStatistics": {
                        k: (v if k == "engagement" else int(v)) for k, v in totals.items()
                    },
                }
            )
        return web.json_response(
            {"paging": {"start": 0, "count": 10, "links": []}, "elements": elements}
        )

    async def social_actions(self, request: web.Request) -> web.Response:
        token = await self.authenticate(request)
        self._check_versions(request, restli=False)
        post = self._post_or_404(request, request.match_info["urn"])
        if post.deleted or not self._can_read_as(request, token, post.account):
            raise ApiError(errors.NOT_FOUND, path=request.path)
        age = self.state(request).clock.now() - post.created_at
        likes = metrics.cumulative(post.id, "likes", age)
        comments = metrics.cumulative(post.id, "comments", age)
        return web.json_response(
            {
                "target": post.id,
                "likesSummary": {"totalLikes": likes, "likedByCurrentUser": False},
                "commentsSummary": {
                    "aggregatedTotalComments": comments,
                    "totalFirstLevelComments": comments,
                },
            }
        )

    # -- webhooks ---------------------------------------------------------------------

    def handshake(self, state: SandboxState, url: str) -> Handshake | None:
        code = str(uuid.uuid4())
        expected = {
            "challengeCode": code,
            "challengeResponse": signing.linkedin_challenge_response(self.app.client_secret, code),
        }
        return Handshake(
            params={"challengeCode": code},
            expected_body=json.dumps(expected),
            expect_json=True,
        )

    def webhook(
        self,
        state: SandboxState,
        event: str,
        account: str,
        payload: Any | None,
        timestamp: int,
        audience: str,
    ) -> WebhookDelivery:
        if payload is None:
            actions = {
                "comment": "COMMENT",
                "like": "LIKE",
                "share": "SHARE",
                "mention": "SHARE_MENTION",
                "post_published": "SHARE",
            }
            if event not in actions:
                raise ValueError(f"linkedin events: {', '.join(actions)} (not {event})")
            org = (
                account
                if account.startswith("urn:")
                else f"urn:li:organization:{account or '90000001'}"
            )
            posts = state.posts.find(platform=NAME, account=org)
            source = posts[-1].id if posts else f"urn:li:share:{state.ids.numeric(19)}"
            payload = {
                "type": "ORGANIZATION_SOCIAL_ACTION_NOTIFICATIONS",
                "notifications": [
                    {
                        "notificationId": state.ids.next_int(),
                        "action": actions[event],
                        "organizationalEntity": org,
                        "sourcePost": source,
                        "generatedActivity": f"urn:li:comment:({source},{state.ids.numeric(19)})",
                        "lastModifiedAt": timestamp * 1000,
                    }
                ],
            }
        body = signing.canonical_json(payload)
        return WebhookDelivery(
            body=body,
            headers={
                "Content-Type": "application/json",
                "X-LI-Signature": signing.linkedin_signature(self.app.client_secret, body),
            },
        )


def _time_intervals(query: Mapping[str, str]) -> tuple[float, float, str] | None:
    """``timeIntervals=(timeRange:(start:MS,end:MS),timeGranularityType:DAY)`` (Rest.li 2)
    or the dotted form ``timeIntervals.timeRange.start`` ...: (start, end, granularity)
    in seconds. DAY ranges must start and end on UTC midnights, as LinkedIn requires."""
    raw = query.get("timeIntervals")
    if raw:
        found = re.fullmatch(
            r"\(timeRange:\(start:(\d+),end:(\d+)\),timeGranularityType:(DAY|MONTH)\)", raw
        )
        if found is None:
            raise ApiError(errors.INVALID_PARAM, detail="timeIntervals is malformed")
        start_ms, end_ms, granularity = found.group(1), found.group(2), found.group(3)
    elif "timeIntervals.timeRange.start" in query:
        start_ms = query.get("timeIntervals.timeRange.start", "")
        end_ms = query.get("timeIntervals.timeRange.end", "")
        granularity = query.get("timeIntervals.timeGranularityType", "DAY")
    else:
        return None
    try:
        start, end = int(start_ms) / 1000, int(end_ms) / 1000
    except ValueError as exc:
        raise ApiError(errors.INVALID_PARAM, detail="timeRange is malformed") from exc
    if end <= start or (granularity == "DAY" and (start % 86400 or end % 86400)):
        raise ApiError(
            errors.INVALID_PARAM,
            detail="timeRange must start and end at 00:00 UTC for DAY granularity",
        )
    return start, end, granularity


def share_statistics(post_id: str, age: float) -> dict[str, Any]:
    """LinkedIn `totalShareStatistics` for one post at `age` seconds."""
    impressions = metrics.cumulative(post_id, "impressions", age)
    clicks = metrics.cumulative(post_id, "clicks", age)
    likes = metrics.cumulative(post_id, "likes", age)
    comments = metrics.cumulative(post_id, "comments", age)
    shares = metrics.cumulative(post_id, "shares", age)
    engagement = (clicks + likes + comments + shares) / impressions if impressions else 0.0
    return {
        "impressionCount": impressions,
        "uniqueImpressionsCount": metrics.cumulative(post_id, "reach", age),
        "clickCount": clicks,
        "likeCount": likes,
        "commentCount": comments,
        "shareCount": shares,
        "engagement": round(engagement, 6),
    }
