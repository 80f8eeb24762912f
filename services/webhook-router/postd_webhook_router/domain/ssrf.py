"""Refusing outbound targets inside our network (SSRF): resolve, then check every address.

A URL is allowed only if every address its host resolves to is globally routable:
no private, loopback, link-local (cloud metadata at 169.254.169.254), multicast,
reserved, shared (100.64/10) or unspecified address, IPv4-mapped forms included.
The same check runs again at connect time (see adapters/http_sender.py), so a DNS
answer that changes after registration (rebinding) is refused too.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from postd_common.errors import InvalidArgument
from postd_webhook_router.ports import AddressResolver


def address_problem(address: str, *, allow_loopback: bool = False) -> str | None:
    """Why ``address`` may not be a webhook target, or None when it may."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return None if allow_loopback else "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_private:
        return "a private address"
    if ip.is_multicast or ip.is_reserved or ip.is_unspecified or not ip.is_global:
        return "a non-public address"
    return None


async def check_url(
    url: str,
    resolver: AddressResolver,
    *,
    allow_http: bool,
    allow_loopback: bool,
) -> str:
    """The URL, checked; raises InvalidArgument saying what is wrong."""
    parts = urlsplit(url.strip())
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        raise InvalidArgument("the endpoint URL must use https", field="url")
    if parts.username or parts.password:
        raise InvalidArgument("the endpoint URL must not carry credentials", field="url")
    host = parts.hostname
    if not host:
        raise InvalidArgument("the endpoint URL has no host", field="url")
    try:
        _ = parts.port
    except ValueError as exc:
        raise InvalidArgument("the endpoint URL has an invalid port", field="url") from exc
    addresses = await resolver.addresses(host)
    if not addresses:
        raise InvalidArgument(f"the endpoint host {host!r} does not resolve", field="url")
    for address in addresses:
        problem = address_problem(address, allow_loopback=allow_loopback)
        if problem is not None:
            raise InvalidArgument(
                f"the endpoint host {host!r} resolves to {problem}; "
                "webhooks go to public addresses only",
                field="url",
            )
    return url.strip()
