"""The gateway's side of ``/webhooks/{platform}[/{key}]``: one aiohttp handler.

Mount it with::

    app.router.add_route("*", "/webhooks/{platform}", handler)
    app.router.add_route("*", "/webhooks/{platform}/{key}", handler)

where ``handler = webhook_passthrough(stub, max_body_bytes=...)``. It reads the raw
body without decoding (stopping at the size limit, so a huge body is never read into
memory), passes bytes and headers untouched to ``IngestWebhook`` and answers exactly
what the router says. If the router cannot store the event, it answers 503 so the
platform retries later.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
from aiohttp import web
from google.protobuf import timestamp_pb2

from postd.webhook_router.v1 import webhook_router_pb2 as pb
from postd.webhook_router.v1 import webhook_router_pb2_grpc as pb_grpc

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
_CHUNK = 64 * 1024


async def _read_limited(request: web.Request, limit: int) -> tuple[bytes, bool]:
    """The body, or (what was read, True) once it passes ``limit``."""
    if request.content_length is not None and request.content_length > limit:
        return b"", True
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(_CHUNK)
        if not chunk:
            return b"".join(chunks), False
        size += len(chunk)
        if size > limit:
            return b"", True
        chunks.append(chunk)


def build_ingest_request(
    request: web.Request, body: bytes, truncated: bool
) -> pb.IngestWebhookRequest:
    received = timestamp_pb2.Timestamp()
    received.GetCurrentTime()
    return pb.IngestWebhookRequest(
        http_method=request.method,
        platform=request.match_info.get("platform", ""),
        path_key=request.match_info.get("key", ""),
        body=body,
        headers=[pb.HttpHeader(name=k, value=v) for k, v in request.headers.items()],
        query_string=request.query_string,
        remote_addr=request.remote or "",
        received_at=received,
        declared_body_size=request.content_length or 0,
        body_truncated=truncated,
    )


async def passthrough(
    request: web.Request,
    stub: pb_grpc.WebhookRouterServiceStub,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    timeout: float = 4.0,
) -> web.Response:
    """Answer one webhook request through the router."""
    body, truncated = await _read_limited(request, max_body_bytes)
    try:
        reply: pb.IngestWebhookResponse = await stub.IngestWebhook(
            build_ingest_request(request, body, truncated), timeout=timeout
        )
    except grpc.aio.AioRpcError:
        return web.Response(status=503, headers={"Retry-After": "30"})
    headers = {h.name: h.value for h in reply.headers}
    if reply.content_type:
        headers["Content-Type"] = reply.content_type
    return web.Response(status=reply.http_status, body=reply.body, headers=headers)


def webhook_passthrough(
    stub: pb_grpc.WebhookRouterServiceStub,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    timeout: float = 4.0,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler bound to ``stub`` (mount on both webhook routes)."""

    async def handler(request: web.Request) -> web.Response:
        return await passthrough(request, stub, max_body_bytes=max_body_bytes, timeout=timeout)

    return handler
