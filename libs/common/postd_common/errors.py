"""Domain errors shared by every service.

Domain code raises these (it knows nothing of transports); the gRPC servicer
layer turns them into status codes (:mod:`postd_common.grpcutil`) and the gateway
turns status codes into RFC 9457 problem documents. Messages are written for the
person who will read them and never contain secrets.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of expected failures. ``code`` is a stable machine-readable reason."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.field = field


class NotFound(DomainError):
    code = "not_found"


class AlreadyExists(DomainError):
    code = "already_exists"


class InvalidArgument(DomainError):
    code = "invalid_argument"


class FailedPrecondition(DomainError):
    code = "failed_precondition"


class Conflict(DomainError):
    code = "conflict"


class PermissionDenied(DomainError):
    code = "permission_denied"


class Unauthenticated(DomainError):
    code = "unauthenticated"


class ResourceExhausted(DomainError):
    code = "resource_exhausted"

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class DataLoss(DomainError):
    """Stored data is corrupt or failed an integrity check (e.g. a ciphertext that does
    not authenticate). Retrying will not help; the message says what to do instead."""

    code = "data_loss"


class Unavailable(DomainError):
    """A dependency is down; the caller may retry after ``retry_after`` seconds."""

    code = "unavailable"

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after
