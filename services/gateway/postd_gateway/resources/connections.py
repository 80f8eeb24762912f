"""Connections, the OAuth connect flow and the capability matrix (connectors service)."""

from __future__ import annotations

from typing import Any

from yarl import URL

from postd.common.v1 import common_pb2 as common
from postd.connectors.v1 import connectors_pb2 as cx
from postd_common.logging import get_logger
from postd_gateway.auth import SESSION_COOKIE
from postd_gateway.domain import safe_return_path
from postd_gateway.problems import Problem
from postd_gateway.protojson import SchemaRegistry, to_json
from postd_gateway.resources.common import (
    call_backend,
    enum_param,
    enums,
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

log = get_logger(__name__)

CAPABILITY_PARAM = Param(
    "capability",
    {
        "type": "array",
        "items": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,39}$"},
        "maxItems": 10,
    },
    "What the connection is for (publish, analytics, webhooks, reviews, email_campaigns);"
    " the platform's default set when absent. Repeat for several.",
    repeated=True,
)
RETURN_TO_PARAM = Param(
    "return_to",
    {"type": "string", "pattern": "^/(?![/\\\\]).{0,511}$"},
    "A path of this site to come back to after the consent (default: the dashboard).",
)


# --------------------------------------------------------------------------- connections


async def list_connections(call: Call) -> Reply:
    request = cx.ListConnectionsRequest(
        tenant_id=call.tenant.tenant_id,
        platforms=call.query.get("platform", []),
        statuses=enums(call.query.get("status"), common.ConnectionStatus.DESCRIPTOR),
        **page_args(call),
    )
    response = await call_backend(
        call,
        call.ports.backends.connectors.ListConnections,
        request,
        fields={"platforms": "platform"},
    )
    return Reply(body=page([to_json(c) for c in response.connections], response.next_page_token))


async def get_connection(call: Call) -> Reply:
    connection = await _connection(call)
    return Reply(body=to_json(connection))


async def _connection(call: Call) -> cx.Connection:
    response = await call_backend(
        call,
        call.ports.backends.connectors.GetConnection,
        cx.GetConnectionRequest(
            tenant_id=call.tenant.tenant_id, connection_id=call.path["connection_id"]
        ),
    )
    connection: cx.Connection = response.connection
    return connection


async def refresh_connection(call: Call) -> Reply:
    response = await call_backend(
        call,
        call.ports.backends.connectors.RefreshConnection,
        cx.RefreshConnectionRequest(
            tenant_id=call.tenant.tenant_id,
            connection_id=call.path["connection_id"],
            force=True,
            reason=f"{call.tenant.actor}: refresh now",
        ),
        timeout=call.ports.settings.oauth_timeout_seconds,
    )
    return Reply(body=to_json(response))


async def disconnect_connection(call: Call) -> Reply:
    body = call.body or {}
    reason = body.get("reason") or "disconnected by the tenant"
    response = await call_backend(
        call,
        call.ports.backends.connectors.DisconnectConnection,
        cx.DisconnectConnectionRequest(
            tenant_id=call.tenant.tenant_id,
            connection_id=call.path["connection_id"],
            revoke_at_platform=bool(body.get("revoke_at_platform", True)),
            reason=f"{call.tenant.actor}: {reason}",
        ),
        timeout=call.ports.settings.oauth_timeout_seconds,
    )
    return Reply(body=to_json(response))


async def reconnect_connection(call: Call) -> Reply:
    connection = await _connection(call)
    body = call.body or {}
    response = await _start_auth(
        call,
        connection.platform,
        capabilities=list(connection.capabilities),
        reconnect=connection.id,
        return_to=body.get("return_to"),
    )
    return Reply(body=to_json(response))


async def connection_audit(call: Call) -> Reply:
    response = await call_backend(
        call,
        call.ports.backends.connectors.ListConnectionAudit,
        cx.ListConnectionAuditRequest(
            tenant_id=call.tenant.tenant_id,
            connection_id=call.path["connection_id"],
            **page_args(call),
        ),
    )
    return Reply(body=page([to_json(e) for e in response.entries], response.next_page_token))


# --------------------------------------------------------------------------- connect flow


async def _start_auth(
    call: Call,
    platform: str,
    *,
    capabilities: list[str],
    reconnect: str = "",
    return_to: str | None,
) -> cx.StartAuthResponse:
    settings = call.ports.settings
    return await call_backend(
        call,
        call.ports.backends.connectors.StartAuth,
        cx.StartAuthRequest(
            tenant_id=call.tenant.tenant_id,
            user_id=call.tenant.actor,
            platform=platform,
            capabilities=capabilities,
            redirect_uri=settings.redirect_uri(platform),
            reconnect_connection_id=reconnect,
            return_url=safe_return_path(return_to, settings.dashboard_path),
        ),
        fields={"reconnect_connection_id": "reconnect", "capabilities": "capability"},
    )


async def connect_redirect(call: Call) -> Reply:
    response = await _start_auth(
        call,
        call.path["platform"],
        capabilities=call.query.get("capability", []),
        reconnect=call.query.get("reconnect", ""),
        return_to=call.query.get("return_to"),
    )
    return Reply.redirect(response.authorize_url)


async def connect_json(call: Call) -> Reply:
    body = call.body or {}
    response = await _start_auth(
        call,
        call.path["platform"],
        capabilities=body.get("capabilities", []),
        reconnect=body.get("reconnect_connection_id", ""),
        return_to=body.get("return_to"),
    )
    return Reply(body=to_json(response))


async def oauth_callback(call: Call) -> Reply:
    """The platform sends the browser here; whatever happens, the browser goes back to
    the dashboard with the outcome in the query (never a token, never a trace)."""
    platform = call.path["platform"]
    settings = call.ports.settings
    params = {k: v for k, v in call.request.query.items()}
    tenant_id = ""
    cookie = call.request.cookies.get(SESSION_COOKIE)
    if cookie:
        try:
            principal, _ = await call.ports.authenticator.session(cookie)
            tenant_id = principal.tenant_id
        except Problem:
            tenant_id = ""  # the state alone identifies the tenant
    request = cx.CompleteAuthRequest(
        tenant_id=tenant_id,
        platform=platform,
        state=params.get("state", ""),
        code=params.get("code", ""),
        error=params.get("error", ""),
        error_description=params.get("error_description", ""),
        params=params,
    )
    try:
        response = await call_backend(
            call,
            call.ports.backends.connectors.CompleteAuth,
            request,
            timeout=settings.oauth_timeout_seconds,
        )
    except Problem as problem:
        log.info("oauth callback refused", platform=platform, problem_code=problem.code)
        detail = problem.detail if problem.status < 500 else "Please try connecting again."
        target = URL(settings.dashboard_path).update_query(
            connect="error", platform=platform, reason=problem.code, message=detail[:300]
        )
        return Reply.redirect(str(target))
    back = safe_return_path(response.return_url, settings.dashboard_path)
    query: dict[str, Any] = {
        "connect": "ok",
        "platform": platform,
        "connections": str(len(response.connections)),
    }
    if response.missing_scopes:
        query["missing_scopes"] = ",".join(response.missing_scopes)
    return Reply.redirect(str(URL(back).update_query(query)))


# --------------------------------------------------------------------------- capabilities


async def capabilities(call: Call) -> Reply:
    connection_id = call.query.get("connection_id", "")
    response = await call_backend(
        call,
        call.ports.backends.connectors.GetCapabilities,
        cx.GetCapabilitiesRequest(
            tenant_id=call.tenant.tenant_id,
            platforms=call.query.get("platform", []),
            connection_id=connection_id,
        ),
        fields={"platforms": "platform"},
    )
    return Reply(body={"platforms": [to_json(p) for p in response.platforms]})


def routes(reg: SchemaRegistry) -> list[Route]:
    connection = reg.ref(cx.Connection.DESCRIPTOR)
    start = ok(reg, cx.StartAuthResponse.DESCRIPTOR, "Where to send the browser, and until when.")
    connect_body = Body(
        {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "capabilities": CAPABILITY_PARAM.schema,
                "reconnect_connection_id": ID_SCHEMA,
                "return_to": RETURN_TO_PARAM.schema,
            },
        },
        required=False,
    )
    return [
        Route(
            "GET",
            "/v1/connections",
            list_connections,
            "listConnections",
            "List connections",
            "connections",
            [Answer(200, "A page of connections, newest first.", page_schema(connection))],
            query=page_query(
                (
                    string_param("platform", "Only these platforms.", repeated=True),
                    enum_param(
                        "status", common.ConnectionStatus.DESCRIPTOR, "Only these statuses."
                    ),
                )
            ),
        ),
        Route(
            "GET",
            "/v1/connections/{connection_id}",
            get_connection,
            "getConnection",
            "Get a connection",
            "connections",
            [Answer(200, "The connection.", connection)],
        ),
        Route(
            "POST",
            "/v1/connections/{connection_id}/refresh",
            refresh_connection,
            "refreshConnection",
            "Refresh now",
            "connections",
            [ok(reg, cx.RefreshConnectionResponse.DESCRIPTOR, "What the refresh did.")],
            role="editor",
            description="Refreshes the token where the platform allows it, else runs a check. "
            "Platform failures are in the answer, not errors.",
        ),
        Route(
            "POST",
            "/v1/connections/{connection_id}/disconnect",
            disconnect_connection,
            "disconnectConnection",
            "Disconnect (crypto-shreds its tokens)",
            "connections",
            [ok(reg, cx.DisconnectConnectionResponse.DESCRIPTOR, "The connection, disconnected.")],
            role="admin",
            body=Body(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "revoke_at_platform": {"type": "boolean", "default": True},
                        "reason": {"type": "string", "maxLength": 500},
                    },
                },
                required=False,
            ),
            description="Destroys the connection's secrets in the vault and marks it "
            "disconnected. Idempotent.",
        ),
        Route(
            "POST",
            "/v1/connections/{connection_id}/reconnect",
            reconnect_connection,
            "reconnectConnection",
            "Reconnect link",
            "connections",
            [start],
            role="editor",
            body=Body(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"return_to": RETURN_TO_PARAM.schema},
                },
                required=False,
            ),
            description="Starts a reconnect with the exact scopes the connection had plus "
            "those it misses; send the browser to `authorize_url`.",
        ),
        Route(
            "GET",
            "/v1/connections/{connection_id}/audit",
            connection_audit,
            "listConnectionAudit",
            "Connection audit trail",
            "connections",
            [
                Answer(
                    200,
                    "A page of audit entries, newest first.",
                    page_schema(reg.ref(cx.ConnectionAuditEntry.DESCRIPTOR)),
                )
            ],
            query=page_query(),
        ),
        Route(
            "GET",
            "/v1/connect/{platform}",
            connect_redirect,
            "connectRedirect",
            "Connect an account (browser redirect)",
            "connections",
            [
                Answer(
                    302,
                    "Redirect to the platform's consent page.",
                    headers={"Location": "The platform's authorize URL."},
                )
            ],
            role="editor",
            query=(
                CAPABILITY_PARAM,
                Param(
                    "reconnect",
                    ID_SCHEMA,
                    "Reconnect this connection.",
                ),
                RETURN_TO_PARAM,
            ),
        ),
        Route(
            "POST",
            "/v1/connect/{platform}",
            connect_json,
            "startConnect",
            "Connect an account (authorize URL as JSON)",
            "connections",
            [start],
            role="editor",
            body=connect_body,
        ),
        Route(
            "GET",
            "/oauth/callback/{platform}",
            oauth_callback,
            "oauthCallback",
            "OAuth callback (platforms redirect here)",
            "connections",
            [
                Answer(
                    302,
                    "Back to the dashboard with `connect=ok` or `connect=error&reason=...`.",
                    headers={"Location": "The dashboard page."},
                )
            ],
            access="public",
            open_query=True,
            query=tuple(
                Param(name, {"type": "string", "maxLength": 4096}, text)
                for name, text in (
                    ("state", "The state POSTD gave the platform."),
                    ("code", "The authorization code."),
                    ("error", "The platform's error, e.g. access_denied."),
                    ("error_description", "The platform's words for the error."),
                )
            ),
            description="Other query parameters a platform adds (shop, scopes, ...) are "
            "passed on untouched.",
        ),
        Route(
            "GET",
            "/v1/capabilities",
            capabilities,
            "getCapabilities",
            "Capability matrix",
            "capabilities",
            [
                Answer(
                    200,
                    "What each platform accepts, with limits.",
                    {
                        "type": "object",
                        "required": ["platforms"],
                        "additionalProperties": False,
                        "properties": {
                            "platforms": {
                                "type": "array",
                                "items": reg.ref(cx.PlatformCapabilities.DESCRIPTOR),
                            }
                        },
                    },
                )
            ],
            query=(
                string_param("platform", "Only these platforms.", repeated=True),
                Param(
                    "connection_id",
                    ID_SCHEMA,
                    "Narrow to this connection's live limits.",
                ),
            ),
        ),
    ]
