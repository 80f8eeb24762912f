"""Platform payloads → :class:`NormalizedItem` in POSTD's words.

Mappings from a platform's event names to normalized types are data (one table per
platform); an event this version does not know keeps the type
``<platform>.<platform's name>``. Raises :class:`MalformedPayload` for a body that
cannot be read at all (it can never succeed, so it is dead-lettered at once).
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from postd_webhook_router.domain.model import InboundSource, NormalizedItem

DEAUTHORIZED = "connection.deauthorized"
PERMISSIONS_CHANGED = "connection.permissions_changed"
POST_PUBLISHED = "post.published"
POST_FAILED = "post.failed"
COMMENT_CREATED = "comment.created"
REVIEW_CREATED = "review.created"
MESSAGE_RECEIVED = "message.received"

TIKTOK_TYPES: Mapping[str, str] = {
    "authorization.removed": DEAUTHORIZED,
    "video.publish.completed": POST_PUBLISHED,
    "post.publish.complete": POST_PUBLISHED,
    "post.publish.publicly_available": POST_PUBLISHED,
    "video.upload.failed": POST_FAILED,
    "post.publish.failed": POST_FAILED,
}
LINKEDIN_ACTIONS: Mapping[str, str] = {
    "COMMENT": COMMENT_CREATED,
    "LIKE": "reaction.created",
    "SHARE_MENTION": "mention.created",
    "COMMENT_MENTION": "mention.created",
}
SHOPIFY_TOPICS: Mapping[str, str] = {
    "app/uninstalled": DEAUTHORIZED,
    "products/create": "product.created",
    "products/update": "product.updated",
    "products/delete": "product.deleted",
    "orders/create": "order.created",
}
SLACK_EVENTS: Mapping[str, str] = {
    "app_uninstalled": DEAUTHORIZED,
    "tokens_revoked": DEAUTHORIZED,
    "message": MESSAGE_RECEIVED,
    "app_mention": "mention.created",
}
MAILCHIMP_TYPES: Mapping[str, str] = {
    "subscribe": "audience.subscribed",
    "unsubscribe": "audience.unsubscribed",
    "cleaned": "audience.cleaned",
    "upemail": "audience.email_changed",
    "profile": "audience.profile_updated",
    "campaign": "campaign.sent",
}
GOOGLE_TYPES: Mapping[str, str] = {
    "NEW_REVIEW": REVIEW_CREATED,
    "UPDATED_REVIEW": "review.updated",
    "NEW_QUESTION": "question.created",
    "NEW_ANSWER": "answer.created",
    "VOICE_OF_MERCHANT_UPDATED": PERMISSIONS_CHANGED,
}
# Meta page feed changes: (item, verb) → type.
META_FEED: Mapping[tuple[str, str], str] = {
    ("comment", "add"): COMMENT_CREATED,
    ("status", "add"): POST_PUBLISHED,
    ("post", "add"): POST_PUBLISHED,
    ("photo", "add"): POST_PUBLISHED,
    ("video", "add"): POST_PUBLISHED,
    ("share", "add"): POST_PUBLISHED,
}
META_FIELDS: Mapping[str, str] = {
    "comments": COMMENT_CREATED,
    "mentions": "mention.created",
    "messages": MESSAGE_RECEIVED,
}


class MalformedPayload(ValueError):
    """The body cannot be read as the platform's payload."""


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise MalformedPayload("body is not JSON") from exc


def _object(body: bytes) -> dict[str, Any]:
    document = _json(body)
    if not isinstance(document, dict):
        raise MalformedPayload("body is not a JSON object")
    return document


def _form(body: bytes) -> dict[str, str]:
    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=True))
    except UnicodeDecodeError as exc:
        raise MalformedPayload("form body is not UTF-8") from exc


def _when(value: Any, *, millis: bool = False) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        try:
            return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    return datetime.fromtimestamp(number / 1000 if millis else number, UTC)


def _header(headers: Sequence[tuple[str, str]], name: str) -> str:
    for key, value in headers:
        if key.lower() == name.lower():
            return value
    return ""


def _meta(platform: str, body: bytes, headers: Sequence[tuple[str, str]]) -> list[NormalizedItem]:
    if _header(headers, "content-type").lower().startswith("application/x-www-form-urlencoded"):
        signed = _form(body).get("signed_request", "")
        encoded = signed.partition(".")[2]
        try:
            payload = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
        except ValueError as exc:
            raise MalformedPayload("signed_request payload is not JSON") from exc
        account = str(payload.get("profile_id") or payload.get("user_id") or "")
        name = "facebook" if platform == "meta" else platform
        return [
            NormalizedItem(DEAUTHORIZED, name, account, payload, _when(payload.get("issued_at")))
        ]
    document = _object(body)
    obj = str(document.get("object", ""))
    name = {"instagram": "instagram", "page": "facebook", "user": "facebook"}.get(obj, platform)
    items: list[NormalizedItem] = []
    for entry in document.get("entry") or []:
        if not isinstance(entry, dict):
            continue
        account = str(entry.get("id") or entry.get("uid") or "")
        when = _when(entry.get("time"))
        if "permissions" in (entry.get("changed_fields") or []):
            items.append(NormalizedItem(PERMISSIONS_CHANGED, name, account, entry, when))
        for change in entry.get("changes") or []:
            field = str(change.get("field", ""))
            value = change.get("value") or {}
            if field == "feed":
                key = (str(value.get("item", "")), str(value.get("verb", "")))
                kind = META_FEED.get(key, f"{name}.feed.{key[0]}.{key[1]}")
            else:
                kind = META_FIELDS.get(field, f"{name}.{field}")
            items.append(NormalizedItem(kind, name, account, change, when))
        for message in entry.get("messaging") or []:
            items.append(NormalizedItem(MESSAGE_RECEIVED, name, account, message, when))
    if not items:
        items.append(NormalizedItem(f"{name}.{obj or 'unknown'}", name, "", document))
    return items


def _tiktok(body: bytes) -> list[NormalizedItem]:
    document = _object(body)
    event = str(document.get("event", ""))
    payload = dict(document)
    content = document.get("content")
    if isinstance(content, str):
        with contextlib.suppress(ValueError):
            payload["content"] = json.loads(content)
    return [
        NormalizedItem(
            TIKTOK_TYPES.get(event, f"tiktok.{event}"),
            "tiktok",
            str(document.get("user_openid", "")),
            payload,
            _when(document.get("create_time")),
        )
    ]


def _linkedin(body: bytes) -> list[NormalizedItem]:
    document = _object(body)
    items = []
    for note in document.get("notifications") or []:
        action = str(note.get("action", ""))
        items.append(
            NormalizedItem(
                LINKEDIN_ACTIONS.get(action, f"linkedin.{action.lower()}"),
                "linkedin",
                str(note.get("organizationalEntity", "")),
                note,
                _when(note.get("lastModifiedAt"), millis=True),
                str(note.get("notificationId", "")),
            )
        )
    if not items:
        kind = str(document.get("type", "unknown")).lower()
        items.append(NormalizedItem(f"linkedin.{kind}", "linkedin", "", document))
    return items


def _shopify(body: bytes, headers: Sequence[tuple[str, str]]) -> list[NormalizedItem]:
    document = _object(body)
    topic = _header(headers, "X-Shopify-Topic")
    return [
        NormalizedItem(
            SHOPIFY_TOPICS.get(topic, f"shopify.{topic}"),
            "shopify",
            _header(headers, "X-Shopify-Shop-Domain"),
            document,
            _when(_header(headers, "X-Shopify-Triggered-At") or None),
            _header(headers, "X-Shopify-Event-Id"),
        )
    ]


def _slack(body: bytes, headers: Sequence[tuple[str, str]]) -> list[NormalizedItem]:
    if _header(headers, "content-type").lower().startswith("application/x-www-form-urlencoded"):
        raw = _form(body).get("payload", "")
        action = _object(raw.encode())
        team = action.get("team") or {}
        kind = str(action.get("type", "interaction"))
        return [NormalizedItem(f"slack.{kind}", "slack", str(team.get("id", "")), action)]
    document = _object(body)
    inner = document.get("event") or {}
    event = str(inner.get("type", document.get("type", "")))
    return [
        NormalizedItem(
            SLACK_EVENTS.get(event, f"slack.{event}"),
            "slack",
            str(document.get("team_id", "")),
            document,
            _when(document.get("event_time")),
            str(document.get("event_id", "")),
        )
    ]


def _mailchimp(body: bytes) -> list[NormalizedItem]:
    form = _form(body)
    if "type" not in form:
        raise MalformedPayload("Mailchimp body has no type")
    data: dict[str, Any] = {}
    for key, value in form.items():
        if key.startswith("data[") and key.endswith("]"):
            # data[merges][FNAME] → {"merges": {"FNAME": ...}}
            path = key[5:-1].split("][")
            node = data
            for part in path[:-1]:
                child = node.setdefault(part, {})
                node = child if isinstance(child, dict) else {}
            node[path[-1]] = value
    kind = form["type"]
    return [
        NormalizedItem(
            MAILCHIMP_TYPES.get(kind, f"mailchimp.{kind}"),
            "mailchimp",
            str(data.get("list_id", "")),
            {"type": kind, "fired_at": form.get("fired_at", ""), "data": data},
            _when(form.get("fired_at", "").replace(" ", "T") + "+00:00")
            if form.get("fired_at")
            else None,
        )
    ]


def _google(body: bytes) -> list[NormalizedItem]:
    envelope = _object(body)
    message = envelope.get("message") or {}
    try:
        data = json.loads(base64.b64decode(message.get("data", "")))
    except ValueError as exc:
        raise MalformedPayload("Pub/Sub message data is not base64 JSON") from exc
    if not isinstance(data, dict):
        raise MalformedPayload("Pub/Sub message data is not a JSON object")
    kind = str(data.get("type") or data.get("notificationType") or "")
    location = str(data.get("location") or data.get("locationName") or "")
    return [
        NormalizedItem(
            GOOGLE_TYPES.get(kind, f"google_business.{kind.lower()}"),
            "google_business",
            location,
            {"notification": data, "attributes": message.get("attributes") or {}},
            _when(message.get("publishTime") or message.get("publish_time")),
            str(message.get("messageId") or message.get("message_id") or ""),
        )
    ]


def _standard(body: bytes, headers: Sequence[tuple[str, str]]) -> list[NormalizedItem]:
    document = _object(body)
    kind = str(document.get("type", "")) or "custom.event"
    return [
        NormalizedItem(
            kind,
            "custom",
            "",
            document,
            _when(document.get("timestamp")),
            _header(headers, "webhook-id"),
        )
    ]


_NORMALIZERS: Mapping[
    str, Callable[[str, bytes, Sequence[tuple[str, str]]], list[NormalizedItem]]
] = {
    "facebook": _meta,
    "instagram": _meta,
    "meta": _meta,
    "tiktok": lambda p, b, h: _tiktok(b),
    "linkedin": lambda p, b, h: _linkedin(b),
    "shopify": lambda p, b, h: _shopify(b, h),
    "slack": lambda p, b, h: _slack(b, h),
    "mailchimp": lambda p, b, h: _mailchimp(b),
    "google": lambda p, b, h: _google(b),
    "google_business": lambda p, b, h: _google(b),
    "custom": lambda p, b, h: _standard(b, h),
    "standard_webhooks": lambda p, b, h: _standard(b, h),
}


def normalize(
    platform: str,
    body: bytes,
    headers: Sequence[tuple[str, str]],
    source: InboundSource | None = None,
) -> list[NormalizedItem]:
    """The events one stored delivery holds (at least one)."""
    normalizer = _NORMALIZERS.get(platform)
    if normalizer is None:
        raise MalformedPayload(f"no normalizer for platform {platform!r}")
    items = normalizer(platform, body, headers)
    if source is not None and not items[0].external_account_id:
        items = [
            NormalizedItem(
                i.type,
                i.platform,
                i.external_account_id or source.connection_id,
                i.payload,
                i.occurred_at,
                i.platform_event_id,
            )
            for i in items
        ]
    return items
