"""Helpers for tests that drive the sandbox over HTTP (its own and the product's).

`client` is anything with aiohttp-client-like `get`/`post` coroutines returning
responses (aiohttp's TestClient, or a ClientSession bound to the sandbox URL).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

REDIRECT_URI = "https://app.postd.test/oauth/callback"


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    return verifier, challenge


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def authorize(client: Any, path: str, params: dict[str, str]) -> Any:
    return await client.get(path, params=params, allow_redirects=False)


async def consent_via_page(
    client: Any,
    path: str,
    params: dict[str, str],
    *,
    decision: str = "approve",
    scopes: list[str] | None = None,
    subject: str | None = None,
) -> dict[str, str]:
    """Load the HTML consent page, submit the form as a person would, return the
    redirect's query parameters."""
    page = await authorize(client, path, params)
    assert page.status == 200, await page.text()
    html = await page.text()
    assert "<form" in html
    assert "Approve" in html
    assert "Deny" in html
    pending = re.search(r'name="pending_id" value="([^"]+)"', html)
    assert pending is not None
    options = re.findall(r'<option value="([^"]+)"', html)
    form: list[tuple[str, str]] = [
        ("pending_id", pending.group(1)),
        ("decision", decision),
        ("subject", subject or options[0]),
    ]
    offered = re.findall(r'name="scope" value="([^"]+)"', html)
    for scope in offered if scopes is None else scopes:
        form.append(("scope", scope))
    action = urlsplit(str(page.url)).path
    resp = await client.post(action, data=form, allow_redirects=False)
    assert resp.status == 302, await resp.text()
    return query_of(resp.headers["Location"])


async def set_consent(client: Any, **directive: Any) -> None:
    resp = await client.post("/_sandbox/consent", json=directive)
    assert resp.status == 201, await resp.text()


async def add_fault(client: Any, **fault: Any) -> dict[str, Any]:
    resp = await client.post("/_sandbox/faults", json=fault)
    assert resp.status == 201, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def posts(client: Any, **filters: str) -> list[dict[str, Any]]:
    resp = await client.get("/_sandbox/posts", params=filters)
    body = await resp.json()
    found: list[dict[str, Any]] = body["posts"]
    return found
