"""The `/_sandbox/` control API: faults, recorded posts, tokens, consent, seeding,
clock, webhooks. JSON in, JSON out; for tests and for people poking at the sandbox.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from postd_sandbox import webhooks
from postd_sandbox.faults import FaultError
from postd_sandbox.keys import HTTP_KEY, PLATFORMS_KEY, SETTINGS_KEY, STATE_KEY
from postd_sandbox.oauth import ConsentDirective
from postd_sandbox.platforms.base import Directory, SeedError
from postd_sandbox.state import SandboxState

logger = logging.getLogger(__name__)


def _bad(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        payload = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body must be JSON"}), content_type="application/json"
        ) from exc
    if not isinstance(payload, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body must be a JSON object"}),
            content_type="application/json",
        )
    return payload


def _state(request: web.Request) -> SandboxState:
    return request.app[STATE_KEY]


async def index(request: web.Request) -> web.Response:
    state = _state(request)
    return web.json_response(
        {
            "platforms": {p.name: p.prefix for p in request.app[PLATFORMS_KEY]},
            "posts": len(state.posts.find()),
            "faults": len(state.faults.list()),
            "clock_offset": state.clock.offset,
        }
    )


# -- faults ---------------------------------------------------------------------------


async def add_fault(request: web.Request) -> web.Response:
    payload = await _body(request)
    try:
        fault = _state(request).faults.add_from_json(payload, request.app[PLATFORMS_KEY].names())
    except FaultError as exc:
        return _bad(str(exc))
    return web.json_response(fault.to_json(), status=201)


async def list_faults(request: web.Request) -> web.Response:
    return web.json_response({"faults": [f.to_json() for f in _state(request).faults.list()]})


async def clear_faults(request: web.Request) -> web.Response:
    _state(request).faults.clear()
    return web.json_response({"cleared": True})


# -- posts and uploads ----------------------------------------------------------------


async def list_posts(request: web.Request) -> web.Response:
    q = request.query
    include_deleted = q.get("include_deleted", "1") not in {"0", "false"}
    posts = _state(request).posts.find(
        platform=q.get("platform") or None,
        account=q.get("account") or None,
        text_contains=q.get("text_contains") or None,
        include_deleted=include_deleted,
    )
    return web.json_response({"count": len(posts), "posts": [p.to_json() for p in posts]})


async def get_post(request: web.Request) -> web.Response:
    post = _state(request).posts.get(request.match_info["post_id"])
    if post is None:
        return _bad("no such post", 404)
    return web.json_response(post.to_json())


async def get_upload(request: web.Request) -> web.Response:
    state = _state(request)
    upload_id = request.match_info["upload_id"]
    upload = state.uploads.get(upload_id)
    if upload is None:
        # A TikTok publish id or a LinkedIn image URN also names its upload.
        upload = next(
            (u for u in state.uploads.values() if upload_id in u.extra.get("aliases", ())),
            None,
        )
    if upload is None:
        return _bad("no such upload", 404)
    return web.json_response(upload.to_json())


# -- tokens ---------------------------------------------------------------------------


async def _token_action(request: web.Request, action: str) -> web.Response:
    payload = await _body(request)
    state = _state(request)
    platform = payload.get("platform")
    if platform not in request.app[PLATFORMS_KEY].names():
        return _bad("platform is required")
    account = payload.get("account")
    value = payload.get("access_token") or payload.get("token")
    if not account and not value:
        return _bad("give account or access_token")
    records = state.tokens.matching(
        platform,
        account=account if isinstance(account, str) else None,
        value=value if isinstance(value, str) else None,
    )
    if action == "expire":
        # Expiring an account's access leaves its refresh tokens usable.
        count = state.tokens.expire(r for r in records if r.kind != "refresh" or value)
    else:
        count = state.tokens.revoke(records)
    logger.info("%s %d %s token(s)", action, count, platform)
    return web.json_response({action + "d": count})


async def expire_tokens(request: web.Request) -> web.Response:
    return await _token_action(request, "expire")


async def revoke_tokens(request: web.Request) -> web.Response:
    return await _token_action(request, "revoke")


async def list_tokens(request: web.Request) -> web.Response:
    state = _state(request)
    platform = request.query.get("platform")
    reveal = request.query.get("reveal") in {"1", "true"}
    if reveal and not request.app[SETTINGS_KEY].reveal_tokens:
        return _bad("token values are shown only with POSTD_SANDBOX_REVEAL_TOKENS=1", 403)
    now = state.clock.now()
    rows = []
    for r in state.tokens.all():
        if platform and r.platform != platform:
            continue
        row: dict[str, Any] = {
            "platform": r.platform,
            "kind": r.kind,
            "subject": r.subject,
            "account": r.account,
            "scopes": list(r.scopes),
            "status": r.status(now),
            "expires_at": r.expires_at,
            "rotated": r.rotated,
            "token_hint": r.value[:6] + "…",
        }
        if reveal:
            row["value"] = r.value
        rows.append(row)
    return web.json_response({"tokens": rows})


# -- consent, accounts, clock, reset --------------------------------------------------


async def set_consent(request: web.Request) -> web.Response:
    payload = await _body(request)
    platform = payload.get("platform")
    if platform not in request.app[PLATFORMS_KEY].names():
        return _bad("platform is required")
    scopes = payload.get("scopes")
    if scopes is not None and (
        not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes)
    ):
        return _bad("scopes must be a list of strings")
    account = payload.get("account")
    times = payload.get("times", 1)
    if not isinstance(times, int) or times < 1:
        return _bad("times must be a positive integer")
    directive = ConsentDirective(
        platform=platform,
        account=account if isinstance(account, str) else None,
        scopes=tuple(scopes) if scopes is not None else None,
        deny=bool(payload.get("deny", False)),
        remaining=times,
    )
    _state(request).oauth.add_directive(directive)
    return web.json_response(directive.to_json(), status=201)


async def list_consent(request: web.Request) -> web.Response:
    directives = _state(request).oauth.directives
    return web.json_response(
        {"directives": [d.to_json() for queue in directives.values() for d in queue]}
    )


async def clear_consent(request: web.Request) -> web.Response:
    _state(request).oauth.directives.clear()
    return web.json_response({"cleared": True})


def _directory(request: web.Request, platform: str) -> Directory | None:
    found = _state(request).directories.get(platform)
    return found if isinstance(found, Directory) else None


async def seed_accounts(request: web.Request) -> web.Response:
    payload = await _body(request)
    platform = payload.get("platform")
    directory = _directory(request, platform) if isinstance(platform, str) else None
    if directory is None:
        return _bad("platform is required")
    try:
        created = directory.seed(payload, _state(request).ids)
    except SeedError as exc:
        return _bad(str(exc))
    return web.json_response(created, status=201)


async def list_accounts(request: web.Request) -> web.Response:
    platform = request.query.get("platform")
    state = _state(request)
    result = {
        name: directory.to_json()
        for name, directory in state.directories.items()
        if isinstance(directory, Directory) and (not platform or name == platform)
    }
    return web.json_response(result)


async def reset(request: web.Request) -> web.Response:
    state = _state(request)
    state.reset()
    request.app[PLATFORMS_KEY].seed(state)
    return web.json_response({"reset": True})


async def advance_clock(request: web.Request) -> web.Response:
    payload = await _body(request)
    seconds = payload.get("advance_seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        return _bad("advance_seconds must be a non-negative number")
    state = _state(request)
    state.clock.advance(float(seconds))
    return web.json_response({"offset": state.clock.offset, "now": state.clock.now()})


async def get_clock(request: web.Request) -> web.Response:
    state = _state(request)
    return web.json_response({"offset": state.clock.offset, "now": state.clock.now()})


# -- webhooks -------------------------------------------------------------------------


async def send_webhook(request: web.Request) -> web.Response:
    payload = await _body(request)
    url = payload.get("url")
    event = payload.get("event")
    platform = payload.get("platform")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return _bad("url must be an http(s) URL")
    if not isinstance(event, str) or not isinstance(platform, str):
        return _bad("platform and event are required")
    account = payload.get("account", "")
    tamper = payload.get("tamper")
    audience = payload.get("audience")
    try:
        delivery = webhooks.build_delivery(
            request.app[PLATFORMS_KEY],
            _state(request),
            platform_name=platform,
            event=event,
            account=account if isinstance(account, str) else str(account),
            payload=payload.get("payload"),
            tamper=tamper if isinstance(tamper, str) else None,
            audience=audience if isinstance(audience, str) else url,
        )
    except (webhooks.WebhookRequestError, ValueError) as exc:
        return _bad(str(exc))
    result = await webhooks.send(request.app[HTTP_KEY], url, delivery)
    return web.json_response(result)


async def webhook_handshake(request: web.Request) -> web.Response:
    payload = await _body(request)
    url = payload.get("url")
    name = payload.get("platform")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return _bad("url must be an http(s) URL")
    platform = request.app[PLATFORMS_KEY].get(name) if isinstance(name, str) else None
    if platform is None:
        return _bad("platform is required")
    check = platform.handshake(_state(request), url)
    if check is None:
        return _bad(f"{platform.name} makes no verification request")
    return web.json_response(await webhooks.handshake(request.app[HTTP_KEY], url, check))


async def post_metrics(request: web.Request) -> web.Response:
    state = _state(request)
    post = state.posts.get(request.match_info["post_id"])
    if post is None:
        return _bad("no such post", 404)
    platform = request.app[PLATFORMS_KEY].get(post.platform)
    assert platform is not None
    return web.json_response(
        {
            "post_id": post.id,
            "platform": post.platform,
            "age_seconds": state.clock.now() - post.created_at,
            "metrics": platform.post_metrics(state, post),
        }
    )


def routes() -> list[web.RouteDef]:
    return [
        web.get("/_sandbox/", index),
        web.get("/_sandbox", index),
        web.post("/_sandbox/faults", add_fault),
        web.get("/_sandbox/faults", list_faults),
        web.delete("/_sandbox/faults", clear_faults),
        web.get("/_sandbox/posts", list_posts),
        web.get("/_sandbox/posts/{post_id:.+}", get_post),
        web.get("/_sandbox/metrics/{post_id:.+}", post_metrics),
        web.get("/_sandbox/uploads/{upload_id:.+}", get_upload),
        web.post("/_sandbox/tokens/expire", expire_tokens),
        web.post("/_sandbox/tokens/revoke", revoke_tokens),
        web.get("/_sandbox/tokens", list_tokens),
        web.post("/_sandbox/consent", set_consent),
        web.get("/_sandbox/consent", list_consent),
        web.delete("/_sandbox/consent", clear_consent),
        web.post("/_sandbox/accounts", seed_accounts),
        web.get("/_sandbox/accounts", list_accounts),
        web.post("/_sandbox/reset", reset),
        web.post("/_sandbox/clock", advance_clock),
        web.get("/_sandbox/clock", get_clock),
        web.post("/_sandbox/webhooks/send", send_webhook),
        web.post("/_sandbox/webhooks/handshake", webhook_handshake),
    ]
