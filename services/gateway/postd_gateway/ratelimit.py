"""Per-tenant rate limits that hold across gateway replicas.

A fixed window per tenant lives in PostgreSQL (one counter row per tenant and window).
Each replica takes a *lease* of several requests at a time with one atomic upsert and
serves them from memory, so the shared row is written once per lease, not once per
request. The window can never be over-spent (leases are capped at the limit); the cost
is that a replica may hold a few unspent requests at the end of a window, which then
count as used: at most ``lease`` per replica per window, by default 2 % of the limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from postd_common.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Lease:
    granted: int  # requests this replica may now serve from memory
    used: int  # the window's count after this lease
    window_start: datetime
    window_end: datetime


class StoreUnavailable(Exception):
    """The shared counter cannot be reached; the limiter fails open for a second."""


class RateLimitPort(Protocol):
    async def lease(self, tenant_id: str, *, want: int, limit: int, window_seconds: int) -> Lease:
        """Atomically take up to ``want`` of the tenant's current window. Awaits the
        database; raises :class:`StoreUnavailable` when it is down."""
        ...


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    window_seconds: int

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
            "RateLimit-Policy": f"{self.limit};w={self.window_seconds}",
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, self.reset_seconds))
        return headers


@dataclass
class _Window:
    end: float  # wall-clock seconds
    held: int  # leased here and not yet spent
    used: int  # the shared count when we last leased
    exhausted: bool


class RateLimiter:
    """Decides per request; never blocks more than one database round trip."""

    def __init__(
        self,
        store: RateLimitPort,
        *,
        window_seconds: int,
        lease_fraction: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._window_seconds = window_seconds
        self._lease_fraction = lease_fraction
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._fail_open_until = 0.0

    def lease_size(self, limit: int) -> int:
        return max(1, min(limit, int(limit * self._lease_fraction)))

    async def check(self, tenant_id: str, limit: int) -> Verdict:
        now = self._clock()
        window = self._windows.get(tenant_id)
        if window is not None and now < window.end and (window.held > 0 or window.exhausted):
            return self._spend(window, limit, now)
        lock = self._locks.setdefault(tenant_id, asyncio.Lock())
        async with lock:
            now = self._clock()
            window = self._windows.get(tenant_id)
            if window is None or now >= window.end or (window.held == 0 and not window.exhausted):
                window = await self._lease(tenant_id, limit, now)
                if window is None:  # the database is unreachable: fail open
                    return Verdict(True, limit, limit, self._window_seconds, self._window_seconds)
            return self._spend(window, limit, now)

    def _spend(self, window: _Window, limit: int, now: float) -> Verdict:
        reset = max(0, int(window.end - now + 0.999))
        if window.held <= 0:
            window.exhausted = True
            return Verdict(False, limit, 0, reset, self._window_seconds)
        window.held -= 1
        remaining = max(0, limit - window.used) + window.held
        return Verdict(True, limit, remaining, reset, self._window_seconds)

    async def _lease(self, tenant_id: str, limit: int, now: float) -> _Window | None:
        if now < self._fail_open_until:
            return None
        try:
            lease = await self._store.lease(
                tenant_id,
                want=self.lease_size(limit),
                limit=limit,
                window_seconds=self._window_seconds,
            )
        except StoreUnavailable as exc:
            self._fail_open_until = now + 1.0
            log.warning("rate limit store unreachable; allowing", error=str(exc))
            return None
        window = _Window(lease.window_end.timestamp(), lease.granted, lease.used, False)
        self._windows[tenant_id] = window
        return window

    def forget_stale(self) -> None:
        """Drop windows that ended (called now and then, bounds memory)."""
        now = self._clock()
        for tenant_id in [t for t, w in self._windows.items() if w.end <= now]:
            self._windows.pop(tenant_id, None)
            lock = self._locks.get(tenant_id)
            if lock is not None and not lock.locked():
                self._locks.pop(tenant_id, None)
