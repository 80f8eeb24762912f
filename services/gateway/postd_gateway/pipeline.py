"""The request pipeline every route goes through, in order:

authenticate -> per-tenant rate limit -> CSRF (cookie sessions) -> role -> key scope
-> path, query and body validation -> idempotency -> handler -> response.

Failures are raised as :class:`Problem` and rendered by the error middleware.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import orjson
from aiohttp import web
from multidict import MultiMapping
from opentelemetry import trace

from postd_common.logging import get_logger
from postd_gateway.auth import CSRF_HEADER, SESSION_COOKIE, Authentication, check_csrf
from postd_gateway.domain import (
    Principal,
    request_fingerprint,
    role_at_least,
    valid_idempotency_key,
)
from postd_gateway.jsonbody import BodyValidator, check_content_type, parse_object
from postd_gateway.ports import Ports
from postd_gateway.problems import FieldError, Problem, bad_request, forbidden, not_found
from postd_gateway.routing import Call, Reply, Route, path_pattern

log = get_logger(__name__)

PORTS: Final = web.AppKey("ports", Ports)
REQUEST_PRINCIPAL: Final = web.RequestKey("principal", Principal)
REQUEST_EXTRA_HEADERS: Final = web.RequestKey("extra_headers", dict[str, str])
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
REPLAYED_HEADER: Final = "Idempotent-Replayed"
# An in-flight claim older than this belonged to a request that died with its gateway.
IDEMPOTENCY_STALE_SECONDS: Final = 60.0
_INT = re.compile(r"^-?[0-9]{1,15}$")


def json_bytes(value: Any) -> bytes:
    """UTF-8 JSON; orjson: the encoding of list answers was a sixth of the CPU per request."""
    return orjson.dumps(value)


class RouteHandler:
    """The aiohttp handler of one route."""

    def __init__(self, route: Route, components: Mapping[str, Any]) -> None:
        self.route = route
        self._body = (
            BodyValidator(route.body.schema, components) if route.body is not None else None
        )
        self._params = {p.name: (p, BodyValidator(p.schema, components)) for p in route.query}
        self._path_params = [(n, re.compile(path_pattern(n))) for n in route.path_params]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        route = self.route
        ports = request.app[PORTS]
        principal: Principal | None = None
        if route.access == "tenant":
            auth = await self._authenticate(request, ports)
            principal = auth.principal
        path = self._path(request)
        query = self._query(request.query)
        body = await self._read_body(request, ports) if route.body is not None else None
        call = Call(principal, path, query, body, ports, request)
        if route.creates and principal is not None:
            return await self._idempotent(call, principal, request)
        return render(await route.handler(call))

    # ----------------------------------------------------------------- security

    async def _authenticate(self, request: web.Request, ports: Ports) -> Authentication:
        route = self.route
        auth = await ports.authenticator.authenticate(
            request.headers.get("Authorization"), request.cookies.get(SESSION_COOKIE)
        )
        principal = auth.principal
        request[REQUEST_PRINCIPAL] = principal
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute("postd.tenant_id", principal.tenant_id)
            span.set_attribute("postd.credential", principal.kind)
        if route.rate_limited:
            tenant = await ports.authenticator.tenant(principal.tenant_id)
            limit = (tenant.rate_limit if tenant else None) or ports.settings.rate_limit_per_window
            verdict = await ports.limiter.check(principal.tenant_id, limit)
            request[REQUEST_EXTRA_HEADERS] = verdict.headers()
            if not verdict.allowed:
                raise Problem(
                    429,
                    "rate_limited",
                    f"This tenant may make {limit} requests per "
                    f"{verdict.window_seconds} s; retry after {verdict.reset_seconds} s.",
                )
        if route.needs_csrf:
            check_csrf(auth, request.headers.get(CSRF_HEADER))
        if not role_at_least(principal.role, route.role):
            raise forbidden(f"This needs the {route.role} role or higher.")
        if not principal.allows_scope(route.scope):
            raise forbidden(f"This API key lacks the {route.scope} scope.")
        return auth

    # ----------------------------------------------------------------- inputs

    def _path(self, request: web.Request) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, pattern in self._path_params:
            value = request.match_info.get(name, "")
            if not pattern.match(value):
                raise not_found(name.removesuffix("_id").replace("_", " "))
            out[name] = value
        return out

    def _query(self, query: MultiMapping[str]) -> dict[str, Any]:
        for name in query:
            if name not in self._params and not self.route.open_query:
                raise bad_request(
                    "This query parameter is not known here.",
                    field=name[:64],
                    code="invalid_parameter",
                )
        out: dict[str, Any] = {}
        for name, (param, validator) in self._params.items():
            values = query.getall(name, [])
            if not values:
                if param.required:
                    raise bad_request("is required", field=name, code="invalid_parameter")
                if "default" in param.schema:
                    out[name] = param.schema["default"]
                continue
            if param.repeated:
                items = param.schema.get("items", {})
                value: Any = [_coerce(name, v, items) for v in values]
            elif len(values) > 1:
                raise bad_request("must be given once", field=name, code="invalid_parameter")
            else:
                value = _coerce(name, values[0], param.schema)
            errors = validator.errors(value)
            if errors:
                raise Problem(
                    400,
                    "invalid_parameter",
                    f"The query parameter {name} is not valid.",
                    tuple(FieldError(name, e.message) for e in errors[:1]),
                )
            out[name] = value
        return out

    async def _read_body(self, request: web.Request, ports: Ports) -> dict[str, Any]:
        assert self.route.body is not None
        assert self._body is not None
        if not request.body_exists:
            if self.route.body.required:
                raise bad_request("A JSON body is required.", code="body_required")
            return {}
        check_content_type(request.content_type, request.charset)
        limit = ports.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise too_large(limit)
        body = parse_object(await request.read())
        self._body.check(body)
        return body

    # ----------------------------------------------------------------- idempotency

    async def _idempotent(
        self, call: Call, principal: Principal, request: web.Request
    ) -> web.StreamResponse:
        key = request.headers.get(IDEMPOTENCY_HEADER, "")
        if not key:
            raise bad_request(
                "Creating requests need an Idempotency-Key header (a UUID is ideal).",
                field=IDEMPOTENCY_HEADER,
                code="idempotency_key_missing",
            )
        if not valid_idempotency_key(key):
            raise bad_request(
                "must be 1-255 printable ASCII characters",
                field=IDEMPOTENCY_HEADER,
                code="invalid_idempotency_key",
            )
        store = call.ports.idempotency
        tenant = principal.tenant_id
        fingerprint = request_fingerprint(request.method, request.path, call.body)
        stored = await store.claim(
            tenant,
            key,
            fingerprint,
            ttl_seconds=call.ports.settings.idempotency_ttl_seconds,
            stale_after_seconds=IDEMPOTENCY_STALE_SECONDS,
        )
        if stored is not None:
            if stored.fingerprint != fingerprint:
                raise Problem(
                    409,
                    "idempotency_key_reused",
                    "This Idempotency-Key was used for a different request.",
                    (FieldError(IDEMPOTENCY_HEADER, "was used with another body"),),
                )
            if stored.status is None:
                raise Problem(
                    409,
                    "idempotency_request_in_progress",
                    "A request with this Idempotency-Key is still being processed.",
                    headers={"Retry-After": "1"},
                )
            headers = {**stored.headers, REPLAYED_HEADER: "true"}
            return web.Response(
                status=stored.status,
                body=stored.body,
                headers=headers,
                content_type=stored.content_type or None,
            )
        try:
            reply = await self.route.handler(call)
        except BaseException:
            await store.release(tenant, key)
            raise
        if not isinstance(reply, Reply) or reply.status >= 300:
            await store.release(tenant, key)
            return reply if not isinstance(reply, Reply) else render(reply)
        stored_body = reply.body
        if self.route.shown_once and isinstance(stored_body, dict):
            stored_body = {
                k: (None if k in self.route.shown_once else v) for k, v in stored_body.items()
            }
        await store.complete(
            tenant,
            key,
            status=reply.status,
            body=json_bytes(stored_body) if stored_body is not None else b"",
            content_type="application/json" if stored_body is not None else "",
            headers={k: v for k, v in reply.headers.items() if k.lower() == "location"},
        )
        return render(reply)


def too_large(limit: int) -> Problem:
    return Problem(413, "payload_too_large", f"The body is larger than {limit} bytes.")


def _coerce(name: str, raw: str, schema: Mapping[str, Any]) -> Any:
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request("is not valid text", field=name, code="invalid_parameter") from None
    kind = schema.get("type")
    if kind == "integer":
        if not _INT.match(raw):
            raise bad_request("must be an integer", field=name, code="invalid_parameter")
        return int(raw)
    if kind == "boolean":
        if raw not in ("true", "false"):
            raise bad_request("must be true or false", field=name, code="invalid_parameter")
        return raw == "true"
    if kind == "number":
        try:
            number = float(raw)
        except ValueError:
            number = float("nan")
        if number != number or number in (float("inf"), float("-inf")):
            raise bad_request("must be a number", field=name, code="invalid_parameter")
        return number
    return raw


def render(reply: Reply | web.StreamResponse) -> web.StreamResponse:
    if not isinstance(reply, Reply):
        return reply
    if reply.body is None:
        response = web.Response(status=reply.status, headers=reply.headers)
    else:
        response = web.Response(
            status=reply.status,
            body=json_bytes(reply.body),
            headers=reply.headers,
            content_type="application/json",
        )
    for cookie in reply.cookies:
        response.set_cookie(
            cookie.name,
            cookie.value,
            max_age=cookie.max_age,
            httponly=cookie.http_only,
            secure=cookie.secure,
            samesite=cookie.same_site,
            path=cookie.path,
        )
    return response
