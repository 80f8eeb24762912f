"""Platform errors as data, and the exception handlers raise to answer with one.

Each platform module keeps a table `ERRORS: Mapping[str, ErrorSpec]` keyed by a
sandbox-wide name (`invalid_token`, `rate_limit`, ...) or a platform-specific one
(`meta_blocked`, `spam_risk_too_many_posts`, ...); the platform's renderer turns a
spec into the exact body shape that platform sends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Names every platform's table defines; faults and the shared machinery use them.
INVALID_TOKEN = "invalid_token"
EXPIRED_TOKEN = "expired_token"
REVOKED_TOKEN = "revoked_token"
PERMISSION = "permission"
RATE_LIMIT = "rate_limit"
SERVER_ERROR = "server_error"
OUTAGE = "outage"
TIMEOUT = "timeout"
NOT_FOUND = "not_found"
INVALID_PARAM = "invalid_param"

COMMON_KEYS: tuple[str, ...] = (
    INVALID_TOKEN,
    EXPIRED_TOKEN,
    REVOKED_TOKEN,
    PERMISSION,
    RATE_LIMIT,
    SERVER_ERROR,
    OUTAGE,
    TIMEOUT,
    NOT_FOUND,
    INVALID_PARAM,
)


@dataclass(frozen=True)
class ErrorSpec:
    """One platform error: its HTTP status and the platform-specific body fields.

    String values in `fields` may hold `{name}` placeholders filled from the
    ApiError's params (missing names are left as they are).
    """

    status: int
    fields: Mapping[str, Any] = field(default_factory=dict)
    # Extra response headers (e.g. Retry-After is added by the renderer).
    headers: Mapping[str, str] = field(default_factory=dict)


class ApiError(Exception):
    """Raised by a platform handler; rendered with the platform's error table."""

    def __init__(
        self,
        key: str,
        *,
        status: int | None = None,
        retry_after: int | None = None,
        **params: Any,
    ) -> None:
        super().__init__(key)
        self.key = key
        self.status = status
        self.retry_after = retry_after
        self.params: dict[str, Any] = params


class _Defaulting(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def fill(value: Any, params: Mapping[str, Any]) -> Any:
    """Substitute `{name}` placeholders in strings nested in `value`."""
    if isinstance(value, str):
        return value.format_map(_Defaulting(params))
    if isinstance(value, Mapping):
        return {k: fill(v, params) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [fill(v, params) for v in value]
    return value
