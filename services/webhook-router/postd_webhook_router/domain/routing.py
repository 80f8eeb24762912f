"""Which tenant and connection an event belongs to, by the account the platform named."""

from __future__ import annotations

import time
from collections.abc import Callable

from postd_webhook_router.domain.model import InboundSource, Route
from postd_webhook_router.ports import AccountResolver


class CachedResolver:
    """ResolveAccount answers, cached for ``ttl`` seconds (also the empty ones).

    Connection changes arrive on ``connection.events``; :meth:`forget` drops the
    cached answer for that account at once, so the TTL only bounds staleness when an
    event is missed.
    """

    def __init__(
        self,
        resolver: AccountResolver,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 100_000,
    ) -> None:
        self._resolver = resolver
        self._ttl = ttl_seconds
        self._clock = clock
        self._max = max_entries
        self._cache: dict[tuple[str, str], tuple[float, list[Route]]] = {}

    async def resolve(self, platform: str, external_account_id: str) -> list[Route]:
        """Raises ResolverUnavailable (from the port) when nothing is cached."""
        key = (platform, external_account_id)
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        routes = await self._resolver.resolve(platform, external_account_id)
        if len(self._cache) >= self._max:
            self._cache.clear()
        self._cache[key] = (now + self._ttl, routes)
        return routes

    def forget(self, platform: str, external_account_id: str) -> None:
        self._cache.pop((platform, external_account_id), None)


async def routes_for(
    resolver: CachedResolver,
    platform: str,
    external_account_id: str,
    source: InboundSource | None,
) -> list[Route]:
    """A path-keyed source routes itself; others ask connectors (empty: unrouted)."""
    if source is not None:
        return [Route(source.tenant_id, source.connection_id)]
    if not external_account_id:
        return []
    return await resolver.resolve(platform, external_account_id)
