"""Slack: incoming webhooks (where the product sends alerts), OAuth v2, and
chat.postMessage; signed Events API / interactivity requests.

Hosts: hooks.slack.com -> /slack/hooks, slack.com -> /slack (OAuth and Web API).

Doc facts relied on (api.slack.com):
- Incoming webhooks: POST JSON `{"text", "blocks", ...}` to
  `https://hooks.slack.com/services/T…/B…/…`; success is `200 ok` (text/plain);
  failures are plain-text codes: 400 `invalid_payload` / `no_text`, 403
  `action_prohibited`, 404 `no_service`, 410 `channel_is_archived`, 429 with
  Retry-After when rate limited (about one message per second per channel).
- OAuth v2: `slack.com/oauth/v2/authorize?client_id&scope&user_scope&redirect_uri&state`
  -> `POST slack.com/api/oauth.v2.access` (client_id, client_secret, code,
  redirect_uri) -> `{"ok": true, "access_token": "xoxb-…", "token_type": "bot",
  "scope", "bot_user_id", "app_id", "team": {...}, "authed_user": {...},
  "incoming_webhook": {"channel", "channel_id", "configuration_url", "url"}}`.
  Web API errors are HTTP 200 `{"ok": false, "error": "invalid_auth"}`; rate
  limits are 429 with Retry-After.
- Signed requests: `X-Slack-Request-Timestamp` and `X-Slack-Signature: v0=<hex
  HMAC-SHA256(signing secret, "v0:<ts>:<body>")>`; the Events API first sends
  `{"type": "url_verification", "challenge"}`; interactivity posts are
  form-encoded `payload=<json>`.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlencode

from aiohttp import web

from postd_sandbox import errors, signing
from postd_sandbox.clock import IdSource
from postd_sandbox.errors import ApiError, ErrorSpec
from postd_sandbox.keys import STATE_KEY
from postd_sandbox.oauth import CodeProblem, OAuthProfile
from postd_sandbox.platforms.base import (
    Directory,
    Person,
    Platform,
    SeedError,
    WebhookDelivery,
)
from postd_sandbox.state import SandboxState

NAME = "slack"
PREFIX = "/slack"

SCOPES: Mapping[str, str] = {
    "chat:write": "Send messages as the app",
    "chat:write.public": "Send messages to channels the app isn't a member of",
    "incoming-webhook": "Post messages to a specific channel",
    "channels:read": "View basic information about public channels",
    "commands": "Add shortcuts and slash commands",
    "users:read": "View people in the workspace",
}


def _hook(status: int, text: str) -> ErrorSpec:
    return ErrorSpec(status=status, fields={"text": text})


# Incoming-webhook failures are plain text; Web API failures are {"ok": false}.
ERRORS: Mapping[str, ErrorSpec] = {
    errors.INVALID_TOKEN: ErrorSpec(200, {"ok": False, "error": "invalid_auth"}),
    errors.EXPIRED_TOKEN: ErrorSpec(200, {"ok": False, "error": "token_expired"}),
    errors.REVOKED_TOKEN: ErrorSpec(200, {"ok": False, "error": "token_revoked"}),
    errors.PERMISSION: ErrorSpec(200, {"ok": False, "error": "missing_scope", "needed": "{scope}"}),
    errors.RATE_LIMIT: ErrorSpec(429, {"ok": False, "error": "ratelimited"}),
    errors.SERVER_ERROR: ErrorSpec(500, {"ok": False, "error": "internal_error"}),
    errors.OUTAGE: ErrorSpec(503, {"ok": False, "error": "service_unavailable"}),
    errors.TIMEOUT: ErrorSpec(504, {"ok": False, "error": "request_timeout"}),
    errors.NOT_FOUND: ErrorSpec(404, {"ok": False, "error": "unknown_method"}),
    errors.INVALID_PARAM: ErrorSpec(200, {"ok": False, "error": "invalid_arguments"}),
    "slack_channel_not_found": ErrorSpec(200, {"ok": False, "error": "channel_not_found"}),
    "slack_no_text": ErrorSpec(200, {"ok": False, "error": "no_text"}),
    "slack_invalid_code": ErrorSpec(200, {"ok": False, "error": "invalid_code"}),
    "slack_bad_redirect_uri": ErrorSpec(200, {"ok": False, "error": "bad_redirect_uri"}),
    "slack_invalid_client": ErrorSpec(200, {"ok": False, "error": "invalid_client_id"}),
    "slack_bad_client_secret": ErrorSpec(200, {"ok": False, "error": "bad_client_secret"}),
    # Incoming webhooks (plain text).
    "hook_invalid_payload": _hook(400, "invalid_payload"),
    "hook_no_text": _hook(400, "no_text"),
    "hook_no_service": _hook(404, "no_service"),
    "hook_rate_limited": _hook(429, "rate_limited"),
    "hook_server_error": _hook(500, "rollup_error"),
    "hook_outage": _hook(503, "service_unavailable"),
    "hook_action_prohibited": _hook(403, "action_prohibited"),
    "hook_channel_archived": _hook(410, "channel_is_archived"),
}

HOOK_ERRORS = {
    errors.RATE_LIMIT: "hook_rate_limited",
    errors.SERVER_ERROR: "hook_server_error",
    errors.OUTAGE: "hook_outage",
    errors.TIMEOUT: "hook_server_error",
    errors.PERMISSION: "hook_action_prohibited",
    errors.INVALID_TOKEN: "hook_no_service",
    errors.REVOKED_TOKEN: "hook_no_service",
    errors.EXPIRED_TOKEN: "hook_no_service",
    errors.NOT_FOUND: "hook_no_service",
}


@dataclass
class SlackWorkspace:
    id: str
    name: str
    user_id: str
    user_name: str
    channels: dict[str, str] = field(default_factory=dict)  # id -> name


@dataclass
class SlackMessage:
    hook: str
    channel: str
    body: dict[str, Any]
    received_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "hook": self.hook,
            "channel": self.channel,
            "text": self.body.get("text"),
            "body": self.body,
            "received_at": self.received_at,
        }


class SlackDirectory(Directory):
    def __init__(self) -> None:
        self.workspaces: dict[str, SlackWorkspace] = {}
        self.messages: list[SlackMessage] = []
        # Hooks that answer with a failure code (e.g. a deleted webhook -> no_service).
        self.broken_hooks: dict[str, str] = {}

    def people(self) -> list[Person]:
        return [Person(w.user_id, f"{w.user_name} @ {w.name}") for w in self.workspaces.values()]

    def workspace_of(self, user_id: str) -> SlackWorkspace:
        for workspace in self.workspaces.values():
            if workspace.user_id == user_id:
                return workspace
        raise KeyError(user_id)

    def seed(self, payload: Mapping[str, Any], ids: IdSource) -> dict[str, Any]:
        created = []
        for spec in payload.get("workspaces", []):
            if not isinstance(spec, dict):
                raise SeedError("each workspace must be an object")
            n = ids.next_int()
            ws = SlackWorkspace(
                id=str(spec.get("id") or f"T{n:08X}"),
                name=str(spec.get("name") or f"Workspace {n}"),
                user_id=str(spec.get("user_id") or f"U{n:08X}"),
                user_name=str(spec.get("user_name") or "sandbox.user"),
                channels={f"C{n:08X}": "alerts"},
            )
            self.workspaces[ws.id] = ws
            created.append(ws.id)
        broken = payload.get("broken_hooks", {})
        if isinstance(broken, dict):
            self.broken_hooks.update({str(k): str(v) for k, v in broken.items()})
        return {"workspaces": created}

    def to_json(self) -> dict[str, Any]:
        return {
            "workspaces": [
                {"id": w.id, "name": w.name, "user_id": w.user_id, "channels": w.channels}
                for w in self.workspaces.values()
            ],
            "messages": len(self.messages),
        }


def default_directory(ids: IdSource) -> SlackDirectory:
    d = SlackDirectory()
    d.workspaces["T0SANDBOX1"] = SlackWorkspace(
        id="T0SANDBOX1",
        name="Sandbox Coffee Co",
        user_id="U0SANDBOX1",
        user_name="sandbox.marketer",
        channels={"C0ALERTS01": "postd-alerts", "C0GENERAL1": "general"},
    )
    return d


class SlackPlatform(Platform):
    name: ClassVar[str] = NAME
    prefix: ClassVar[str] = PREFIX
    oauth: ClassVar[OAuthProfile] = OAuthProfile(
        authorize_path=PREFIX + "/oauth/v2/authorize",
        scope_separator=",",
        pkce="none",
        partial_grants=False,
        code_ttl=600,
        scopes=SCOPES,
        default_scopes=(),
        deny_params={"error": "access_denied"},
        invalid_scope_error="invalid_scope",
        requires_response_type=False,
        display_name="Slack",
    )
    errors: ClassVar[Mapping[str, ErrorSpec]] = ERRORS
    signature_header: ClassVar[str | None] = "X-Slack-Signature"

    def new_directory(self, ids: IdSource) -> SlackDirectory:
        return default_directory(ids)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(PREFIX + "/hooks/services/{team}/{bot}/{secret}", self.incoming_webhook),
            web.post(PREFIX + "/api/oauth.v2.access", self.oauth_access),
            web.post(PREFIX + "/api/chat.postMessage", self.post_message),
            web.post(PREFIX + "/api/auth.test", self.auth_test),
        ]

    def control_routes(self) -> list[web.RouteDef]:
        return [
            web.get("/_sandbox/slack/messages", self.list_messages),
            web.delete("/_sandbox/slack/messages", self.clear_messages),
        ]

    def error_body(self, spec: ErrorSpec, err: ApiError, request: web.Request) -> Any:
        if "text" in spec.fields:
            return str(spec.fields["text"])
        return errors.fill(dict(spec.fields), err.params)

    def error_response(self, request: web.Request, err: ApiError) -> web.Response:
        if request.path.startswith(PREFIX + "/hooks/") and err.key in HOOK_ERRORS:
            err.key = HOOK_ERRORS[err.key]
        response = super().error_response(request, err)
        if err.key.startswith("hook_"):
            response.content_type = "text/plain"
        return response

    def _directory(self, state: SandboxState) -> SlackDirectory:
        return state.directory(NAME, SlackDirectory)

    # -- incoming webhooks ------------------------------------------------------------

    async def incoming_webhook(self, request: web.Request) -> web.Response:
        state = self.state(request)
        d = self._directory(state)
        hook = "/".join(request.match_info[k] for k in ("team", "bot", "secret"))
        if hook in d.broken_hooks:
            raise ApiError(d.broken_hooks[hook])
        raw = await request.read()
        body: Any
        try:
            if request.content_type == "application/x-www-form-urlencoded":
                form = await request.post()
                payload = form.get("payload")
                body = json.loads(payload) if isinstance(payload, str) else None
            else:
                body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError("hook_invalid_payload") from exc
        if not isinstance(body, dict):
            raise ApiError("hook_invalid_payload")
        if not body.get("text") and not body.get("blocks") and not body.get("attachments"):
            raise ApiError("hook_no_text")
        channel = str(body.get("channel") or request.match_info["bot"])
        d.messages.append(SlackMessage(hook, channel, body, state.clock.now()))
        return web.Response(text="ok", content_type="text/plain")

    async def list_messages(self, request: web.Request) -> web.Response:
        d = self._directory(request.app[STATE_KEY])
        hook = request.query.get("hook")
        contains = request.query.get("text_contains")
        found = [
            m.to_json()
            for m in d.messages
            if (not hook or hook in m.hook)
            and (not contains or contains in json.dumps(m.body, ensure_ascii=False))
        ]
        return web.json_response({"count": len(found), "messages": found})

    async def clear_messages(self, request: web.Request) -> web.Response:
        self._directory(request.app[STATE_KEY]).messages.clear()
        return web.json_response({"cleared": True})

    # -- OAuth and Web API ------------------------------------------------------------

    async def oauth_access(self, request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        state = self.state(request)
        client_id = form.get("client_id")
        secret = form.get("client_secret", "")
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            decoded = base64.b64decode(auth.split(" ", 1)[1]).decode()
            client_id, _, secret = decoded.partition(":")
        if client_id != self.app.client_id:
            raise ApiError("slack_invalid_client")
        if not hmac.compare_digest(secret, self.app.client_secret):
            raise ApiError("slack_bad_client_secret")
        try:
            code = state.oauth.redeem(
                form.get("code"),
                profile=self.oauth,
                client_id=client_id,
                redirect_uri=form.get("redirect_uri"),
                code_verifier=None,
                require_redirect=False,
            )
        except CodeProblem as problem:
            key = (
                "slack_bad_redirect_uri"
                if problem.reason == "redirect_mismatch"
                else "slack_invalid_code"
            )
            raise ApiError(key) from problem
        d = self._directory(state)
        workspace = d.workspace_of(code.subject)
        token = state.tokens.issue(
            platform=NAME,
            kind="access",
            subject=code.subject,
            account=workspace.id,
            scopes=code.granted_scopes,
            client_id=client_id,
            lifetime=None,
            grant=code.grant,
            prefix="xoxb-",
        )
        channel_id, channel_name = next(iter(workspace.channels.items()))
        body: dict[str, Any] = {
            "ok": True,
            "access_token": token.value,
            "token_type": "bot",
            "scope": ",".join(code.granted_scopes),
            "bot_user_id": "B0SANDBOT1",
            "app_id": "A0SANDBOX1",
            "team": {"name": workspace.name, "id": workspace.id},
            "enterprise": None,
            "is_enterprise_install": False,
            "authed_user": {"id": workspace.user_id},
        }
        if "incoming-webhook" in code.granted_scopes:
            hook_secret = secrets.token_hex(12)
            body["incoming_webhook"] = {
                "channel": f"#{channel_name}",
                "channel_id": channel_id,
                "configuration_url": f"https://{workspace.id.lower()}.slack.com/services/B0SANDHOOK",
                "url": self.url(f"/hooks/services/{workspace.id}/B0SANDHOOK/{hook_secret}"),
            }
        return web.json_response(body)

    async def _web_api_params(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            payload = await request.json()
            return payload if isinstance(payload, dict) else {}
        return {k: v for k, v in (await request.post()).items() if isinstance(v, str)}

    async def auth_test(self, request: web.Request) -> web.Response:
        token = await self.authenticate(request)
        workspace = self._directory(self.state(request)).workspace_of(token.subject)
        return web.json_response(
            {
                "ok": True,
                "url": f"https://{workspace.id.lower()}.slack.com/",
                "team": workspace.name,
                "user": "postd",
                "team_id": workspace.id,
                "user_id": "U0SANDBOT1",
                "bot_id": "B0SANDBOT1",
            }
        )

    async def post_message(self, request: web.Request) -> web.Response:
        token = await self.authenticate(request, scopes=("chat:write",))
        state = self.state(request)
        params = await self._web_api_params(request)
        workspace = self._directory(state).workspace_of(token.subject)
        channel = str(params.get("channel", ""))
        names = {f"#{n}": cid for cid, n in workspace.channels.items()}
        channel_id = names.get(channel, channel)
        if channel_id not in workspace.channels:
            raise ApiError("slack_channel_not_found")
        if not params.get("text") and not params.get("blocks") and not params.get("attachments"):
            raise ApiError("slack_no_text")
        ts = f"{state.clock.now():.6f}"
        self._directory(state).messages.append(
            SlackMessage(f"api/{workspace.id}", channel_id, dict(params), state.clock.now())
        )
        return web.json_response(
            {
                "ok": True,
                "channel": channel_id,
                "ts": ts,
                "message": {"type": "message", "text": params.get("text", ""), "ts": ts},
            }
        )

    # -- signed requests to the product -----------------------------------------------

    def webhook(
        self,
        state: SandboxState,
        event: str,
        account: str,
        payload: Any | None,
        timestamp: int,
        audience: str,
    ) -> WebhookDelivery:
        team = account or "T0SANDBOX1"
        if event == "interactive":
            action = payload or {
                "type": "block_actions",
                "team": {"id": team},
                "user": {"id": "U0SANDBOX1", "username": "sandbox.marketer"},
                "actions": [{"action_id": "approve", "value": "approve", "type": "button"}],
            }
            body = urlencode({"payload": json.dumps(action, separators=(",", ":"))}).encode()
            content_type = "application/x-www-form-urlencoded"
        else:
            if payload is None:
                if event == "url_verification":
                    payload = {
                        "token": "sandbox-verification-token",
                        "challenge": f"challenge-{state.ids.next_int()}",
                        "type": "url_verification",
                    }
                elif event in {"message", "app_mention", "app_uninstalled", "tokens_revoked"}:
                    inner: dict[str, Any] = {"type": event, "event_ts": f"{timestamp}.000100"}
                    if event in {"message", "app_mention"}:
                        inner |= {"user": "U0SANDBOX1", "text": "hello", "channel": "C0ALERTS01"}
                    payload = {
                        "token": "sandbox-verification-token",
                        "team_id": team,
                        "api_app_id": "A0SANDBOX1",
                        "event": inner,
                        "type": "event_callback",
                        "event_id": f"Ev{state.ids.next_int():08X}",
                        "event_time": timestamp,
                    }
                else:
                    raise ValueError(
                        "slack events: url_verification, message, app_mention, "
                        f"app_uninstalled, tokens_revoked, interactive (not {event})"
                    )
            body = signing.canonical_json(payload)
            content_type = "application/json"
        return WebhookDelivery(
            body=body,
            headers={
                "Content-Type": content_type,
                "X-Slack-Request-Timestamp": str(timestamp),
                "X-Slack-Signature": signing.slack_signature(
                    self.settings.slack_signing_secret, timestamp, body
                ),
            },
        )
