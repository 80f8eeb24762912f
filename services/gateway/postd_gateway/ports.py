"""What the HTTP handlers are given: stores, backends and the security machinery.

Built once by the app factory (``app.py``) and handed to every request; nothing here
is global.
"""

from __future__ import annotations

from dataclasses import dataclass

from postd_gateway.adapters.postgres import (
    FlagStore,
    IdempotencyStore,
    SessionStore,
    TenantStore,
)
from postd_gateway.auth import Authenticator
from postd_gateway.backends import Backends
from postd_gateway.config import Settings
from postd_gateway.ratelimit import RateLimiter


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
