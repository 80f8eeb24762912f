"""Google: OAuth 2.0 (offline access, consent prompt, PKCE) and the Business Profile
APIs (accounts, locations, local posts, reviews, performance), plus the JWKS and
Pub/Sub push OIDC tokens used for Business Profile notifications.

Hosts: accounts.google.com -> /google/accounts, oauth2.googleapis.com and
www.googleapis.com/oauth2 -> /google/oauth2, <api>.googleapis.com -> /google/<api>
(mybusinessaccountmanagement, mybusinessbusinessinformation, mybusiness (v4),
businessprofileperformance).

Doc facts relied on (developers.google.com/identity and /my-business):
- `GET accounts.google.com/o/oauth2/v2/auth?client_id&redirect_uri&response_type=code
  &scope&access_type=offline&prompt=consent&state&code_challenge
  &code_challenge_method=S256|plain`; space-separated scopes; granular consent lets
  people untick scopes; a denial redirects with `error=access_denied`; the success
  redirect carries `code`, `scope` (granted), `authuser`, `prompt`, `state`.
- `POST oauth2.googleapis.com/token`: authorization_code -> `{"access_token",
  "expires_in": 3599, "refresh_token", "scope", "token_type": "Bearer"[, "id_token"]}`;
  a refresh token only with access_type=offline, and only on the first consent
  unless prompt=consent; refresh_token grant returns no new refresh token. Errors
  are `{"error", "error_description"}`: invalid_grant ("Bad Request", "Token has
  been expired or revoked.", "Missing code verifier."), invalid_client,
  redirect_uri_mismatch, unsupported_grant_type. Apps in testing get refresh tokens
  that expire after 7 days.
- API errors: `{"error": {"code", "message", "status", "details": [...]}}` with
  UNAUTHENTICATED (401), PERMISSION_DENIED (403, ACCESS_TOKEN_SCOPE_INSUFFICIENT),
  NOT_FOUND, INVALID_ARGUMENT (BadRequest fieldViolations), RESOURCE_EXHAUSTED
  (429), INTERNAL, UNAVAILABLE.
- Business Profile: accounts list; locations need `readMask`; localPosts with
  topicType STANDARD / EVENT / OFFER, callToAction {actionType BOOK, ORDER, SHOP,
  LEARN_MORE, SIGN_UP, CALL, url}, summary up to 1,500 characters, event (title,
  schedule) for EVENT and OFFER, offer (couponCode, redeemOnlineUrl,
  termsConditions); reviews list with averageRating / totalReviewCount and
  `PUT .../reviews/{r}/reply {comment}`; about 10 edits per minute per profile.
- Performance: `GET locations/{l}:fetchMultiDailyMetricsTimeSeries?dailyMetrics=...
  &dailyRange.start_date.year=...` -> `multiDailyMetricTimeSeries[].
  dailyMetricTimeSeries[] {dailyMetric, timeSeries: {datedValues: [{date, value}]}}`
  (value is an int64 string, omitted when zero).
- Pub/Sub push: JSON envelope `{"message": {"data" (base64), "messageId",
  "publishTime", "attributes"}, "subscription"}` with an RS256 OIDC token in
  `Authorization: Bearer` (iss https://accounts.google.com, aud, email,
  email_verified); Business Profile notification data is
  `{"type": "NEW_REVIEW", "location": ..., "review": ...}`.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar

import jwt
from aiohttp import web

from postd_sandbox import errors, metrics, signing
from postd_sandbox.clock import IdSource
from postd_sandbox.errors import ApiError, ErrorSpec
from postd_sandbox.faults import FaultKind
from postd_sandbox.keys import STATE_KEY
from postd_sandbox.oauth import (
    CODE_PKCE_MISSING,
    CODE_REDIRECT_MISMATCH,
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
from postd_sandbox.state import RecordedPost, SandboxState, TokenRecord

NAME = "google"
G = "/google"
ACCOUNTS_API = G + "/mybusinessaccountmanagement/v1"
INFO_API = G + "/mybusinessbusinessinformation/v1"
V4 = G + "/mybusiness/v4"
PERF_API = G + "/businessprofileperformance/v1"

ACCESS_TOKEN_SECONDS = 3599
TESTING_REFRESH_SECONDS = 7 * 86400
SUMMARY_LIMIT = 1_500
EDITS_PER_MINUTE = 10
BUSINESS_SCOPE = "https://www.googleapis.com/auth/business.manage"
ISSUER = "https://accounts.google.com"

SCOPES: Mapping[str, str] = {
    "openid": "Associate you with your personal info on Google",
    "email": "See your primary Google Account email address",
    "profile": "See your personal info, including any personal info you've made public",
    "https://www.googleapis.com/auth/userinfo.email": "See your primary Google Account email",
    "https://www.googleapis.com/auth/userinfo.profile": "See your personal info",
    BUSINESS_SCOPE: "See, edit, create and delete your Google business listings",
    "https://www.googleapis.com/auth/youtube.upload": "Manage your YouTube videos",
    "https://www.googleapis.com/auth/youtube.readonly": "View your YouTube account",
    "https://www.googleapis.com/auth/analytics.readonly": "See your Google Analytics data",
}

CTA_TYPES = {"BOOK", "ORDER", "SHOP", "LEARN_MORE", "SIGN_UP", "CALL"}
TOPIC_TYPES = {"STANDARD", "EVENT", "OFFER"}
STAR_RATINGS = ("ONE", "TWO", "THREE", "FOUR", "FIVE")
LOCATION_FIELDS = {
    "name",
    "title",
    "storeCode",
    "languageCode",
    "phoneNumbers",
    "categories",
    "storefrontAddress",
    "websiteUri",
    "metadata",
    "profile",
    "regularHours",
    "openInfo",
    "latlng",
}
# Daily metric -> (normalised metric, share of a location's daily base).
DAILY_METRICS: Mapping[str, tuple[str, float]] = {
    "BUSINESS_IMPRESSIONS_DESKTOP_MAPS": ("business_impressions", 0.12),
    "BUSINESS_IMPRESSIONS_DESKTOP_SEARCH": ("business_impressions", 0.18),
    "BUSINESS_IMPRESSIONS_MOBILE_MAPS": ("business_impressions", 0.35),
    "BUSINESS_IMPRESSIONS_MOBILE_SEARCH": ("business_impressions", 0.35),
    "BUSINESS_CONVERSATIONS": ("engagements", 0.2),
    "BUSINESS_DIRECTION_REQUESTS": ("direction_requests", 1.0),
    "CALL_CLICKS": ("call_clicks", 1.0),
    "WEBSITE_CLICKS": ("website_clicks", 1.0),
    "BUSINESS_BOOKINGS": ("conversions", 1.0),
    "BUSINESS_FOOD_ORDERS": ("conversions", 0.5),
    "BUSINESS_FOOD_MENU_CLICKS": ("clicks", 0.3),
}


def _api(status: int, grpc: str, message: str, *details: Mapping[str, Any]) -> ErrorSpec:
    body: dict[str, Any] = {"code": status, "message": message, "status": grpc}
    if details:
        body["details"] = [dict(d) for d in details]
    return ErrorSpec(status=status, fields=body)


def _info(reason: str) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": "{service}", "method": "{method}"},
    }


def _oauth(status: int, error: str, description: str) -> ErrorSpec:
    return ErrorSpec(
        status=status, fields={"error": error, "error_description": description, "oauth": True}
    )


_UNAUTH = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)

ERRORS: Mapping[str, ErrorSpec] = {
    errors.INVALID_TOKEN: _api(
        401, "UNAUTHENTICATED", _UNAUTH, _info("ACCESS_TOKEN_TYPE_UNSUPPORTED")
    ),
    errors.EXPIRED_TOKEN: _api(401, "UNAUTHENTICATED", _UNAUTH, _info("ACCESS_TOKEN_EXPIRED")),
    errors.REVOKED_TOKEN: _api(401, "UNAUTHENTICATED", _UNAUTH, _info("ACCESS_TOKEN_EXPIRED")),
    "google_credentials_missing": _api(
        401,
        "UNAUTHENTICATED",
        "Request is missing required authentication credential. " + _UNAUTH[44:],
        _info("CREDENTIALS_MISSING"),
    ),
    errors.PERMISSION: _api(
        403,
        "PERMISSION_DENIED",
        "Request had insufficient authentication scopes.",
        _info("ACCESS_TOKEN_SCOPE_INSUFFICIENT"),
    ),
    "google_caller_denied": _api(403, "PERMISSION_DENIED", "The caller does not have permission"),
    errors.RATE_LIMIT: _api(
        429,
        "RESOURCE_EXHAUSTED",
        "Quota exceeded for quota metric 'Requests' and limit 'Requests per minute' of "
        "service '{service}'.",
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "RATE_LIMIT_EXCEEDED",
            "domain": "googleapis.com",
            "metadata": {"service": "{service}", "quota_limit": "{quota_limit}"},
        },
    ),
    errors.SERVER_ERROR: _api(500, "INTERNAL", "Internal error encountered."),
    errors.OUTAGE: _api(503, "UNAVAILABLE", "The service is currently unavailable."),
    errors.TIMEOUT: _api(504, "DEADLINE_EXCEEDED", "The request timed out."),
    errors.NOT_FOUND: _api(404, "NOT_FOUND", "Requested entity was not found."),
    errors.INVALID_PARAM: _api(
        400,
        "INVALID_ARGUMENT",
        "Request contains an invalid argument.",
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": "{field}", "description": "{detail}"}],
        },
    ),
    "google_failed_precondition": _api(400, "FAILED_PRECONDITION", "{detail}"),
    # OAuth token endpoint.
    "oauth_invalid_grant": _oauth(400, "invalid_grant", "Bad Request"),
    "oauth_missing_verifier": _oauth(400, "invalid_grant", "Missing code verifier."),
    "oauth_revoked": _oauth(400, "invalid_grant", "Token has been expired or revoked."),
    "oauth_invalid_client": _oauth(401, "invalid_client", "Unauthorized"),
    "oauth_client_not_found": _oauth(401, "invalid_client", "The OAuth client was not found."),
    "oauth_redirect_mismatch": _oauth(400, "redirect_uri_mismatch", "Bad Request"),
    "oauth_unsupported_grant": _oauth(
        400, "unsupported_grant_type", "Invalid grant_type: {grant_type}"
    ),
    "oauth_invalid_request": _oauth(400, "invalid_request", "{detail}"),
    "oauth_invalid_token": _oauth(400, "invalid_token", "Token expired or revoked"),
}


@dataclass
class Review:
    id: str
    reviewer: str
    stars: str
    comment: str
    created_at: float
    reply: str | None = None
    reply_at: float | None = None


@dataclass
class Location:
    id: str
    account_id: str
    title: str
    city: str
    reviews: dict[str, Review] = field(default_factory=dict)


@dataclass
class BusinessAccount:
    id: str
    name: str
    type: str = "PERSONAL"


@dataclass
class GoogleUser:
    sub: str
    name: str
    email: str
    account_ids: list[str] = field(default_factory=list)


class GoogleDirectory(Directory):
    def __init__(self) -> None:
        self.users: dict[str, GoogleUser] = {}
        self.accounts: dict[str, BusinessAccount] = {}
        self.locations: dict[str, Location] = {}
        self.local_posts: dict[str, dict[str, Any]] = {}  # post name -> LocalPost

    def people(self) -> list[Person]:
        return [Person(u.sub, f"{u.name} ({u.email})") for u in self.users.values()]

    def accounts_of(self, subject: str) -> set[str]:
        user = self.users.get(subject)
        if user is None:
            return {subject}
        found = {subject, user.email}
        for account_id in user.account_ids:
            found |= {account_id, f"accounts/{account_id}"}
            for loc in self.locations.values():
                if loc.account_id == account_id:
                    found |= {loc.id, f"locations/{loc.id}"}
        return found

    def add_review(
        self, ids: IdSource, loc: Location, stars: str, comment: str, at: float
    ) -> Review:
        review = Review(
            id=f"AbFvOq{ids.numeric(12)}",
            reviewer=f"Guest {ids.next_int() % 1000}",
            stars=stars,
            comment=comment,
            created_at=at,
        )
        loc.reviews[review.id] = review
        return review

    def add_location(
        self, ids: IdSource, account_id: str, title: str, city: str, loc_id: str | None = None
    ) -> Location:
        loc = Location(
            id=loc_id or str(2_000_000_000_000_000_000 + ids.next_int()),
            account_id=account_id,
            title=title,
            city=city,
        )
        self.locations[loc.id] = loc
        base = 1_700_000_000.0
        for i, (stars, text) in enumerate(
            [("FIVE", "Great coffee!"), ("FOUR", "Nice staff, slow wifi."), ("TWO", "Too busy.")]
        ):
            self.add_review(ids, loc, stars, text, base + i * 86400)
        return loc

    def add_user(
        self, ids: IdSource, name: str, email: str | None = None, sub: str | None = None
    ) -> GoogleUser:
        user = GoogleUser(
            sub=sub or str(100_000_000_000_000_000_000 + ids.next_int()),
            name=name,
            email=email or f"{name.lower().replace(' ', '.')}@example.com",
        )
        self.users[user.sub] = user
        return user

    def seed(self, payload: Mapping[str, Any], ids: IdSource) -> dict[str, Any]:
        created: dict[str, list[str]] = {"users": [], "accounts": [], "locations": []}
        users = payload.get("users", [])
        bulk = payload.get("bulk")
        if isinstance(bulk, dict):
            count = int(bulk.get("users", 1))
            per = int(bulk.get("locations_per_user", 1))
            if not 1 <= count <= 100_000 or not 0 <= per <= 1000:
                raise SeedError("bulk sizes out of range")
            users = [
                {"name": f"Bulk Owner {ids.next_int()}", "locations": [{} for _ in range(per)]}
                for _ in range(count)
            ]
        if not isinstance(users, list):
            raise SeedError("users must be a list")
        for spec in users:
            if not isinstance(spec, dict):
                raise SeedError("each user must be an object")
            user = self.add_user(
                ids, str(spec.get("name") or "Sandbox Owner"), spec.get("email"), spec.get("sub")
            )
            account = BusinessAccount(
                id=str(spec.get("account_id") or 100_000_000_000_000_000_000 + ids.next_int()),
                name=str(spec.get("account_name") or user.name),
            )
            self.accounts[account.id] = account
            user.account_ids.append(account.id)
            created["users"].append(user.sub)
            created["accounts"].append(account.id)
            for loc_spec in spec.get("locations", []):
                loc = self.add_location(
                    ids,
                    account.id,
                    str(loc_spec.get("title") or f"{account.name} location"),
                    str(loc_spec.get("city") or "Springfield"),
                    loc_spec.get("id"),
                )
                created["locations"].append(loc.id)
        return created

    def to_json(self) -> dict[str, Any]:
        return {
            "users": [
                {"sub": u.sub, "name": u.name, "email": u.email, "accounts": u.account_ids}
                for u in self.users.values()
            ],
            "accounts": [
                {"name": f"accounts/{a.id}", "accountName": a.name} for a in self.accounts.values()
            ],
            "locations": [
                {
                    "name": f"locations/{loc.id}",
                    "account": f"accounts/{loc.account_id}",
                    "title": loc.title,
                }
                for loc in self.locations.values()
            ],
        }


def default_directory(ids: IdSource) -> GoogleDirectory:
    d = GoogleDirectory()
    d.seed(
        {
            "users": [
                {
                    "sub": "100000000000000000001",
                    "name": "Sandbox Marketer",
                    "email": "marketer@example.com",
                    "account_id": "100000000000000000001",
                    "account_name": "Sandbox Coffee Co",
                    "locations": [
                        {
                            "id": "2000000000000000001",
                            "title": "Sandbox Coffee Co — Downtown",
                            "city": "Springfield",
                        },
                        {
                            "id": "2000000000000000002",
                            "title": "Sandbox Coffee Co — Harbour",
                            "city": "Shelbyville",
                        },
                    ],
                },
                {
                    "sub": "100000000000000000002",
                    "name": "Second Tester",
                    "email": "tester@example.com",
                    "account_id": "100000000000000000002",
                    "account_name": "Sandbox Bookshop",
                    "locations": [
                        {
                            "id": "2000000000000000003",
                            "title": "Sandbox Bookshop",
                            "city": "Ogdenville",
                        }
                    ],
                },
            ]
        },
        ids,
    )
    return d


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _service_of(path: str) -> str:
    part = path.split("/")[2] if path.count("/") >= 2 else "oauth2"
    return f"{part}.googleapis.com"


def _date_param(query: Mapping[str, str], which: str) -> date | None:
    """`dailyRange.startDate.year` / `daily_range.start_date.year` (Google accepts
    camelCase and snake_case query names alike)."""
    normalised = {k.replace("_", "").lower(): v for k, v in query.items()}
    parts = {}
    for name in ("year", "month", "day"):
        value = normalised.get(f"dailyrange.{which}date.{name}")
        if value is None:
            return None
        parts[name] = int(value)
    return date(parts["year"], parts["month"], parts["day"])


class GooglePlatform(Platform):
    name: ClassVar[str] = NAME
    prefix: ClassVar[str] = G
    oauth: ClassVar[OAuthProfile] = OAuthProfile(
        authorize_path=G + "/accounts/o/oauth2/v2/auth",
        scope_separator=" ",
        pkce="optional",
        pkce_methods=("S256", "plain"),
        partial_grants=True,
        code_ttl=600,
        scopes=SCOPES,
        default_scopes=(),
        deny_params={"error": "access_denied"},
        invalid_scope_error=None,
        display_name="Google",
        code_prefix="4/0A",
    )
    errors: ClassVar[Mapping[str, ErrorSpec]] = ERRORS
    fault_errors: ClassVar[Mapping[FaultKind, str]] = DEFAULT_FAULT_ERRORS
    token_paths: ClassVar[tuple[str, ...]] = ("/oauth2/token",)
    token_endpoint_fault_errors: ClassVar[Mapping[FaultKind, str]] = {
        FaultKind.TOKEN_EXPIRED: "oauth_revoked",
        FaultKind.TOKEN_REVOKED: "oauth_revoked",
        FaultKind.PERMISSION_REMOVED: "oauth_invalid_client",
    }
    signature_header: ClassVar[str | None] = "Authorization"

    def new_directory(self, ids: IdSource) -> GoogleDirectory:
        return default_directory(ids)

    def _dir(self, state: SandboxState) -> GoogleDirectory:
        return state.directory(NAME, GoogleDirectory)

    def routes(self) -> list[web.RouteDef]:
        loc = V4 + "/accounts/{account}/locations/{location}"
        return [
            web.post(G + "/oauth2/token", self.token_endpoint),
            web.post(G + "/oauth2/revoke", self.revoke_endpoint),
            web.get(G + "/oauth2/v3/certs", self.certs),
            web.get(G + "/oauth2/v3/tokeninfo", self.tokeninfo),
            web.get(G + "/oauth2/v3/userinfo", self.userinfo),
            web.get(ACCOUNTS_API + "/accounts", self.list_accounts),
            web.get(INFO_API + "/accounts/{account}/locations", self.list_locations),
            web.get(INFO_API + "/locations/{location}", self.get_location),
            web.post(loc + "/localPosts", self.create_local_post),
            web.get(loc + "/localPosts", self.list_local_posts),
            web.get(loc + "/localPosts/{post}", self.get_local_post),
            web.patch(loc + "/localPosts/{post}", self.patch_local_post),
            web.delete(loc + "/localPosts/{post}", self.delete_local_post),
            web.get(loc + "/reviews", self.list_reviews),
            web.get(loc + "/reviews/{review}", self.get_review),
            web.put(loc + "/reviews/{review}/reply", self.put_reply),
            web.delete(loc + "/reviews/{review}/reply", self.delete_reply),
            web.get(
                PERF_API + "/locations/{location}:fetchMultiDailyMetricsTimeSeries",
                self.fetch_metrics,
            ),
        ]

    def control_routes(self) -> list[web.RouteDef]:
        return [web.post("/_sandbox/google/oidc-token", self.control_oidc_token)]

    def error_body(self, spec: ErrorSpec, err: ApiError, request: web.Request) -> Any:
        params = {
            "service": _service_of(request.path),
            "method": request.path.rsplit("/", 1)[-1],
            "field": err.params.get("field", ""),
            "detail": "",
            "quota_limit": "DefaultRequestsPerMinutePerProject",
            **err.params,
        }
        filled: dict[str, Any] = errors.fill(dict(spec.fields), params)
        if filled.pop("oauth", False):
            return filled
        if err.status:
            filled["code"] = err.status
        return {"error": filled}

    def error_response(self, request: web.Request, err: ApiError) -> web.Response:
        response = super().error_response(request, err)
        if response.status == 401 and not request.path.startswith(G + "/oauth2/"):
            response.headers["WWW-Authenticate"] = (
                'Bearer realm="https://accounts.google.com/", error="invalid_token"'
            )
        return response

    def authorize_redirect_params(
        self, pending: PendingAuthorization, code: AuthorizationCode
    ) -> dict[str, str]:
        return {
            "scope": " ".join(code.granted_scopes),
            "authuser": "0",
            "prompt": pending.params.get("prompt", "none") or "none",
            "iss": ISSUER,
        }

    # -- OAuth ------------------------------------------------------------------------

    def _client_ok(self, form: Mapping[str, str]) -> None:
        if form.get("client_id") != self.app.client_id:
            raise ApiError("oauth_client_not_found")
        if not hmac.compare_digest(form.get("client_secret", ""), self.app.client_secret):
            raise ApiError("oauth_invalid_client")

    async def token_endpoint(self, request: web.Request) -> web.Response:
        if request.content_type == "application/json":
            raw = await request.json()
            form = {k: str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
        else:
            form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        state = self.state(request)
        self._client_ok(form)
        now = state.clock.now()
        grant_type = form.get("grant_type")
        if grant_type == "refresh_token":
            record = state.tokens.get(form.get("refresh_token"))
            if record is None or record.platform != NAME or record.kind != "refresh":
                raise ApiError("oauth_invalid_grant")
            if record.status(now) != "valid":
                raise ApiError("oauth_revoked")
            access = self._access(state, record.subject, record.scopes, record.grant)
            return web.json_response(
                {
                    "access_token": access.value,
                    "expires_in": access.expires_in(now),
                    "scope": " ".join(record.scopes),
                    "token_type": "Bearer",
                }
            )
        if grant_type != "authorization_code":
            raise ApiError("oauth_unsupported_grant", grant_type=grant_type or "")
        try:
            code = state.oauth.redeem(
                form.get("code"),
                profile=self.oauth,
                client_id=form.get("client_id"),
                redirect_uri=form.get("redirect_uri"),
                code_verifier=form.get("code_verifier"),
            )
        except CodeProblem as problem:
            key = {
                CODE_REDIRECT_MISMATCH: "oauth_redirect_mismatch",
                CODE_PKCE_MISSING: "oauth_missing_verifier",
            }.get(problem.reason, "oauth_invalid_grant")
            raise ApiError(key) from problem
        access = self._access(state, code.subject, code.granted_scopes, code.grant)
        body: dict[str, Any] = {
            "access_token": access.value,
            "expires_in": access.expires_in(now),
            "scope": " ".join(code.granted_scopes),
            "token_type": "Bearer",
        }
        params = code.request.params
        grant_key = (NAME, code.request.client_id, code.subject)
        first_consent = grant_key not in state.oauth.grants
        state.oauth.grants.setdefault(grant_key, set()).update(code.granted_scopes)
        if params.get("access_type") == "offline" and (
            first_consent or "consent" in params.get("prompt", "").split()
        ):
            refresh = state.tokens.issue(
                platform=NAME,
                kind="refresh",
                subject=code.subject,
                scopes=code.granted_scopes,
                client_id=self.app.client_id,
                lifetime=TESTING_REFRESH_SECONDS if self.settings.google_testing_app else None,
                grant=code.grant,
                prefix="1//0g",
                nbytes=64,
            )
            body["refresh_token"] = refresh.value
            if self.settings.google_testing_app:
                body["refresh_token_expires_in"] = refresh.expires_in(now)
        if "openid" in code.granted_scopes:
            body["id_token"] = self._id_token(state, code.subject, code.granted_scopes, now)
        return web.json_response(body)

    def _access(
        self, state: SandboxState, subject: str, scopes: tuple[str, ...], grant: str
    ) -> TokenRecord:
        return state.tokens.issue(
            platform=NAME,
            kind="access",
            subject=subject,
            scopes=scopes,
            client_id=self.app.client_id,
            lifetime=ACCESS_TOKEN_SECONDS,
            grant=grant,
            prefix="ya29.a0",
            nbytes=96,
        )

    def _id_token(
        self, state: SandboxState, subject: str, scopes: tuple[str, ...], now: float
    ) -> str:
        user = self._dir(state).users[subject]
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "azp": self.app.client_id,
            "aud": self.app.client_id,
            "sub": user.sub,
            "iat": int(now),
            "exp": int(now) + 3600,
        }
        if "email" in scopes:
            claims |= {"email": user.email, "email_verified": True}
        if "profile" in scopes:
            claims["name"] = user.name
        return jwt.encode(
            claims, state.signing_key, algorithm="RS256", headers={"kid": state.signing_kid}
        )

    async def revoke_endpoint(self, request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        value = form.get("token") or request.query.get("token")
        state = self.state(request)
        record = state.tokens.get(value)
        if record is None or record.platform != NAME or record.status(state.clock.now()) != "valid":
            raise ApiError("oauth_invalid_token")
        state.tokens.revoke_grant(record.grant)
        return web.json_response({})

    async def certs(self, request: web.Request) -> web.Response:
        state = self.state(request)
        return web.json_response(
            {"keys": [signing.public_jwk(state.signing_key, state.signing_kid)]},
            headers={"Cache-Control": "public, max-age=21600, must-revalidate, no-transform"},
        )

    async def tokeninfo(self, request: web.Request) -> web.Response:
        state = self.state(request)
        record = state.tokens.get(request.query.get("access_token"))
        now = state.clock.now()
        if record is None or record.platform != NAME or record.status(now) != "valid":
            return web.json_response(
                {"error": "invalid_token", "error_description": "Invalid Value"}, status=400
            )
        user = self._dir(state).users[record.subject]
        return web.json_response(
            {
                "azp": record.client_id,
                "aud": record.client_id,
                "sub": user.sub,
                "scope": " ".join(record.scopes),
                "exp": str(int(record.expires_at or now)),
                "expires_in": str(record.expires_in(now)),
                "email": user.email,
                "email_verified": "true",
                "access_type": "offline",
            }
        )

    async def userinfo(self, request: web.Request) -> web.Response:
        token = await self.authenticate(request)
        user = self._dir(self.state(request)).users[token.subject]
        first, _, last = user.name.partition(" ")
        return web.json_response(
            {
                "sub": user.sub,
                "name": user.name,
                "given_name": first,
                "family_name": last,
                "picture": f"https://lh3.googleusercontent.com/a/sbx{user.sub[-6:]}",
                "email": user.email,
                "email_verified": True,
            }
        )

    # -- Business Profile helpers -----------------------------------------------------

    async def _business(self, request: web.Request) -> tuple[TokenRecord, GoogleUser]:
        token = await self.authenticate(request, scopes=(BUSINESS_SCOPE,))
        return token, self._dir(self.state(request)).users[token.subject]

    def _location(self, request: web.Request, user: GoogleUser, *, with_account: bool) -> Location:
        d = self._dir(self.state(request))
        loc = d.locations.get(request.match_info["location"])
        if loc is None:
            raise ApiError(errors.NOT_FOUND)
        if with_account and request.match_info["account"] != loc.account_id:
            raise ApiError(errors.NOT_FOUND)
        if loc.account_id not in user.account_ids:
            raise ApiError("google_caller_denied")
        return loc

    def _count_edit(self, state: SandboxState, loc: Location) -> None:
        key = f"google:edits:{loc.id}"
        now = state.clock.now()
        edits = [t for t in state.counters.get(key, []) if now - t < 60]
        if len(edits) >= EDITS_PER_MINUTE:
            state.counters[key] = edits
            raise ApiError(
                errors.RATE_LIMIT,
                quota_limit="EditsPerMinutePerProfile",
            )
        edits.append(now)
        state.counters[key] = edits

    # -- accounts and locations -------------------------------------------------------

    async def list_accounts(self, request: web.Request) -> web.Response:
        _, user = await self._business(request)
        d = self._dir(self.state(request))
        accounts = [
            {
                "name": f"accounts/{a.id}",
                "accountName": a.name,
                "type": a.type,
                "role": "PRIMARY_OWNER",
                "verificationState": "VERIFIED",
                "vettedState": "NOT_VETTED",
                "permissionLevel": "OWNER_LEVEL",
            }
            for a in (d.accounts[i] for i in user.account_ids)
        ]
        return web.json_response({"accounts": accounts})

    def _location_json(self, loc: Location, mask: list[str]) -> dict[str, Any]:
        full: dict[str, Any] = {
            "name": f"locations/{loc.id}",
            "title": loc.title,
            "storeCode": f"SBX-{loc.id[-4:]}",
            "languageCode": "en",
            "phoneNumbers": {"primaryPhone": "(555) 010-" + loc.id[-4:]},
            "categories": {
                "primaryCategory": {
                    "name": "categories/gcid:coffee_shop",
                    "displayName": "Coffee shop",
                }
            },
            "storefrontAddress": {
                "regionCode": "US",
                "languageCode": "en",
                "postalCode": "49007",
                "administrativeArea": "MI",
                "locality": loc.city,
                "addressLines": ["742 Evergreen Terrace"],
            },
            "websiteUri": "https://sandbox-coffee.example.com",
            "metadata": {
                "mapsUri": f"https://maps.google.com/maps?cid={loc.id}",
                "newReviewUri": f"https://search.google.com/local/writereview?placeid=SbxPlace{loc.id[-6:]}",
                "placeId": f"ChIJSbxPlace{loc.id[-6:]}",
                "hasVoiceOfMerchant": True,
            },
            "openInfo": {"status": "OPEN", "canReopen": True},
            "profile": {"description": f"{loc.title}: coffee and pastries."},
            "regularHours": {"periods": []},
            "latlng": {"latitude": 42.1, "longitude": -85.6},
        }
        return {k: v for k, v in full.items() if k in mask}

    def _read_mask(self, request: web.Request) -> list[str]:
        raw = request.query.get("readMask") or request.query.get("read_mask")
        if not raw:
            raise ApiError(errors.INVALID_PARAM, field="read_mask", detail="Field is required")
        mask = [m.strip() for m in raw.split(",") if m.strip()]
        bad = [m for m in mask if m.split(".")[0] not in LOCATION_FIELDS]
        if bad:
            raise ApiError(
                errors.INVALID_PARAM, field="read_mask", detail=f"Invalid field mask: {bad[0]}"
            )
        return [m.split(".")[0] for m in mask]

    async def list_locations(self, request: web.Request) -> web.Response:
        _, user = await self._business(request)
        account = request.match_info["account"]
        if account not in user.account_ids:
            raise ApiError("google_caller_denied")
        mask = self._read_mask(request)
        d = self._dir(self.state(request))
        locations = [loc for loc in d.locations.values() if loc.account_id == account]
        size = min(int(request.query.get("pageSize", "10")), 100)
        start = int(request.query.get("pageToken") or 0)
        page = locations[start : start + size]
        body: dict[str, Any] = {"locations": [self._location_json(loc, mask) for loc in page]}
        if start + size < len(locations):
            body["nextPageToken"] = str(start + size)
        return web.json_response(body)

    async def get_location(self, request: web.Request) -> web.Response:
        _, user = await self._business(request)
        loc = self._location(request, user, with_account=False)
        return web.json_response(self._location_json(loc, self._read_mask(request)))

    # -- local posts ------------------------------------------------------------------

    def _validate_post(self, body: Mapping[str, Any], *, partial: bool = False) -> None:
        summary = body.get("summary", "")
        if not isinstance(summary, str) or len(summary) > SUMMARY_LIMIT:
            raise ApiError(
                errors.INVALID_PARAM,
                field="summary",
                detail=f"summary must be at most {SUMMARY_LIMIT} characters",
            )
        topic = body.get("topicType", "STANDARD" if partial else None)
        if topic not in TOPIC_TYPES:
            raise ApiError(
                errors.INVALID_PARAM,
                field="topic_type",
                detail="topicType must be STANDARD, EVENT or OFFER",
            )
        if not partial and topic == "STANDARD" and not summary and not body.get("media"):
            raise ApiError(
                errors.INVALID_PARAM, field="summary", detail="A post needs a summary or media"
            )
        if topic in {"EVENT", "OFFER"} and not partial:
            event = body.get("event")
            if not isinstance(event, dict) or not event.get("title") or not event.get("schedule"):
                raise ApiError(
                    errors.INVALID_PARAM,
                    field="event",
                    detail=f"{topic} posts need event.title and event.schedule",
                )
        cta = body.get("callToAction")
        if cta is not None:
            if not isinstance(cta, dict) or cta.get("actionType") not in CTA_TYPES:
                raise ApiError(
                    errors.INVALID_PARAM,
                    field="call_to_action.action_type",
                    detail="Invalid actionType",
                )
            if cta["actionType"] != "CALL" and not str(cta.get("url", "")).startswith("http"):
                raise ApiError(
                    errors.INVALID_PARAM,
                    field="call_to_action.url",
                    detail="url is required for this actionType",
                )
        for item in body.get("media", []) or []:
            if not isinstance(item, dict) or item.get("mediaFormat") not in {"PHOTO", "VIDEO"}:
                raise ApiError(
                    errors.INVALID_PARAM, field="media.media_format", detail="Invalid mediaFormat"
                )

    async def create_local_post(self, request: web.Request) -> web.Response:
        token, user = await self._business(request)
        loc = self._location(request, user, with_account=True)
        body = await read_json(request)
        self._validate_post(body)
        state = self.state(request)
        self._count_edit(state, loc)
        now = state.clock.now()
        post_id = state.ids.numeric(19)
        name = f"accounts/{loc.account_id}/locations/{loc.id}/localPosts/{post_id}"
        post = dict(body)
        post.update(
            {
                "name": name,
                "createTime": rfc3339(now),
                "updateTime": rfc3339(now),
                "state": "LIVE",
                "searchUrl": f"https://local.google.com/place?id={loc.id}&use=posts&lpsid={post_id}",
            }
        )
        post.setdefault("topicType", "STANDARD")
        post.setdefault("languageCode", "en-US")
        self._dir(state).local_posts[name] = post
        state.posts.add(
            RecordedPost(
                id=name,
                platform=NAME,
                account=loc.id,
                kind=f"gbp_{post['topicType'].lower()}",
                text=str(body.get("summary", "")),
                media=[str(m.get("sourceUrl", "")) for m in body.get("media", []) or []],
                created_at=now,
                request_fields={k: v for k, v in body.items() if k != "summary"},
                extra={"subject": token.subject},
            )
        )
        return web.json_response(post)

    def _post_or_404(self, request: web.Request, loc: Location) -> dict[str, Any]:
        name = (
            f"accounts/{loc.account_id}/locations/{loc.id}/localPosts/{request.match_info['post']}"
        )
        post = self._dir(self.state(request)).local_posts.get(name)
        if post is None:
            raise ApiError(errors.NOT_FOUND)
        return post

    async def list_local_posts(self, request: web.Request) -> web.Response:
        _, user = await self._business(request)
        loc = self._location(request, user, with_account=True)
        prefix = f"accounts/{loc.account_id}/locations/{loc.id}/localPosts/"
        found = [
            p for n, p in self._dir(self.state(request)).local_posts.items() if n.startswith(prefix)
        ]
        return web.json_response({"localPosts": list(reversed(found))})

    async def get_local_post(self, request: web.Request) -> web.Response:
        _, user = await self._business(request)
        loc = self._location(request, user, with_account=True)
        return web.json_response(self._post_or_404(request, loc))

    async def patch_local_post(self, request: web.Request) -> web.Response:
        _, user = await self._business(request)
        loc = self._location(request, user, with_account=True)
        post = self._post_or_404(request, loc)
        mask = request.query.get("updateMask") or request.query.get("update_mask")
        if not mask:
            raise ApiError(errors.INVALID_PARAM, field="update_mask", detail="Field is required")
        body = await read_json(request)
        self._validate_post({**post, **body}, partial=True)
        state = self.state(request)
        self._count_edit(state, loc)
        for path in mask.split(","):
            key = path.strip().split(".")[0]
            if key in body:
                post[key] = body[key]
        post["updateTime"] = rfc3339(state.clock.now())
        recorded = state.posts.get(post["name"])
        if recorded is not None and "summary" in body:
            recorded.text = str(body["summary"])
        return web.json_response(post)

    async def delete_local_post(self, request: web.Request) -> web.Response:
        _, user = await self._business(request)
        loc = self._location(request, user, with_account=True)
        post = self._post_or_404(request, loc)
        state = self.state(request)
        self._count_edit(state, loc)
        del self._dir(state).local_posts[post["name"]]
        recorded = state.posts.get(post["name"])
        if recorded is not None:
            recorded.deleted = True
        return web.json_response({})

    # -- reviews ----------------------------------------------------------------------

    def _review_json(self, loc: Location, review: Review) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": f"accounts/{loc.account_id}/locations/{loc.id}/reviews/{review.id}",
            "reviewId": review.id,
            "reviewer": {
                "profilePhotoUrl": "https://lh3.googleusercontent.com/a/sbx-reviewer",
                "displayName": review.reviewer,
                "isAnonymous": False,
            },
            "starRating": review.stars,
            "comment": review.comment,
            "createTime": rfc3339(review.created_at),
            "updateTime": rfc3339(review.created_at),
        }
        if review.reply is not None and review.reply_at is not None:
            body["reviewReply"] = {"comment": review.reply, "updateTime": rfc3339(review.reply_at)}
        return body

    async def list_reviews(self, request: web.Request) -> web.Response:
        _, user = await self._business(request)
        loc = self._location(request, user, with_account=True)
        reviews = sorted(loc.reviews.values(), key=lambda r: r.created_at, reverse=True)
        stars = [STAR_RATINGS.index(r.stars) + 1 for r in reviews]
        size = min(int(request.query.get("pageSize", "50")), 50)
        start = int(request.query.get("pageToken") or 0)
        body: dict[str, Any] = {
            "reviews": [self._review_json(loc, r) for r in reviews[start : start + size]],
            "averageRating": round(sum(stars) / len(stars), 1) if stars else 0,
            "totalReviewCount": len(reviews),
        }
        if start + size < len(reviews):
            body["nextPageToken"] = str(start + size)
        return web.json_response(body)

    def _review(self, request: web.Request, loc: Location) -> Review:
        review = loc.reviews.get(request.match_info["review"])
        if review is None:
            raise ApiError(errors.NOT_FOUND)
        return review

    async def get_review(self, request: web.Request) -> web.Response:
        _, user = await self._business(request)
        loc = self._location(request, user, with_account=True)
        return web.json_response(self._review_json(loc, self._review(request, loc)))

    async def put_reply(self, request: web.Request) -> web.Response:
        _, user = await self._business(request)
        loc = self._location(request, user, with_account=True)
        review = self._review(request, loc)
        body = await read_json(request)
        comment = body.get("comment")
        if not isinstance(comment, str) or not comment.strip() or len(comment) > 4096:
            raise ApiError(
                errors.INVALID_PARAM, field="comment", detail="comment must be 1-4096 characters"
            )
        state = self.state(request)
        self._count_edit(state, loc)
        review.reply = comment
        review.reply_at = state.clock.now()
        return web.json_response({"comment": comment, "updateTime": rfc3339(review.reply_at)})

    async def delete_reply(self, request: web.Request) -> web.Response:
        _, user = await self._business(request)
        loc = self._location(request, user, with_account=True)
        review = self._review(request, loc)
        self._count_edit(self.state(request), loc)
        review.reply = None
        review.reply_at = None
        return web.json_response({})

    # -- performance ------------------------------------------------------------------

    async def fetch_metrics(self, request: web.Request) -> web.Response:
        _, user = await self._business(request)
        loc = self._location(request, user, with_account=False)
        names = request.query.getall("dailyMetrics", []) or request.query.getall(
            "daily_metrics", []
        )
        if not names:
            raise ApiError(errors.INVALID_PARAM, field="daily_metrics", detail="Field is required")
        unknown = [n for n in names if n not in DAILY_METRICS]
        if unknown:
            raise ApiError(
                errors.INVALID_PARAM,
                field="daily_metrics",
                detail=f"Invalid value at 'daily_metrics' ({unknown[0]})",
            )
        try:
            start = _date_param(request.query, "start")
            end = _date_param(request.query, "end")
        except ValueError as exc:
            raise ApiError(
                errors.INVALID_PARAM, field="daily_range", detail="Invalid date"
            ) from exc
        if start is None or end is None or end < start:
            raise ApiError(
                errors.INVALID_PARAM,
                field="daily_range",
                detail="daily_range.start_date and end_date are required, start <= end",
            )
        state = self.state(request)
        now = state.clock.now()
        today = datetime.fromtimestamp(now, UTC).date()
        posts = [p for p in state.posts.find(platform=NAME, account=loc.id) if not p.deleted]
        series = []
        for metric_name in names:
            normalised, share = DAILY_METRICS[metric_name]
            values = []
            day = start
            while day <= end:
                item: dict[str, Any] = {
                    "date": {"year": day.year, "month": day.month, "day": day.day}
                }
                if day < today:
                    day_start = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
                    base = metrics.daily_account_value(
                        loc.id, normalised, int(day_start // 86400), base=2000.0
                    )
                    boost = sum(
                        metrics.between(
                            p.id,
                            "impressions",
                            day_start - p.created_at,
                            day_start + 86400 - p.created_at,
                        )
                        for p in posts
                    )
                    ratio = metrics.DEFAULT_RATIOS.get(normalised, 0.02)
                    value = int(base * share + boost * ratio * share)
                    if value:
                        item["value"] = str(value)
                values.append(item)
                day += timedelta(days=1)
            series.append({"dailyMetric": metric_name, "timeSeries": {"datedValues": values}})
        return web.json_response(
            {"multiDailyMetricTimeSeries": [{"dailyMetricTimeSeries": series}]}
        )

    # -- Pub/Sub push -----------------------------------------------------------------

    async def control_oidc_token(self, request: web.Request) -> web.Response:
        state = request.app[STATE_KEY]
        payload = await request.json() if request.can_read_body else {}
        if not isinstance(payload, dict) or not isinstance(payload.get("audience"), str):
            return web.json_response({"error": "audience is required"}, status=400)
        token = signing.google_oidc_token(
            state.signing_key,
            state.signing_kid,
            audience=payload["audience"],
            email=str(payload.get("email") or self.settings.google_pubsub_service_account),
            email_verified=bool(payload.get("email_verified", True)),
            issued_at=int(payload.get("issued_at") or state.clock.now()),
            lifetime=int(payload.get("lifetime", 3600)),
            issuer=str(payload.get("issuer") or ISSUER),
        )
        return web.json_response({"token": token, "kid": state.signing_kid})

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
        loc = d.locations.get(account.removeprefix("locations/")) or next(
            iter(d.locations.values())
        )
        location_name = f"accounts/{loc.account_id}/locations/{loc.id}"
        if payload is None:
            if event == "review":
                review = d.add_review(state.ids, loc, "FIVE", "Lovely place!", float(timestamp))
                payload = {
                    "type": "NEW_REVIEW",
                    "review": f"{location_name}/reviews/{review.id}",
                    "location": location_name,
                }
            elif event in {"review_updated", "question", "google_update", "voice_of_merchant"}:
                payload = {
                    "type": {
                        "review_updated": "UPDATED_REVIEW",
                        "question": "NEW_QUESTION",
                        "google_update": "GOOGLE_UPDATE",
                        "voice_of_merchant": "VOICE_OF_MERCHANT_UPDATED",
                    }[event],
                    "location": location_name,
                }
            else:
                raise ValueError(
                    "google events: review, review_updated, question, google_update, "
                    f"voice_of_merchant (not {event})"
                )
        data = json.dumps(payload, separators=(",", ":")).encode()
        envelope = signing.pubsub_push_envelope(
            data,
            subscription="projects/postd-sandbox/subscriptions/business-profile-notifications",
            message_id=str(state.ids.numeric(16)),
            publish_time=rfc3339(timestamp),
            attributes={"googclient_schemaencoding": "JSON"},
        )
        body = signing.canonical_json(envelope)
        token = signing.google_oidc_token(
            state.signing_key,
            state.signing_kid,
            audience=audience,
            email=self.settings.google_pubsub_service_account,
            issued_at=timestamp,
        )
        return WebhookDelivery(
            body=body,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
