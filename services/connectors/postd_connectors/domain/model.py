"""What connectors reasons about, free of transports: connections, tokens, posts,
platform errors. The servicer maps these to and from the protobuf contract."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from postd_common.secrets import Secret


class ConnectionStatus(StrEnum):
    HEALTHY = "healthy"
    EXPIRING_SOON = "expiring_soon"
    ATTENTION = "attention"
    REVOKED = "revoked"
    DISCONNECTED = "disconnected"


class ErrorCategory(StrEnum):
    AUTH_REVOKED = "auth_revoked"
    AUTH_EXPIRED = "auth_expired"
    PERMISSION_MISSING = "permission_missing"
    RATE_LIMITED = "rate_limited"
    CONTENT_REJECTED = "content_rejected"
    TRANSIENT = "transient"
    PLATFORM_OUTAGE = "platform_outage"
    INVALID_REQUEST = "invalid_request"
    QUOTA_EXCEEDED = "quota_exceeded"
    NOT_FOUND = "not_found"
    UNKNOWN = "unknown"


class ErrorAction(StrEnum):
    NONE = "none"
    RETRY = "retry"
    RETRY_LATER = "retry_later"
    REFRESH_TOKEN = "refresh_token"  # noqa: S105 - an action name
    RECONNECT = "reconnect"
    GRANT_PERMISSIONS = "grant_permissions"
    EDIT_CONTENT = "edit_content"
    CONTACT_SUPPORT = "contact_support"


@dataclass(frozen=True)
class PlatformError:
    """A platform's failure as the error catalogue categorised it. Never holds a secret."""

    category: ErrorCategory
    platform: str
    message: str
    action: ErrorAction
    retryable: bool
    http_status: int = 0
    platform_code: str = ""
    platform_subcode: str = ""
    platform_message: str = ""
    action_message: str = ""
    retry_after: float | None = None
    missing_scopes: tuple[str, ...] = ()
    platform_request_id: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "category": self.category.value,
            "platform": self.platform,
            "message": self.message,
            "action": self.action.value,
            "retryable": self.retryable,
            "http_status": self.http_status,
            "platform_code": self.platform_code,
            "platform_subcode": self.platform_subcode,
            "platform_message": self.platform_message,
            "action_message": self.action_message,
            "retry_after": self.retry_after,
            "missing_scopes": list(self.missing_scopes),
            "platform_request_id": self.platform_request_id,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, object]) -> PlatformError:
        retry_after = raw.get("retry_after")
        return cls(
            category=ErrorCategory(str(raw.get("category", "unknown"))),
            platform=str(raw.get("platform", "")),
            message=str(raw.get("message", "")),
            action=ErrorAction(str(raw.get("action", "contact_support"))),
            retryable=bool(raw.get("retryable", False)),
            http_status=int(str(raw.get("http_status", 0) or 0)),
            platform_code=str(raw.get("platform_code", "")),
            platform_subcode=str(raw.get("platform_subcode", "")),
            platform_message=str(raw.get("platform_message", "")),
            action_message=str(raw.get("action_message", "")),
            retry_after=float(str(retry_after)) if retry_after is not None else None,
            missing_scopes=tuple(str(s) for s in raw.get("missing_scopes", ()) or ()),  # type: ignore[attr-defined]
            platform_request_id=str(raw.get("platform_request_id", "")),
        )


class PlatformFailure(Exception):
    """A platform call failed; ``error`` says how. ``outcome_unknown`` is true when the
    request may have been acted on although no answer arrived (timeout, reset)."""

    def __init__(self, error: PlatformError, *, outcome_unknown: bool = False) -> None:
        super().__init__(error.message)
        self.error = error
        self.outcome_unknown = outcome_unknown


@dataclass(frozen=True)
class TokenBundle:
    """A connection's OAuth tokens. Every value is a :class:`Secret`."""

    access_token: Secret
    refresh_token: Secret = field(default_factory=lambda: Secret(""))
    token_type: str = "Bearer"  # noqa: S105 - the scheme, not a secret
    expires_at: datetime | None = None
    refresh_expires_at: datetime | None = None
    scopes: tuple[str, ...] = ()
    extra: Mapping[str, Secret] = field(default_factory=dict)
    issued_at: datetime | None = None

    @property
    def has_refresh_token(self) -> bool:
        return bool(self.refresh_token)

    def with_refresh_token(self, refresh: Secret) -> TokenBundle:
        return replace(self, refresh_token=refresh)


@dataclass(frozen=True)
class StoredBundle:
    """A bundle as the vault holds it, with what a compare-and-swap needs."""

    bundle: TokenBundle
    version: int
    refresh_token_fingerprint: str = ""
    has_refresh_token: bool = False


class MediaKind(StrEnum):
    UNSPECIFIED = "unspecified"
    IMAGE = "image"
    VIDEO = "video"
    GIF = "gif"
    DOCUMENT = "document"


@dataclass(frozen=True)
class MediaItem:
    url: str
    kind: MediaKind = MediaKind.UNSPECIFIED
    mime_type: str = ""
    size_bytes: int = 0
    width: int = 0
    height: int = 0
    duration_seconds: float | None = None
    alt_text: str = ""
    thumbnail_url: str = ""

    @property
    def effective_kind(self) -> MediaKind:
        if self.kind is not MediaKind.UNSPECIFIED:
            return self.kind
        mime = self.mime_type.lower()
        if mime == "image/gif":
            return MediaKind.GIF
        if mime.startswith("image/"):
            return MediaKind.IMAGE
        if mime.startswith("video/"):
            return MediaKind.VIDEO
        if mime == "application/pdf":
            return MediaKind.DOCUMENT
        return MediaKind.UNSPECIFIED


@dataclass(frozen=True)
class PostContent:
    text: str = ""
    link: str = ""
    media: tuple[MediaItem, ...] = ()
    title: str = ""
    options: Mapping[str, str] = field(default_factory=dict)

    def option(self, platform: str, name: str, default: str = "") -> str:
        """A ``<platform>.<name>`` option (connectors read their own prefix only)."""
        return self.options.get(f"{platform}.{name}", default)


@dataclass(frozen=True)
class Connection:
    id: str
    tenant_id: str
    platform: str
    external_id: str
    status: ConnectionStatus
    account_kind: str = ""
    account_name: str = ""
    username: str = ""
    avatar_url: str = ""
    scopes: tuple[str, ...] = ()
    missing_scopes: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    status_reason: str = ""
    status_changed_at: datetime | None = None
    expires_at: datetime | None = None
    refresh_expires_at: datetime | None = None
    last_refreshed_at: datetime | None = None
    last_error: PlatformError | None = None
    has_refresh_token: bool = False
    connected_by: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class AuditEntry:
    id: str
    tenant_id: str
    connection_id: str
    action: str
    actor: str
    reason: str
    previous_status: str
    status: str
    details: Mapping[str, str]
    occurred_at: datetime


@dataclass(frozen=True)
class StatusChange:
    """A status transition to store, audit and announce on ``connection.events``."""

    previous: ConnectionStatus | None
    status: ConnectionStatus
    reason: str
    source: str
    category: ErrorCategory | None = None
    reconnect_url: str = ""
