"""Mailchimp: OAuth 2 and the Marketing API (an email campaign per post).

Documented behaviour relied on (mailchimp.com/developer/marketing):
- ``GET login.mailchimp.com/oauth2/authorize`` (response_type=code, client_id,
  redirect_uri, state) -> ``POST /oauth2/token`` -> ``{"access_token",
  "expires_in": 0, "scope": null}``: the token never expires, there is no refresh
  token and there are no scopes.
- ``GET login.mailchimp.com/oauth2/metadata`` (``Authorization: OAuth <token>``)
  names the data center: ``api_endpoint`` = ``https://<dc>.api.mailchimp.com``;
  the Marketing API is at ``<api_endpoint>/3.0``.
- ``GET /3.0/ping``; ``GET /3.0/lists`` (audiences); ``POST /3.0/campaigns``
  (type, recipients.list_id, settings.subject_line / from_name / reply_to / title);
  ``PUT /3.0/campaigns/{id}/content`` (html, plain_text); ``POST .../actions/send``
  or ``.../actions/schedule`` (schedule_time in UTC on a quarter hour), both 204;
  ``GET /3.0/reports/{id}``; ``DELETE /3.0/campaigns/{id}`` for unsent campaigns.
- Errors are problem+json ``{"type", "title", "status", "detail", "errors"}``;
  10 simultaneous connections per user.
- Webhooks are unsigned form posts; POSTD keeps a secret in their URL.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import aiohttp
from yarl import URL

from postd_common.secrets import Secret
from postd_connectors.domain.capabilities import PlatformCapabilities
from postd_connectors.domain.catalogue import ErrorCatalogue, RawFailure
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
    TokenGrant,
    Unsupported,
    WebhookEvent,
)
from postd_connectors.platforms.http import PlatformHttp, PlatformResponse, parse_iso

TITLE_TAG = "POSTD "
DONE = frozenset({"schedule", "sending", "sent"})


def read_error(response: PlatformResponse) -> RawFailure:
    body = response.json()
    if not isinstance(body, dict):
        body = {}
    if "error" in body:
        return RawFailure(
            http_status=response.status,
            code=str(body.get("error", "")),
            platform_message=str(body.get("error_description", "")),
        )
    fields = "; ".join(
        f"{e.get('field')}: {e.get('message')}"
        for e in body.get("errors", []) or []
        if isinstance(e, dict)
    )
    return RawFailure(
        http_status=response.status,
        code=str(body.get("title", "")),
        platform_message=str(body.get("detail", "")),
        user_message=fields or str(body.get("detail", "")),
        request_id=str(body.get("instance", "")),
    )


def render_html(content: PostContent) -> str:
    """The campaign body: paragraphs of the text, the images, the link as a button."""
    parts = [f"<p>{html.escape(p)}</p>" for p in content.text.split("\n\n") if p.strip()]
    for item in content.media:
        if item.effective_kind is not MediaKind.VIDEO:
            alt = html.escape(item.alt_text)
            src = html.escape(item.url, quote=True)
            parts.append(f'<p><img src="{src}" alt="{alt}" style="max-width:100%"></p>')
    if content.link:
        parts.append(f'<p><a href="{html.escape(content.link, quote=True)}">Read more</a></p>')
    return "\n".join(parts)


class MailchimpConnector:
    platform = "mailchimp"
    app = "mailchimp"
    supports_pkce = False

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
            "response_type": "code",
            "client_id": self.config.client_id,
            "redirect_uri": request.redirect_uri,
            "state": request.state,
        }
        return self.config.url("login", "/oauth2/authorize?") + urlencode(params, quote_via=quote)

    def denial_message(self, error: str, description: str) -> str:
        if error == "access_denied":
            return "You declined the Mailchimp authorization, so nothing was connected."
        return f"Mailchimp did not authorize POSTD ({error}); nothing was connected."

    async def exchange_code(self, grant: CodeGrant) -> TokenGrant:
        response = await self.http.call(
            "POST",
            self.config.url("login", "/oauth2/token"),
            data={
                "grant_type": "authorization_code",
                "client_id": self.config.client_id,
                "client_secret": self.config.client_secret.reveal(),
                "redirect_uri": grant.redirect_uri,
                "code": grant.code,
            },
        )
        body = response.json()
        # expires_in is 0: Mailchimp tokens do not expire.
        bundle = TokenBundle(
            access_token=Secret(str(body.get("access_token", ""))), issued_at=datetime.now(UTC)
        )
        return TokenGrant(bundle, ())

    def can_refresh(self, bundle: TokenBundle) -> bool:
        return False

    async def refresh(self, ctx: AccountContext) -> TokenBundle:
        raise Unsupported("Mailchimp tokens never expire and cannot be refreshed")

    async def verify_permissions(self, ctx: AccountContext) -> tuple[str, ...] | None:
        return None

    def _checked_endpoint(self, endpoint: str) -> str:
        """The data-center host from metadata, refused unless it is Mailchimp's (or,
        with no real credentials, the sandbox's): the token is sent there."""
        url = URL(endpoint)
        if self.config.sandbox:
            login = URL(self.config.url("login"))
            if (url.scheme, url.host, url.port) == (login.scheme, login.host, login.port):
                return endpoint.rstrip("/")
        elif url.scheme == "https" and (url.host or "").endswith(".api.mailchimp.com"):
            return endpoint.rstrip("/")
        raise PlatformFailure(
            PlatformError(
                category=ErrorCategory.INVALID_REQUEST,
                platform=self.platform,
                message="Mailchimp named an unexpected API host; POSTD did not use it.",
                action=ErrorAction.CONTACT_SUPPORT,
                retryable=False,
                platform_message=endpoint[:200],
            )
        )

    async def fetch_accounts(self, grant: TokenGrant) -> list[PlatformAccount]:
        response = await self.http.call(
            "GET",
            self.config.url("login", "/oauth2/metadata"),
            headers={"Authorization": f"OAuth {grant.bundle.access_token.reveal()}"},
        )
        meta = response.json()
        endpoint = self._checked_endpoint(str(meta.get("api_endpoint", "")))
        login = meta.get("login") or {}
        return [
            PlatformAccount(
                platform=self.platform,
                external_id=str(meta.get("user_id", "")),
                kind="account",
                name=str(meta.get("accountname", "")),
                username=str(login.get("login_name", "")),
                avatar_url=str(login.get("avatar") or ""),
                bundle=grant.bundle,
                attributes={"dc": str(meta.get("dc", "")), "api_endpoint": endpoint},
            )
        ]

    # -- API helpers ------------------------------------------------------------------

    def _api(self, ctx: AccountContext, path: str) -> str:
        endpoint = self._checked_endpoint(ctx.attributes.get("api_endpoint", ""))
        return f"{endpoint}/3.0{path}"

    async def _call(
        self, ctx: AccountContext, method: str, path: str, **kw: Any
    ) -> PlatformResponse:
        return await self.http.call(
            method,
            self._api(ctx, path),
            headers={"Authorization": f"Bearer {ctx.bundle.access_token.reveal()}"},
            account=ctx.account_name,
            **kw,
        )

    async def audiences(self, ctx: AccountContext) -> list[dict[str, Any]]:
        """The account's audiences: id, name, member count, campaign defaults."""
        body = (await self._call(ctx, "GET", "/lists", params={"count": "1000"})).json()
        return [
            {
                "id": str(a.get("id")),
                "name": str(a.get("name", "")),
                "member_count": int((a.get("stats") or {}).get("member_count", 0)),
                "from_name": str((a.get("campaign_defaults") or {}).get("from_name", "")),
                "from_email": str((a.get("campaign_defaults") or {}).get("from_email", "")),
            }
            for a in body.get("lists", [])
        ]

    async def live_limits(self, ctx: AccountContext) -> LiveLimits:
        return LiveLimits(options={"list_id": tuple(a["id"] for a in await self.audiences(ctx))})

    # -- campaigns --------------------------------------------------------------------

    async def _campaign_by_key(self, ctx: AccountContext, key: str) -> dict[str, Any] | None:
        """A campaign this connector made for an idempotency key (its internal title
        carries the key; recipients never see it)."""
        body = (await self._call(ctx, "GET", "/campaigns", params={"count": "1000"})).json()
        for campaign in body.get("campaigns", []):
            if (campaign.get("settings") or {}).get("title") == TITLE_TAG + key:
                found: dict[str, Any] = campaign
                return found
        return None

    async def publish(self, ctx: AccountContext, request: PublishRequest) -> PublishOutcome:
        content = request.content
        list_id = content.option("mailchimp", "list_id")
        if not list_id:
            raise PlatformFailure(
                PlatformError(
                    category=ErrorCategory.CONTENT_REJECTED,
                    platform=self.platform,
                    message="Mailchimp needs the audience to send to (mailchimp.list_id).",
                    action=ErrorAction.EDIT_CONTENT,
                    retryable=False,
                )
            )
        campaign_id = request.progress.get("campaign_id", "")
        campaign: dict[str, Any] | None = None
        if campaign_id:
            campaign = (await self._call(ctx, "GET", f"/campaigns/{campaign_id}")).json()
        elif request.progress.get("creating"):
            # A create whose answer was lost left a tagged draft: use it, do not make another.
            campaign = await self._campaign_by_key(ctx, request.idempotency_key)
        if campaign is None:
            if request.checkpoint:
                await request.checkpoint({"creating": "1"})
            campaign = await self._create(ctx, content, list_id, request.idempotency_key)
        campaign_id = str(campaign["id"])
        if request.checkpoint:
            await request.checkpoint({"campaign_id": campaign_id})
        if str(campaign.get("status", "")) not in DONE:
            await self._call(
                ctx,
                "PUT",
                f"/campaigns/{campaign_id}/content",
                json_body={"html": render_html(content), "plain_text": content.text},
            )
            schedule = content.option("mailchimp", "schedule_time")
            when = request.scheduled_at or (parse_iso(schedule) if schedule else None)
            if when is not None:
                stamp = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")
                await self._call(
                    ctx,
                    "POST",
                    f"/campaigns/{campaign_id}/actions/schedule",
                    json_body={"schedule_time": stamp},
                    ok=lambda s: s in (200, 204),
                )
            else:
                await self._call(
                    ctx,
                    "POST",
                    f"/campaigns/{campaign_id}/actions/send",
                    ok=lambda s: s in (200, 204),
                )
        return PublishOutcome(
            PublishState.PUBLISHED,
            campaign_id,
            url=str(campaign.get("archive_url", "")),
            published_at=datetime.now(UTC),
        )

    async def _create(
        self, ctx: AccountContext, content: PostContent, list_id: str, key: str
    ) -> dict[str, Any]:
        audience = next((a for a in await self.audiences(ctx) if a["id"] == list_id), None)
        settings = {
            "subject_line": content.title,
            "preview_text": content.option("mailchimp", "preview_text"),
            "title": TITLE_TAG + key,
            "from_name": content.option("mailchimp", "from_name")
            or (audience or {}).get("from_name", ""),
            "reply_to": content.option("mailchimp", "reply_to")
            or (audience or {}).get("from_email", ""),
        }
        response = await self._call(
            ctx,
            "POST",
            "/campaigns",
            json_body={"type": "regular", "recipients": {"list_id": list_id}, "settings": settings},
        )
        created: dict[str, Any] = response.json()
        return created

    async def find_post(self, ctx: AccountContext, query: PostQuery) -> FoundPost | None:
        campaign = None
        if query.progress.get("campaign_id"):
            campaign = (
                await self._call(ctx, "GET", f"/campaigns/{query.progress['campaign_id']}")
            ).json()
        elif query.idempotency_key:
            campaign = await self._campaign_by_key(ctx, query.idempotency_key)
        if not campaign or str(campaign.get("status", "")) not in DONE:
            # A draft is not a sent email: publishing again finishes it.
            return None
        return FoundPost(
            str(campaign["id"]),
            MatchKind.IDEMPOTENCY_KEY,
            url=str(campaign.get("archive_url", "")),
            published_at=parse_iso(str(campaign.get("send_time", ""))),
        )

    async def edit_post(
        self, ctx: AccountContext, platform_post_id: str, content: PostContent
    ) -> None:
        raise Unsupported("sent Mailchimp campaigns cannot be edited")

    async def delete_post(self, ctx: AccountContext, platform_post_id: str) -> bool:
        await self._call(
            ctx, "DELETE", f"/campaigns/{platform_post_id}", ok=lambda s: s in (200, 204)
        )
        return True

    async def analytics(self, ctx: AccountContext, post_ids: Sequence[str]) -> list[PostAnalytics]:
        results: list[PostAnalytics] = []
        for campaign_id in post_ids:
            try:
                report = (await self._call(ctx, "GET", f"/reports/{campaign_id}")).json()
            except PlatformFailure as failure:
                results.append(PostAnalytics(campaign_id, error=failure.error))
                continue
            opens, clicks = report.get("opens") or {}, report.get("clicks") or {}
            unique_opens = int(opens.get("unique_opens", 0))
            unique_clicks = int(clicks.get("unique_clicks", 0))
            results.append(
                PostAnalytics(
                    campaign_id,
                    metrics=PostMetrics(
                        impressions=int(opens.get("opens_total", 0)),
                        reach=int(report.get("emails_sent", 0)),
                        engagements=unique_opens + unique_clicks,
                        clicks=int(clicks.get("clicks_total", 0)),
                        breakdown={
                            "opens": int(opens.get("opens_total", 0)),
                            "unique_opens": unique_opens,
                            "unique_clicks": unique_clicks,
                            "unsubscribed": int(report.get("unsubscribed", 0)),
                            "hard_bounces": int(
                                (report.get("bounces") or {}).get("hard_bounces", 0)
                            ),
                        },
                    ),
                )
            )
        return results

    async def account_analytics(
        self, ctx: AccountContext, since: date, until: date
    ) -> AccountAnalytics:
        """Every audience's daily activity (``GET /lists/{id}/activity``, up to 180
        days, newest first), summed per day; subscribers in total."""
        lists = (await self._call(ctx, "GET", "/lists", params={"count": "100"})).json()
        wanted = min(180, max(1, (datetime.now(UTC).date() - since).days + 1))
        per_day: dict[date, dict[str, int]] = {}
        subscribers = 0
        for audience in lists.get("lists", []):
            subscribers += int((audience.get("stats") or {}).get("member_count", 0))
            activity = (
                await self._call(
                    ctx,
                    "GET",
                    f"/lists/{audience.get('id')}/activity",
                    params={"count": str(wanted)},
                )
            ).json()
            for item in activity.get("activity", []):
                try:
                    day = date.fromisoformat(str(item.get("day", "")))
                except ValueError:
                    continue
                if not since <= day <= until:
                    continue
                sums = per_day.setdefault(day, {})
                for key in ("emails_sent", "unique_opens", "recipient_clicks", "subs", "unsubs"):
                    sums[key] = sums.get(key, 0) + int(item.get(key, 0) or 0)
        days = tuple(
            AccountDay(
                day,
                PostMetrics(
                    impressions=v.get("unique_opens", 0),
                    reach=v.get("emails_sent", 0),
                    engagements=v.get("unique_opens", 0) + v.get("recipient_clicks", 0),
                    clicks=v.get("recipient_clicks", 0),
                    breakdown={
                        "emails_sent": v.get("emails_sent", 0),
                        "unique_opens": v.get("unique_opens", 0),
                        "subscribed": v.get("subs", 0),
                        "unsubscribed": v.get("unsubs", 0),
                    },
                ),
            )
            for day, v in sorted(per_day.items())
        )
        return AccountAnalytics(days=days, totals={"subscribers": subscribers})

    async def health_check(self, ctx: AccountContext) -> HealthResult:
        """A ping: Mailchimp tokens never expire, so only a call can tell."""
        started = asyncio.get_running_loop().time()
        try:
            await self._call(ctx, "GET", "/ping")
        except PlatformFailure as failure:
            return HealthResult(
                False, asyncio.get_running_loop().time() - started, error=failure.error
            )
        return HealthResult(True, asyncio.get_running_loop().time() - started)

    async def revoke(self, ctx: AccountContext) -> bool:
        raise Unsupported("Mailchimp has no token revocation endpoint; the user removes the app")

    def verify_webhook(
        self, headers: Mapping[str, str], body: bytes, *, now: float | None = None
    ) -> bool:
        raise Unsupported("Mailchimp webhooks are unsigned; the secret is in their URL")

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[WebhookEvent]:
        fields = dict(parse_qsl(body.decode(errors="replace")))
        return [
            WebhookEvent(
                kind=f"mailchimp.{fields.get('type', '')}",
                account_id=fields.get("data[list_id]", ""),
                object_id=fields.get("data[id]", ""),
                occurred_at=parse_iso(fields.get("fired_at", "").replace(" ", "T")),
                data={
                    k: v for k, v in fields.items() if k.startswith("data[") and "email" not in k
                },
            )
        ]
