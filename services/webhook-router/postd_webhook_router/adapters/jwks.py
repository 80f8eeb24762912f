"""KeySource: a JWKS fetched over HTTP and cached for a TTL.

An unknown ``kid`` triggers one refresh (keys rotate), at most once per
``min_refresh_seconds`` so forged tokens cannot make us hammer the URL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import aiohttp

from postd_webhook_router.ports import KeySourceUnavailable


class HttpJwks:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        ttl_seconds: float,
        min_refresh_seconds: float = 30.0,
    ) -> None:
        self._session = session
        self._url = url
        self._ttl = ttl_seconds
        self._min_refresh = min_refresh_seconds
        self._keys: dict[str, Mapping[str, Any]] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> Mapping[str, Any] | None:
        now = time.monotonic()
        if now - self._fetched_at > self._ttl or (
            kid not in self._keys and now - self._fetched_at > self._min_refresh
        ):
            await self._refresh(now)
        return self._keys.get(kid)

    async def _refresh(self, started: float) -> None:
        async with self._lock:
            if self._fetched_at >= started:
                return  # another caller refreshed meanwhile
            try:
                async with self._session.get(
                    self._url, timeout=aiohttp.ClientTimeout(total=5)
                ) as response:
                    response.raise_for_status()
                    document = await response.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                if self._keys and time.monotonic() - self._fetched_at < 4 * self._ttl:
                    return  # serve the cached keys through a short outage
                raise KeySourceUnavailable(f"cannot fetch JWKS: {type(exc).__name__}") from exc
            self._keys = {
                str(k["kid"]): k
                for k in document.get("keys", [])
                if isinstance(k, dict) and "kid" in k
            }
            self._fetched_at = time.monotonic()
