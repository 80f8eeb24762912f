"""The gateway's aiohttp application: the only public entry point.

``create_app`` builds the route table and the OpenAPI document once; one cleanup
context opens (and closes, in reverse) every resource: the PostgreSQL pool, the gRPC
channels to the backends (presenting the gateway's service identity), the JWKS
client, and the background tasks that flush last-used stamps and purge expired rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import aiohttp
import asyncpg
from aiohttp import web
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from postd.connectors.v1.connectors_pb2_grpc import ConnectorsServiceStub
from postd.health.v1.health_pb2_grpc import ConnectionHealthServiceStub
from postd.publisher.v1.analytics_pb2_grpc import AnalyticsServiceStub
from postd.publisher.v1.publisher_pb2_grpc import PublisherServiceStub
from postd.webhook_router.v1.webhook_router_pb2_grpc import WebhookRouterServiceStub
from postd_common import db
from postd_common.bootstrap import ServiceSpec
from postd_common.grpcutil import open_plain_channel
from postd_common.identity import load_identity
from postd_common.logging import get_logger
from postd_gateway import dashboard, healthz
from postd_gateway.adapters.postgres import (
    FlagStore,
    IdempotencyStore,
    RateLimitStore,
    SessionStore,
    TenantStore,
)
from postd_gateway.auth import Authenticator
from postd_gateway.backends import Backends, IdentifiedStub
from postd_gateway.config import Settings
from postd_gateway.jwks import JwksVerifier
from postd_gateway.openapi import build_document, render_docs
from postd_gateway.pipeline import PORTS, REQUEST_EXTRA_HEADERS, REQUEST_PRINCIPAL, RouteHandler
from postd_gateway.ports import Ports
from postd_gateway.problems import PROBLEM_JSON, Problem
from postd_gateway.protojson import SchemaRegistry
from postd_gateway.ratelimit import RateLimiter
from postd_gateway.resources import all_routes
from postd_webhook_router.http_passthrough import BatchPolicy, WebhookIngest

log = get_logger(__name__)
tracer = trace.get_tracer(__name__)

SPEC: Final = ServiceSpec(
    name="gateway", schema="gateway", migrations=Path(__file__).with_name("migrations")
)

# The HTTP layer's own limits (it answers a plain-text 400 past them, before any
# middleware runs); passed to the AppRunner that serves the app.
SERVER_LIMITS: Final = {"max_line_size": 32768, "max_field_size": 32768}

SETTINGS: Final = web.AppKey("settings", Settings)
POOL: Final = web.AppKey("pool", asyncpg.Pool)
CHECKS: Final = web.AppKey[dict[str, healthz.Check]]("checks")
OPENAPI: Final = web.AppKey("openapi", bytes)
DOCS: Final = web.AppKey("docs", str)

HTTP_REQUESTS = Counter(
    "postd_http_requests_total",
    "HTTP requests answered, by route and status.",
    ["method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "postd_http_request_seconds",
    "HTTP request latency.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
# Span attributes that may hold the query string (OAuth codes and states live there).
_QUERY_ATTRIBUTES: Final = ("http.target", "http.url", "url.query", "url.full")
_SECURITY_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


# --------------------------------------------------------------------------- middleware


def _trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None


def problem_response(problem: Problem, request: web.Request) -> web.Response:
    trace_id = _trace_id()
    if problem.status >= 500 and trace_id is None:
        trace_id = uuid.uuid4().hex
    response = web.Response(
        status=problem.status,
        body=problem.body(instance=request.path, trace_id=trace_id),
        headers=dict(problem.headers),
    )
    response.content_type = PROBLEM_JSON
    return response


def _from_http_error(exc: web.HTTPException) -> Problem:
    status = exc.status
    if status == 404:
        return Problem(404, "not_found", "There is nothing at this address.")
    if status == 405:
        allow = exc.headers.get("Allow", "")
        return Problem(
            405,
            "method_not_allowed",
            "This address does not take that method.",
            headers={"Allow": allow},
        )
    if status == 413:
        return Problem(413, "payload_too_large", "The body is too large.")
    if status == 400:
        return Problem(400, "invalid_request", "The request could not be read.")
    return Problem(status, "http_error", exc.reason or "The request failed.")


async def _answer(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The handler's response, or the problem document of its failure; an unexpected
    one is logged with a trace id, which is all the caller sees of it."""
    try:
        return await handler(request)
    except Problem as problem:
        return problem_response(problem, request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem_response(_from_http_error(exc), request)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unexpected error", method=request.method, route=_route(request))
        return problem_response(
            Problem(
                500,
                "internal_error",
                "Something failed on our side. Quote the trace id to support.",
            ),
            request,
        )


# The metrics' children by (method, route, status): looked up by label values, each
# costs a lock and a hash per request. Bounded: past it (methods are the client's
# choice on unmatched routes) the lookup is simply not kept.
_METRIC_CHILDREN: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def _request_metrics(method: str, route: str, status: int) -> tuple[Any, Any]:
    key = (method, route, status)
    children = _METRIC_CHILDREN.get(key)
    if children is None:
        children = (
            HTTP_REQUESTS.labels(method, route, str(status)),
            HTTP_SECONDS.labels(method, route),
        )
        if len(_METRIC_CHILDREN) < 1024:
            _METRIC_CHILDREN[key] = children
    return children


def _finish(request: web.Request, response: web.StreamResponse, route: str, started: float) -> None:
    """Headers every answer carries, the request metrics and the request's log line."""
    for name, value in (request.get(REQUEST_EXTRA_HEADERS) or {}).items():
        response.headers.setdefault(name, value)
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith(("/v1/", "/oauth/")):
        response.headers.setdefault("Cache-Control", "no-store")
    requests, seconds = _request_metrics(request.method, route, response.status)
    requests.inc()
    seconds.observe(time.perf_counter() - started)
    principal = request.get(REQUEST_PRINCIPAL)
    if response.status >= 500 or log.is_enabled_for(10):
        log.info(
            "request",
            method=request.method,
            route=route,
            status=response.status,
            tenant_id=principal.tenant_id if principal else None,
            ms=round((time.perf_counter() - started) * 1000, 2),
        )


@web.middleware
async def problems_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure becomes a problem document; security headers, metrics, log line."""
    started = time.perf_counter()
    span = trace.get_current_span()
    if request.query_string and span.is_recording():
        for attribute in _QUERY_ATTRIBUTES:
            span.set_attribute(attribute, request.path)
    response = await _answer(request, handler)
    _finish(request, response, _route(request), started)
    return response


# The platforms' webhook routes: answered by webhook_middleware alone.
WEBHOOK_ROUTES: Final = frozenset({"/webhooks/{platform}", "/webhooks/{platform}/{key}"})


@web.middleware
async def webhook_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The webhook routes' whole middleware, ahead of the others (which it skips).

    Webhooks are the gateway's hot path: the generic server-span middleware and the
    problem middleware cost more CPU per webhook than passing it to the router. This
    does for these routes what both do, leaner: a server span (named and kinded as
    the instrumentation's, continuing an incoming trace context, with the route,
    method, path and status; never the query string, where handshake tokens live),
    problem documents for failures, the security headers, the request metrics and
    the log line.
    """
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else ""
    if route not in WEBHOOK_ROUTES:
        return await handler(request)
    started = time.perf_counter()
    method = request.method
    with tracer.start_as_current_span(
        f"{method} {route}",
        context=propagate.extract(request.headers),
        kind=trace.SpanKind.SERVER,
        attributes={
            "http.method": method,
            "http.scheme": request.scheme,
            "http.target": request.path,
            "http.route": route,
            "http.flavor": f"{request.version.major}.{request.version.minor}",
        },
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        response = await _answer(request, request.match_info.handler)
        span.set_attribute("http.status_code", response.status)
        if response.status >= 500:
            span.set_status(trace.StatusCode.ERROR)
        _finish(request, response, route, started)
    return response


def _route(request: web.Request) -> str:
    try:
        return str(request.match_info.route.resource.canonical)  # type: ignore[union-attr]
    except AttributeError:
        return "unmatched"


# --------------------------------------------------------------------------- plain routes


async def health(request: web.Request) -> web.Response:
    checks = request.app[CHECKS]
    ok, report = await healthz.run_checks(checks)
    return web.json_response(
        {"status": "ok" if ok else "degraded", "checks": report}, status=200 if ok else 503
    )


async def ready(request: web.Request) -> web.Response:
    ok, report = await healthz.run_checks({"database": healthz.database_check(request.app[POOL])})
    return web.json_response(
        {"status": "ready" if ok else "not ready", "checks": report}, status=200 if ok else 503
    )


async def alive(request: web.Request) -> web.Response:
    """Liveness: the event loop answers. Dependencies are /readyz's business, so a
    database outage never restarts the gateway."""
    return web.json_response({"status": "alive"})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


async def docs(request: web.Request) -> web.Response:
    response = web.Response(text=request.app[DOCS], content_type="text/html")
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
    )
    return response


# --------------------------------------------------------------------------- wiring


async def _every(seconds: float, work: Callable[[], Awaitable[Any]], what: str) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await work()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.warning("background task failed", task=what, error=type(exc).__name__)


def create_app(settings: Settings) -> web.Application:
    """App factory: routes and documents now, resources in the cleanup context."""
    # Once per process: from here on every web.Application opens a server span per
    # request (the instrumentation's middleware goes first, so spans cover ours).
    instrumentor = AioHttpServerInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()
    app = web.Application(
        client_max_size=max(settings.max_body_bytes, settings.webhook_max_body_bytes),
        middlewares=[problems_middleware],
    )
    # Ahead of the instrumentation's middleware, which the instrumented Application
    # put first: the webhook routes skip it (webhook_middleware opens their span).
    app.middlewares.insert(0, webhook_middleware)
    app[SETTINGS] = settings
    registry = SchemaRegistry()
    routes = all_routes(registry)
    document = build_document(routes, registry, settings.public_url)
    app[OPENAPI] = json.dumps(document, indent=1).encode()
    app[DOCS] = render_docs(document)
    components = document["components"]["schemas"]
    for route in routes:
        app.router.add_route(route.method, route.path, RouteHandler(route, components).handle)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        await db.migrate_dsn(
            settings.common.database_url, SPEC.schema or "gateway", SPEC.migrations or Path()
        )
        pool = await db.create_pool(
            settings.common.database_url,
            application_name="postd-gateway",
            max_size=20,
            reset_session=False,
        )
        signer, _ = load_identity(settings.common.identity)
        channels = {name: open_plain_channel(target) for name, target in settings.backends.items()}

        def stub(make: Callable[[Any], Any], name: str) -> Any:
            return IdentifiedStub(make(channels[name]), signer, name)

        http = aiohttp.ClientSession()
        webhooks = stub(WebhookRouterServiceStub, "webhook-router")
        webhook_ingest = WebhookIngest(
            webhooks,
            BatchPolicy(
                max_webhooks=settings.webhook_batch_max,
                linger_seconds=settings.webhook_batch_linger_seconds,
                max_calls=settings.webhook_batch_calls,
            ),
            timeout=settings.backend_timeout_seconds,
        )
        backends = Backends(
            connectors=stub(ConnectorsServiceStub, "connectors"),
            publisher=stub(PublisherServiceStub, "publisher"),
            webhooks=webhooks,
            health=stub(ConnectionHealthServiceStub, "health"),
            timeout=settings.backend_timeout_seconds,
            analytics=stub(AnalyticsServiceStub, "publisher"),
            webhook_ingest=webhook_ingest,
        )
        tenants = TenantStore(pool)
        sessions = SessionStore(pool)
        verifier = JwksVerifier(settings.jwt, http) if settings.jwt.enabled else None
        authenticator = Authenticator(
            tenants, sessions, verifier, cache_seconds=settings.auth_cache_seconds
        )
        rate_store = RateLimitStore(pool)
        limiter = RateLimiter(
            rate_store,
            window_seconds=settings.rate_limit_window_seconds,
            lease_fraction=settings.rate_limit_lease_fraction,
        )
        idempotency = IdempotencyStore(pool)
        app[POOL] = pool
        app[PORTS] = Ports(
            settings=settings,
            backends=backends,
            tenants=tenants,
            sessions=sessions,
            idempotency=idempotency,
            flags=FlagStore(pool),
            authenticator=authenticator,
            limiter=limiter,
        )
        app[CHECKS] = {
            **healthz.backend_checks({n: settings.backends[n] for n in settings.health_backends}),
            "database": healthz.database_check(pool),
            "broker": healthz.broker_check(settings.common.kafka),
        }

        async def purge() -> None:
            limiter.forget_stale()
            await sessions.purge_expired()
            await idempotency.purge_expired()
            keep = timedelta(seconds=settings.rate_limit_window_seconds * 2 + 60)
            await rate_store.purge_before(datetime.now(UTC) - keep)

        tasks = [
            asyncio.create_task(
                _every(settings.last_used_flush_seconds, authenticator.flush_last_used, "last-used")
            ),
            asyncio.create_task(_every(60.0, purge, "purge")),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await authenticator.flush_last_used()
            await http.close()
            await webhook_ingest.close()
            for channel in channels.values():
                await channel.close()
            await pool.close()

    app.cleanup_ctx.append(resources)
    app.router.add_get("/healthz", health)
    app.router.add_get("/readyz", ready)
    app.router.add_get("/livez", alive)
    if settings.public_metrics:
        app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/docs", docs)
    dashboard.mount(app, settings.dashboard_path)
    return app
