"""Shopify: signed webhooks only (the product tags posts with products; no Admin API
is needed from the sandbox yet).

Doc facts relied on (shopify.dev, webhooks over HTTPS):
- Headers: `X-Shopify-Topic`, `X-Shopify-Hmac-Sha256` (base64 HMAC-SHA256 of the raw
  body with the app's client secret), `X-Shopify-Shop-Domain`,
  `X-Shopify-API-Version`, `X-Shopify-Webhook-Id`, `X-Shopify-Event-Id` (the same
  for every retry of one event: dedupe on it), `X-Shopify-Triggered-At`.
- Shopify waits 5 s for a 2xx and retries 8 times over 4 hours.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from aiohttp import web

from postd_sandbox import errors, signing
from postd_sandbox.clock import IdSource
from postd_sandbox.errors import ApiError, ErrorSpec
from postd_sandbox.oauth import OAuthProfile
from postd_sandbox.platforms.base import Directory, Person, Platform, SeedError, WebhookDelivery
from postd_sandbox.state import SandboxState

NAME = "shopify"
API_VERSION = "2025-10"

# Sandbox event names -> Shopify topics (a name containing "/" is used as is).
TOPICS: Mapping[str, str] = {
    "deauthorize": "app/uninstalled",
    "app_uninstalled": "app/uninstalled",
    "product_create": "products/create",
    "product_update": "products/update",
    "order_create": "orders/create",
    "shop_redact": "shop/redact",
    "customers_redact": "customers/redact",
}

ERRORS: Mapping[str, ErrorSpec] = {
    errors.INVALID_TOKEN: ErrorSpec(
        401,
        {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"},
    ),
    errors.EXPIRED_TOKEN: ErrorSpec(401, {"errors": "[API] Access token expired"}),
    errors.REVOKED_TOKEN: ErrorSpec(401, {"errors": "[API] Invalid API key or access token"}),
    errors.PERMISSION: ErrorSpec(
        403, {"errors": "[API] This action requires merchant approval for {scope} scope."}
    ),
    errors.RATE_LIMIT: ErrorSpec(
        429,
        {
            "errors": "Exceeded 2 calls per second for api client. Reduce request rates to "
            "resume uninterrupted service."
        },
    ),
    errors.SERVER_ERROR: ErrorSpec(500, {"errors": "Internal Server Error"}),
    errors.OUTAGE: ErrorSpec(503, {"errors": "Unavailable Shop"}),
    errors.TIMEOUT: ErrorSpec(504, {"errors": "Gateway Timeout"}),
    errors.NOT_FOUND: ErrorSpec(404, {"errors": "Not Found"}),
    errors.INVALID_PARAM: ErrorSpec(400, {"errors": "{detail}"}),
}


class ShopifyDirectory(Directory):
    def __init__(self) -> None:
        self.shops: dict[str, str] = {"sandbox-coffee.myshopify.com": "Sandbox Coffee Co"}

    def people(self) -> list[Person]:
        return [Person(domain, name) for domain, name in self.shops.items()]

    def seed(self, payload: Mapping[str, Any], ids: IdSource) -> dict[str, Any]:
        created = []
        for shop in payload.get("shops", []):
            if not isinstance(shop, dict) or not isinstance(shop.get("domain"), str):
                raise SeedError("each shop needs a domain")
            self.shops[shop["domain"]] = str(shop.get("name") or shop["domain"])
            created.append(shop["domain"])
        return {"shops": created}

    def to_json(self) -> dict[str, Any]:
        return {"shops": [{"domain": d, "name": n} for d, n in self.shops.items()]}


class ShopifyPlatform(Platform):
    name: ClassVar[str] = NAME
    prefix: ClassVar[str] = "/shopify"
    oauth: ClassVar[OAuthProfile] = OAuthProfile(authorize_path="", display_name="Shopify")
    errors: ClassVar[Mapping[str, ErrorSpec]] = ERRORS
    signature_header: ClassVar[str | None] = "X-Shopify-Hmac-Sha256"

    def new_directory(self, ids: IdSource) -> ShopifyDirectory:
        return ShopifyDirectory()

    def routes(self) -> list[web.RouteDef]:
        return []

    def error_body(self, spec: ErrorSpec, err: ApiError, request: web.Request) -> Any:
        return errors.fill(dict(spec.fields), err.params)

    def webhook(
        self,
        state: SandboxState,
        event: str,
        account: str,
        payload: Any | None,
        timestamp: int,
        audience: str,
    ) -> WebhookDelivery:
        topic = event if "/" in event else TOPICS.get(event)
        if topic is None:
            raise ValueError(f"shopify events: {', '.join(TOPICS)} or a topic like orders/paid")
        shop = account or next(iter(state.directory(NAME, ShopifyDirectory).shops))
        if payload is None:
            if topic == "app/uninstalled":
                payload = {
                    "id": state.ids.next_int(),
                    "name": shop,
                    "domain": shop,
                    "myshopify_domain": shop,
                }
            elif topic.startswith("products/"):
                payload = {
                    "id": state.ids.next_int(),
                    "title": "Sandbox Espresso Beans",
                    "handle": "sandbox-espresso-beans",
                    "status": "active",
                    "admin_graphql_api_id": f"gid://shopify/Product/{state.ids.next_int()}",
                }
            else:
                payload = {"id": state.ids.next_int(), "shop_domain": shop}
        body = signing.canonical_json(payload)
        triggered = datetime.fromtimestamp(timestamp, UTC).isoformat()
        return WebhookDelivery(
            body=body,
            headers={
                "Content-Type": "application/json",
                "X-Shopify-Topic": topic,
                "X-Shopify-Hmac-Sha256": signing.shopify_hmac(self.app.client_secret, body),
                "X-Shopify-Shop-Domain": shop,
                "X-Shopify-API-Version": API_VERSION,
                "X-Shopify-Webhook-Id": str(uuid.uuid4()),
                "X-Shopify-Event-Id": str(uuid.uuid4()),
                "X-Shopify-Triggered-At": triggered,
            },
        )
