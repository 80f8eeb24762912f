"""Who a caller is and what they may do: keys, principals, roles, rollouts.

Free of transports: nothing here imports aiohttp, grpc or asyncpg.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any, Final, Literal

KEY_PREFIXES = ("postd_live_", "postd_dev_")
_KEY = re.compile(r"^postd_(live|dev)_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")
ROLES: Final = ("owner", "admin", "editor", "viewer")
_RANK: Final = {"viewer": 1, "editor": 2, "admin": 3, "owner": 4}

Role = Literal["owner", "admin", "editor", "viewer"]
CredentialKind = Literal["api_key", "jwt", "session"]


@dataclass(frozen=True)
class IssuedKey:
    key_id: str
    secret: str  # the full key, shown once
    digest: bytes


def issue_key(environment: str) -> IssuedKey:
    kind = "dev" if environment in ("development", "test") else "live"
    key_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))
    secret_part = secrets.token_urlsafe(32)
    full = f"postd_{kind}_{key_id}_{secret_part}"
    return IssuedKey(key_id, full, hashlib.sha256(secret_part.encode()).digest())


def parse_key(presented: str) -> tuple[str, bytes] | None:
    """(key id, digest of the secret part) of a well-formed key, else None."""
    match = _KEY.match(presented.strip())
    if not match:
        return None
    return match.group(2), hashlib.sha256(match.group(3).encode()).digest()


def looks_like_key(presented: str) -> bool:
    return presented.startswith(KEY_PREFIXES)


def digest_matches(stored: bytes, presented: bytes) -> bool:
    return hmac.compare_digest(stored, presented)


def role_at_least(role: str, required: str) -> bool:
    return _RANK.get(role, 0) >= _RANK[required]


def valid_role(role: object) -> bool:
    return isinstance(role, str) and role in _RANK


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one request. ``tenant_id`` comes from the credential
    and is the only tenant any downstream call is made for."""

    tenant_id: str
    role: str
    kind: CredentialKind
    # The API key id, the IdP user (``sub``) or the session's owner, for audit fields.
    subject: str
    scopes: tuple[str, ...] = ()
    key_id: str | None = None
    session_id: str | None = None

    @property
    def actor(self) -> str:
        """How backends record who did something ("key:abc123", "user:<sub>")."""
        if self.key_id is not None and self.kind != "jwt":
            return f"key:{self.key_id}"
        return f"user:{self.subject}"

    def allows_scope(self, scope: str) -> bool:
        """Keys may be narrowed to scopes ("posts:write"); no scopes means the role's all."""
        if not self.scopes:
            return True
        resource = scope.split(":", 1)[0]
        return scope in self.scopes or f"{resource}:*" in self.scopes


def new_token(nbytes: int = 32) -> tuple[str, bytes]:
    """A random bearer value and its SHA-256 (what is stored)."""
    value = secrets.token_urlsafe(nbytes)
    return value, sha256(value)


def sha256(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


# --------------------------------------------------------------------------- idempotency


def request_fingerprint(method: str, path: str, body: Any) -> bytes:
    """What "the same request" means for an Idempotency-Key: method, path and the body
    as parsed JSON (key order and whitespace do not matter)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).digest()


_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def valid_idempotency_key(key: str) -> bool:
    return bool(_IDEMPOTENCY_KEY.match(key))


# --------------------------------------------------------------------------- feature flags

FlagStage = Literal["off", "alpha", "beta", "stable"]
FLAG_STAGES: Final = ("off", "alpha", "beta", "stable")


@dataclass(frozen=True)
class FeatureFlag:
    """A flag's global rollout. ``integration`` "" applies to every integration."""

    name: str
    integration: str
    stage: str
    beta_percent: int
    description: str


@dataclass(frozen=True)
class FlagDecision:
    name: str
    integration: str
    stage: str
    enabled: bool
    # "override" (the tenant's own setting), "early_access", "rollout" or "default".
    reason: str


def rollout_bucket(flag: str, integration: str, tenant_id: str) -> int:
    """0..99, fixed for a tenant and flag: the same tenants stay in a 10 % beta as it
    grows, and different flags pick different tenants."""
    digest = hashlib.sha256(f"{flag}\x00{integration}\x00{tenant_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def decide_flag(
    flag: FeatureFlag, tenant_id: str, *, early_access: bool, override: bool | None
) -> FlagDecision:
    """alpha: early-access tenants only; beta: those plus ``beta_percent`` of tenants by
    hash; stable: everyone; off: no one. A tenant's override wins over the stage."""

    def decision(enabled: bool, reason: str) -> FlagDecision:
        return FlagDecision(flag.name, flag.integration, flag.stage, enabled, reason)

    if override is not None:
        return decision(override, "override")
    if flag.stage == "stable":
        return decision(True, "rollout")
    if flag.stage in ("alpha", "beta") and early_access:
        return decision(True, "early_access")
    if flag.stage == "beta":
        inside = rollout_bucket(flag.name, flag.integration, tenant_id) < flag.beta_percent
        return decision(inside, "rollout")
    return decision(False, "rollout" if flag.stage != "off" else "default")


# --------------------------------------------------------------------------- redirects


def safe_return_path(value: str | None, default: str) -> str:
    """A same-origin path to send a browser back to, or ``default``: never an absolute
    or scheme-relative URL (no open redirect)."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return default
    if any(ch in value for ch in "\r\n\t\\") or len(value) > 512:
        return default
    return value
