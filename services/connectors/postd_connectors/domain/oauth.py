"""OAuth flow state: single-use, expiring `state` values bound to tenant and user,
and PKCE (RFC 7636, S256).

Only a SHA-256 of the state is stored. The PKCE verifier is stored sealed
(AES-256-GCM) under a key derived from the state, so a copy of the table alone
yields neither a usable state nor a verifier.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

STATE_TTL_SECONDS = 600
_SEAL_INFO = b"postd-connectors/pkce-verifier/v1"


def new_state() -> str:
    return secrets.token_urlsafe(32)


def state_hash(state: str) -> bytes:
    return hashlib.sha256(state.encode()).digest()


def new_verifier() -> str:
    # 64 characters of the unreserved set (RFC 7636 allows 43-128).
    return secrets.token_urlsafe(48)


def s256_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _key(state: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_SEAL_INFO).derive(
        state.encode()
    )


def seal_verifier(state: str, verifier: str) -> bytes:
    nonce = secrets.token_bytes(12)
    return nonce + AESGCM(_key(state)).encrypt(nonce, verifier.encode(), state_hash(state))


def open_verifier(state: str, sealed: bytes) -> str | None:
    try:
        plain = AESGCM(_key(state)).decrypt(sealed[:12], sealed[12:], state_hash(state))
    except (InvalidTag, ValueError):
        return None
    return plain.decode()


@dataclass(frozen=True)
class AuthState:
    """A stored OAuth flow (never the state value itself)."""

    tenant_id: str
    user_id: str
    platform: str
    redirect_uri: str
    return_url: str
    capabilities: tuple[str, ...]
    requested_scopes: tuple[str, ...]
    reconnect_id: str | None
    sealed_verifier: bytes | None
    expires_at: datetime
    consumed: bool = False
