"""gRPC servicer: protos ↔ domain; domain errors become status codes here only."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from postd.webhook_router.v1 import webhook_router_pb2 as pb
from postd.webhook_router.v1 import webhook_router_pb2_grpc as pb_grpc
from postd_common.errors import InvalidArgument, NotFound, Unavailable
from postd_common.grpcutil import AccessPolicy, map_domain_errors
from postd_common.logging import get_logger
from postd_webhook_router.adapters.postgres import EventFilter, PostgresStore
from postd_webhook_router.domain.ingest import SOURCE_FAMILY, IngestService, key_hash
from postd_webhook_router.domain.model import (
    InboundRequest,
    InboundSource,
    IngestResult,
    Verdict,
)
from postd_webhook_router.domain.outbound import EndpointService
from postd_webhook_router.domain.processing import replay_messages
from postd_webhook_router.http_passthrough import RETRY_AFTER_SECONDS

log = get_logger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["WebhookRouterService"].full_name
_PREFIX = f"/{SERVICE_NAME}/"

POLICY = AccessPolicy(
    methods={
        f"{_PREFIX}CreateInboundKey": frozenset({"gateway", "connectors"}),
        f"{_PREFIX}RevokeInboundKey": frozenset({"gateway", "connectors"}),
        _PREFIX: frozenset({"gateway"}),
    }
)

# Webhooks per IngestWebhooks call (the gateway sends far fewer: see http_passthrough).
MAX_BATCH = 1000
# A webhook of a batch that could not be stored: the gateway answers this as is.
NOT_STORED = pb.IngestWebhookResponse(
    http_status=503,
    headers=[pb.HttpHeader(name="Retry-After", value=RETRY_AFTER_SECONDS)],
    verdict=pb.WEBHOOK_VERDICT_UNSPECIFIED,
    verdict_reason="not stored; retry later",
)

_VERDICT_TO_PB = {v: getattr(pb, f"WEBHOOK_VERDICT_{v.name}") for v in Verdict}
_PB_TO_VERDICT = {n: v.value for v, n in _VERDICT_TO_PB.items()}
_STATE_TO_PB = {
    "pending": pb.PROCESSING_STATE_PENDING,
    "emitted": pb.PROCESSING_STATE_EMITTED,
    "retrying": pb.PROCESSING_STATE_RETRYING,
    "dead_lettered": pb.PROCESSING_STATE_DEAD_LETTERED,
    "skipped": pb.PROCESSING_STATE_SKIPPED,
}
_ENDPOINT_STATE = {
    "enabled": pb.ENDPOINT_STATE_ENABLED,
    "disabled": pb.ENDPOINT_STATE_DISABLED,
    "disabled_failing": pb.ENDPOINT_STATE_DISABLED_FAILING,
}
_DELIVERY_STATE = {
    "pending": pb.DELIVERY_STATE_PENDING,
    "succeeded": pb.DELIVERY_STATE_SUCCEEDED,
    "retrying": pb.DELIVERY_STATE_RETRYING,
    "failed": pb.DELIVERY_STATE_FAILED,
}
_DELIVERY_STATE_NAME = {v: k for k, v in _DELIVERY_STATE.items()}


def _ts(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _page_size(value: int) -> int:
    if value < 0:
        raise InvalidArgument("page_size must not be negative", field="page_size")
    return min(value or 50, 500)


def _token(last: tuple[datetime, str], filters: str) -> str:
    raw = json.dumps({"t": last[0].isoformat(), "i": last[1], "f": filters})
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _after(token: str, filters: str) -> tuple[datetime, str] | None:
    if not token:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        if data["f"] != filters:
            raise ValueError("filters changed")
        return datetime.fromisoformat(data["t"]), str(uuid.UUID(data["i"]))
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise InvalidArgument(
            "page_token is malformed or was issued for other filters", field="page_token"
        ) from exc


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, default=str, sort_keys=True).encode()).hexdigest()[:16]


def _window(request: Any) -> tuple[datetime | None, datetime | None]:
    if not request.HasField("received_window"):
        return None, None
    window = request.received_window
    start = window.start_time.ToDatetime(UTC) if window.HasField("start_time") else None
    end = window.end_time.ToDatetime(UTC) if window.HasField("end_time") else None
    return start, end


def event_pb(row: dict[str, Any], *, include_body: bool = False) -> pb.WebhookEvent:
    headers = row["headers"] if isinstance(row["headers"], list) else json.loads(row["headers"])
    event = pb.WebhookEvent(
        id=str(row["id"]),
        platform=row["platform"],
        tenant_id=row["tenant_id"],
        connection_id=row["connection_id"],
        external_account_id=row["external_account_id"],
        types=list(row["types"]),
        verdict=_VERDICT_TO_PB[Verdict(row["verdict"])],
        verdict_reason=row["verdict_reason"],
        platform_event_id=row["platform_event_id"],
        dedupe_key=row["dedupe_key"] or "",
        processing_state=_STATE_TO_PB.get(row["state"], pb.PROCESSING_STATE_UNSPECIFIED),
        received_at=_ts(row["received_at"]),
        emitted_at=_ts(row["emitted_at"]),
        http_method=row["http_method"],
        headers=[pb.HttpHeader(name=k, value=v) for k, v in headers],
        body_sha256=row["body_sha256"],
        body_size=row["body_size"],
        replay_count=row["replay_count"],
        remote_addr=row["remote_addr"],
    )
    if include_body and row["body"] is not None:
        event.body = bytes(row["body"])
    return event


def endpoint_pb(row: dict[str, Any]) -> pb.Endpoint:
    return pb.Endpoint(
        id=str(row["id"]),
        tenant_id=row["tenant_id"],
        url=row["url"],
        description=row["description"],
        event_types=list(row["event_types"]),
        state=_ENDPOINT_STATE.get(row["state"], pb.ENDPOINT_STATE_UNSPECIFIED),
        disabled_reason=row["disabled_reason"],
        consecutive_failures=row["consecutive_failures"],
        last_success_at=_ts(row["last_success_at"]),
        last_failure_at=_ts(row["last_failure_at"]),
        secret_hint=row["secret_hint"],
        previous_secret_expires_at=_ts(row["previous_secret_expires_at"]),
        created_at=_ts(row["created_at"]),
        updated_at=_ts(row["updated_at"]),
    )


def delivery_pb(row: dict[str, Any]) -> pb.Delivery:
    latency = duration_pb2.Duration()
    latency.FromMilliseconds(int(row["last_latency_ms"]))
    return pb.Delivery(
        id=str(row["id"]),
        tenant_id=row["tenant_id"],
        endpoint_id=str(row["endpoint_id"]),
        message_id=row["message_id"],
        event_type=row["event_type"],
        state=_DELIVERY_STATE.get(row["state"], pb.DELIVERY_STATE_UNSPECIFIED),
        attempt_count=row["attempt_count"],
        last_http_status=row["last_http_status"],
        last_error=row["last_error"],
        last_latency=latency,
        next_attempt_at=_ts(row["next_attempt_at"]) if row["state"] == "retrying" else None,
        created_at=_ts(row["created_at"]),
        finished_at=_ts(row["finished_at"]),
    )


def _ingest_pb(result: IngestResult) -> pb.IngestWebhookResponse:
    return pb.IngestWebhookResponse(
        http_status=result.http_status,
        body=result.body,
        content_type=result.content_type,
        event_id=result.event_id,
        verdict=_VERDICT_TO_PB[result.verdict],
        verdict_reason=result.reason,
    )


def _log_unexpected(error: Exception) -> None:
    """With its traceback, as the interceptor logs a failed IngestWebhook."""
    try:
        raise error
    except Exception:
        log.exception("webhook ingest failed", error=type(error).__name__)


def _require(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(f"{field} is required", field=field)
    return value


class WebhookRouterServicer(pb_grpc.WebhookRouterServiceServicer):
    def __init__(
        self,
        ingest: IngestService,
        store: PostgresStore,
        endpoints: EndpointService,
        *,
        events_topic: str,
        clock: Callable[[], datetime],
        on_enqueued: Callable[[], None] = lambda: None,
    ) -> None:
        self._ingest = ingest
        self._store = store
        self._endpoints = endpoints
        self._events_topic = events_topic
        self._clock = clock
        self._on_enqueued = on_enqueued

    # -------------------------------------------------------------- inbound

    def _inbound(self, request: pb.IngestWebhookRequest) -> tuple[InboundRequest, int, bool]:
        received = (
            request.received_at.ToDatetime(UTC)
            if request.HasField("received_at")
            else self._clock()
        )
        inbound = InboundRequest(
            method=(request.http_method or "POST").upper(),
            platform=request.platform,
            path_key=request.path_key,
            body=request.body,
            headers=[(h.name, h.value) for h in request.headers],
            query_string=request.query_string,
            remote_addr=request.remote_addr,
            received_at=received,
        )
        return inbound, request.declared_body_size, request.body_truncated

    @map_domain_errors
    async def IngestWebhook(
        self, request: pb.IngestWebhookRequest, context: grpc.aio.ServicerContext
    ) -> pb.IngestWebhookResponse:
        inbound, declared, truncated = self._inbound(request)
        result = await self._ingest.ingest(inbound, declared_size=declared, truncated=truncated)
        return _ingest_pb(result)

    @map_domain_errors
    async def IngestWebhooks(
        self, request: pb.IngestWebhooksRequest, context: grpc.aio.ServicerContext
    ) -> pb.IngestWebhooksResponse:
        if len(request.webhooks) > MAX_BATCH:
            raise InvalidArgument(
                f"at most {MAX_BATCH} webhooks per call, not {len(request.webhooks)}",
                field="webhooks",
            )
        results = await self._ingest.ingest_many([self._inbound(w) for w in request.webhooks])
        # A webhook whose ingest raised is what IngestWebhook would have failed: not
        # stored (or not known to be), so not acknowledged; the others stand.
        errors = {type(r): r for r in results if isinstance(r, Exception)}
        if errors:
            log.warning(
                "webhooks of a batch not stored",
                failed=sum(isinstance(r, Exception) for r in results),
                batch=len(results),
                errors=sorted(t.__name__ for t in errors),
            )
            for error in errors.values():
                if not isinstance(error, Unavailable):
                    _log_unexpected(error)
        return pb.IngestWebhooksResponse(
            webhooks=[NOT_STORED if isinstance(r, Exception) else _ingest_pb(r) for r in results]
        )

    def _filter(self, request: Any) -> EventFilter:
        start, end = _window(request)
        return EventFilter(
            tenant_id=request.tenant_id,
            platform=request.platform,
            verdicts=[
                _PB_TO_VERDICT[v] for v in getattr(request, "verdicts", []) if v in _PB_TO_VERDICT
            ],
            types=list(request.types),
            connection_id=getattr(request, "connection_id", ""),
            received_from=start,
            received_to=end,
        )

    @map_domain_errors
    async def ListWebhookEvents(
        self, request: pb.ListWebhookEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListWebhookEventsResponse:
        size = _page_size(request.page_size)
        where = self._filter(request)
        fingerprint = _fingerprint(where)
        rows = await self._store.list_events(
            where, size + 1, _after(request.page_token, fingerprint)
        )
        more = len(rows) > size
        rows = rows[:size]
        token = _token((rows[-1]["received_at"], str(rows[-1]["id"])), fingerprint) if more else ""
        return pb.ListWebhookEventsResponse(
            events=[event_pb(r) for r in rows], next_page_token=token
        )

    @map_domain_errors
    async def GetWebhookEvent(
        self, request: pb.GetWebhookEventRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetWebhookEventResponse:
        row = await self._store.get_event(request.tenant_id, _require(request.event_id, "event_id"))
        if row is None:
            raise NotFound(f"webhook event {request.event_id} not found", field="event_id")
        return pb.GetWebhookEventResponse(event=event_pb(row, include_body=request.include_body))

    @map_domain_errors
    async def ReplayWebhookEvents(
        self, request: pb.ReplayWebhookEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReplayWebhookEventsResponse:
        by_range = bool(request.platform) or request.HasField("received_window")
        if bool(request.event_ids) == by_range:
            raise InvalidArgument("give either event_ids, or platform with received_window")
        if request.event_ids:
            ids = list(dict.fromkeys(request.event_ids))
            for event_id in ids:
                try:
                    uuid.UUID(event_id)
                except ValueError as exc:
                    raise NotFound(
                        f"webhook event {event_id} not found", field="event_ids"
                    ) from exc
            raw_ids, records = await self._store.replay_records(request.tenant_id, ids, None)
            missing = sorted(set(ids) - set(raw_ids))
            if missing:
                raise NotFound(f"webhook events not found: {', '.join(missing)}", field="event_ids")
        else:
            if not request.platform or not request.HasField("received_window"):
                raise InvalidArgument("a range replay needs platform and received_window")
            where = self._filter(request)
            raw_ids, records = await self._store.replay_records(request.tenant_id, [], where)
        messages = replay_messages(records, self._events_topic)
        if raw_ids:
            await self._store.mark_replayed(raw_ids, messages)
            self._on_enqueued()
        return pb.ReplayWebhookEventsResponse(replayed_count=len(messages))

    @map_domain_errors
    async def CreateInboundKey(
        self, request: pb.CreateInboundKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateInboundKeyResponse:
        tenant = _require(request.tenant_id, "tenant_id")
        family = SOURCE_FAMILY.get(request.platform)
        if family is None:
            raise InvalidArgument(
                f"platform {request.platform!r} takes no path key (mailchimp, custom)",
                field="platform",
            )
        path_key = secrets.token_urlsafe(32)
        source = InboundSource(str(uuid.uuid4()), tenant, request.connection_id, family)
        await self._store.create_source(source, key_hash(path_key), path_key[:4])
        return pb.CreateInboundKeyResponse(
            key_id=source.id, path_key=path_key, url_path=f"/webhooks/{request.platform}/{path_key}"
        )

    @map_domain_errors
    async def RevokeInboundKey(
        self, request: pb.RevokeInboundKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeInboundKeyResponse:
        try:
            uuid.UUID(request.key_id)
        except ValueError as exc:
            raise NotFound("inbound key not found", field="key_id") from exc
        if not await self._store.revoke_source(
            _require(request.tenant_id, "tenant_id"), request.key_id
        ):
            raise NotFound("inbound key not found", field="key_id")
        return pb.RevokeInboundKeyResponse()

    # -------------------------------------------------------------- outbound

    @map_domain_errors
    async def CreateEndpoint(
        self, request: pb.CreateEndpointRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateEndpointResponse:
        endpoint, secret = await self._endpoints.create(
            _require(request.tenant_id, "tenant_id"),
            _require(request.url, "url"),
            request.description,
            list(request.event_types),
            request.created_by,
        )
        return pb.CreateEndpointResponse(
            endpoint=endpoint_pb(endpoint), signing_secret=secret.reveal()
        )

    @map_domain_errors
    async def ListEndpoints(
        self, request: pb.ListEndpointsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListEndpointsResponse:
        tenant = _require(request.tenant_id, "tenant_id")
        size = _page_size(request.page_size)
        fingerprint = _fingerprint(tenant)
        rows = await self._store.list_endpoints(
            tenant, size + 1, _after(request.page_token, fingerprint)
        )
        more = len(rows) > size
        rows = rows[:size]
        token = _token((rows[-1]["created_at"], str(rows[-1]["id"])), fingerprint) if more else ""
        return pb.ListEndpointsResponse(
            endpoints=[endpoint_pb(r) for r in rows], next_page_token=token
        )

    @map_domain_errors
    async def UpdateEndpoint(
        self, request: pb.UpdateEndpointRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateEndpointResponse:
        paths: Sequence[str] = list(request.update_mask.paths)
        allowed = {"url", "description", "event_types", "enabled"}
        unknown = sorted(set(paths) - allowed)
        if unknown:
            raise InvalidArgument(f"unknown update_mask paths {unknown}", field="update_mask")
        fields = {
            "url": request.url,
            "description": request.description,
            "event_types": list(request.event_types),
            "enabled": request.enabled,
        }
        endpoint = await self._endpoints.update(
            _require(request.tenant_id, "tenant_id"),
            _require(request.endpoint_id, "endpoint_id"),
            {p: fields[p] for p in paths},
        )
        return pb.UpdateEndpointResponse(endpoint=endpoint_pb(endpoint))

    @map_domain_errors
    async def DeleteEndpoint(
        self, request: pb.DeleteEndpointRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteEndpointResponse:
        await self._endpoints.delete(
            _require(request.tenant_id, "tenant_id"), _require(request.endpoint_id, "endpoint_id")
        )
        return pb.DeleteEndpointResponse()

    @map_domain_errors
    async def RotateEndpointSecret(
        self, request: pb.RotateEndpointSecretRequest, context: grpc.aio.ServicerContext
    ) -> pb.RotateEndpointSecretResponse:
        overlap = (
            request.overlap.ToTimedelta().total_seconds() if request.HasField("overlap") else None
        )
        endpoint, secret = await self._endpoints.rotate(
            _require(request.tenant_id, "tenant_id"),
            _require(request.endpoint_id, "endpoint_id"),
            overlap,
        )
        return pb.RotateEndpointSecretResponse(
            endpoint=endpoint_pb(endpoint), signing_secret=secret.reveal()
        )

    @map_domain_errors
    async def ListDeliveries(
        self, request: pb.ListDeliveriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDeliveriesResponse:
        tenant = _require(request.tenant_id, "tenant_id")
        if request.endpoint_id and (
            await self._store.get_endpoint(tenant, request.endpoint_id) is None
        ):
            raise NotFound(f"endpoint {request.endpoint_id} not found", field="endpoint_id")
        size = _page_size(request.page_size)
        states = [_DELIVERY_STATE_NAME[s] for s in request.states if s in _DELIVERY_STATE_NAME]
        fingerprint = _fingerprint(tenant, request.endpoint_id, states, request.event_type)
        rows = await self._store.list_deliveries(
            tenant,
            request.endpoint_id,
            states,
            request.event_type,
            size + 1,
            _after(request.page_token, fingerprint),
        )
        more = len(rows) > size
        rows = rows[:size]
        token = _token((rows[-1]["created_at"], str(rows[-1]["id"])), fingerprint) if more else ""
        return pb.ListDeliveriesResponse(
            deliveries=[delivery_pb(r) for r in rows], next_page_token=token
        )
