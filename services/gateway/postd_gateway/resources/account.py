"""What the gateway itself owns: API keys, dashboard sessions, the caller, feature flags."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any, Final

from postd_gateway.adapters.postgres import ApiKeyRecord
from postd_gateway.auth import CSRF_COOKIE, SESSION_COOKIE
from postd_gateway.domain import (
    ROLES,
    FeatureFlag,
    FlagDecision,
    Principal,
    decide_flag,
    issue_key,
    new_token,
    role_at_least,
)
from postd_gateway.problems import bad_request, forbidden, not_found
from postd_gateway.protojson import SchemaRegistry
from postd_gateway.routing import (
    Answer,
    Body,
    Call,
    Cookie,
    Param,
    Reply,
    Route,
    page_query,
    page_schema,
)

KEY_ID: Final = "^[a-z0-9]{12}$"
SCOPE: Final = {"type": "string", "pattern": "^[a-z_]+:(read|write|\\*)$"}
TIMESTAMP: Final = {"type": "string", "format": "date-time"}
NULLABLE_TIMESTAMP: Final = {"type": ["string", "null"], "format": "date-time"}


# --------------------------------------------------------------------------- API keys


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _key_json(record: ApiKeyRecord) -> dict[str, Any]:
    return {
        "id": record.key_id,
        "name": record.name,
        "role": record.role,
        "scopes": list(record.scopes),
        "created_at": _iso(record.created_at),
        "created_by": record.created_by,
        "last_used_at": _iso(record.last_used_at),
        "revoked_at": _iso(record.revoked_at),
    }


def _cursor(record: ApiKeyRecord) -> str:
    assert record.created_at is not None
    raw = json.dumps([record.created_at.isoformat(), record.key_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _after(cursor: str | None) -> tuple[datetime, str] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, key_id = json.loads(raw)
        return datetime.fromisoformat(stamp), str(key_id)
    except (ValueError, TypeError, UnicodeDecodeError):
        raise bad_request("is not a cursor this list gave", field="cursor") from None


async def list_keys(call: Call) -> Reply:
    limit = int(call.query.get("limit", 50))
    records = await call.ports.tenants.list_keys(
        call.tenant.tenant_id, limit=limit + 1, after=_after(call.query.get("cursor"))
    )
    more = len(records) > limit
    records = records[:limit]
    return Reply(
        body={
            "items": [_key_json(r) for r in records],
            "next_cursor": _cursor(records[-1]) if more and records else None,
        }
    )


async def create_key(call: Call) -> Reply:
    body = call.body or {}
    principal = call.tenant
    role = body.get("role", "viewer")
    if not role_at_least(principal.role, role):
        raise forbidden("A key cannot be given a role above your own.")
    issued = issue_key(call.ports.settings.common.environment)
    record = await call.ports.tenants.add_key(
        principal.tenant_id,
        issued.key_id,
        issued.digest,
        name=body["name"],
        role=role,
        scopes=tuple(body.get("scopes", ())),
        created_by=principal.actor,
    )
    answer = {**_key_json(record), "key": issued.secret}
    return Reply(201, answer, {"Location": f"/v1/api-keys/{record.key_id}"})


async def get_key(call: Call) -> Reply:
    record = await call.ports.tenants.get_key(call.tenant.tenant_id, call.path["key_id"])
    if record is None:
        raise not_found("API key")
    return Reply(body=_key_json(record))


async def revoke_key(call: Call) -> Reply:
    key_id = call.path["key_id"]
    record = await call.ports.tenants.revoke_key(call.tenant.tenant_id, key_id, call.tenant.actor)
    if record is None:
        raise not_found("API key")
    call.ports.authenticator.forget_key(key_id)
    return Reply(body=_key_json(record))


# --------------------------------------------------------------------------- sessions


def _principal_json(principal: Principal) -> dict[str, Any]:
    return {
        "tenant_id": principal.tenant_id,
        "role": principal.role,
        "credential": principal.kind,
        "subject": principal.subject,
        "scopes": list(principal.scopes),
    }


async def create_session(call: Call) -> Reply:
    """Sign in with an API key or an IdP token; answers the CSRF token and sets the
    HttpOnly session cookie."""
    body = call.body or {}
    auth = call.ports.authenticator
    if "api_key" in body:
        principal = await auth.api_key(body["api_key"])
    else:
        principal = await auth.bearer_jwt(body["id_token"])
    settings = call.ports.settings
    token, token_sha = new_token()
    csrf, csrf_sha = new_token()
    record = await call.ports.sessions.create(
        token_sha256=token_sha,
        csrf_sha256=csrf_sha,
        tenant_id=principal.tenant_id,
        role=principal.role,
        subject=principal.subject,
        key_id=principal.key_id,
        scopes=principal.scopes,
        ttl_seconds=settings.session_ttl_seconds,
    )
    ttl = settings.session_ttl_seconds
    secure = settings.secure_cookies
    answer = {
        **_principal_json(principal),
        "credential": "session",
        "expires_at": _iso(record.expires_at),
        "csrf_token": csrf,
    }
    return Reply(
        201,
        answer,
        {"Cache-Control": "no-store"},
        [
            Cookie(SESSION_COOKIE, token, ttl, http_only=True, secure=secure),
            # Readable by the dashboard's script, which echoes it in X-CSRF-Token.
            Cookie(CSRF_COOKIE, csrf, ttl, http_only=False, secure=secure),
        ],
    )


async def delete_session(call: Call) -> Reply:
    principal = call.tenant
    if principal.session_id is not None:
        await call.ports.sessions.revoke(principal.session_id)
        cookie = call.request.cookies.get(SESSION_COOKIE)
        if cookie:
            call.ports.authenticator.forget_session(cookie)
    secure = call.ports.settings.secure_cookies
    return Reply(
        204,
        None,
        {"Cache-Control": "no-store"},
        [
            Cookie(SESSION_COOKIE, "", 0, http_only=True, secure=secure),
            Cookie(CSRF_COOKIE, "", 0, http_only=False, secure=secure),
        ],
    )


async def whoami(call: Call) -> Reply:
    return Reply(body=_principal_json(call.tenant))


# --------------------------------------------------------------------------- feature flags


def _decision_json(decision: FlagDecision, flag: FeatureFlag) -> dict[str, Any]:
    return {
        "name": decision.name,
        "integration": decision.integration,
        "stage": decision.stage,
        "enabled": decision.enabled,
        "reason": decision.reason,
        "description": flag.description,
    }


async def _decisions(call: Call, flags: list[FeatureFlag]) -> list[dict[str, Any]]:
    tenant_id = call.tenant.tenant_id
    tenant = await call.ports.authenticator.tenant(tenant_id)
    overrides = {
        (o.name, o.integration): o.enabled for o in await call.ports.flags.overrides(tenant_id)
    }
    return [
        _decision_json(
            decide_flag(
                flag,
                tenant_id,
                early_access=bool(tenant and tenant.early_access),
                override=overrides.get((flag.name, flag.integration)),
            ),
            flag,
        )
        for flag in flags
    ]


async def list_flags(call: Call) -> Reply:
    flags = await call.ports.flags.list_flags()
    integration = call.query.get("integration")
    if integration is not None:
        flags = [f for f in flags if f.integration in ("", integration)]
    return Reply(body={"items": await _decisions(call, flags)})


async def _flag(call: Call) -> FeatureFlag:
    integration = call.query.get("integration", "")
    flag = await call.ports.flags.get_flag(call.path["flag"], integration)
    if flag is None:
        raise not_found("feature flag")
    return flag


async def get_flag(call: Call) -> Reply:
    flag = await _flag(call)
    return Reply(body=(await _decisions(call, [flag]))[0])


async def set_override(call: Call) -> Reply:
    flag = await _flag(call)
    enabled = (call.body or {}).get("enabled")
    await call.ports.flags.set_override(
        call.tenant.tenant_id, flag.name, flag.integration, enabled, call.tenant.actor
    )
    return Reply(body=(await _decisions(call, [flag]))[0])


def routes(reg: SchemaRegistry) -> list[Route]:
    api_key: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "required": [
            "id",
            "name",
            "role",
            "scopes",
            "created_at",
            "created_by",
            "last_used_at",
            "revoked_at",
        ],
        "properties": {
            "id": {"type": "string", "pattern": KEY_ID},
            "name": {"type": "string"},
            "role": {"type": "string", "enum": list(ROLES)},
            "scopes": {"type": "array", "items": {"type": "string"}},
            "created_at": TIMESTAMP,
            "created_by": {"type": "string"},
            "last_used_at": NULLABLE_TIMESTAMP,
            "revoked_at": NULLABLE_TIMESTAMP,
        },
    }
    key_ref = reg.add("gateway.ApiKey", api_key)
    created = reg.add(
        "gateway.CreatedApiKey",
        {
            **api_key,
            "required": [*api_key["required"], "key"],
            "properties": {
                **api_key["properties"],
                "key": {
                    "type": ["string", "null"],
                    "description": "The key itself, shown this once; null in a replay.",
                },
            },
        },
    )
    principal_props: dict[str, Any] = {
        "tenant_id": {"type": "string"},
        "role": {"type": "string", "enum": list(ROLES)},
        "credential": {"type": "string", "enum": ["api_key", "jwt", "session"]},
        "subject": {"type": "string"},
        "scopes": {"type": "array", "items": {"type": "string"}},
    }
    me = reg.add(
        "gateway.Principal",
        {
            "type": "object",
            "additionalProperties": False,
            "required": list(principal_props),
            "properties": principal_props,
        },
    )
    session = reg.add(
        "gateway.Session",
        {
            "type": "object",
            "additionalProperties": False,
            "required": [*principal_props, "expires_at", "csrf_token"],
            "properties": {
                **principal_props,
                "expires_at": TIMESTAMP,
                "csrf_token": {
                    "type": "string",
                    "description": "Send it in X-CSRF-Token on every state-changing request "
                    "made with the session cookie.",
                },
            },
        },
    )
    decision_props: dict[str, Any] = {
        "name": {"type": "string"},
        "integration": {"type": "string"},
        "stage": {"type": "string", "enum": ["off", "alpha", "beta", "stable"]},
        "enabled": {"type": "boolean"},
        "reason": {"type": "string", "enum": ["override", "early_access", "rollout", "default"]},
        "description": {"type": "string"},
    }
    decision = reg.add(
        "gateway.FeatureFlag",
        {
            "type": "object",
            "additionalProperties": False,
            "required": list(decision_props),
            "properties": decision_props,
        },
    )
    integration = Param(
        "integration",
        {"type": "string", "maxLength": 40, "pattern": "^[a-z0-9_]*$"},
        "The integration (platform); absent or empty: the flag for all integrations.",
    )
    return [
        Route(
            "GET",
            "/v1/api-keys",
            list_keys,
            "listApiKeys",
            "List API keys",
            "api_keys",
            [
                Answer(
                    200, "A page of keys, newest first (never the secrets).", page_schema(key_ref)
                )
            ],
            role="admin",
            query=page_query(),
        ),
        Route(
            "POST",
            "/v1/api-keys",
            create_key,
            "createApiKey",
            "Create an API key",
            "api_keys",
            [Answer(201, "The key, shown this once.", created)],
            role="admin",
            body=Body(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1, "maxLength": 100},
                        "role": {"type": "string", "enum": list(ROLES), "default": "viewer"},
                        "scopes": {
                            "type": "array",
                            "items": SCOPE,
                            "maxItems": 50,
                            "uniqueItems": True,
                        },
                    },
                }
            ),
            creates=True,
            shown_once=("key",),
            description="Scopes narrow the key below its role (`posts:read`, `posts:write`, "
            "`connections:*`, ...); none means everything the role allows. A key cannot "
            "get a role above its creator's.",
        ),
        Route(
            "GET",
            "/v1/api-keys/{key_id}",
            get_key,
            "getApiKey",
            "Get an API key",
            "api_keys",
            [Answer(200, "The key (never the secret).", key_ref)],
            role="admin",
        ),
        Route(
            "DELETE",
            "/v1/api-keys/{key_id}",
            revoke_key,
            "revokeApiKey",
            "Revoke an API key",
            "api_keys",
            [Answer(200, "The key, revoked (idempotent).", key_ref)],
            role="admin",
            description="Takes effect at once on this replica and within 5 s (the "
            "credential cache) on the others; sessions opened with the key end too.",
        ),
        Route(
            "POST",
            "/v1/sessions",
            create_session,
            "createSession",
            "Sign in to the dashboard",
            "sessions",
            [
                Answer(
                    201,
                    "Signed in: the session cookie is set (HttpOnly).",
                    session,
                    headers={"Set-Cookie": "postd_session (HttpOnly) and postd_csrf."},
                )
            ],
            access="public",
            body=Body(
                {
                    "oneOf": [
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["api_key"],
                            "properties": {
                                "api_key": {"type": "string", "minLength": 1, "maxLength": 200}
                            },
                        },
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["id_token"],
                            "properties": {
                                "id_token": {"type": "string", "minLength": 1, "maxLength": 8192}
                            },
                        },
                    ]
                },
                description="An API key, or an access token of the identity provider.",
            ),
        ),
        Route(
            "DELETE",
            "/v1/session",
            delete_session,
            "deleteSession",
            "Sign out",
            "sessions",
            [Answer(204, "Signed out; the cookies are cleared.")],
            rate_limited=False,
        ),
        Route(
            "GET",
            "/v1/me",
            whoami,
            "getCaller",
            "Who is calling",
            "sessions",
            [Answer(200, "The authenticated caller.", me)],
        ),
        Route(
            "GET",
            "/v1/feature-flags",
            list_flags,
            "listFeatureFlags",
            "Feature flags for this tenant",
            "flags",
            [
                Answer(
                    200,
                    "Every flag as it applies to this tenant.",
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["items"],
                        "properties": {"items": {"type": "array", "items": decision}},
                    },
                )
            ],
            query=(integration,),
            description="Rollout: alpha (early-access tenants), beta (those plus a fixed "
            "10 % of tenants by hash), stable (everyone); a tenant's override wins.",
        ),
        Route(
            "GET",
            "/v1/feature-flags/{flag}",
            get_flag,
            "getFeatureFlag",
            "One feature flag for this tenant",
            "flags",
            [Answer(200, "The flag as it applies to this tenant.", decision)],
            query=(integration,),
        ),
        Route(
            "PUT",
            "/v1/feature-flags/{flag}/override",
            set_override,
            "setFeatureFlagOverride",
            "Turn a flag on or off for this tenant",
            "flags",
            [Answer(200, "The flag after the change.", decision)],
            role="admin",
            query=(integration,),
            body=Body(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["enabled"],
                    "properties": {
                        "enabled": {
                            "type": ["boolean", "null"],
                            "description": "null removes the override.",
                        }
                    },
                }
            ),
        ),
    ]
