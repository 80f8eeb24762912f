"""DeliverySender over aiohttp, refusing non-public addresses at connect time.

The resolver wraps aiohttp's and drops every address that fails the SSRF check, so
the address connected to is the one checked (no DNS-rebinding window). Redirects are
not followed.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from postd_webhook_router.domain.ssrf import address_problem
from postd_webhook_router.ports import SendResult


class PublicOnlyResolver(AbstractResolver):
    def __init__(self, allow_loopback: bool) -> None:
        self._inner = aiohttp.ThreadedResolver()
        self._allow_loopback = allow_loopback

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [
            r
            for r in results
            if address_problem(r["host"], allow_loopback=self._allow_loopback) is None
        ]
        if not allowed:
            raise OSError(f"{host} resolves to no public address")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


class SystemAddressResolver:
    """AddressResolver over the system resolver (getaddrinfo in a thread)."""

    async def addresses(self, host: str) -> list[str]:
        import asyncio

        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None)
        except socket.gaierror:
            return []
        return sorted({str(info[4][0]) for info in infos})


def public_session(allow_loopback: bool, timeout: float) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        resolver=PublicOnlyResolver(allow_loopback), limit=100, ttl_dns_cache=0
    )
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout))


class HttpDeliverySender:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def send(self, url: str, headers: Mapping[str, str], body: bytes) -> SendResult:
        started = time.perf_counter()
        try:
            async with self._session.post(
                url, data=body, headers=dict(headers), allow_redirects=False
            ) as response:
                await response.read()
                status = response.status
        except TimeoutError:
            return SendResult(0, "timed out", time.perf_counter() - started)
        except (aiohttp.ClientError, OSError) as exc:
            return SendResult(0, _plain(exc), time.perf_counter() - started)
        elapsed = time.perf_counter() - started
        if 200 <= status < 300:
            return SendResult(status, "", elapsed)
        return SendResult(status, f"the endpoint answered HTTP {status}", elapsed)


def _plain(exc: Any) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"could not connect: {exc.os_error.strerror or type(exc.os_error).__name__}"
    return f"request failed: {type(exc).__name__}"
