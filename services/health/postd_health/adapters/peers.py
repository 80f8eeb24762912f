"""gRPC clients of the connectors and publisher services, behind health's ports."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar
from urllib.parse import urlencode

import grpc

from postd.connectors.v1 import connectors_pb2, connectors_pb2_grpc
from postd.publisher.v1 import publisher_pb2, publisher_pb2_grpc
from postd_common.logging import get_logger
from postd_health.adapters import protos
from postd_health.domain.model import Category, ConnectionInfo, Failure, MissedJobs, Status
from postd_health.ports import (
    CheckReport,
    ConnectionGone,
    PeerUnavailable,
    ReconnectLink,
    RefreshOutcome,
    RefreshReport,
    StatusConflict,
    StatusUpdate,
)

log = get_logger(__name__)

T = TypeVar("T")

_OUTCOMES = {
    connectors_pb2.REFRESH_OUTCOME_REFRESHED: RefreshOutcome.REFRESHED,
    connectors_pb2.REFRESH_OUTCOME_NOT_DUE: RefreshOutcome.NOT_DUE,
    connectors_pb2.REFRESH_OUTCOME_CHECKED: RefreshOutcome.CHECKED,
    connectors_pb2.REFRESH_OUTCOME_FAILED: RefreshOutcome.FAILED,
}


async def _call(peer: str, call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
        details = exc.details() or code.name
        if code is grpc.StatusCode.NOT_FOUND:
            raise ConnectionGone(details) from exc
        if code is grpc.StatusCode.FAILED_PRECONDITION:
            raise ConnectionGone(details, disconnected=True) from exc
        if code is grpc.StatusCode.ABORTED:
            raise StatusConflict(details) from exc
        if code not in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.CANCELLED,
        ):
            log.error("peer refused a call", peer=peer, code=code.name, details=details)
        raise PeerUnavailable(f"{peer} did not answer ({code.name}): {details}") from exc


def _check(result: connectors_pb2.HealthCheckResult) -> CheckReport:
    return CheckReport(
        ok=result.ok,
        checked_at=protos.from_ts(result.checked_at, result.HasField("checked_at"))
        or datetime.now(UTC),
        latency=protos.from_duration(result.latency, result.HasField("latency")),
        failure=protos.failure_from_proto(result.error) if result.HasField("error") else None,
        granted_scopes=tuple(result.granted_scopes),
    )


class GrpcConnectors:
    """Connectors over gRPC. ``public_url`` is the gateway's public base URL: the
    reconnect link is its ``/v1/connect/{platform}?reconnect=...`` route, which starts
    OAuth (connectors.StartAuth) when the person follows it."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        public_url: str,
        timeout: float = 10.0,
        refresh_timeout: float = 45.0,
    ) -> None:
        self._stub = connectors_pb2_grpc.ConnectorsServiceStub(channel)
        self._public_url = public_url.rstrip("/")
        self._timeout = timeout
        self._refresh_timeout = refresh_timeout
        self._start_auth_allowed = True

    async def get_connection(self, tenant_id: str, connection_id: str) -> ConnectionInfo:
        reply = await _call(
            "connectors",
            lambda: self._stub.GetConnection(
                connectors_pb2.GetConnectionRequest(
                    tenant_id=tenant_id, connection_id=connection_id
                ),
                timeout=self._timeout,
            ),
        )
        return protos.connection_from_proto(reply.connection)

    async def refresh(
        self, tenant_id: str, connection_id: str, *, reason: str, force: bool
    ) -> RefreshReport:
        started = datetime.now(UTC)
        reply = await _call(
            "connectors",
            lambda: self._stub.RefreshConnection(
                connectors_pb2.RefreshConnectionRequest(
                    tenant_id=tenant_id, connection_id=connection_id, force=force, reason=reason
                ),
                timeout=self._refresh_timeout,
            ),
        )
        outcome = _OUTCOMES.get(reply.outcome, RefreshOutcome.FAILED)
        failure = protos.failure_from_proto(reply.error) if reply.HasField("error") else None
        if outcome is RefreshOutcome.FAILED and failure is None:
            failure = Failure(Category.UNKNOWN, message="The refresh failed without a reason.")
        return RefreshReport(
            outcome=outcome,
            connection=protos.connection_from_proto(reply.connection)
            if reply.HasField("connection")
            else None,
            failure=failure,
            check=_check(reply.check) if reply.HasField("check") else None,
            joined_in_flight=reply.joined_in_flight,
            latency=datetime.now(UTC) - started,
        )

    async def check(self, tenant_id: str, connection_id: str) -> CheckReport:
        reply = await _call(
            "connectors",
            lambda: self._stub.CheckConnection(
                connectors_pb2.CheckConnectionRequest(
                    tenant_id=tenant_id, connection_id=connection_id
                ),
                timeout=self._refresh_timeout,
            ),
        )
        return _check(reply.result)

    async def list_expiring(
        self, expires_before: datetime, page_token: str, page_size: int
    ) -> tuple[list[ConnectionInfo], str]:
        reply = await _call(
            "connectors",
            lambda: self._stub.ListExpiringConnections(
                connectors_pb2.ListExpiringConnectionsRequest(
                    expires_before=protos.ts(expires_before),
                    page_size=page_size,
                    page_token=page_token,
                ),
                timeout=self._timeout,
            ),
        )
        return [protos.connection_from_proto(c) for c in reply.connections], reply.next_page_token

    async def update_status(
        self,
        tenant_id: str,
        connection_id: str,
        *,
        status: Status,
        expected: Status,
        reason: str,
        category: Category | None,
        failure: Failure | None,
        source: str,
    ) -> StatusUpdate:
        reply = await _call(
            "connectors",
            lambda: self._stub.UpdateConnectionStatus(
                connectors_pb2.UpdateConnectionStatusRequest(
                    tenant_id=tenant_id,
                    connection_id=connection_id,
                    status=protos.status_to_proto(status),  # type: ignore[arg-type]
                    expected_status=protos.status_to_proto(expected),  # type: ignore[arg-type]
                    reason=reason,
                    category=protos.category_to_proto(category),  # type: ignore[arg-type]
                    error=protos.failure_to_proto(failure),
                    source=source,
                ),
                timeout=self._timeout,
            ),
        )
        return StatusUpdate(
            connection=protos.connection_from_proto(reply.connection),
            previous_status=protos.status_from_proto(reply.previous_status),
            changed=reply.changed,
        )

    async def reconnect_link(
        self, tenant_id: str, connection_id: str, platform: str, capabilities: Sequence[str]
    ) -> ReconnectLink:
        # The link is the gateway's route that starts the OAuth flow (StartAuth) when a
        # person follows it: a StartAuth state lives ten minutes, too short for an email.
        # Health asks StartAuth itself only to learn the exact scopes to name.
        query = [("reconnect", connection_id), *(("capability", c) for c in capabilities)]
        url = f"{self._public_url}/v1/connect/{platform}?{urlencode(query)}"
        if not self._start_auth_allowed:
            return ReconnectLink(url)
        try:
            reply = await self._stub.StartAuth(
                connectors_pb2.StartAuthRequest(
                    tenant_id=tenant_id,
                    user_id="service:health",
                    platform=platform,
                    capabilities=list(capabilities),
                    redirect_uri=f"{self._public_url}/oauth/callback/{platform}",
                    reconnect_connection_id=connection_id,
                ),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.NOT_FOUND:
                raise ConnectionGone(exc.details() or "no such connection") from exc
            if exc.code() is grpc.StatusCode.PERMISSION_DENIED:
                # Connectors' policy keeps StartAuth for the gateway: say so once, then
                # hand out links without naming the scopes.
                self._start_auth_allowed = False
                log.warning("connectors refuses StartAuth to health; links name no scopes")
            return ReconnectLink(url)
        return ReconnectLink(url, tuple(reply.requested_scopes))


class GrpcPublisher:
    def __init__(self, channel: grpc.aio.Channel, *, timeout: float = 10.0) -> None:
        self._stub = publisher_pb2_grpc.PublisherServiceStub(channel)
        self._timeout = timeout

    async def count_missed(self, tenant_id: str, connection_id: str) -> MissedJobs:
        reply = await _call(
            "publisher",
            lambda: self._stub.CountMissedJobs(
                publisher_pb2.CountMissedJobsRequest(
                    tenant_id=tenant_id, connection_id=connection_id
                ),
                timeout=self._timeout,
            ),
        )
        return MissedJobs(
            count=reply.missed_count,
            oldest_due_at=protos.from_ts(reply.oldest_due_at, reply.HasField("oldest_due_at")),
            newest_due_at=protos.from_ts(reply.newest_due_at, reply.HasField("newest_due_at")),
            paused=reply.paused,
        )
