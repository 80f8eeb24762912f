"""Every REST operation of the gateway, grouped by the service that answers it."""

from __future__ import annotations

from postd_gateway.protojson import SchemaRegistry
from postd_gateway.resources import account, analytics, connections, health, posts, webhooks
from postd_gateway.routing import Route


def all_routes(reg: SchemaRegistry) -> list[Route]:
    return [
        *connections.routes(reg),
        *posts.routes(reg),
        *analytics.routes(reg),
        *webhooks.routes(reg),
        *health.routes(reg),
        *account.routes(reg),
    ]
