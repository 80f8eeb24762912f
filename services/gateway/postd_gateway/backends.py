"""The gateway's clients of the backends: their gRPC contracts, a deadline on every
call, and one mapping from gRPC status + POSTD trailing metadata to problems.

The port is the contract itself (the generated async stubs): tests run real
in-process gRPC servers that implement it. ``rpc`` awaits the network for at most
``timeout`` seconds and raises :class:`~postd_gateway.problems.Problem` on failure.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

import grpc
from google.protobuf.message import DecodeError
from google.rpc import status_pb2  # type: ignore[import-untyped]

from postd.common.v1 import common_pb2
from postd_common.grpcutil import MD_ERROR_CODE, MD_ERROR_FIELD, MD_RETRY_AFTER, call_metadata
from postd_common.identity import IdentitySigner
from postd_common.logging import get_logger
from postd_gateway.problems import FieldError, Problem

if TYPE_CHECKING:
    from postd.connectors.v1.connectors_pb2_grpc import ConnectorsServiceAsyncStub
    from postd.health.v1.health_pb2_grpc import ConnectionHealthServiceAsyncStub
    from postd.publisher.v1.analytics_pb2_grpc import AnalyticsServiceAsyncStub
    from postd.publisher.v1.publisher_pb2_grpc import PublisherServiceAsyncStub
    from postd.webhook_router.v1.webhook_router_pb2_grpc import WebhookRouterServiceAsyncStub
    from postd_webhook_router.http_passthrough import WebhookIngest

log = get_logger(__name__)

Resp = TypeVar("Resp")

# REST names of the proto fields backends name in `postd-error-field`.
_REST_FIELD: Final = {"page_token": "cursor", "page_size": "limit"}

# status, default code, what to tell the caller when the backend said nothing usable.
_MAPPING: Final[dict[grpc.StatusCode, tuple[int, str, str]]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_argument", "The request is not valid."),
    grpc.StatusCode.NOT_FOUND: (404, "not_found", "No such resource."),
    grpc.StatusCode.ALREADY_EXISTS: (409, "already_exists", "It exists already."),
    grpc.StatusCode.ABORTED: (409, "conflict", "It changed meanwhile; read it again and retry."),
    grpc.StatusCode.FAILED_PRECONDITION: (
        409,
        "failed_precondition",
        "It is not in a state that allows this.",
    ),
    grpc.StatusCode.OUT_OF_RANGE: (400, "out_of_range", "A value is out of range."),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (
        429,
        "resource_exhausted",
        "A limit was reached; retry later.",
    ),
    grpc.StatusCode.UNAVAILABLE: (
        503,
        "backend_unavailable",
        "A POSTD service is unavailable; retry shortly.",
    ),
    grpc.StatusCode.DEADLINE_EXCEEDED: (
        504,
        "backend_timeout",
        "A POSTD service did not answer in time; the outcome is unknown.",
    ),
    grpc.StatusCode.CANCELLED: (503, "backend_unavailable", "The call was cancelled; retry."),
    grpc.StatusCode.UNIMPLEMENTED: (
        501,
        "not_implemented",
        "This operation is not available yet.",
    ),
    grpc.StatusCode.DATA_LOSS: (500, "data_loss", "Stored data failed an integrity check."),
}
# Codes whose backend message is for operators, not for the caller.
_HIDE_DETAIL: Final = {
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.CANCELLED,
}


class IdentifiedStub:
    """A generated async stub whose every call carries the gateway's service identity
    and the current trace context (``call_metadata``), on a channel without
    interceptors. Calls and results are the stub's own."""

    def __init__(self, stub: Any, signer: IdentitySigner | None, audience: str) -> None:
        self._stub = stub
        self._signer = signer
        self._audience = audience

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)
        signer, audience = self._signer, self._audience

        def call(request: Any, **kwargs: Any) -> Any:
            return method(request, metadata=call_metadata(signer, audience), **kwargs)

        setattr(self, name, call)  # later lookups skip __getattr__
        return call


@dataclass(frozen=True)
class Backends:
    connectors: ConnectorsServiceAsyncStub
    publisher: PublisherServiceAsyncStub
    webhooks: WebhookRouterServiceAsyncStub
    health: ConnectionHealthServiceAsyncStub
    timeout: float
    # The publisher's analytics service (same address as `publisher`).
    analytics: AnalyticsServiceAsyncStub
    # Inbound webhooks to the router, concurrent ones batched into one call.
    webhook_ingest: WebhookIngest


async def rpc(
    method: Callable[..., Awaitable[Resp]],
    request: Any,
    *,
    timeout: float,
    fields: Mapping[str, str] | None = None,
) -> Resp:
    """Call ``method(request)`` with a deadline; a gRPC failure becomes a Problem.
    ``fields`` renames proto field paths to the REST names of this route."""
    try:
        return await method(request, timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        raise problem_from_rpc(exc, fields or {}) from None


def problem_from_rpc(exc: grpc.aio.AioRpcError, fields: Mapping[str, str]) -> Problem:
    code: grpc.StatusCode = exc.code()
    metadata = _metadata(exc.trailing_metadata())
    status, default_code, default_detail = _MAPPING.get(
        code, (502, "backend_error", "A POSTD service failed; the failure was logged.")
    )
    if code in _HIDE_DETAIL or status == 502:
        log.error(
            "backend call failed",
            grpc_code=code.name,
            detail=(exc.details() or "")[:300],
        )
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            # The gateway's own identity was refused: a deployment fault, not the caller's.
            return Problem(502, "backend_refused", "A POSTD service refused the gateway.")
        detail = default_detail
    else:
        detail = (exc.details() or default_detail).strip() or default_detail
    problem_code = str(metadata.get(MD_ERROR_CODE) or default_code)
    if not _looks_like_code(problem_code):
        problem_code = default_code
    errors: list[FieldError] = []
    field = metadata.get(MD_ERROR_FIELD)
    if isinstance(field, str) and field:
        errors.append(FieldError(rest_field(field, fields), detail))
    report = _validation_report(metadata)
    if report is not None and not report.valid:
        errors = _violations(report, fields)
        status, problem_code = 422, "validation_failed"
        detail = "The post breaks the limits of at least one target; see errors."
    headers: dict[str, str] = {}
    retry_after = metadata.get(MD_RETRY_AFTER)
    if status in (429, 503):
        seconds = _seconds(retry_after) or 1
        headers["Retry-After"] = str(seconds)
    return Problem(status, problem_code, detail, tuple(errors), headers)


def rest_field(field: str, fields: Mapping[str, str]) -> str:
    """The REST name of a proto field path: exact renames first, then the head."""
    if field in fields:
        return fields[field]
    head, dot, tail = field.partition(".")
    renamed = fields.get(head) or _REST_FIELD.get(head)
    return renamed + dot + tail if renamed else field


def _metadata(md: Any) -> dict[str, str | bytes]:
    out: dict[str, str | bytes] = {}
    for key, value in md or ():
        out[str(key).lower()] = value
    return out


def _looks_like_code(code: str) -> bool:
    return bool(code) and len(code) <= 64 and code.replace("_", "a").isalnum() and code.islower()


def _seconds(value: str | bytes | None) -> int | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(1, int(seconds + 0.999)) if seconds > 0 else None


def _validation_report(md: Mapping[str, str | bytes]) -> common_pb2.ValidationReport | None:
    raw = md.get("grpc-status-details-bin")
    if not isinstance(raw, bytes):
        return None
    try:
        status = status_pb2.Status.FromString(raw)
        for detail in status.details:
            if detail.Is(common_pb2.ValidationReport.DESCRIPTOR):
                report = common_pb2.ValidationReport()
                detail.Unpack(report)
                return report
    except DecodeError:
        return None
    return None


def _violations(report: common_pb2.ValidationReport, fields: Mapping[str, str]) -> list[FieldError]:
    errors: list[FieldError] = []
    for index, target in enumerate(report.targets):
        for violation in target.violations:
            if violation.severity == common_pb2.VIOLATION_SEVERITY_WARNING:
                continue
            path = violation.field or f"targets[{index}]"
            errors.append(FieldError(rest_field(path, fields), violation.message))
    return errors or [FieldError("targets", "At least one target is not valid.")]
