"""Bearer JWTs from an external identity provider, verified against its JWKS.

Checks: signature by a key of the JWKS (by ``kid``), algorithm in the allow-list and
matching the key, issuer, audience, expiry (with a small leeway), ``sub`` present.
The JWKS is cached for ``jwks_ttl_seconds`` and fetched again when a token names a
``kid`` the cache does not hold (key rotation), at most once per
``jwks_min_refetch_seconds``. Supabase-compatible claims map to tenant and role:
``app_metadata.tenant_id`` and ``app_metadata.role``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt

from postd_common.logging import get_logger
from postd_gateway.config import JwtSettings
from postd_gateway.domain import valid_role

log = get_logger(__name__)


class TokenRejected(Exception):
    """The token is not acceptable. The message says why in plain words, without
    echoing the token."""


@dataclass(frozen=True)
class IdentityClaims:
    subject: str
    tenant_id: str
    role: str
    email: str


class JwksVerifier:
    """Verifies IdP tokens. ``verify`` awaits a JWKS fetch on a cold cache or an
    unknown ``kid`` (bounded by ``timeout``); it raises :class:`TokenRejected`."""

    def __init__(
        self,
        settings: JwtSettings,
        http: aiohttp.ClientSession,
        *,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._http = http
        self._timeout = timeout
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def verify(self, token: str) -> IdentityClaims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenRejected("the bearer token is not a well-formed JWT") from exc
        algorithm = header.get("alg")
        if algorithm not in self._settings.algorithms:
            raise TokenRejected("the token's signing algorithm is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRejected("the token names no signing key (kid)")
        key = await self._key(kid)
        if key is None:
            raise TokenRejected("the token was signed by a key the identity provider does not list")
        if key.algorithm_name and key.algorithm_name != algorithm:
            raise TokenRejected("the token's algorithm does not match its signing key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=self._settings.audience,
                issuer=self._settings.issuer,
                leeway=self._settings.leeway_seconds,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenRejected("the token has expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise TokenRejected("the token is meant for another audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise TokenRejected("the token was issued by another issuer") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRejected(f"the token lacks the {exc.claim!r} claim") from exc
        except jwt.InvalidSignatureError as exc:
            raise TokenRejected("the token's signature does not verify") from exc
        except jwt.PyJWTError as exc:
            raise TokenRejected("the token is not valid") from exc
        return _claims(claims)

    async def _key(self, kid: str) -> jwt.PyJWK | None:
        now = self._clock()
        fresh = (
            self._fetched_at is not None
            and now - self._fetched_at < self._settings.jwks_ttl_seconds
        )
        if fresh and kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            now = self._clock()
            age = None if self._fetched_at is None else now - self._fetched_at
            stale = age is None or age >= self._settings.jwks_ttl_seconds
            may_refetch = age is None or age >= self._settings.jwks_min_refetch_seconds
            if stale or (kid not in self._keys and may_refetch):
                await self._fetch()
            return self._keys.get(kid)

    async def _fetch(self) -> None:
        try:
            async with self._http.get(
                self._settings.jwks_url, timeout=aiohttp.ClientTimeout(total=self._timeout)
            ) as response:
                if response.status != 200:
                    raise ValueError(f"JWKS answered HTTP {response.status}")
                document = json.loads(await response.read())
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("JWKS fetch failed", url=self._settings.jwks_url, error=str(exc)[:200])
            if not self._keys:
                raise TokenRejected("the identity provider's keys are unavailable") from exc
            return  # keep serving the keys we have
        keys: dict[str, jwt.PyJWK] = {}
        for entry in document.get("keys", []) if isinstance(document, Mapping) else []:
            if not isinstance(entry, Mapping) or not isinstance(entry.get("kid"), str):
                continue
            if entry.get("kty") == "oct":  # symmetric keys never come from a JWKS we trust
                continue
            try:
                keys[entry["kid"]] = jwt.PyJWK.from_dict(dict(entry))
            except jwt.PyJWTError:
                log.warning("JWKS entry skipped", kid=entry.get("kid"))
        self._keys = keys
        self._fetched_at = self._clock()


def _claims(claims: Mapping[str, Any]) -> IdentityClaims:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise TokenRejected("the token has no subject")
    app_metadata = claims.get("app_metadata")
    meta: Mapping[str, Any] = app_metadata if isinstance(app_metadata, Mapping) else {}
    tenant_id = meta.get("tenant_id")
    if not isinstance(tenant_id, str) or not tenant_id:
        raise TokenRejected("the token names no tenant (app_metadata.tenant_id)")
    role = meta.get("role")
    if role is None:
        role = "viewer"  # least privilege when the IdP assigns none
    if not valid_role(role):
        raise TokenRejected("the token's role (app_metadata.role) is not one POSTD knows")
    email = claims.get("email")
    return IdentityClaims(subject, tenant_id, str(role), email if isinstance(email, str) else "")
