"""What the vault stores and reports, as plain values (no transport types).

Secret values are held in :class:`~postd_common.secrets.Secret` (or bytes that never
reach a repr) so a stray log call or exception cannot print them.
"""

# ruff: noqa: S105 - names such as "token_bundle" and "Bearer" are labels, not passwords

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from postd_common.secrets import Secret

BUNDLE_KIND: Final = "oauth_token_bundle"
FINGERPRINT_KEY_KIND: Final = "vault_fingerprint_key"
INTERNAL_TENANT: Final = "_vault"
FINGERPRINT_KEY_NAME: Final = "_vault.refresh_token_fingerprint_key"


class Scope(enum.Enum):
    """What a stored secret is: a connection's token bundle, a named secret, or the
    vault's own key material (kept and rotated like any other secret)."""

    TOKEN_BUNDLE = "token_bundle"
    PLATFORM_SECRET = "platform_secret"
    INTERNAL = "internal"


class AuditAction(enum.Enum):
    STORE_TOKEN_BUNDLE = "store_token_bundle"
    READ_TOKEN_BUNDLE = "read_token_bundle"
    REPLACE_TOKEN_BUNDLE = "replace_token_bundle"
    DELETE_CONNECTION_SECRETS = "delete_connection_secrets"
    STORE_PLATFORM_SECRET = "store_platform_secret"
    READ_PLATFORM_SECRET = "read_platform_secret"
    DELETE_PLATFORM_SECRET = "delete_platform_secret"
    ROTATE_KEY = "rotate_key"
    REWRAP = "rewrap"
    DISABLE_KEY_VERSION = "disable_key_version"
    ACCESS_DENIED = "access_denied"
    DECRYPT_FAILED = "decrypt_failed"


@dataclass(frozen=True)
class TokenBundle:
    """The OAuth tokens of one connection. Everything in it is sealed as one."""

    access_token: Secret
    refresh_token: Secret = field(default_factory=lambda: Secret(""))
    token_type: str = "Bearer"
    expires_at: datetime | None = None
    refresh_expires_at: datetime | None = None
    scopes: tuple[str, ...] = ()
    extra: Mapping[str, Secret] = field(default_factory=dict)
    issued_at: datetime | None = None

    def with_refresh_token(self, refresh_token: Secret) -> TokenBundle:
        return TokenBundle(
            access_token=self.access_token,
            refresh_token=refresh_token,
            token_type=self.token_type,
            expires_at=self.expires_at,
            refresh_expires_at=self.refresh_expires_at,
            scopes=self.scopes,
            extra=self.extra,
            issued_at=self.issued_at,
        )

    def to_plaintext(self) -> bytes:
        """The bytes that get sealed (canonical JSON)."""
        doc = {
            "v": 1,
            "access_token": self.access_token.reveal(),
            "refresh_token": self.refresh_token.reveal(),
            "token_type": self.token_type,
            "expires_at": _iso(self.expires_at),
            "refresh_expires_at": _iso(self.refresh_expires_at),
            "scopes": list(self.scopes),
            "extra": {k: v.reveal() for k, v in sorted(self.extra.items())},
            "issued_at": _iso(self.issued_at),
        }
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_plaintext(cls, data: bytes) -> TokenBundle:
        """Raises ValueError (without echoing content) when ``data`` is not a bundle."""
        try:
            doc: dict[str, Any] = json.loads(data)
            if doc.get("v") != 1:
                raise ValueError("unknown bundle format")
            return cls(
                access_token=Secret(str(doc["access_token"])),
                refresh_token=Secret(str(doc["refresh_token"])),
                token_type=str(doc["token_type"]),
                expires_at=_parse(doc["expires_at"]),
                refresh_expires_at=_parse(doc["refresh_expires_at"]),
                scopes=tuple(str(s) for s in doc["scopes"]),
                extra={str(k): Secret(str(v)) for k, v in doc["extra"].items()},
                issued_at=_parse(doc["issued_at"]),
            )
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a token bundle ({type(exc).__name__})") from None


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment else None


def _parse(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass(frozen=True)
class SecretAddress:
    """Who a secret belongs to: the fields its ciphertext is bound to (with versions)."""

    tenant_id: str
    scope: Scope
    kind: str
    connection_id: str = ""
    name: str = ""


@dataclass(frozen=True)
class SealedSecret:
    """One stored secret as the repository holds it: metadata plus ciphertext."""

    id: str
    address: SecretAddress
    version: int
    key_version: str
    wrapped_key: bytes = field(repr=False)
    ciphertext: bytes = field(repr=False)
    refresh_fingerprint: str = ""
    expires_at: datetime | None = None
    refresh_expires_at: datetime | None = None
    scopes: tuple[str, ...] = ()
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class BundleInfo:
    """What may be known about a stored bundle without seeing a secret."""

    connection_id: str
    version: int
    key_version: str
    refresh_token_fingerprint: str
    has_refresh_token: bool
    expires_at: datetime | None
    refresh_expires_at: datetime | None
    scopes: tuple[str, ...]
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def of(cls, sealed: SealedSecret) -> BundleInfo:
        return cls(
            connection_id=sealed.address.connection_id,
            version=sealed.version,
            key_version=sealed.key_version,
            refresh_token_fingerprint=sealed.refresh_fingerprint,
            has_refresh_token=bool(sealed.refresh_fingerprint),
            expires_at=sealed.expires_at,
            refresh_expires_at=sealed.refresh_expires_at,
            scopes=sealed.scopes,
            created_at=sealed.created_at,
            updated_at=sealed.updated_at,
        )


@dataclass(frozen=True)
class PlatformSecret:
    name: str
    kind: str
    value: bytes = field(repr=False)
    connection_id: str
    version: int
    key_version: str
    updated_at: datetime | None


@dataclass(frozen=True)
class KeyVersionRecord:
    """A KEK version as the vault tracks it, with how many live data keys it wraps."""

    key_version: str
    provider: str
    enabled: bool
    primary: bool
    data_key_count: int
    created_at: datetime | None
    promoted_at: datetime | None
    disabled_at: datetime | None


@dataclass(frozen=True)
class RotationStatus:
    primary_key_version: str
    total: int
    rewrapped: int
    remaining: int
    by_key_version: tuple[tuple[str, int], ...]
    running: bool
    last_batch_at: datetime | None

    @property
    def complete(self) -> bool:
        return self.remaining == 0


@dataclass(frozen=True)
class RewrapResult:
    rewrapped: int
    remaining: int
    batches: int
    failed: int

    @property
    def complete(self) -> bool:
        return self.remaining == 0


@dataclass(frozen=True)
class AuditEntry:
    """One audited operation. Never a secret: names, ids, versions and outcomes only."""

    action: AuditAction
    actor: str
    tenant_id: str = ""
    connection_id: str = ""
    secret_name: str = ""
    key_version: str = ""
    success: bool = True
    detail: str = ""


@dataclass(frozen=True)
class AuditEvent:
    id: str
    entry: AuditEntry
    occurred_at: datetime


@dataclass(frozen=True)
class AuditQuery:
    tenant_id: str = ""
    connection_id: str = ""
    actions: tuple[AuditAction, ...] = ()
    since: datetime | None = None
    page_size: int = 50
    after: tuple[datetime, str] | None = None  # keyset cursor: (occurred_at, id)
