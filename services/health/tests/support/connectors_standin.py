"""A small real gRPC server standing in for connectors where its platform is missing.

The connectors service has landed with Meta and LinkedIn; it has no TikTok connector
yet, and the issue's race is about TikTok's rotating refresh tokens. This stand-in
implements just the methods health calls (GetConnection, RefreshConnection,
CheckConnection, ListExpiringConnections, UpdateConnectionStatus, StartAuth) for TikTok
against the platform sandbox over real HTTP, and emits ``connection.events`` on
status changes as connectors does. Its refresh has NO single flight of its own unless
asked (``single_flight=True``), so a test of two health replicas proves that health's
claim alone keeps a rotating token from being spent twice.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from postd.common.v1 import common_pb2
from postd.connectors.v1 import connectors_pb2 as pb
from postd.connectors.v1 import connectors_pb2_grpc
from postd.events.v1 import connection_event_pb2
from postd_common.grpcutil import AccessPolicy, GrpcServer, create_server
from postd_common.identity import IdentityVerifier
from postd_common.kafka import EventProducer, message_headers

CLIENT_KEY = "dev-tiktok-client-id"
CLIENT_SECRET = "dev-tiktok-client-secret"
REDIRECT_URI = "https://app.postd.test/oauth/callback/tiktok"
SCOPES = "user.info.basic,video.publish,video.upload"


def ts(moment: datetime | None) -> Timestamp | None:
    if moment is None:
        return None
    out = Timestamp()
    out.FromDatetime(moment)
    return out


@dataclass
class StoredConnection:
    id: str
    tenant_id: str
    platform: str
    external_id: str
    account_name: str
    scopes: list[str]
    access_token: str
    refresh_token: str
    expires_at: datetime | None
    refresh_expires_at: datetime | None
    status: int = common_pb2.CONNECTION_STATUS_HEALTHY
    status_reason: str = "Connected."
    last_refreshed_at: datetime | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_pb(self) -> pb.Connection:
        return pb.Connection(
            id=self.id,
            tenant_id=self.tenant_id,
            platform=self.platform,
            external_id=self.external_id,
            account_name=self.account_name,
            scopes=self.scopes,
            status=self.status,  # type: ignore[arg-type]
            status_reason=self.status_reason,
            expires_at=ts(self.expires_at),
            refresh_expires_at=ts(self.refresh_expires_at),
            last_refreshed_at=ts(self.last_refreshed_at),
            has_refresh_token=bool(self.refresh_token),
            created_at=ts(self.created_at),
            capabilities=["publish"],
        )


def _error(category: int, status: int, message: str, code: str = "") -> common_pb2.PlatformError:
    return common_pb2.PlatformError(
        category=category,  # type: ignore[arg-type]
        platform="tiktok",
        http_status=status,
        platform_code=code,
        message=message,
        retryable=category
        in (common_pb2.ERROR_CATEGORY_TRANSIENT, common_pb2.ERROR_CATEGORY_PLATFORM_OUTAGE),
    )


def categorize(status: int, body: dict[str, Any]) -> common_pb2.PlatformError:
    """TikTok's answers in the error catalogue's terms (a slice of connectors' data)."""
    err = body.get("error")
    if isinstance(err, dict):
        code, text = str(err.get("code", "")), str(err.get("message", ""))
    else:
        code, text = str(err or ""), str(body.get("error_description", ""))
    if status >= 500:
        return _error(
            common_pb2.ERROR_CATEGORY_TRANSIENT, status, "TikTok had a server error.", code
        )
    if status == 429:
        return _error(
            common_pb2.ERROR_CATEGORY_RATE_LIMITED, status, "TikTok rate-limited us.", code
        )
    if code == "invalid_grant":
        return _error(
            common_pb2.ERROR_CATEGORY_AUTH_REVOKED,
            status,
            "TikTok no longer accepts POSTD's sign-in for this account.",
            code,
        )
    if code in ("scope_not_authorized", "scope_permission_missed"):
        return _error(
            common_pb2.ERROR_CATEGORY_PERMISSION_MISSING,
            status,
            "TikTok says a permission is missing.",
            code,
        )
    if status == 401 and "revoked" in text:
        return _error(
            common_pb2.ERROR_CATEGORY_AUTH_REVOKED,
            status,
            "TikTok says the user revoked POSTD's access.",
            code,
        )
    if status == 401:
        return _error(
            common_pb2.ERROR_CATEGORY_AUTH_EXPIRED, status, "The TikTok token expired.", code
        )
    return _error(common_pb2.ERROR_CATEGORY_UNKNOWN, status, f"TikTok answered {status}.", code)


class ConnectorsStandIn(connectors_pb2_grpc.ConnectorsServiceServicer):
    def __init__(
        self,
        sandbox_url: str,
        http: aiohttp.ClientSession,
        *,
        clock: Callable[[], datetime],
        producer: EventProducer | None = None,
        events_topic: str = "",
        single_flight: bool = False,
        refresh_delay: float = 0.0,
    ) -> None:
        self.sandbox = sandbox_url
        self.http = http
        self.clock = clock
        self.producer = producer
        self.events_topic = events_topic
        self.single_flight = single_flight
        self.refresh_delay = refresh_delay
        self.connections: dict[str, StoredConnection] = {}
        self.refresh_calls = 0
        self.refresh_outcomes: list[str] = []
        self.check_calls = 0
        self.status_updates: list[pb.UpdateConnectionStatusRequest] = []
        self._locks: dict[str, asyncio.Lock] = {}
        self.server: GrpcServer | None = None

    # ------------------------------------------------------------------ test helpers

    async def authorize(self, open_id: str) -> dict[str, Any]:
        """The OAuth dance against the sandbox (a consent directive decides)."""
        async with self.http.post(
            f"{self.sandbox}/_sandbox/consent", json={"platform": "tiktok", "account": open_id}
        ) as resp:
            assert resp.status == 201, await resp.text()
        params = {
            "client_key": CLIENT_KEY,
            "response_type": "code",
            "scope": SCOPES,
            "redirect_uri": REDIRECT_URI,
            "state": uuid.uuid4().hex,
        }
        async with self.http.get(
            f"{self.sandbox}/tiktok/www/v2/auth/authorize/", params=params, allow_redirects=False
        ) as resp:
            assert resp.status == 302, await resp.text()
            query = parse_qs(urlsplit(resp.headers["Location"]).query)
        body = await self._token(
            {
                "grant_type": "authorization_code",
                "code": query["code"][0],
                "redirect_uri": REDIRECT_URI,
            }
        )
        assert "access_token" in body, body
        return body

    async def connect_tiktok(
        self, tenant_id: str, open_id: str = "-000SbxOpenId0001"
    ) -> StoredConnection:
        body = await self.authorize(open_id)
        now = self.clock()
        conn = StoredConnection(
            id=str(uuid.uuid4()),
            tenant_id=tenant_id,
            platform="tiktok",
            external_id=body["open_id"],
            account_name="Sandbox Coffee Co",
            scopes=body["scope"].split(","),
            access_token=body["access_token"],
            refresh_token=body["refresh_token"],
            expires_at=now + timedelta(seconds=body["expires_in"]),
            refresh_expires_at=now + timedelta(seconds=body["refresh_expires_in"]),
            created_at=now,
        )
        self.connections[conn.id] = conn
        await self._emit(conn, common_pb2.CONNECTION_STATUS_UNSPECIFIED, "connect", "Connected.")
        return conn

    async def _token(self, form: dict[str, str]) -> dict[str, Any]:
        async with self.http.post(
            f"{self.sandbox}/tiktok/open/v2/oauth/token/",
            data={"client_key": CLIENT_KEY, "client_secret": CLIENT_SECRET, **form},
        ) as resp:
            body: dict[str, Any] = await resp.json()
            body["_status"] = resp.status
            return body

    async def _emit(self, conn: StoredConnection, previous: int, source: str, reason: str) -> None:
        if self.producer is None or not self.events_topic:
            return
        event = connection_event_pb2.ConnectionEvent(
            tenant_id=conn.tenant_id,
            connection_id=conn.id,
            platform=conn.platform,
            previous_status=previous,  # type: ignore[arg-type]
            status=conn.status,  # type: ignore[arg-type]
            reason=reason,
            occurred_at=ts(datetime.now(UTC)),
            event_id=str(uuid.uuid4()),
            source=source,
            account_name=conn.account_name,
            external_id=conn.external_id,
        )
        await self.producer.produce(
            self.events_topic,
            event,
            key=conn.id,
            headers=message_headers(event, tenant_id=conn.tenant_id),
        )

    def _find(self, tenant_id: str, connection_id: str) -> StoredConnection | None:
        conn = self.connections.get(connection_id)
        if conn is None or conn.tenant_id != tenant_id:
            return None
        return conn

    # ------------------------------------------------------------------ the contract

    async def GetConnection(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        conn = self._find(request.tenant_id, request.connection_id)
        if conn is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such connection")
        assert conn is not None
        return pb.GetConnectionResponse(connection=conn.to_pb())

    async def RefreshConnection(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        conn = self._find(request.tenant_id, request.connection_id)
        if conn is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such connection")
        assert conn is not None
        if self.single_flight:
            lock = self._locks.setdefault(conn.id, asyncio.Lock())
            async with lock:
                return await self._refresh(conn)
        return await self._refresh(conn)

    async def _refresh(self, conn: StoredConnection) -> pb.RefreshConnectionResponse:
        self.refresh_calls += 1
        spent = conn.refresh_token
        if self.refresh_delay:
            await asyncio.sleep(self.refresh_delay)
        try:
            body = await self._token({"grant_type": "refresh_token", "refresh_token": spent})
        except (aiohttp.ClientError, TimeoutError):
            self.refresh_outcomes.append("timeout")
            return pb.RefreshConnectionResponse(
                outcome=pb.REFRESH_OUTCOME_FAILED,
                connection=conn.to_pb(),
                error=_error(common_pb2.ERROR_CATEGORY_TRANSIENT, 0, "TikTok did not answer."),
            )
        status = body.pop("_status")
        if status != 200:
            self.refresh_outcomes.append(f"failed:{status}")
            return pb.RefreshConnectionResponse(
                outcome=pb.REFRESH_OUTCOME_FAILED,
                connection=conn.to_pb(),
                error=categorize(status, body),
            )
        self.refresh_outcomes.append("refreshed")
        now = self.clock()
        conn.access_token = body["access_token"]
        conn.refresh_token = body["refresh_token"]
        conn.expires_at = now + timedelta(seconds=body["expires_in"])
        conn.refresh_expires_at = now + timedelta(seconds=body["refresh_expires_in"])
        conn.last_refreshed_at = now
        return pb.RefreshConnectionResponse(
            outcome=pb.REFRESH_OUTCOME_REFRESHED, connection=conn.to_pb()
        )

    async def CheckConnection(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        conn = self._find(request.tenant_id, request.connection_id)
        if conn is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such connection")
        assert conn is not None
        self.check_calls += 1
        started = time.perf_counter()
        checked = ts(datetime.now(UTC))
        try:
            async with self.http.get(
                f"{self.sandbox}/tiktok/open/v2/user/info/",
                params={"fields": "open_id,display_name"},
                headers={"Authorization": f"Bearer {conn.access_token}"},
                timeout=aiohttp.ClientTimeout(total=2),
            ) as resp:
                status = resp.status
                body = await resp.json()
        except (aiohttp.ClientError, TimeoutError):
            latency = Duration()
            latency.FromTimedelta(timedelta(seconds=time.perf_counter() - started))
            return pb.CheckConnectionResponse(
                result=pb.HealthCheckResult(
                    connection_id=conn.id,
                    ok=False,
                    checked_at=checked,
                    latency=latency,
                    error=_error(common_pb2.ERROR_CATEGORY_TRANSIENT, 0, "TikTok did not answer."),
                )
            )
        latency = Duration()
        latency.FromTimedelta(timedelta(seconds=time.perf_counter() - started))
        ok = status == 200
        return pb.CheckConnectionResponse(
            result=pb.HealthCheckResult(
                connection_id=conn.id,
                ok=ok,
                checked_at=checked,
                latency=latency,
                error=None if ok else categorize(status, body),
            )
        )

    async def ListExpiringConnections(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        before = request.expires_before.ToDatetime(tzinfo=UTC)
        found = [
            c.to_pb()
            for c in self.connections.values()
            if c.status != common_pb2.CONNECTION_STATUS_DISCONNECTED
            and c.expires_at is not None
            and c.expires_at < before
            and (not request.tenant_id or c.tenant_id == request.tenant_id)
        ]
        return pb.ListExpiringConnectionsResponse(connections=found)

    async def UpdateConnectionStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.status_updates.append(request)
        conn = self._find(request.tenant_id, request.connection_id)
        if conn is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such connection")
        assert conn is not None
        if conn.status == common_pb2.CONNECTION_STATUS_DISCONNECTED:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "disconnected")
        if request.expected_status and request.expected_status != conn.status:
            await context.abort(grpc.StatusCode.ABORTED, "the status changed meanwhile")
        previous = conn.status
        if previous == request.status:
            return pb.UpdateConnectionStatusResponse(
                connection=conn.to_pb(),
                previous_status=previous,  # type: ignore[arg-type]
                changed=False,
            )
        conn.status = request.status
        conn.status_reason = request.reason
        await self._emit(conn, previous, request.source, request.reason)
        return pb.UpdateConnectionStatusResponse(
            connection=conn.to_pb(),
            previous_status=previous,  # type: ignore[arg-type]
            changed=True,
        )

    async def StartAuth(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        conn = self._find(request.tenant_id, request.reconnect_connection_id)
        if conn is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such connection")
        assert conn is not None
        return pb.StartAuthResponse(
            authorize_url=f"{self.sandbox}/tiktok/www/v2/auth/authorize/",
            state=uuid.uuid4().hex,
            requested_scopes=conn.scopes,
        )

    async def reconnect(self, conn: StoredConnection) -> None:
        """A person reconnected: fresh tokens, healthy again (and announced)."""
        previous = conn.status
        body = await self.authorize(conn.external_id)
        now = self.clock()
        conn.access_token, conn.refresh_token = body["access_token"], body["refresh_token"]
        conn.expires_at = now + timedelta(seconds=body["expires_in"])
        conn.refresh_expires_at = now + timedelta(seconds=body["refresh_expires_in"])
        conn.status = common_pb2.CONNECTION_STATUS_HEALTHY
        conn.status_reason = "Reconnected."
        await self._emit(conn, previous, "reconnect", "Reconnected.")


async def serve(
    standin: ConnectorsStandIn, verifier: IdentityVerifier, *, port: int = 0
) -> GrpcServer:
    """Serve the stand-in on a loopback port (a given one to come back where it was)."""
    server = create_server(
        service="connectors",
        address=f"127.0.0.1:{port}",
        register=[
            lambda s: connectors_pb2_grpc.add_ConnectorsServiceServicer_to_server(standin, s)
        ],
        service_names=["postd.connectors.v1.ConnectorsService"],
        verifier=verifier,
        policy=AccessPolicy(default=frozenset({"health", "tests"})),
    )
    await server.start()
    standin.server = server
    return server
