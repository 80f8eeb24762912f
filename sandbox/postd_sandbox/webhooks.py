"""Building and sending platform webhooks for the control API."""

from __future__ import annotations

import json
import logging
import secrets
import string
from typing import Any

import aiohttp

from postd_sandbox import signing
from postd_sandbox.platforms.base import Handshake, WebhookDelivery
from postd_sandbox.platforms.registry import PlatformRegistry
from postd_sandbox.state import SandboxState

logger = logging.getLogger(__name__)

STANDARD_WEBHOOKS = "standard_webhooks"
TAMPER_KINDS = ("signature", "body", "stale_timestamp")
# How far back a "stale" timestamp is put: beyond every platform's tolerance
# (Slack and Standard Webhooks use 5 minutes) and past a 1-hour OIDC token's expiry.
STALE_SECONDS = 7200


class WebhookRequestError(ValueError):
    """The webhook request cannot be built as asked."""


def standard_webhook(
    secret: str, event: str, account: str, payload: Any | None, timestamp: int
) -> WebhookDelivery:
    msg_id = "msg_" + secrets.token_hex(12)
    body_obj = (
        payload
        if payload is not None
        else {"type": event, "timestamp": timestamp, "data": {"account": account}}
    )
    body = signing.canonical_json(body_obj)
    return WebhookDelivery(
        body=body,
        headers={
            "Content-Type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signing.standard_webhooks_signature(
                secret, msg_id, timestamp, body
            ),
        },
    )


def _flip_last_char(value: str) -> str:
    """Change one significant character near the end (skipping base64 padding)."""
    alphabet = string.ascii_letters + string.digits
    chars = list(value)
    for i in range(len(chars) - 1, -1, -1):
        if chars[i] in alphabet:
            # Flip the second-last significant char when there is one, so base64
            # padding bits cannot hide the change.
            j = i - 1 if i > 0 and chars[i - 1] in alphabet else i
            chars[j] = "A" if chars[j] != "A" else "B"
            return "".join(chars)
    return value + "x"


def build_delivery(
    registry: PlatformRegistry,
    state: SandboxState,
    *,
    platform_name: str,
    event: str,
    account: str,
    payload: Any | None,
    tamper: str | None,
    audience: str,
) -> WebhookDelivery:
    if tamper is not None and tamper not in TAMPER_KINDS:
        raise WebhookRequestError(f"tamper must be one of {', '.join(TAMPER_KINDS)}")
    now = int(state.clock.now())
    timestamp = now - STALE_SECONDS if tamper == "stale_timestamp" else now
    if platform_name == STANDARD_WEBHOOKS:
        delivery = standard_webhook(
            state.settings.standard_webhooks_secret, event, account, payload, timestamp
        )
        signature_header: str | None = "webhook-signature"
    else:
        platform = registry.get(platform_name)
        if platform is None:
            known = sorted([*registry.names(), STANDARD_WEBHOOKS])
            raise WebhookRequestError(f"platform must be one of {known}")
        delivery = platform.webhook(state, event, account, payload, timestamp, audience)
        signature_header = platform.signature_header
    if tamper == "signature":
        if signature_header is None or signature_header not in delivery.headers:
            raise WebhookRequestError(f"{platform_name} webhooks carry no signature to tamper")
        delivery.headers[signature_header] = _flip_last_char(delivery.headers[signature_header])
    elif tamper == "body":
        # Same meaning, different bytes: the signature no longer matches.
        delivery.body = delivery.body + b" "
    return delivery


async def send(
    session: aiohttp.ClientSession, url: str, delivery: WebhookDelivery
) -> dict[str, Any]:
    try:
        async with session.request(
            delivery.method, url, data=delivery.body, headers=delivery.headers
        ) as response:
            text = await response.text(errors="replace")
            return {
                "status": response.status,
                "body": text,
                "headers": dict(response.headers),
                "sent": _sent(delivery),
            }
    except (aiohttp.ClientError, TimeoutError) as exc:
        logger.info("webhook delivery to %s failed: %s", url, type(exc).__name__)
        return {"status": None, "error": type(exc).__name__, "sent": _sent(delivery)}


def _sent(delivery: WebhookDelivery) -> dict[str, Any]:
    try:
        body: Any = json.loads(delivery.body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = delivery.body.decode(errors="replace")
    return {"headers": dict(delivery.headers), "body": body, "raw": delivery.body.decode()}


async def handshake(session: aiohttp.ClientSession, url: str, check: Handshake) -> dict[str, Any]:
    """Make a platform's endpoint-verification GET and judge the answer."""
    try:
        async with session.get(url, params=check.params) as response:
            text = await response.text(errors="replace")
    except (aiohttp.ClientError, TimeoutError) as exc:
        return {"ok": False, "status": None, "error": type(exc).__name__}
    if check.expect_json:
        try:
            answered = json.loads(text)
        except json.JSONDecodeError:
            answered = None
        expected = json.loads(check.expected_body)
        ok = isinstance(answered, dict) and all(answered.get(k) == v for k, v in expected.items())
    else:
        ok = text == check.expected_body
    return {
        "ok": ok and response.status == 200,
        "status": response.status,
        "body": text,
        "sent": check.params,
        "expected": check.expected_body,
    }
