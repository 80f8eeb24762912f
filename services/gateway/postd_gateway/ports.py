"""What the HTTP handlers are given: stores, backends and the security machinery.

Built once by the app factory (``app.py``) and handed to every request; nothing here
is global.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from postd.webhook_router.v1 import webhook_router_pb2 as wr
from postd_gateway.adapters.postgres import (
    FlagStore,
    IdempotencyStore,
    SessionStore,
    TenantStore,
)
from postd_gateway.auth import Authenticator
from postd_gateway.backends import Backends, rpc
from postd_gateway.config import Settings
from postd_gateway.ratelimit import RateLimiter


class WebhookIngress(Protocol):
    """Hands one raw inbound webhook to the webhook router and returns what to answer
    the platform. Awaits the network for at most ``timeout``; raises
    :class:`~postd_gateway.problems.Problem` (503 when the router cannot store it)."""

    async def ingest(
        self, request: wr.IngestWebhookRequest, *, timeout: float
    ) -> wr.IngestWebhookResponse: ...


class GrpcWebhookIngress:
    """The webhook router's IngestWebhook over gRPC."""

    def __init__(self, backends: Backends) -> None:
        self._backends = backends

    async def ingest(
        self, request: wr.IngestWebhookRequest, *, timeout: float
    ) -> wr.IngestWebhookResponse:
        return await rpc(self._backends.webhooks.IngestWebhook, request, timeout=timeout)


@dataclass(frozen=True)
class Ports:
    settings: Settings
    backends: Backends
    tenants: TenantStore
    sessions: SessionStore
    idempotency: IdempotencyStore
    flags: FlagStore
    authenticator: Authenticator
    limiter: RateLimiter
    webhook_ingress: WebhookIngress
