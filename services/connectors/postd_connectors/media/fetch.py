"""Fetching media from user-given URLs without becoming an SSRF proxy.

Rules, in order: http(s) only (https outside development), no credentials in the
URL; the host is resolved once and every address must be public (no loopback,
private, link-local — 169.254.169.254 included —, shared, multicast, reserved or
unspecified ranges, also when wrapped in IPv6); the connection then goes to exactly
the addresses that were checked (a pinned resolver), so a DNS answer cannot change
between the check and the connect. Redirects are followed by hand, each hop checked
again. Size and time are capped. In development an explicit list of origins (the
sandbox, a test server) may be exempted from the address check; nothing else.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from postd_common.logging import get_logger
from postd_connectors.domain.model import ErrorAction, ErrorCategory, PlatformError, PlatformFailure

log = get_logger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class MediaRefused(Exception):
    """The URL may not or could not be fetched. ``reason`` is for people; ``code`` is
    stable (url_refused, too_large, unreachable, bad_status)."""

    def __init__(self, reason: str, code: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


def address_refusal(ip: IPAddress) -> str | None:
    """Why POSTD will not connect to ``ip``, or None when it is a public address."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return address_refusal(ip.ipv4_mapped)
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address (such as cloud metadata services)"
    if ip.is_private:
        return "a private network address"
    if ip.is_multicast or ip.is_reserved or ip.is_unspecified:
        return "a reserved address"
    if not ip.is_global:
        return "a non-public address"
    return None


def _origin(url: URL) -> str:
    port = url.explicit_port or url.port
    return f"{url.scheme}://{(url.host or '').lower()}:{port}"


def normalise_origins(origins: Iterable[str]) -> frozenset[str]:
    found = set()
    for raw in origins:
        url = URL(raw)
        if url.scheme and url.host:
            found.add(_origin(url))
    return frozenset(found)


class _PinnedResolver(AbstractResolver):
    """Answers only for the checked host, with only the checked addresses."""

    def __init__(self, host: str, addresses: list[IPAddress]) -> None:
        self._host = host
        self._addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host != self._host:
            raise OSError(f"unexpected host {host!r}")
        return [
            ResolveResult(
                hostname=host,
                host=str(ip),
                port=port,
                family=socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for ip in self._addresses
        ]

    async def close(self) -> None:
        return None


@dataclass(frozen=True)
class FetchedMedia:
    data: bytes
    content_type: str
    final_url: str


class GuardedFetcher:
    """Downloads user media safely. Blocks for the download; raises MediaRefused."""

    def __init__(
        self,
        *,
        timeout: float = 60.0,
        allowed_origins: Iterable[str] = (),
        allow_http: bool = False,
        max_redirects: int = 3,
    ) -> None:
        self._timeout = timeout
        self._allowed = normalise_origins(allowed_origins)
        self._allow_http = allow_http
        self._max_redirects = max_redirects

    async def _checked_addresses(self, url: URL) -> list[IPAddress] | None:
        """The addresses to connect to; None for an exempted development origin."""
        if _origin(url) in self._allowed:
            return None
        host = url.host or ""
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [literal]
        else:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, url.port, type=socket.SOCK_STREAM
                )
            except OSError as exc:
                raise MediaRefused(
                    f"The media host {host} could not be found.", "unreachable"
                ) from exc
            addresses = []
            for info in infos:
                ip = ipaddress.ip_address(info[4][0])
                if ip not in addresses:
                    addresses.append(ip)
        for ip in addresses:
            why = address_refusal(ip)
            if why is not None:
                raise MediaRefused(
                    f"POSTD does not fetch media from {host}: it points to {why}.", "url_refused"
                )
        if not addresses:
            raise MediaRefused(f"The media host {host} has no address.", "unreachable")
        return addresses

    def _check_url(self, raw: str | URL) -> URL:
        try:
            url = URL(raw) if isinstance(raw, str) else raw
        except ValueError as exc:
            raise MediaRefused("The media URL is not a valid URL.", "url_refused") from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise MediaRefused("Media URLs must be http(s) links.", "url_refused")
        if url.user or url.password:
            raise MediaRefused("Media URLs must not carry user names or passwords.", "url_refused")
        if url.scheme == "http" and not self._allow_http and _origin(url) not in self._allowed:
            raise MediaRefused("Media URLs must use https.", "url_refused")
        return url

    async def fetch(self, raw_url: str, *, max_bytes: int) -> FetchedMedia:
        url = self._check_url(raw_url)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        for _ in range(self._max_redirects + 1):
            addresses = await self._checked_addresses(url)
            remaining = max(1.0, deadline - loop.time())
            connector: aiohttp.BaseConnector
            if addresses is None:
                connector = aiohttp.TCPConnector(use_dns_cache=False)
            else:
                connector = aiohttp.TCPConnector(
                    resolver=_PinnedResolver(url.host or "", addresses), use_dns_cache=False
                )
            try:
                async with (
                    aiohttp.ClientSession(
                        connector=connector, timeout=aiohttp.ClientTimeout(total=remaining)
                    ) as session,
                    session.get(url, allow_redirects=False) as resp,
                ):
                    if resp.status in (301, 302, 303, 307, 308):
                        location = resp.headers.get("Location", "")
                        if not location:
                            raise MediaRefused("The media URL redirects nowhere.", "bad_status")
                        url = self._check_url(url.join(URL(location)))
                        continue
                    if resp.status != 200:
                        raise MediaRefused(
                            f"The media URL answered HTTP {resp.status} instead of the file.",
                            "bad_status",
                        )
                    declared = resp.content_length
                    if declared is not None and declared > max_bytes:
                        raise MediaRefused(_too_large(max_bytes), "too_large")
                    data = bytearray()
                    async for chunk in resp.content.iter_chunked(256 * 1024):
                        data += chunk
                        if len(data) > max_bytes:
                            raise MediaRefused(_too_large(max_bytes), "too_large")
                    return FetchedMedia(bytes(data), resp.headers.get("Content-Type", ""), str(url))
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                log.info("media fetch failed", host=url.host, error=type(exc).__name__)
                raise MediaRefused(
                    f"The media at {url.host} could not be downloaded in time.", "unreachable"
                ) from exc
        raise MediaRefused("The media URL redirects too many times.", "bad_status")

    async def read(self, url: str, *, max_bytes: int) -> tuple[bytes, str]:
        """MediaSource for connectors: refusals become CONTENT_REJECTED failures."""
        try:
            fetched = await self.fetch(url, max_bytes=max_bytes)
        except MediaRefused as refused:
            retryable = refused.code == "unreachable"
            raise PlatformFailure(
                PlatformError(
                    category=ErrorCategory.TRANSIENT
                    if retryable
                    else ErrorCategory.CONTENT_REJECTED,
                    platform="media",
                    message=refused.reason,
                    action=ErrorAction.RETRY if retryable else ErrorAction.EDIT_CONTENT,
                    retryable=retryable,
                )
            ) from None
        return fetched.data, fetched.content_type


def _too_large(limit: int) -> str:
    return f"The media file is larger than the {limit // (1024 * 1024)} MB POSTD accepts."
