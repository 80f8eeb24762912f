"""Tenants and API keys: formats and checks, free of transports."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

KEY_PREFIXES = ("postd_live_", "postd_dev_")
_KEY = re.compile(r"^postd_(live|dev)_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")
ROLES = ("owner", "admin", "editor", "viewer")


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


def digest_matches(stored: bytes, presented: bytes) -> bool:
    return hmac.compare_digest(stored, presented)
