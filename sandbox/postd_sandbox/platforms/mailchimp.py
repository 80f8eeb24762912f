"""Mailchimp: OAuth 2 (tokens that never expire), the metadata call that names the
data center, and the Marketing API pieces POSTD uses (ping, audiences, campaigns,
content, send / schedule, reports); unsigned form-encoded webhooks.

Hosts: login.mailchimp.com -> /mailchimp/login, <dc>.api.mailchimp.com ->
/mailchimp/api/<dc>.

Doc facts relied on (mailchimp.com/developer):
- `GET login.mailchimp.com/oauth2/authorize?response_type=code&client_id&redirect_uri`
  -> `POST /oauth2/token` (grant_type=authorization_code, client_id, client_secret,
  redirect_uri, code) -> `{"access_token", "expires_in": 0, "scope": null}`: the
  token never expires, there is no refresh token and no scopes.
- `GET /oauth2/metadata` with `Authorization: OAuth <token>` -> `{"dc", "role",
  "accountname", "user_id", "login": {...}, "login_url", "api_endpoint"}`; API calls
  go to `<api_endpoint>/3.0` with `Authorization: Bearer|OAuth <token>`.
- Errors are problem+json: `{"type", "title", "status", "detail", "instance"}`
  (+ `errors: [{field, message}]` for "Invalid Resource"); 401 "API Key Invalid"
  (also for the wrong data center), 404 "Resource Not Found", 429 "Too Many
  Requests" (10 simultaneous connections).
- `GET /3.0/ping` -> `{"health_status": "Everything's Chimpy!"}`; `GET /lists`;
  `POST /campaigns` (type, recipients.list_id, settings.subject_line / from_name /
  reply_to / title); `PUT /campaigns/{id}/content` (html | plain_text);
  `POST /campaigns/{id}/actions/send` and `/actions/schedule` (schedule_time in UTC,
  on a quarter hour) answer 204; `GET /reports/{id}` for sent campaigns;
  `GET /lists/{id}/activity` (up to 180 days of daily aggregated activity, newest
  first: day, emails_sent, unique_opens, recipient_clicks, hard_bounce, soft_bounce,
  subs, unsubs, other_adds, other_removes).
- Webhooks are unsigned `application/x-www-form-urlencoded` posts
  (`type=subscribe&fired_at=...&data[email]=...`); Mailchimp first checks the URL
  with a GET.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlencode

from aiohttp import web

from postd_sandbox import errors, metrics
from postd_sandbox.clock import IdSource
from postd_sandbox.errors import ApiError, ErrorSpec
from postd_sandbox.faults import FaultKind
from postd_sandbox.oauth import CodeProblem, OAuthProfile
from postd_sandbox.platforms.base import (
    DEFAULT_FAULT_ERRORS,
    Directory,
    Person,
    Platform,
    SeedError,
    WebhookDelivery,
    bearer_token,
    read_json,
)
from postd_sandbox.state import RecordedPost, SandboxState

NAME = "mailchimp"
LOGIN = "/mailchimp/login"
API = "/mailchimp/api"
ERROR_DOC = "https://mailchimp.com/developer/marketing/docs/errors/"
CAMPAIGN_TYPES = {"regular", "plaintext", "absplit", "rss", "variate"}


def _problem(status: int, title: str, detail: str) -> ErrorSpec:
    return ErrorSpec(
        status=status,
        fields={"type": ERROR_DOC, "title": title, "status": status, "detail": detail},
    )


def _oauth(status: int, error: str, description: str) -> ErrorSpec:
    return ErrorSpec(
        status=status, fields={"error": error, "error_description": description, "oauth": True}
    )


_KEY_INVALID = _problem(
    401,
    "API Key Invalid",
    "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
)

ERRORS: Mapping[str, ErrorSpec] = {
    errors.INVALID_TOKEN: _KEY_INVALID,
    errors.EXPIRED_TOKEN: _KEY_INVALID,
    errors.REVOKED_TOKEN: _KEY_INVALID,
    "mailchimp_wrong_dc": _KEY_INVALID,
    errors.PERMISSION: _problem(
        403, "Forbidden", "You don't have permission to access this resource"
    ),
    errors.RATE_LIMIT: _problem(
        429, "Too Many Requests", "You have exceeded the limit of 10 simultaneous connections."
    ),
    errors.SERVER_ERROR: _problem(
        500,
        "Internal Server Error",
        "An unexpected internal error has occurred. Please contact Support for more information.",
    ),
    errors.OUTAGE: _problem(503, "Service Unavailable", "The service is temporarily unavailable."),
    errors.TIMEOUT: _problem(504, "Gateway Timeout", "The request timed out."),
    errors.NOT_FOUND: _problem(
        404, "Resource Not Found", "The requested resource could not be found."
    ),
    errors.INVALID_PARAM: ErrorSpec(
        status=400,
        fields={
            "type": ERROR_DOC,
            "title": "Invalid Resource",
            "status": 400,
            "detail": "The resource submitted could not be validated. For field-specific "
            "details, see the 'errors' array.",
            "errors": [{"field": "{field}", "message": "{detail}"}],
        },
    ),
    "mailchimp_bad_request": _problem(400, "Bad Request", "{detail}"),
    "mailchimp_not_ready": _problem(400, "Bad Request", "Your Campaign is not ready to send."),
    # OAuth endpoints.
    "oauth_invalid_client": _oauth(401, "invalid_client", "Invalid client credentials"),
    "oauth_invalid_grant": _oauth(400, "invalid_grant", "Invalid authorization code"),
    "oauth_invalid_request": _oauth(400, "invalid_request", "{detail}"),
    "oauth_invalid_token": _oauth(401, "invalid_token", "Invalid or expired token"),
}


@dataclass
class Audience:
    id: str
    web_id: int
    name: str
    member_count: int
    created_at: float


@dataclass
class MailchimpUser:
    user_id: int
    login_id: int
    login: str
    email: str
    account_name: str
    dc: str
    audience_ids: list[str] = field(default_factory=list)


@dataclass
class Campaign:
    id: str
    web_id: int
    owner: int
    type: str
    list_id: str
    settings: dict[str, Any]
    created_at: float
    status: str = "save"
    html: str | None = None
    plain_text: str | None = None
    send_time: float | None = None


class MailchimpDirectory(Directory):
    def __init__(self) -> None:
        self.users: dict[int, MailchimpUser] = {}
        self.audiences: dict[str, Audience] = {}
        self.campaigns: dict[str, Campaign] = {}

    def people(self) -> list[Person]:
        return [
            Person(str(u.user_id), f"{u.account_name} ({u.email})") for u in self.users.values()
        ]

    def accounts_of(self, subject: str) -> set[str]:
        user = self.users.get(int(subject)) if subject.isdigit() else None
        return {subject, *user.audience_ids} if user else {subject}

    def add_user(self, ids: IdSource, spec: Mapping[str, Any]) -> MailchimpUser:
        n = ids.next_int()
        user = MailchimpUser(
            user_id=int(spec.get("user_id") or 10_000_000 + n),
            login_id=int(spec.get("login_id") or 20_000_000 + n),
            login=str(spec.get("login") or f"user{n}"),
            email=str(spec.get("email") or f"user{n}@example.com"),
            account_name=str(spec.get("account_name") or f"Account {n}"),
            dc=str(spec.get("dc") or "us21"),
        )
        self.users[user.user_id] = user
        for aud in spec.get("audiences", [{"name": f"{user.account_name} newsletter"}]):
            audience = Audience(
                id=str(aud.get("id") or uuid.uuid5(uuid.NAMESPACE_URL, f"aud{n}{aud}").hex[:10]),
                web_id=ids.next_int(),
                name=str(aud.get("name") or "Newsletter"),
                member_count=int(aud.get("member_count", 1200)),
                created_at=1_700_000_000.0,
            )
            self.audiences[audience.id] = audience
            user.audience_ids.append(audience.id)
        return user

    def seed(self, payload: Mapping[str, Any], ids: IdSource) -> dict[str, Any]:
        specs = payload.get("users", [])
        bulk = payload.get("bulk")
        if isinstance(bulk, dict):
            count = int(bulk.get("users", 1))
            if not 1 <= count <= 100_000:
                raise SeedError("bulk sizes out of range")
            specs = [{} for _ in range(count)]
        if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
            raise SeedError("users must be a list of objects")
        created = [self.add_user(ids, spec) for spec in specs]
        return {
            "users": [u.user_id for u in created],
            "audiences": [a for u in created for a in u.audience_ids],
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "users": [
                {
                    "user_id": u.user_id,
                    "login": u.login,
                    "dc": u.dc,
                    "account_name": u.account_name,
                    "audiences": u.audience_ids,
                }
                for u in self.users.values()
            ],
            "audiences": [
                {"id": a.id, "name": a.name, "member_count": a.member_count}
                for a in self.audiences.values()
            ],
        }


def default_directory(ids: IdSource) -> MailchimpDirectory:
    d = MailchimpDirectory()
    d.add_user(
        ids,
        {
            "user_id": 10000001,
            "login_id": 20000001,
            "login": "sandboxcoffee",
            "email": "marketer@example.com",
            "account_name": "Sandbox Coffee Co",
            "dc": "us21",
            "audiences": [
                {"id": "a1b2c3d4e5", "name": "Coffee Club", "member_count": 1200},
                {"id": "f6e5d4c3b2", "name": "Wholesale", "member_count": 85},
            ],
        },
    )
    d.add_user(
        ids,
        {
            "user_id": 10000002,
            "login_id": 20000002,
            "login": "sandboxbooks",
            "email": "tester@example.com",
            "account_name": "Sandbox Bookshop",
            "dc": "us6",
            "audiences": [{"id": "0a9b8c7d6e", "name": "Readers", "member_count": 430}],
        },
    )
    return d


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def report_figures(campaign_id: str, sent: int, age: float) -> dict[str, Any]:
    """Opens and clicks that grow after a send (fast in the first hours)."""
    if age <= 0 or sent <= 0:
        grown = 0.0
    else:
        tau = 3600.0 * (2 + 10 * metrics.unit(campaign_id, "tau"))
        grown = 1 - math.exp(-age / tau)
    open_rate = 0.25 + 0.2 * metrics.unit(campaign_id, "open")
    click_rate = 0.02 + 0.04 * metrics.unit(campaign_id, "click")
    unique_opens = int(sent * open_rate * grown)
    unique_clicks = int(sent * click_rate * grown)
    return {
        "unique_opens": unique_opens,
        "opens_total": int(unique_opens * 1.6),
        "open_rate": round(unique_opens / sent, 4) if sent else 0,
        "unique_clicks": unique_clicks,
        "clicks_total": int(unique_clicks * 1.4),
        "click_rate": round(unique_clicks / sent, 4) if sent else 0,
        "unsubscribed": int(sent * 0.002 * grown),
        "hard_bounces": int(sent * 0.004),
        "soft_bounces": int(sent * 0.006),
    }


class MailchimpPlatform(Platform):
    name: ClassVar[str] = NAME
    prefix: ClassVar[str] = "/mailchimp"
    oauth: ClassVar[OAuthProfile] = OAuthProfile(
        authorize_path=LOGIN + "/oauth2/authorize",
        pkce="none",
        partial_grants=False,
        code_ttl=600,
        scopes={},
        deny_params={"error": "access_denied"},
        display_name="Mailchimp",
    )
    errors: ClassVar[Mapping[str, ErrorSpec]] = ERRORS
    error_content_type: ClassVar[str] = "application/problem+json"
    fault_errors: ClassVar[Mapping[FaultKind, str]] = DEFAULT_FAULT_ERRORS
    token_paths: ClassVar[tuple[str, ...]] = ("/login/oauth2/token",)
    token_endpoint_fault_errors: ClassVar[Mapping[FaultKind, str]] = {
        FaultKind.TOKEN_EXPIRED: "oauth_invalid_grant",
        FaultKind.TOKEN_REVOKED: "oauth_invalid_grant",
        FaultKind.PERMISSION_REMOVED: "oauth_invalid_client",
    }

    def new_directory(self, ids: IdSource) -> MailchimpDirectory:
        return default_directory(ids)

    def _dir(self, state: SandboxState) -> MailchimpDirectory:
        return state.directory(NAME, MailchimpDirectory)

    def routes(self) -> list[web.RouteDef]:
        base = API + "/{dc}/3.0"
        return [
            web.post(LOGIN + "/oauth2/token", self.token_endpoint),
            web.get(LOGIN + "/oauth2/metadata", self.metadata),
            web.get(base + "/ping", self.ping),
            web.get(base + "/", self.root),
            web.get(base + "/lists", self.lists),
            web.get(base + "/lists/{list_id}", self.get_list),
            web.get(base + "/lists/{list_id}/activity", self.list_activity),
            web.post(base + "/campaigns", self.create_campaign),
            web.get(base + "/campaigns", self.list_campaigns),
            web.get(base + "/campaigns/{campaign_id}", self.get_campaign),
            web.delete(base + "/campaigns/{campaign_id}", self.delete_campaign),
            web.put(base + "/campaigns/{campaign_id}/content", self.put_content),
            web.get(base + "/campaigns/{campaign_id}/content", self.get_content),
            web.post(base + "/campaigns/{campaign_id}/actions/send", self.send),
            web.post(base + "/campaigns/{campaign_id}/actions/schedule", self.schedule),
            web.post(base + "/campaigns/{campaign_id}/actions/unschedule", self.unschedule),
            web.get(base + "/reports/{campaign_id}", self.report),
        ]

    async def access_token(self, request: web.Request) -> str | None:
        token = bearer_token(request)
        if token:
            return token
        # API keys go as Basic auth with any user name; OAuth tokens work the same way.
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(header.split(" ", 1)[1]).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            return decoded.partition(":")[2] or None
        return None

    def error_body(self, spec: ErrorSpec, err: ApiError, request: web.Request) -> Any:
        params = {"field": "", "detail": "", **err.params}
        filled: dict[str, Any] = errors.fill(dict(spec.fields), params)
        if filled.pop("oauth", False):
            return filled
        filled["instance"] = str(uuid.uuid4())
        if err.status:
            filled["status"] = err.status
        return filled

    def error_response(self, request: web.Request, err: ApiError) -> web.Response:
        response = super().error_response(request, err)
        spec = self.errors.get(err.key)
        if spec is not None and "oauth" in spec.fields:
            response.content_type = "application/json"
        return response

    # -- OAuth ------------------------------------------------------------------------

    async def token_endpoint(self, request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        if form.get("client_id") != self.app.client_id or not hmac.compare_digest(
            form.get("client_secret", ""), self.app.client_secret
        ):
            raise ApiError("oauth_invalid_client")
        if form.get("grant_type") != "authorization_code":
            raise ApiError("oauth_invalid_request", detail="grant_type must be authorization_code")
        state = self.state(request)
        try:
            code = state.oauth.redeem(
                form.get("code"),
                profile=self.oauth,
                client_id=form.get("client_id"),
                redirect_uri=form.get("redirect_uri"),
                code_verifier=None,
            )
        except CodeProblem as problem:
            raise ApiError("oauth_invalid_grant") from problem
        user = self._dir(state).users[int(code.subject)]
        token = state.tokens.issue(
            platform=NAME,
            kind="access",
            subject=str(user.user_id),
            scopes=(),
            client_id=self.app.client_id,
            lifetime=None,
            grant=code.grant,
            value=uuid.uuid4().hex,
        )
        return web.json_response({"access_token": token.value, "expires_in": 0, "scope": None})

    async def metadata(self, request: web.Request) -> web.Response:
        state = self.state(request)
        record = state.tokens.get(await self.access_token(request))
        if record is None or record.platform != NAME or record.status(state.clock.now()) != "valid":
            raise ApiError("oauth_invalid_token")
        user = self._dir(state).users[int(record.subject)]
        return web.json_response(
            {
                "dc": user.dc,
                "role": "owner",
                "accountname": user.account_name,
                "user_id": user.user_id,
                "login": {
                    "email": user.email,
                    "avatar": None,
                    "login_id": user.login_id,
                    "login_name": user.login,
                    "login_email": user.email,
                },
                "login_url": self.url("/login"),
                "api_endpoint": self.url(f"/api/{user.dc}"),
            }
        )

    # -- API helpers ------------------------------------------------------------------

    async def _user(self, request: web.Request) -> MailchimpUser:
        token = await self.authenticate(request)
        user = self._dir(self.state(request)).users[int(token.subject)]
        if request.match_info.get("dc") != user.dc:
            raise ApiError("mailchimp_wrong_dc")
        return user

    def _campaign(self, request: web.Request, user: MailchimpUser) -> Campaign:
        campaign = self._dir(self.state(request)).campaigns.get(request.match_info["campaign_id"])
        if campaign is None or campaign.owner != user.user_id:
            raise ApiError(errors.NOT_FOUND)
        return campaign

    def _audience_json(self, audience: Audience) -> dict[str, Any]:
        return {
            "id": audience.id,
            "web_id": audience.web_id,
            "name": audience.name,
            "contact": {"company": audience.name, "country": "US"},
            "permission_reminder": "You signed up on our website.",
            "campaign_defaults": {
                "from_name": audience.name,
                "from_email": "hello@example.com",
                "subject": "",
                "language": "en",
            },
            "date_created": iso(audience.created_at),
            "list_rating": 3,
            "email_type_option": False,
            "visibility": "prv",
            "stats": {
                "member_count": audience.member_count,
                "unsubscribe_count": audience.member_count // 50,
                "cleaned_count": audience.member_count // 100,
                "campaign_count": 0,
                "open_rate": 32.5,
                "click_rate": 3.1,
            },
            "_links": [],
        }

    def _campaign_json(self, state: SandboxState, c: Campaign) -> dict[str, Any]:
        audience = self._dir(state).audiences[c.list_id]
        user = self._dir(state).users[c.owner]
        sent = audience.member_count if c.status in {"sending", "sent"} else 0
        return {
            "id": c.id,
            "web_id": c.web_id,
            "type": c.type,
            "create_time": iso(c.created_at),
            "archive_url": f"https://mailchi.mp/sandbox/{c.id}",
            "long_archive_url": f"https://{user.dc}.campaign-archive.com/?u=sbx&id={c.id}",
            "status": c.status,
            "emails_sent": sent,
            "send_time": iso(c.send_time) if c.send_time else "",
            "content_type": "html" if c.html is not None else "template",
            "needs_block_refresh": False,
            "resendable": False,
            "recipients": {
                "list_id": c.list_id,
                "list_is_active": True,
                "list_name": audience.name,
                "segment_text": "",
                "recipient_count": audience.member_count,
            },
            "settings": dict(c.settings),
            "tracking": {"opens": True, "html_clicks": True, "text_clicks": False},
            "_links": [],
        }

    def _advance(self, state: SandboxState, c: Campaign) -> None:
        """Scheduled campaigns go out at their time; sending ones finish a bit later."""
        now = state.clock.now()
        if c.status == "schedule" and c.send_time is not None and now >= c.send_time:
            c.status = "sending"
        if c.status == "sending" and c.send_time is not None and now >= c.send_time + 5:
            c.status = "sent"
        post = state.posts.get(c.id)
        if post is not None:
            post.status = {"save": "draft", "schedule": "scheduled"}.get(c.status, c.status)

    # -- API --------------------------------------------------------------------------

    async def ping(self, request: web.Request) -> web.Response:
        await self._user(request)
        return web.json_response({"health_status": "Everything's Chimpy!"})

    async def root(self, request: web.Request) -> web.Response:
        user = await self._user(request)
        return web.json_response(
            {
                "account_id": f"sbx{user.user_id}",
                "login_id": str(user.login_id),
                "account_name": user.account_name,
                "email": user.email,
                "username": user.login,
                "role": "owner",
                "total_subscribers": sum(
                    self._dir(self.state(request)).audiences[a].member_count
                    for a in user.audience_ids
                ),
            }
        )

    async def lists(self, request: web.Request) -> web.Response:
        user = await self._user(request)
        d = self._dir(self.state(request))
        count = min(int(request.query.get("count", "10")), 1000)
        offset = int(request.query.get("offset", "0"))
        audiences = [d.audiences[a] for a in user.audience_ids]
        return web.json_response(
            {
                "lists": [self._audience_json(a) for a in audiences[offset : offset + count]],
                "total_items": len(audiences),
                "constraints": {
                    "may_create": True,
                    "max_instances": 100,
                    "current_total_instances": len(audiences),
                },
                "_links": [],
            }
        )

    async def get_list(self, request: web.Request) -> web.Response:
        user = await self._user(request)
        list_id = request.match_info["list_id"]
        if list_id not in user.audience_ids:
            raise ApiError(errors.NOT_FOUND)
        return web.json_response(
            self._audience_json(self._dir(self.state(request)).audiences[list_id])
        )

    async def list_activity(self, request: web.Request) -> web.Response:
        """Daily activity of an audience: its campaigns' sends, opens and clicks by the
        day they happened, and a steady trickle of sign-ups."""
        user = await self._user(request)
        list_id = request.match_info["list_id"]
        if list_id not in user.audience_ids:
            raise ApiError(errors.NOT_FOUND)
        state = self.state(request)
        d = self._dir(state)
        count = max(1, min(int(request.query.get("count", "10")), 180))
        now = state.clock.now()
        today = int(now // 86400) * 86400
        sent = [
            c
            for c in d.campaigns.values()
            if c.list_id == list_id and c.send_time is not None and c.send_time <= now
        ]
        members = d.audiences[list_id].member_count
        days = []
        for back in range(count):
            start = today - back * 86400
            end = min(start + 86400, now)
            opens = clicks = emails = 0
            for campaign in sent:
                assert campaign.send_time is not None
                if start <= campaign.send_time < end:
                    emails += members
                later = report_figures(campaign.id, members, end - campaign.send_time)
                earlier = report_figures(campaign.id, members, start - campaign.send_time)
                opens += later["unique_opens"] - earlier["unique_opens"]
                clicks += later["unique_clicks"] - earlier["unique_clicks"]
            index = int(start // 86400)
            days.append(
                {
                    "day": datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d"),
                    "emails_sent": emails,
                    "unique_opens": opens,
                    "recipient_clicks": clicks,
                    "hard_bounce": 0,
                    "soft_bounce": 0,
                    "subs": metrics.daily_account_value(list_id, "follows", index, base=2000.0),
                    "unsubs": metrics.daily_account_value(list_id, "unsubscribes", index),
                    "other_adds": 0,
                    "other_removes": 0,
                }
            )
        return web.json_response(
            {"activity": days, "list_id": list_id, "total_items": len(days), "_links": []}
        )

    async def create_campaign(self, request: web.Request) -> web.Response:
        user = await self._user(request)
        body = await read_json(request)
        state = self.state(request)
        ctype = body.get("type")
        if ctype not in CAMPAIGN_TYPES:
            raise ApiError(
                errors.INVALID_PARAM,
                field="type",
                detail="Data presented is not one of the accepted values: "
                + ", ".join(sorted(CAMPAIGN_TYPES)),
            )
        recipients = body.get("recipients") or {}
        list_id = recipients.get("list_id") if isinstance(recipients, dict) else None
        if list_id not in user.audience_ids:
            raise ApiError(
                errors.INVALID_PARAM,
                field="recipients.list_id",
                detail="The list_id is not valid for this account",
            )
        settings = body.get("settings") or {}
        if not isinstance(settings, dict):
            raise ApiError(errors.INVALID_PARAM, field="settings", detail="must be an object")
        subject = settings.get("subject_line", "")
        if isinstance(subject, str) and len(subject) > 150:
            raise ApiError(
                errors.INVALID_PARAM,
                field="settings.subject_line",
                detail="Subject line must be 150 characters or fewer",
            )
        reply_to = settings.get("reply_to")
        if reply_to is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", str(reply_to)):
            raise ApiError(
                errors.INVALID_PARAM,
                field="settings.reply_to",
                detail="This email address looks fake or invalid.",
            )
        now = state.clock.now()
        campaign = Campaign(
            id=uuid.uuid4().hex[:10],
            web_id=state.ids.next_int(),
            owner=user.user_id,
            type=str(ctype),
            list_id=str(list_id),
            settings={
                "subject_line": subject,
                "preview_text": settings.get("preview_text", ""),
                "title": settings.get("title", ""),
                "from_name": settings.get("from_name", ""),
                "reply_to": settings.get("reply_to", ""),
                "use_conversation": False,
                "to_name": settings.get("to_name", ""),
                "folder_id": "",
                "authenticate": True,
                "auto_footer": False,
                "inline_css": False,
                "auto_tweet": False,
                "fb_comments": True,
                "timewarp": False,
                "template_id": 0,
                "drag_and_drop": False,
            },
            created_at=now,
        )
        self._dir(state).campaigns[campaign.id] = campaign
        state.posts.add(
            RecordedPost(
                id=campaign.id,
                platform=NAME,
                account=str(user.user_id),
                kind="mailchimp_campaign",
                text=str(subject),
                media=[],
                created_at=now,
                request_fields={"type": ctype, "recipients": recipients, "settings": settings},
                status="draft",
                extra={"list_id": list_id},
            )
        )
        return web.json_response(self._campaign_json(state, campaign))

    async def list_campaigns(self, request: web.Request) -> web.Response:
        user = await self._user(request)
        state = self.state(request)
        wanted = request.query.get("status")
        found = []
        for c in self._dir(state).campaigns.values():
            if c.owner != user.user_id:
                continue
            self._advance(state, c)
            if wanted and c.status != wanted:
                continue
            found.append(self._campaign_json(state, c))
        count = min(int(request.query.get("count", "10")), 1000)
        offset = int(request.query.get("offset", "0"))
        return web.json_response(
            {"campaigns": found[offset : offset + count], "total_items": len(found), "_links": []}
        )

    async def get_campaign(self, request: web.Request) -> web.Response:
        user = await self._user(request)
        state = self.state(request)
        campaign = self._campaign(request, user)
        self._advance(state, campaign)
        return web.json_response(self._campaign_json(state, campaign))

    async def delete_campaign(self, request: web.Request) -> web.Response:
        user = await self._user(request)
        state = self.state(request)
        campaign = self._campaign(request, user)
        if campaign.status in {"sending", "sent"}:
            raise ApiError("mailchimp_bad_request", detail="Sent campaigns cannot be deleted.")
        del self._dir(state).campaigns[campaign.id]
        post = state.posts.get(campaign.id)
        if post is not None:
            post.deleted = True
        return web.Response(status=204)

    async def put_content(self, request: web.Request) -> web.Response:
        user = await self._user(request)
        campaign = self._campaign(request, user)
        if campaign.status in {"sending", "sent"}:
            raise ApiError(
                "mailchimp_bad_request", detail="Content cannot be changed after sending."
            )
        body = await read_json(request)
        html = body.get("html")
        plain = body.get("plain_text")
        if html is None and plain is None and "template" not in body and "url" not in body:
            raise ApiError(
                errors.INVALID_PARAM, field="html", detail="Provide html, plain_text or a template"
            )
        campaign.html = str(html) if html is not None else campaign.html or ""
        campaign.plain_text = (
            str(plain) if plain is not None else re.sub(r"<[^>]+>", "", campaign.html or "").strip()
        )
        post = self.state(request).posts.get(campaign.id)
        if post is not None:
            post.extra["html"] = campaign.html
        return web.json_response(
            {"plain_text": campaign.plain_text, "html": campaign.html, "_links": []}
        )

    async def get_content(self, request: web.Request) -> web.Response:
        user = await self._user(request)
        campaign = self._campaign(request, user)
        return web.json_response(
            {"plain_text": campaign.plain_text or "", "html": campaign.html or "", "_links": []}
        )

    def _ready(self, campaign: Campaign) -> None:
        s = campaign.settings
        if not (s.get("subject_line") and s.get("from_name") and s.get("reply_to")):
            raise ApiError("mailchimp_not_ready")
        if campaign.html is None and campaign.plain_text is None:
            raise ApiError("mailchimp_not_ready")
        if campaign.status in {"sending", "sent"}:
            raise ApiError("mailchimp_bad_request", detail="This campaign has already been sent.")

    async def send(self, request: web.Request) -> web.Response:
        user = await self._user(request)
        state = self.state(request)
        campaign = self._campaign(request, user)
        self._advance(state, campaign)
        self._ready(campaign)
        campaign.status = "sending"
        campaign.send_time = state.clock.now()
        post = state.posts.get(campaign.id)
        if post is not None:
            post.status = "sending"
            post.created_at = campaign.send_time
        return web.Response(status=204)

    async def schedule(self, request: web.Request) -> web.Response:
        user = await self._user(request)
        state = self.state(request)
        campaign = self._campaign(request, user)
        self._advance(state, campaign)
        self._ready(campaign)
        body = await read_json(request)
        raw = body.get("schedule_time")
        try:
            when = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
        except ValueError as exc:
            raise ApiError(
                errors.INVALID_PARAM, field="schedule_time", detail="Invalid date-time"
            ) from exc
        if when.tzinfo is None:
            raise ApiError(
                errors.INVALID_PARAM, field="schedule_time", detail="schedule_time must be in UTC"
            )
        if when.minute % 15 or when.second:
            raise ApiError(
                "mailchimp_bad_request",
                detail="Schedule time must be on the quarter-hour (:00, :15, :30, :45).",
            )
        if when.timestamp() <= state.clock.now():
            raise ApiError("mailchimp_bad_request", detail="Schedule time must be in the future.")
        campaign.status = "schedule"
        campaign.send_time = when.timestamp()
        post = state.posts.get(campaign.id)
        if post is not None:
            post.status = "scheduled"
            post.created_at = campaign.send_time
            post.request_fields["schedule_time"] = str(raw)
        return web.Response(status=204)

    async def unschedule(self, request: web.Request) -> web.Response:
        user = await self._user(request)
        state = self.state(request)
        campaign = self._campaign(request, user)
        self._advance(state, campaign)
        if campaign.status != "schedule":
            raise ApiError("mailchimp_bad_request", detail="This campaign is not scheduled.")
        campaign.status = "save"
        campaign.send_time = None
        post = state.posts.get(campaign.id)
        if post is not None:
            post.status = "draft"
        return web.Response(status=204)

    async def report(self, request: web.Request) -> web.Response:
        user = await self._user(request)
        state = self.state(request)
        campaign = self._campaign(request, user)
        self._advance(state, campaign)
        if campaign.status not in {"sending", "sent"} or campaign.send_time is None:
            raise ApiError(errors.NOT_FOUND)
        audience = self._dir(state).audiences[campaign.list_id]
        sent = audience.member_count
        age = state.clock.now() - campaign.send_time
        f = report_figures(campaign.id, sent, age)
        return web.json_response(
            {
                "id": campaign.id,
                "campaign_title": campaign.settings.get("title", ""),
                "type": campaign.type,
                "list_id": campaign.list_id,
                "list_is_active": True,
                "list_name": audience.name,
                "subject_line": campaign.settings.get("subject_line", ""),
                "preview_text": campaign.settings.get("preview_text", ""),
                "emails_sent": sent,
                "abuse_reports": 0,
                "unsubscribed": f["unsubscribed"],
                "send_time": iso(campaign.send_time),
                "bounces": {
                    "hard_bounces": f["hard_bounces"],
                    "soft_bounces": f["soft_bounces"],
                    "syntax_errors": 0,
                },
                "forwards": {"forwards_count": 0, "forwards_opens": 0},
                "opens": {
                    "opens_total": f["opens_total"],
                    "unique_opens": f["unique_opens"],
                    "open_rate": f["open_rate"],
                    "last_open": iso(state.clock.now()) if f["unique_opens"] else "",
                },
                "clicks": {
                    "clicks_total": f["clicks_total"],
                    "unique_clicks": f["unique_clicks"],
                    "unique_subscriber_clicks": f["unique_clicks"],
                    "click_rate": f["click_rate"],
                    "last_click": iso(state.clock.now()) if f["unique_clicks"] else "",
                },
                "list_stats": {
                    "sub_rate": 1.2,
                    "unsub_rate": 0.3,
                    "open_rate": 32.5,
                    "click_rate": 3.1,
                },
                "_links": [],
            }
        )

    def post_metrics(self, state: SandboxState, post: RecordedPost) -> dict[str, Any]:
        d = self._dir(state)
        campaign = d.campaigns.get(post.id)
        if campaign is None or campaign.send_time is None:
            return {}
        sent = d.audiences[campaign.list_id].member_count
        return {"emails_sent": sent} | report_figures(
            campaign.id, sent, state.clock.now() - campaign.send_time
        )

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
        if event == "validate":
            # Mailchimp checks a new webhook URL with a plain GET.
            return WebhookDelivery(body=b"", headers={}, method="GET")
        d = self._dir(state)
        list_id = account if account in d.audiences else next(iter(d.audiences))
        fired_at = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")
        if payload is None:
            member = {
                "data[id]": uuid.uuid4().hex[:10],
                "data[list_id]": list_id,
                "data[email]": "reader@example.com",
                "data[email_type]": "html",
                "data[ip_opt]": "10.20.10.30",
                "data[merges][EMAIL]": "reader@example.com",
                "data[merges][FNAME]": "Rita",
                "data[merges][LNAME]": "Reader",
            }
            if event in {"subscribe", "unsubscribe", "profile", "cleaned"}:
                fields_ = {"type": event, "fired_at": fired_at, **member}
                if event == "unsubscribe":
                    fields_["data[action]"] = "unsub"
                    fields_["data[reason]"] = "manual"
                if event == "cleaned":
                    fields_ = {
                        "type": "cleaned",
                        "fired_at": fired_at,
                        "data[list_id]": list_id,
                        "data[campaign_id]": "",
                        "data[reason]": "hard",
                        "data[email]": "bounced@example.com",
                    }
            elif event in {"campaign", "campaign_sent"}:
                campaigns = [c for c in d.campaigns.values() if c.list_id == list_id]
                c = campaigns[-1] if campaigns else None
                fields_ = {
                    "type": "campaign",
                    "fired_at": fired_at,
                    "data[id]": c.id if c else uuid.uuid4().hex[:10],
                    "data[subject]": str(c.settings.get("subject_line", "")) if c else "Hello",
                    "data[status]": "sent",
                    "data[reason]": "",
                    "data[list_id]": list_id,
                }
            else:
                raise ValueError(
                    "mailchimp events: validate, subscribe, unsubscribe, profile, cleaned, "
                    f"campaign (not {event})"
                )
            body = urlencode(fields_).encode()
        elif isinstance(payload, dict):
            body = urlencode({str(k): str(v) for k, v in payload.items()}).encode()
        else:
            body = str(payload).encode()
        return WebhookDelivery(
            body=body,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "User-Agent": "MailChimp",
            },
        )
