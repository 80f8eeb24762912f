"""Who is calling: API keys, IdP bearer JWTs and dashboard sessions -> a Principal.

Lookups of keys, sessions and tenants are cached in memory for ``cache_seconds``
(5 s by default): that is the bound on how long a credential revoked through another
replica keeps working here. A revocation made through this replica takes effect at
once (it forgets its cached copy). ``last_used_at`` of keys is written in batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, Protocol, TypeVar

from postd_common.logging import get_logger
from postd_gateway.adapters.postgres import ApiKeyRecord, SessionRecord, TenantRecord
from postd_gateway.domain import (
    Principal,
    digest_matches,
    looks_like_key,
    parse_key,
    sha256,
)
from postd_gateway.jwks import JwksVerifier, TokenRejected
from postd_gateway.problems import Problem, unauthenticated

log = get_logger(__name__)

SESSION_COOKIE = "postd_session"
CSRF_COOKIE = "postd_csrf"
CSRF_HEADER = "X-CSRF-Token"

T = TypeVar("T")


class KeyLookup(Protocol):
    """The part of the tenant store authentication needs (awaits the database)."""

    async def find_key(self, key_id: str) -> ApiKeyRecord | None: ...
    async def get_tenant(self, tenant_id: str) -> TenantRecord | None: ...
    async def touch_keys(self, used: Mapping[str, datetime]) -> None: ...


class SessionLookup(Protocol):
    async def find_live(self, token_sha256: bytes) -> SessionRecord | None: ...


class _TtlCache(Generic[T]):
    """A small time-bounded cache; cleared wholesale when it grows past ``max_size``."""

    def __init__(self, ttl: float, clock: Callable[[], float], max_size: int = 50_000) -> None:
        self._ttl = ttl
        self._clock = clock
        self._max = max_size
        self._items: dict[object, tuple[float, T]] = {}

    def get(self, key: object) -> tuple[bool, T | None]:
        hit = self._items.get(key)
        if hit is None or hit[0] <= self._clock():
            return False, None
        return True, hit[1]

    def put(self, key: object, value: T) -> None:
        if self._ttl <= 0:
            return
        if len(self._items) >= self._max:
            self._items.clear()
        self._items[key] = (self._clock() + self._ttl, value)

    def forget(self, key: object) -> None:
        self._items.pop(key, None)


@dataclass(frozen=True)
class Authentication:
    principal: Principal
    # Set when the credential was the session cookie: state-changing requests must
    # then present the session's CSRF token.
    csrf_sha256: bytes | None


class Authenticator:
    def __init__(
        self,
        keys: KeyLookup,
        sessions: SessionLookup,
        jwt_verifier: JwksVerifier | None,
        *,
        cache_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys = keys
        self._sessions = sessions
        self._jwt = jwt_verifier
        self._key_cache: _TtlCache[ApiKeyRecord | None] = _TtlCache(cache_seconds, clock)
        self._session_cache: _TtlCache[SessionRecord | None] = _TtlCache(cache_seconds, clock)
        self._tenant_cache: _TtlCache[TenantRecord | None] = _TtlCache(cache_seconds, clock)
        self._used: dict[str, datetime] = {}

    # ----------------------------------------------------------------- entry point

    async def authenticate(
        self, authorization: str | None, session_cookie: str | None
    ) -> Authentication:
        """Raises a 401 :class:`Problem` when no credential is acceptable. An
        Authorization header wins over the cookie."""
        if authorization:
            scheme, _, value = authorization.strip().partition(" ")
            value = value.strip()
            if scheme.lower() != "bearer" or not value:
                raise unauthenticated("Use 'Authorization: Bearer <API key or token>'.")
            if looks_like_key(value):
                return Authentication(await self.api_key(value), None)
            return Authentication(await self.bearer_jwt(value), None)
        if session_cookie:
            principal, csrf = await self.session(session_cookie)
            return Authentication(principal, csrf)
        raise unauthenticated("This request needs an API key, a bearer token or a session.")

    # ----------------------------------------------------------------- credentials

    async def api_key(self, presented: str) -> Principal:
        parsed = parse_key(presented)
        if parsed is None:
            raise unauthenticated("The API key is malformed.")
        key_id, digest = parsed
        record = await self._key(key_id)
        if record is None or not digest_matches(record.secret_sha256, digest):
            raise unauthenticated("The API key is not recognised.")
        if record.revoked_at is not None:
            raise unauthenticated("The API key has been revoked.")
        self._used[key_id] = datetime.now(UTC)
        return Principal(
            tenant_id=record.tenant_id,
            role=record.role,
            kind="api_key",
            subject=key_id,
            scopes=record.scopes,
            key_id=key_id,
        )

    async def bearer_jwt(self, token: str) -> Principal:
        if self._jwt is None:
            raise unauthenticated("Bearer tokens are not accepted here; use an API key.")
        try:
            claims = await self._jwt.verify(token)
        except TokenRejected as exc:
            raise unauthenticated(f"The bearer token was rejected: {exc}.") from exc
        if await self.tenant(claims.tenant_id) is None:
            raise unauthenticated("The bearer token names a tenant POSTD does not know.")
        return Principal(
            tenant_id=claims.tenant_id, role=claims.role, kind="jwt", subject=claims.subject
        )

    async def session(self, cookie: str) -> tuple[Principal, bytes]:
        token_sha = sha256(cookie)
        found, record = self._session_cache.get(token_sha)
        if not found:
            record = await self._sessions.find_live(token_sha)
            self._session_cache.put(token_sha, record)
        if record is None or record.expires_at <= datetime.now(UTC):
            raise unauthenticated("The session has expired or was signed out; sign in again.")
        if record.key_id is not None:
            # A session opened with a key ends with it (at once on the revoking replica).
            key = await self._key(record.key_id)
            if key is None or key.revoked_at is not None:
                raise unauthenticated("The API key behind this session has been revoked.")
        principal = Principal(
            tenant_id=record.tenant_id,
            role=record.role,
            kind="session",
            subject=record.subject,
            scopes=record.scopes,
            key_id=record.key_id,
            session_id=record.id,
        )
        return principal, record.csrf_sha256

    async def _key(self, key_id: str) -> ApiKeyRecord | None:
        found, record = self._key_cache.get(key_id)
        if not found:
            record = await self._keys.find_key(key_id)
            self._key_cache.put(key_id, record)
        return record

    async def tenant(self, tenant_id: str) -> TenantRecord | None:
        found, record = self._tenant_cache.get(tenant_id)
        if not found:
            record = await self._keys.get_tenant(tenant_id)
            self._tenant_cache.put(tenant_id, record)
        return record

    # ----------------------------------------------------------------- invalidation

    def forget_key(self, key_id: str) -> None:
        self._key_cache.forget(key_id)

    def forget_session(self, cookie: str) -> None:
        self._session_cache.forget(sha256(cookie))

    def forget_tenant(self, tenant_id: str) -> None:
        self._tenant_cache.forget(tenant_id)

    async def flush_last_used(self) -> None:
        """Write the keys used since the last flush (one statement)."""
        used, self._used = self._used, {}
        try:
            await self._keys.touch_keys(used)
        except Exception:
            # Losing a last-used stamp is harmless; put them back for the next flush.
            for key_id, at in used.items():
                self._used.setdefault(key_id, at)
            raise


def check_csrf(auth: Authentication, presented: str | None) -> None:
    """State-changing requests authenticated by the session cookie must carry the
    session's CSRF token in ``X-CSRF-Token`` (synchronizer token: only its hash is
    stored, and a cross-site page cannot read it)."""
    if auth.csrf_sha256 is None:
        return
    if not presented or not digest_matches(auth.csrf_sha256, sha256(presented)):
        raise Problem(
            403,
            "csrf_failed",
            f"This request needs the session's CSRF token in the {CSRF_HEADER} header.",
        )
