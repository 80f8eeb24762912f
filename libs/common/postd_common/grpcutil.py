"""gRPC plumbing: the aio server factory, interceptors, and client channels.

Server: standard health service, reflection, OpenTelemetry tracing, and one
interceptor that verifies the caller's service identity, enforces the per-method
allow-list, logs the call and records RED metrics. Servicer methods map domain
errors to status codes with :func:`map_domain_errors`.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import propagate
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from prometheus_client import Counter, Histogram

from postd_common import errors, identity
from postd_common.logging import get_logger

log = get_logger(__name__)

RPC_TOTAL = Counter(
    "postd_grpc_server_handled_total",
    "gRPC calls handled, by method and code.",
    ["service", "method", "code"],
)
RPC_SECONDS = Histogram(
    "postd_grpc_server_handling_seconds",
    "gRPC call latency.",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# Always reachable without an identity: probes and tooling.
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

_STATUS_FOR: Mapping[type[errors.DomainError], grpc.StatusCode] = {
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Conflict: grpc.StatusCode.ABORTED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DataLoss: grpc.StatusCode.DATA_LOSS,
}

# Trailing metadata keys the gateway reads to build problem documents.
MD_ERROR_CODE = "postd-error-code"
MD_ERROR_FIELD = "postd-error-field"
MD_RETRY_AFTER = "postd-retry-after"


def status_for(exc: errors.DomainError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        code = _STATUS_FOR.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.UNKNOWN


def error_metadata(exc: errors.DomainError) -> tuple[tuple[str, str], ...]:
    md: list[tuple[str, str]] = [(MD_ERROR_CODE, exc.code)]
    if exc.field:
        md.append((MD_ERROR_FIELD, exc.field))
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        md.append((MD_RETRY_AFTER, f"{retry_after:g}"))
    return tuple(md)


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def map_domain_errors(method: F) -> F:
    """Decorate a servicer method: a :class:`DomainError` becomes its status code with
    the message as details and the stable code/field/retry-after in trailing metadata."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except errors.DomainError as exc:
            context.set_trailing_metadata(error_metadata(exc))
            await context.abort(status_for(exc), exc.message)

    return cast(F, wrapper)


# --------------------------------------------------------------------------- server


@dataclass(frozen=True)
class AccessPolicy:
    """Which callers may call which methods.

    ``methods`` maps a full method name (``/pkg.Service/Method``) or a service
    prefix (``/pkg.Service/``) to the allowed caller names; anything not listed
    falls back to ``default`` (``None`` = any verified service).
    """

    methods: Mapping[str, frozenset[str]] = field(default_factory=dict)
    default: frozenset[str] | None = None

    def allowed(self, method: str) -> frozenset[str] | None:
        if method in self.methods:
            return self.methods[method]
        service = method.rsplit("/", 1)[0] + "/"
        if service in self.methods:
            return self.methods[service]
        return self.default


# Called as ``on_refused(method, caller, request)`` when a verified caller is refused by
# the access policy (PERMISSION_DENIED), before the refusal is sent; e.g. to audit it.
# Not called for unauthenticated calls, so anonymous traffic cannot flood an audit log.
# It must not raise (failures are logged and the refusal stands).
RefusalHook = Callable[[str, str, Any], Awaitable[None]]


class _GuardInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self,
        service: str,
        verifier: identity.IdentityVerifier | None,
        policy: AccessPolicy,
        on_refused: RefusalHook | None = None,
    ) -> None:
        self._service = service
        self._verifier = verifier
        self._policy = policy
        self._on_refused = on_refused

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        metadata = dict(details.invocation_metadata or ())
        denial: tuple[grpc.StatusCode, str] | None = None
        calling: str | None = None
        if self._verifier is not None:
            try:
                calling = self._verifier.verify(metadata.get(identity.METADATA_KEY))
            except identity.IdentityError as exc:
                denial = (grpc.StatusCode.UNAUTHENTICATED, str(exc))
            else:
                allowed = self._policy.allowed(method)
                if allowed is not None and calling not in allowed:
                    denial = (
                        grpc.StatusCode.PERMISSION_DENIED,
                        f"service {calling!r} may not call {method}",
                    )
        return self._wrap(handler, method, calling, denial)

    def _wrap(
        self,
        handler: grpc.RpcMethodHandler,
        method: str,
        calling: str | None,
        denial: tuple[grpc.StatusCode, str] | None,
    ) -> grpc.RpcMethodHandler:
        short = method.rsplit("/", 1)[-1]
        service = self._service
        on_refused = self._on_refused

        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started = time.perf_counter()
                token = identity.set_caller(calling)
                code = "OK"
                try:
                    if denial is not None:
                        code = denial[0].name
                        log.warning(
                            "grpc call refused",
                            method=method,
                            caller=calling,
                            code=code,
                            reason=denial[1],
                        )
                        if (
                            on_refused is not None
                            and calling is not None
                            and denial[0] == grpc.StatusCode.PERMISSION_DENIED
                        ):
                            try:
                                await on_refused(method, calling, request)
                            except Exception:
                                log.exception("refusal hook failed", method=method)
                        await context.abort(denial[0], denial[1])
                    try:
                        return await inner(request, context)
                    finally:
                        status = context.code()
                        if status is not None and status != grpc.StatusCode.OK:
                            code = status.name
                except asyncio.CancelledError:
                    code = "CANCELLED"
                    raise
                except Exception:
                    if code == "OK":
                        code = "UNKNOWN"
                        log.exception("grpc handler failed", method=method, caller=calling)
                    raise
                finally:
                    identity.reset_caller(token)
                    elapsed = time.perf_counter() - started
                    RPC_TOTAL.labels(service, short, code).inc()
                    RPC_SECONDS.labels(service, short).observe(elapsed)
                    if log.is_enabled_for(10):
                        log.debug(
                            "grpc call",
                            method=method,
                            caller=calling,
                            code=code,
                            ms=round(elapsed * 1000, 2),
                        )

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )

        if denial is not None:
            deny_code, deny_reason = denial

            async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
                await context.abort(deny_code, deny_reason)

            if handler.unary_stream is not None:
                return grpc.unary_stream_rpc_method_handler(
                    deny,
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
            return grpc.stream_unary_rpc_method_handler(
                deny,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


@dataclass
class GrpcServer:
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    service_names: Sequence[str]
    port: int

    async def start(self) -> None:
        await self.server.start()
        for name in ("", *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float = 10.0) -> None:
        """Report NOT_SERVING, refuse new calls, let calls in flight finish for ``grace`` s."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


def create_server(
    *,
    service: str,
    address: str,
    register: Iterable[Callable[[grpc.aio.Server], None]],
    service_names: Sequence[str],
    verifier: identity.IdentityVerifier | None,
    policy: AccessPolicy | None = None,
    max_message_bytes: int = 8 * 1024 * 1024,
    on_refused: RefusalHook | None = None,
) -> GrpcServer:
    """Build (not start) a ``grpc.aio`` server listening on ``address``.

    ``verifier=None`` disables identity checks (unit tests only). ``on_refused`` is
    told of verified callers the policy refuses (see :data:`RefusalHook`). Raises
    ``RuntimeError`` when the address cannot be bound.
    """
    server = grpc.aio.server(
        interceptors=[
            aio_server_interceptor(),  # type: ignore[no-untyped-call]
            _GuardInterceptor(service, verifier, policy or AccessPolicy(), on_refused),
        ],
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    for add in register:
        add(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"cannot listen on {address}")
    return GrpcServer(server, health_servicer, service_names, port)


# --------------------------------------------------------------------------- client


class _IdentityClientInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.aio.UnaryStreamClientInterceptor,  # type: ignore[misc]
):
    def __init__(self, signer: identity.IdentitySigner, audience: str) -> None:
        self._signer = signer
        self._audience = audience

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add(identity.METADATA_KEY, self._signer.token_for(self._audience))
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
        )

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request)

    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request)


# Round robin: a target that names several replicas (``ipv4:127.0.0.1:50051,
# 127.0.0.1:50052``, or a DNS name with several addresses) spreads calls over every
# ready one instead of sending all to the first; with one address nothing changes.
_CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 30000),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    ("grpc.enable_retries", 1),
    ("grpc.lb_policy_name", "round_robin"),
)


def open_channel(
    target: str, *, signer: identity.IdentitySigner | None, audience: str
) -> grpc.aio.Channel:
    """A channel to service ``audience`` at ``target`` that presents our identity and
    propagates trace context. Non-blocking; connects on first use. ``target`` may
    list several addresses (``ipv4:host:port,host:port``): calls go round robin."""
    interceptors: list[Any] = list(aio_client_interceptors())  # type: ignore[no-untyped-call]
    if signer is not None:
        interceptors.insert(0, _IdentityClientInterceptor(signer, audience))
    return grpc.aio.insecure_channel(target, interceptors=interceptors, options=_CHANNEL_OPTIONS)


def open_plain_channel(target: str) -> grpc.aio.Channel:
    """A channel like :func:`open_channel`'s but without client interceptors, for hot
    paths: grpc.aio's interceptor machinery costs about 0.1 ms of CPU per call. Every
    call on it must pass ``metadata=call_metadata(signer, audience)``. Non-blocking."""
    return grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)


def call_metadata(signer: identity.IdentitySigner | None, audience: str) -> list[tuple[str, str]]:
    """What :func:`open_channel`'s interceptors attach to a call, for a call on a plain
    channel: the caller's identity token for ``audience`` (cached by the signer) and the
    current trace context (W3C ``traceparent``), so the callee's span is a child of
    the caller's. No client span is opened."""
    metadata: list[tuple[str, str]] = []
    if signer is not None:
        metadata.append((identity.METADATA_KEY, signer.token_for(audience)))
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    metadata.extend(carrier.items())
    return metadata


async def check_health(target: str, service: str = "", timeout: float = 2.0) -> bool:
    """True when ``target`` answers the standard health check with SERVING."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
