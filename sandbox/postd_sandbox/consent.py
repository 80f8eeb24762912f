"""The authorize endpoint every platform shares: validation, consent page, redirect.

GET validates the request as the platform does (client id, exact redirect URI,
response type, scopes, PKCE parameters), then either redirects at once (a consent
directive set by a test, or `auto_approve`) or shows an HTML page a person can use:
log in as one of the seeded people, untick scopes where the platform allows partial
grants, Approve or Deny. The page POSTs back to the same path.
"""

from __future__ import annotations

import html
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from aiohttp import web
from yarl import URL

from postd_sandbox.oauth import PendingAuthorization
from postd_sandbox.platforms.base import Directory

if TYPE_CHECKING:
    from postd_sandbox.platforms.base import Platform

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _page(title: str, body: str, status: int = 200) -> web.Response:
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; background: #f4f5f7; margin: 0; }}
main {{ max-width: 30rem; margin: 3rem auto; background: #fff; padding: 2rem;
        border-radius: 12px; box-shadow: 0 2px 12px rgba(0,0,0,.08); }}
h1 {{ font-size: 1.3rem; }} .muted {{ color: #666; font-size: .9rem; }}
label {{ display: block; margin: .4rem 0; }}
.actions {{ display: flex; gap: .75rem; margin-top: 1.5rem; }}
button {{ padding: .6rem 1.4rem; border-radius: 6px; border: 1px solid #888;
          font-size: 1rem; cursor: pointer; }}
button.approve {{ background: #1a73e8; color: #fff; border-color: #1a73e8; }}
.error {{ color: #b00020; }}
</style></head>
<body><main>{body}</main></body></html>"""
    return web.Response(status=status, text=doc, content_type="text/html")


def error_page(platform: Platform, message: str, status: int = 400) -> web.Response:
    name = html.escape(platform.oauth.display_name or platform.name)
    return _page(
        f"{name}: error",
        f'<h1>{name} (sandbox)</h1><p class="error" id="error">{html.escape(message)}</p>',
        status=status,
    )


def split_scopes(raw: str | None, separators: str) -> list[str]:
    if not raw:
        return []
    pattern = "[" + re.escape(separators) + "]+"
    return [s for s in re.split(pattern, raw) if s]


def redirect_to(uri: str, params: Mapping[str, str]) -> web.HTTPFound:
    url = URL(uri)
    return web.HTTPFound(str(url.update_query(dict(params))))


def _state_params(pending: PendingAuthorization) -> dict[str, str]:
    return {"state": pending.state} if pending.state is not None else {}


def _valid_redirect(uri: str, registered: tuple[str, ...]) -> bool:
    if registered:
        return uri in registered
    try:
        url = URL(uri)
    except ValueError:
        return False
    return url.scheme in {"http", "https"} and bool(url.host) and not url.fragment


async def authorize_get(platform: Platform, request: web.Request) -> web.StreamResponse:
    profile = platform.oauth
    state = platform.state(request)
    query = request.query
    client_id = query.get(profile.client_id_param)
    if not client_id or client_id != platform.app.client_id:
        return error_page(
            platform, f"Invalid {profile.client_id_param}: this app is not registered."
        )
    redirect_uri = query.get("redirect_uri", "")
    if not redirect_uri or not _valid_redirect(
        redirect_uri, platform.settings.registered_redirect_uris
    ):
        return error_page(
            platform,
            "redirect_uri_mismatch: the redirect_uri is not whitelisted for this app.",
        )
    pending_state = query.get("state")
    base = {"state": pending_state} if pending_state is not None else {}
    response_type = query.get("response_type")
    if response_type != "code" and (profile.requires_response_type or response_type):
        raise redirect_to(
            redirect_uri,
            {
                "error": "unsupported_response_type",
                "error_description": "response_type must be code",
                **base,
            },
        )
    scopes = split_scopes(query.get("scope"), profile.scope_separator) or list(
        profile.default_scopes
    )
    unknown = [s for s in scopes if s not in profile.scopes]
    if unknown:
        message = f"Invalid scopes: {', '.join(unknown)}"
        if profile.invalid_scope_error:
            raise redirect_to(
                redirect_uri,
                {"error": profile.invalid_scope_error, "error_description": message, **base},
            )
        return error_page(platform, message)
    challenge = query.get("code_challenge") if profile.pkce != "none" else None
    method = None
    if challenge:
        method = query.get("code_challenge_method") or "plain"
        if method not in profile.pkce_methods:
            raise redirect_to(
                redirect_uri,
                {
                    "error": "invalid_request",
                    "error_description": f"code_challenge_method {method} is not supported",
                    **base,
                },
            )
    pending = PendingAuthorization(
        id=secrets.token_urlsafe(16),
        platform=platform.name,
        client_id=client_id,
        redirect_uri=redirect_uri,
        scopes=tuple(dict.fromkeys(scopes)),
        state=pending_state,
        code_challenge=challenge,
        code_challenge_method=method,
        created_at=state.clock.now(),
        params={k: v for k, v in query.items()},
    )
    directive = state.oauth.next_directive(platform.name)
    if directive is not None:
        logger.info("authorize on %s decided by a consent directive", platform.name)
        return decide(
            platform,
            request,
            pending,
            approve=not directive.deny,
            subject=directive.account,
            scopes=directive.scopes,
        )
    if platform.settings.auto_approve:
        return decide(platform, request, pending, approve=True, subject=None, scopes=None)
    state.oauth.remember(pending)
    return consent_page(platform, request, pending)


async def authorize_post(platform: Platform, request: web.Request) -> web.StreamResponse:
    form = await request.post()
    state = platform.state(request)
    pending_id = form.get("pending_id")
    pending = state.oauth.pop_pending(pending_id if isinstance(pending_id, str) else "")
    if pending is None:
        return error_page(
            platform, "This authorization request has expired or was already answered."
        )
    subject = form.get("subject")
    granted = [v for v in form.getall("scope", []) if isinstance(v, str)]
    return decide(
        platform,
        request,
        pending,
        approve=form.get("decision") == "approve",
        subject=subject if isinstance(subject, str) else None,
        scopes=tuple(granted) if platform.oauth.partial_grants else None,
    )


def decide(
    platform: Platform,
    request: web.Request,
    pending: PendingAuthorization,
    *,
    approve: bool,
    subject: str | None,
    scopes: Iterable[str] | None,
) -> web.StreamResponse:
    state = platform.state(request)
    if not approve:
        raise redirect_to(
            pending.redirect_uri, {**platform.oauth.deny_params, **_state_params(pending)}
        )
    people = state.directories[platform.name]
    assert isinstance(people, Directory)
    known = [p.id for p in people.people()]
    if not known:
        return error_page(platform, "No account is seeded to log in with.")
    who = subject or known[0]
    if who not in known:
        return error_page(platform, f"Unknown account {who!r}.")
    if scopes is None:
        granted = pending.scopes
    else:
        wanted = set(scopes)
        granted = tuple(s for s in pending.scopes if s in wanted)
    code = state.oauth.issue_code(pending, who, granted, prefix=platform.oauth.code_prefix)
    params = {"code": code.code, **_state_params(pending)}
    params.update(platform.authorize_redirect_params(pending, code))
    raise redirect_to(pending.redirect_uri, params)


def consent_page(
    platform: Platform, request: web.Request, pending: PendingAuthorization
) -> web.Response:
    profile = platform.oauth
    people = platform.state(request).directories[platform.name]
    assert isinstance(people, Directory)
    name = html.escape(profile.display_name or platform.name)
    options = "".join(
        f'<option value="{html.escape(p.id)}">{html.escape(p.label)}</option>'
        for p in people.people()
    )
    rows = []
    for scope in pending.scopes:
        described = html.escape(profile.scopes.get(scope, scope))
        code = html.escape(scope)
        if profile.partial_grants:
            rows.append(
                f'<label><input type="checkbox" name="scope" value="{code}" checked> '
                f"<code>{code}</code> — {described}</label>"
            )
        else:
            rows.append(f"<li><code>{code}</code> — {described}</li>")
    scopes_html = "".join(rows) if profile.partial_grants else "<ul>" + "".join(rows) + "</ul>"
    note = (
        '<p class="muted">You can untick permissions you do not want to grant.</p>'
        if profile.partial_grants
        else '<p class="muted">This platform grants all requested permissions or none.</p>'
    )
    body = f"""<h1>{name} (sandbox)</h1>
<p><strong>{html.escape(pending.client_id)}</strong> wants to access your account.</p>
<form method="post" action="{html.escape(request.path)}">
<input type="hidden" name="pending_id" value="{html.escape(pending.id)}">
<label>Log in as <select name="subject">{options}</select></label>
<h2 style="font-size:1rem">Requested permissions</h2>
{scopes_html}
{note}
<p class="muted">You will be sent back to {html.escape(pending.redirect_uri)}</p>
<div class="actions">
<button class="approve" type="submit" name="decision" value="approve">Approve</button>
<button type="submit" name="decision" value="deny">Deny</button>
</div>
</form>"""
    return _page(f"{name}: authorize", body)
