"""Inbound webhooks (raw pass-through to the webhook router), stored webhook events,
outbound endpoints and their deliveries (webhook-router service)."""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web
from google.protobuf.field_mask_pb2 import FieldMask

from postd.webhook_router.v1 import webhook_router_pb2 as wr
from postd_common.logging import get_logger
from postd_gateway.protojson import SchemaRegistry, to_json
from postd_gateway.resources.common import (
    call_backend,
    enum_param,
    enums,
    message_input,
    no_content,
    ok,
    page_args,
    string_param,
)
from postd_gateway.routing import (
    ID_SCHEMA,
    Answer,
    Body,
    Call,
    Param,
    Reply,
    Route,
    page,
    page_query,
    page_schema,
)
from postd_webhook_router.http_passthrough import passthrough

log = get_logger(__name__)

ID: Final = ID_SCHEMA
EVENT_TYPES: Final = {
    "type": "array",
    "items": {"type": "string", "pattern": "^[a-z][a-z0-9_.]{0,63}$"},
    "maxItems": 50,
    "uniqueItems": True,
}


# --------------------------------------------------------------------------- inbound


async def inbound_webhook(call: Call) -> web.StreamResponse:
    """Pass the request to the router untouched and answer what it says (the webhook
    router's own pass-through handler: it stops reading at the size limit and lets
    the router record the rejection; concurrent webhooks share one call)."""
    return await passthrough(
        call.request,
        call.ports.backends.webhook_ingest,
        max_body_bytes=call.ports.settings.webhook_max_body_bytes,
    )


# --------------------------------------------------------------------------- events


async def list_events(call: Call) -> Reply:
    response = await call_backend(
        call,
        call.ports.backends.webhooks.ListWebhookEvents,
        wr.ListWebhookEventsRequest(
            tenant_id=call.tenant.tenant_id,
            platform=call.query.get("platform", ""),
            verdicts=enums(call.query.get("verdict"), wr.WebhookVerdict.DESCRIPTOR),
            types=call.query.get("type", []),
            connection_id=call.query.get("connection_id", ""),
            **page_args(call),
        ),
        fields={"verdicts": "verdict", "types": "type"},
    )
    return Reply(body=page([to_json(e) for e in response.events], response.next_page_token))


async def get_event(call: Call) -> Reply:
    response = await call_backend(
        call,
        call.ports.backends.webhooks.GetWebhookEvent,
        wr.GetWebhookEventRequest(
            tenant_id=call.tenant.tenant_id,
            event_id=call.path["event_id"],
            include_body=bool(call.query.get("include_body", False)),
        ),
    )
    return Reply(body=to_json(response.event))


async def replay_events(call: Call) -> Reply:
    body = call.body or {}
    request = wr.ReplayWebhookEventsRequest(
        tenant_id=call.tenant.tenant_id,
        event_ids=body.get("event_ids", []),
        platform=body.get("platform", ""),
        types=body.get("types", []),
        requested_by=call.tenant.actor,
    )
    if "received_after" in body or "received_before" in body:
        window = message_input(
            {
                k: v
                for k, v in (
                    ("start_time", body.get("received_after")),
                    ("end_time", body.get("received_before")),
                )
                if v is not None
            },
            type(request.received_window),
            "received_after",
        )
        request.received_window.CopyFrom(window)
    response = await call_backend(
        call,
        call.ports.backends.webhooks.ReplayWebhookEvents,
        request,
        fields={"received_window": "received_after"},
    )
    return Reply(body=to_json(response))


# --------------------------------------------------------------------------- endpoints


async def list_endpoints(call: Call) -> Reply:
    response = await call_backend(
        call,
        call.ports.backends.webhooks.ListEndpoints,
        wr.ListEndpointsRequest(tenant_id=call.tenant.tenant_id, **page_args(call)),
    )
    return Reply(body=page([to_json(e) for e in response.endpoints], response.next_page_token))


async def create_endpoint(call: Call) -> Reply:
    body = call.body or {}
    response = await call_backend(
        call,
        call.ports.backends.webhooks.CreateEndpoint,
        wr.CreateEndpointRequest(
            tenant_id=call.tenant.tenant_id,
            url=body["url"],
            description=body.get("description", ""),
            event_types=body.get("event_types", []),
            created_by=call.tenant.actor,
        ),
    )
    return Reply(
        201, to_json(response), {"Location": f"/v1/webhook-endpoints/{response.endpoint.id}"}
    )


async def update_endpoint(call: Call) -> Reply:
    body = call.body or {}
    response = await call_backend(
        call,
        call.ports.backends.webhooks.UpdateEndpoint,
        wr.UpdateEndpointRequest(
            tenant_id=call.tenant.tenant_id,
            endpoint_id=call.path["endpoint_id"],
            url=body.get("url", ""),
            description=body.get("description", ""),
            event_types=body.get("event_types", []),
            enabled=bool(body.get("enabled", False)),
            update_mask=FieldMask(paths=sorted(body)),
        ),
    )
    return Reply(body=to_json(response.endpoint))


async def delete_endpoint(call: Call) -> Reply:
    await call_backend(
        call,
        call.ports.backends.webhooks.DeleteEndpoint,
        wr.DeleteEndpointRequest(
            tenant_id=call.tenant.tenant_id, endpoint_id=call.path["endpoint_id"]
        ),
    )
    return Reply(204)


async def rotate_endpoint_secret(call: Call) -> Reply:
    body = call.body or {}
    request = wr.RotateEndpointSecretRequest(
        tenant_id=call.tenant.tenant_id, endpoint_id=call.path["endpoint_id"]
    )
    if "overlap_seconds" in body:
        request.overlap.seconds = int(body["overlap_seconds"])
    response = await call_backend(call, call.ports.backends.webhooks.RotateEndpointSecret, request)
    return Reply(body=to_json(response))


async def list_deliveries(call: Call) -> Reply:
    response = await call_backend(
        call,
        call.ports.backends.webhooks.ListDeliveries,
        wr.ListDeliveriesRequest(
            tenant_id=call.tenant.tenant_id,
            endpoint_id=call.query.get("endpoint_id", ""),
            states=enums(call.query.get("state"), wr.DeliveryState.DESCRIPTOR),
            event_type=call.query.get("event_type", ""),
            **page_args(call),
        ),
        fields={"states": "state"},
    )
    return Reply(body=page([to_json(d) for d in response.deliveries], response.next_page_token))


async def create_inbound_key(call: Call) -> Reply:
    body = call.body or {}
    response = await call_backend(
        call,
        call.ports.backends.webhooks.CreateInboundKey,
        wr.CreateInboundKeyRequest(
            tenant_id=call.tenant.tenant_id,
            platform=body["platform"],
            connection_id=body.get("connection_id", ""),
        ),
    )
    return Reply(201, to_json(response))


async def revoke_inbound_key(call: Call) -> Reply:
    await call_backend(
        call,
        call.ports.backends.webhooks.RevokeInboundKey,
        wr.RevokeInboundKeyRequest(tenant_id=call.tenant.tenant_id, key_id=call.path["key_id"]),
    )
    return Reply(204)


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "additionalProperties": False}
    schema["properties"] = properties
    if required:
        schema["required"] = list(required)
    return schema


def routes(reg: SchemaRegistry) -> list[Route]:
    event = reg.ref(wr.WebhookEvent.DESCRIPTOR)
    endpoint = reg.ref(wr.Endpoint.DESCRIPTOR)
    url = {"type": "string", "format": "uri", "minLength": 8, "maxLength": 2048}
    # The router decides body and content type (a challenge, an ack, or nothing).
    raw_answers = [
        Answer(200, "Accepted, a duplicate, or a handshake answered (challenge in the body)."),
        Answer(400, "Signed correctly but unparseable."),
        Answer(401, "Signature missing, wrong or stale."),
        Answer(403, "A handshake with the wrong verify token."),
        Answer(404, "No such platform or path key."),
        Answer(413, "The body is over the size limit (recorded as rejected)."),
        Answer(503, "The event could not be stored; the platform should retry."),
    ]
    inbound = [
        Route(
            method,
            path,
            inbound_webhook,
            f"inboundWebhook{method.title()}{'Key' if 'key' in path else ''}",
            "Platform webhook (raw pass-through)",
            "webhooks",
            raw_answers,
            access="public",
            raw=True,
            open_query=True,
            description="Unauthenticated: the webhook router verifies each platform's "
            "signature. The body is passed byte for byte; size-limited.",
        )
        for path in ("/webhooks/{platform}", "/webhooks/{platform}/{key}")
        for method in ("GET", "POST")
    ]
    return [
        *inbound,
        Route(
            "GET",
            "/v1/webhook-events",
            list_events,
            "listWebhookEvents",
            "List received webhook events",
            "webhooks",
            [Answer(200, "A page of events, newest first.", page_schema(event))],
            query=page_query(
                (
                    string_param("platform", "Only this platform."),
                    enum_param("verdict", wr.WebhookVerdict.DESCRIPTOR, "Only these verdicts."),
                    string_param("type", "Only events that yielded these types.", repeated=True),
                    string_param("connection_id", "Only this connection."),
                )
            ),
        ),
        Route(
            "GET",
            "/v1/webhook-events/{event_id}",
            get_event,
            "getWebhookEvent",
            "Get a received webhook event",
            "webhooks",
            [Answer(200, "The event.", event)],
            query=(Param("include_body", {"type": "boolean"}, "Include the raw body (base64)."),),
        ),
        Route(
            "POST",
            "/v1/webhook-events/replay",
            replay_events,
            "replayWebhookEvents",
            "Replay received webhook events",
            "webhooks",
            [ok(reg, wr.ReplayWebhookEventsResponse.DESCRIPTOR, "How many were re-emitted.")],
            role="admin",
            body=Body(
                {
                    "oneOf": [
                        _object(
                            {
                                "event_ids": {
                                    "type": "array",
                                    "items": ID,
                                    "minItems": 1,
                                    "maxItems": 500,
                                }
                            },
                            ("event_ids",),
                        ),
                        _object(
                            {
                                "platform": ID,
                                "received_after": {"type": "string", "format": "date-time"},
                                "received_before": {"type": "string", "format": "date-time"},
                                "types": EVENT_TYPES,
                            },
                            ("platform", "received_after"),
                        ),
                    ]
                },
                description="Either `event_ids`, or a `platform` with a time range.",
            ),
        ),
        Route(
            "GET",
            "/v1/webhook-endpoints",
            list_endpoints,
            "listWebhookEndpoints",
            "List outbound webhook endpoints",
            "webhooks",
            [Answer(200, "A page of endpoints, newest first.", page_schema(endpoint))],
            query=page_query(),
        ),
        Route(
            "POST",
            "/v1/webhook-endpoints",
            create_endpoint,
            "createWebhookEndpoint",
            "Register an outbound webhook endpoint",
            "webhooks",
            [
                Answer(
                    201,
                    "The endpoint and its signing secret, shown this once (a replay of the "
                    "same Idempotency-Key answers `signing_secret: null`).",
                    reg.shown_once(
                        reg.ref(wr.CreateEndpointResponse.DESCRIPTOR), ("signing_secret",)
                    ),
                )
            ],
            role="admin",
            body=Body(
                _object(
                    {
                        "url": url,
                        "description": {"type": "string", "maxLength": 500},
                        "event_types": EVENT_TYPES,
                    },
                    ("url",),
                )
            ),
            creates=True,
            shown_once=("signing_secret",),
        ),
        Route(
            "PATCH",
            "/v1/webhook-endpoints/{endpoint_id}",
            update_endpoint,
            "updateWebhookEndpoint",
            "Change an outbound webhook endpoint",
            "webhooks",
            [Answer(200, "The endpoint after the change.", endpoint)],
            role="admin",
            body=Body(
                {
                    **_object(
                        {
                            "url": url,
                            "description": {"type": "string", "maxLength": 500},
                            "event_types": EVENT_TYPES,
                            "enabled": {"type": "boolean"},
                        }
                    ),
                    "minProperties": 1,
                }
            ),
        ),
        Route(
            "DELETE",
            "/v1/webhook-endpoints/{endpoint_id}",
            delete_endpoint,
            "deleteWebhookEndpoint",
            "Delete an outbound webhook endpoint",
            "webhooks",
            [no_content("Deleted, with its pending deliveries and secrets.")],
            role="admin",
        ),
        Route(
            "POST",
            "/v1/webhook-endpoints/{endpoint_id}/rotate-secret",
            rotate_endpoint_secret,
            "rotateWebhookEndpointSecret",
            "Rotate an endpoint's signing secret",
            "webhooks",
            [
                ok(
                    reg,
                    wr.RotateEndpointSecretResponse.DESCRIPTOR,
                    "The new signing secret, shown this once.",
                )
            ],
            role="admin",
            body=Body(
                _object({"overlap_seconds": {"type": "integer", "minimum": 0, "maximum": 604800}}),
                required=False,
            ),
        ),
        Route(
            "POST",
            "/v1/webhook-inbound-keys",
            create_inbound_key,
            "createInboundWebhookKey",
            "Issue an inbound webhook URL key",
            "webhooks",
            [
                Answer(
                    201,
                    "The key and the URL path to register with the platform, shown this "
                    "once (a replay answers `path_key: null`).",
                    reg.shown_once(
                        reg.ref(wr.CreateInboundKeyResponse.DESCRIPTOR), ("path_key", "url_path")
                    ),
                )
            ],
            role="admin",
            body=Body(
                _object(
                    {
                        "platform": {"type": "string", "enum": ["mailchimp", "custom"]},
                        "connection_id": ID,
                    },
                    ("platform",),
                )
            ),
            creates=True,
            shown_once=("path_key", "url_path"),
            description="For platforms that sign nothing (Mailchimp) and custom sources: "
            "their webhooks go to `/webhooks/{platform}/{path_key}`.",
        ),
        Route(
            "DELETE",
            "/v1/webhook-inbound-keys/{key_id}",
            revoke_inbound_key,
            "revokeInboundWebhookKey",
            "Revoke an inbound webhook URL key",
            "webhooks",
            [no_content("Revoked: its URL answers 404 from now on.")],
            role="admin",
        ),
        Route(
            "GET",
            "/v1/webhook-deliveries",
            list_deliveries,
            "listWebhookDeliveries",
            "List outbound deliveries",
            "webhooks",
            [
                Answer(
                    200,
                    "A page of deliveries, newest first.",
                    page_schema(reg.ref(wr.Delivery.DESCRIPTOR)),
                )
            ],
            query=page_query(
                (
                    string_param("endpoint_id", "Only this endpoint."),
                    enum_param("state", wr.DeliveryState.DESCRIPTOR, "Only these states."),
                    string_param("event_type", "Only this event type."),
                )
            ),
        ),
    ]
