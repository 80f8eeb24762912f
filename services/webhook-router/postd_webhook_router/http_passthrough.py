"""The gateway's side of ``/webhooks/{platform}[/{key}]``: one aiohttp handler, and the
client that takes its webhooks to the router.

Mount it with::

    ingest = WebhookIngest(stub, BatchPolicy(), timeout=4.0)  # close() before the channel
    handler = webhook_passthrough(ingest, max_body_bytes=...)
    app.router.add_route("*", "/webhooks/{platform}", handler)
    app.router.add_route("*", "/webhooks/{platform}/{key}", handler)

The handler reads the raw body without decoding (stopping at the size limit, so a huge
body is never read into memory), passes bytes and headers untouched to the router and
answers exactly what the router says about that request, which it says only once the
request's row is committed. If the router cannot store it, the answer is 503 so the
platform retries later.

Requests that arrive together go to the router together: a gRPC call costs each side
a few hundred µs of CPU (grpc.aio, the tracing and identity interceptors), more than
verifying and storing a webhook, so :class:`WebhookIngest` sends concurrent webhooks
in one ``IngestWebhooks`` call (see :class:`BatchPolicy`), and the router's group
commit stores them in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from aiohttp import web
from google.protobuf import timestamp_pb2
from opentelemetry import context as otel_context
from opentelemetry import trace
from prometheus_client import Histogram

from postd.webhook_router.v1 import webhook_router_pb2 as pb
from postd_common.logging import get_logger

if TYPE_CHECKING:
    from postd.webhook_router.v1.webhook_router_pb2_grpc import WebhookRouterServiceAsyncStub

log = get_logger(__name__)
tracer = trace.get_tracer(__name__)

BATCH_WEBHOOKS = Histogram(
    "postd_gateway_webhook_batch_webhooks",
    "Webhooks per IngestWebhooks call to the webhook router.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
# What a platform is told when its webhook was not stored (router down, batch failed).
RETRY_AFTER_SECONDS = "30"
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class BatchPolicy:
    """How concurrent webhooks share ``IngestWebhooks`` calls.

    A batch leaves when it holds ``max_webhooks`` webhooks or ``max_bytes`` of bodies,
    or ``linger_seconds`` after its first webhook arrived; with no linger (0), at the
    end of the event loop's turn in which it started, so the requests read in that
    turn go together. At most ``max_calls`` calls are in flight: webhooks arriving
    meanwhile wait and leave together as soon as one returns. So a lone webhook goes
    at once, and under load batches grow by themselves, as the router's group commit
    does. ``max_webhooks`` 1: one ``IngestWebhook`` call per request, no batching.

    ``max_bytes`` keeps a call under the router's 8 MiB message limit (a single
    webhook larger than it still goes, alone). After a router answers UNIMPLEMENTED
    (a version without ``IngestWebhooks``), webhooks go one per ``IngestWebhook``
    call for ``batch_retry_seconds``, then the batch call is tried again.
    """

    max_webhooks: int = 64
    max_bytes: int = 4 * 1024 * 1024
    linger_seconds: float = 0.0
    max_calls: int = 2
    batch_retry_seconds: float = 60.0


@dataclass(eq=False)
class _Waiting:
    """One webhook waiting for its batch, and the request's side of the answer."""

    message: pb.IngestWebhookRequest
    answer: asyncio.Future[pb.IngestWebhookResponse | None]
    size: int
    deadline: float
    span: trace.SpanContext


class WebhookIngest:
    """Takes webhooks to the router: ``IngestWebhooks`` for the ones that arrive
    together, ``IngestWebhook`` when batching is off or the router lacks the batch call.

    ``ingest`` awaits the network (at most ``timeout`` seconds from the moment it is
    called) and never raises for a router failure: it returns None, and the webhook
    is answered 503. A failed batch call fails every webhook in it; none of them was
    acknowledged, and whatever the router did store is deduplicated on the retry.
    """

    def __init__(
        self,
        stub: WebhookRouterServiceAsyncStub,
        policy: BatchPolicy | None = None,
        *,
        timeout: float = 4.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stub = stub
        self._policy = policy or BatchPolicy()
        self._timeout = timeout
        self._clock = clock
        self._queue: list[_Waiting] = []
        self._queued_bytes = 0
        self._calls = 0
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._single_until = 0.0
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def ingest(self, message: pb.IngestWebhookRequest) -> pb.IngestWebhookResponse | None:
        """The router's answer for ``message``, given after its row was committed; None
        when it could not be had in time or the router could not store it."""
        if self._policy.max_webhooks <= 1 or self._clock() < self._single_until:
            return await self._one(message, self._timeout)
        loop = asyncio.get_running_loop()
        waiting = _Waiting(
            message,
            loop.create_future(),
            len(message.body),
            self._clock() + self._timeout,
            trace.get_current_span().get_span_context(),
        )
        self._queue.append(waiting)
        self._queued_bytes += waiting.size
        if self._closing or self._calls < self._policy.max_calls:
            if (
                len(self._queue) >= self._policy.max_webhooks
                or self._queued_bytes >= self._policy.max_bytes
            ):
                self._send_queued()
            elif self._timer is None:
                linger = self._policy.linger_seconds
                self._timer = (
                    loop.call_later(linger, self._send_queued)
                    if linger > 0
                    else loop.call_soon(self._send_queued)
                )
        # Otherwise a call in flight takes the queue when it returns.
        return await waiting.answer

    async def close(self) -> None:
        """Send what is waiting (whatever the number of calls in flight) and wait for
        every call to return. Call before closing the channel."""
        self._closing = True
        self._send_queued()
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # ------------------------------------------------------------------ sending

    def _send_queued(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._queue and (self._closing or self._calls < self._policy.max_calls):
            batch = self._take()
            if not batch:
                continue
            self._calls += 1
            self._spawn(self._call(batch))

    def _take(self) -> list[_Waiting]:
        """The next batch from the head of the queue. Requests already given up
        (cancelled) are dropped; those past their deadline are answered None."""
        policy, now = self._policy, self._clock()
        batch: list[_Waiting] = []
        size = taken = 0
        for waiting in self._queue:
            if batch and (
                len(batch) >= policy.max_webhooks or size + waiting.size > policy.max_bytes
            ):
                break
            taken += 1
            self._queued_bytes -= waiting.size
            if waiting.answer.done():
                continue
            if waiting.deadline <= now:
                waiting.answer.set_result(None)
                continue
            batch.append(waiting)
            size += waiting.size
        del self._queue[:taken]
        return batch

    def _spawn(self, work: Coroutine[None, None, None]) -> None:
        # A context of its own: a batch call is no one request's child (its span
        # links to each request's span instead).
        task = asyncio.get_running_loop().create_task(work, context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call(self, batch: list[_Waiting]) -> None:
        try:
            await self._batch(batch)
        except Exception:  # a bug must not leave requests waiting for ever
            log.exception("webhook batch failed", webhooks=len(batch))
        finally:
            for waiting in batch:
                if not waiting.answer.done():
                    waiting.answer.set_result(None)
            self._calls -= 1
            # Webhooks queued without a timer are waiting for a call to return.
            if self._queue and self._timer is None:
                if self._clock() < self._single_until:
                    self._send_each_queued()
                else:
                    self._send_queued()

    async def _batch(self, batch: list[_Waiting]) -> None:
        request = pb.IngestWebhooksRequest(webhooks=[w.message for w in batch])
        BATCH_WEBHOOKS.observe(len(batch))
        # FIFO: the first webhook has the earliest deadline.
        timeout = batch[0].deadline - self._clock()
        try:
            with self._span(batch):
                reply: pb.IngestWebhooksResponse = await self._stub.IngestWebhooks(
                    request, timeout=timeout
                )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                log.warning("webhook batch failed", code=exc.code().name, webhooks=len(batch))
                return
            # An older router: the call did not run, so nothing of it was stored.
            self._single_until = self._clock() + self._policy.batch_retry_seconds
            log.warning(
                "webhook router has no IngestWebhooks; one call per webhook for a while",
                seconds=self._policy.batch_retry_seconds,
            )
            await asyncio.gather(*(self._answer_one(w) for w in batch))
            return
        if len(reply.webhooks) != len(batch):
            log.error(
                "webhook batch answered with the wrong count",
                webhooks=len(batch),
                answers=len(reply.webhooks),
            )
            return
        for waiting, answer in zip(batch, reply.webhooks, strict=True):
            if not waiting.answer.done():
                waiting.answer.set_result(answer)

    @contextlib.contextmanager
    def _span(self, batch: list[_Waiting]) -> Iterator[None]:
        """A client span for the call, linked to each request's span, current while
        the call is made (so the router's span is its child)."""
        links = [trace.Link(w.span) for w in batch if w.span.is_valid]
        with tracer.start_as_current_span(
            "IngestWebhooks",
            context=otel_context.Context(),
            kind=trace.SpanKind.CLIENT,
            links=links,
            attributes={"postd.webhooks": len(batch)},
        ):
            yield

    def _send_each_queued(self) -> None:
        """While the router lacks IngestWebhooks: what waits goes one call each."""
        queued, self._queue, self._queued_bytes = self._queue, [], 0
        for waiting in queued:
            if not waiting.answer.done():
                self._spawn(self._answer_one(waiting))

    async def _answer_one(self, waiting: _Waiting) -> None:
        answer = await self._one(waiting.message, waiting.deadline - self._clock())
        if not waiting.answer.done():
            waiting.answer.set_result(answer)

    async def _one(
        self, message: pb.IngestWebhookRequest, timeout: float
    ) -> pb.IngestWebhookResponse | None:
        try:
            reply: pb.IngestWebhookResponse = await self._stub.IngestWebhook(
                message, timeout=timeout
            )
        except grpc.aio.AioRpcError:
            return None
        return reply


# --------------------------------------------------------------------------- HTTP


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
        if request.content.at_eof():  # the whole body came: no read for the end
            return b"".join(chunks), False


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
    ingest: WebhookIngest,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> web.Response:
    """Answer one webhook request with the router's answer for it."""
    body, truncated = await _read_limited(request, max_body_bytes)
    reply = await ingest.ingest(build_ingest_request(request, body, truncated))
    if reply is None:
        return web.Response(status=503, headers={"Retry-After": RETRY_AFTER_SECONDS})
    headers = {h.name: h.value for h in reply.headers}
    if reply.content_type:
        headers["Content-Type"] = reply.content_type
    return web.Response(status=reply.http_status, body=reply.body, headers=headers)


def webhook_passthrough(
    ingest: WebhookIngest, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler that answers through ``ingest`` (mount on both webhook routes)."""

    async def handler(request: web.Request) -> web.Response:
        return await passthrough(request, ingest, max_body_bytes=max_body_bytes)

    return handler
