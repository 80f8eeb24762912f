"""The OpenAPI 3.1 document, generated from the route table, and its HTML rendering.

Nothing here is written by hand per operation: parameters, bodies, answers, roles and
error responses all come from the :class:`~postd_gateway.routing.Route` entries and the
JSON Schemas beside their handlers.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from postd_gateway.problems import PROBLEM_JSON, PROBLEM_SCHEMA
from postd_gateway.protojson import SchemaRegistry
from postd_gateway.routing import Route, path_pattern

API_VERSION: Final = "1.0.0"

_ERRORS: Final[dict[int, str]] = {
    400: "Malformed request, or a parameter or body field is not valid (see `errors`).",
    401: "No acceptable credential (missing, malformed, unknown, revoked or expired).",
    403: "Authenticated, but the role, the key's scopes or the CSRF token do not allow it.",
    404: "No such object for this tenant (another tenant's objects are never confirmed).",
    409: "Conflicts with the current state, or an Idempotency-Key reused with another body.",
    413: "The body is too large.",
    415: "The body is not application/json.",
    422: "The content breaks a target platform's limits (see `errors`).",
    429: "Rate limited; see Retry-After and the RateLimit headers.",
    500: "Unexpected failure; the answer carries a trace id and nothing else.",
    501: "The backend does not offer this operation yet.",
    502: "A backend failed or refused the gateway.",
    503: "A backend is unavailable; retry after Retry-After.",
    504: "A backend did not answer in time; the outcome is unknown.",
}
_RATE_HEADERS: Final = {
    "RateLimit-Limit": "Requests allowed per window for this tenant.",
    "RateLimit-Remaining": "Requests left in the current window.",
    "RateLimit-Reset": "Seconds until the window resets.",
}


def _path_param(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": path_pattern(name)},
    }


def _error_statuses(route: Route) -> list[int]:
    statuses = {500}
    if route.raw:
        return sorted({413, 500, 502, 503, 504})
    if route.access == "tenant":
        statuses |= {401, 403}
        if route.rate_limited:
            statuses.add(429)
    if route.query or route.body is not None or route.creates:
        statuses.add(400)
    if route.path_params:
        statuses.add(404)
    if route.body is not None:
        statuses |= {413, 415}
    if route.path.startswith(("/v1/", "/oauth/")):
        # Operations answered by a backend may also see its failures; signing in may
        # refuse the credential it is given.
        statuses |= {400, 401, 403, 404, 409, 422, 429, 501, 502, 503, 504}
    if route.creates:
        statuses.add(409)
    return sorted(statuses)


def _header(description: str, schema_type: str = "string") -> dict[str, Any]:
    return {"description": description, "schema": {"type": schema_type}}


def _operation(route: Route) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [_path_param(n) for n in route.path_params]
    for param in route.query:
        entry: dict[str, Any] = {
            "name": param.name,
            "in": "query",
            "required": param.required,
            "description": param.description,
            "schema": dict(param.schema),
        }
        if param.repeated:
            entry.update(style="form", explode=True)
        parameters.append(entry)
    if route.creates:
        parameters.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": True,
                "description": "Unique per creating request (a UUID is ideal). The same key "
                "with the same body answers the first answer again; with another body, 409.",
                "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"},
            }
        )
    description = route.description
    if route.access == "tenant":
        access = f"Role: **{route.role}** or higher. API-key scope: `{route.scope}`."
        if route.needs_csrf:
            access += " With the session cookie, send `X-CSRF-Token`."
        description = f"{description}\n\n{access}".strip()
    else:
        description = f"{description}\n\nNo authentication.".strip()
    responses: dict[str, Any] = {}
    rate_headers = (
        {k: _header(v, "integer") for k, v in _RATE_HEADERS.items()}
        if route.access == "tenant" and route.rate_limited
        else {}
    )
    for answer in route.answers:
        entry = {"description": answer.description}
        headers = {**rate_headers, **{k: _header(v) for k, v in answer.headers.items()}}
        if headers:
            entry["headers"] = headers
        if answer.schema is not None:
            entry["content"] = {answer.content_type: {"schema": dict(answer.schema)}}
        responses[str(answer.status)] = entry
    for status in _error_statuses(route):
        if str(status) in responses:
            continue
        entry = {
            "description": _ERRORS[status],
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        if status in (429, 503):
            entry["headers"] = {"Retry-After": _header("Seconds to wait.", "integer")}
        if status == 400:
            # The HTTP layer answers plain text for a request line or header over its
            # limits, before the gateway sees the request.
            entry["content"]["text/plain"] = {"schema": {"type": "string"}}
        responses[str(status)] = entry
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "description": description,
        "tags": [route.tag],
        "parameters": parameters,
        "responses": responses,
        "security": (
            [{"bearerAuth": []}, {"sessionCookie": []}] if route.access == "tenant" else []
        ),
        "x-postd-role": route.role if route.access == "tenant" else None,
    }
    if route.body is not None:
        operation["requestBody"] = {
            "required": route.body.required,
            "description": route.body.description,
            "content": {"application/json": {"schema": dict(route.body.schema)}},
        }
    elif route.raw and route.method == "POST":
        operation["requestBody"] = {
            "required": False,
            "description": "The platform's payload, passed on byte for byte.",
            "content": {"*/*": {"schema": {}}},
        }
    return operation


def build_document(routes: Sequence[Route], reg: SchemaRegistry, public_url: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    components = dict(sorted(reg.components.items()))
    components["Problem"] = PROBLEM_SCHEMA
    tags = sorted({r.tag for r in routes})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "POSTD Integrations API",
            "version": API_VERSION,
            "description": (
                "Connect social and marketing accounts, publish to many platforms at once, "
                "take in their webhooks and watch every connection's health.\n\n"
                "Authenticate with `Authorization: Bearer <API key>` (keys look like "
                "`postd_live_<id>_<secret>`), with an identity-provider access token, or with "
                "the dashboard's session cookie plus `X-CSRF-Token`. The tenant always comes "
                "from the credential. Errors are RFC 9457 problem documents with a stable "
                "`code`. Lists page with `limit` and `cursor` (`next_cursor`). Creating "
                "requests need an `Idempotency-Key`. Operational endpoints (`/healthz`, "
                "`/readyz`, `/metrics`) are not part of the API."
            ),
        },
        "servers": [{"url": public_url}],
        "tags": [{"name": t} for t in tags],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (postd_...) or an access token of the "
                    "identity provider (JWT, verified against its JWKS).",
                },
                "sessionCookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "postd_session",
                    "description": "Set by POST /v1/sessions. State-changing requests also "
                    "need X-CSRF-Token.",
                },
            },
        },
    }


# --------------------------------------------------------------------------- /docs

_CSS: Final = """
:root{color-scheme:light;--fg:#1b1f24;--muted:#57606a;--line:#d0d7de;--bg:#fff;--soft:#f6f8fa}
*{box-sizing:border-box}body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",
Roboto,sans-serif;color:var(--fg);background:var(--bg);display:flex}
nav{position:sticky;top:0;height:100vh;overflow:auto;width:290px;flex:none;padding:1rem;
border-right:1px solid var(--line);background:var(--soft)}
nav a{display:block;color:var(--fg);text-decoration:none;padding:.1rem 0;font-size:.86rem}
nav a:hover,nav a:focus{text-decoration:underline}
nav h2{font-size:.8rem;text-transform:uppercase;letter-spacing:.05em;color:var(--muted);
margin:1rem 0 .3rem}
main{flex:1;min-width:0;padding:1.5rem 2rem;max-width:1100px}
section.op{border:1px solid var(--line);border-radius:8px;padding:1rem 1.2rem;margin:1rem 0}
.m{display:inline-block;min-width:4.2rem;text-align:center;font-weight:700;font-size:.8rem;
border-radius:4px;padding:.1rem .4rem;color:#fff;margin-right:.5rem}
.GET{background:#0a6e31}.POST{background:#0550ae}.PUT,.PATCH{background:#8a4600}
.DELETE{background:#a40e26}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.85rem}
pre{background:var(--soft);border:1px solid var(--line);border-radius:6px;padding:.7rem;
overflow:auto;max-height:28rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{text-align:left;
border-bottom:1px solid var(--line);padding:.3rem .5rem;vertical-align:top;font-size:.9rem}
details summary{cursor:pointer;color:var(--muted)}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _md(text: str) -> str:
    """The tiny subset of Markdown our descriptions use: paragraphs, **b**, `code`."""
    out = []
    for paragraph in text.split("\n\n"):
        escaped = _e(paragraph)
        parts = escaped.split("`")
        for i in range(1, len(parts), 2):
            parts[i] = f"<code>{parts[i]}</code>"
        escaped = "".join(parts)
        bold = escaped.split("**")
        for i in range(1, len(bold), 2):
            bold[i] = f"<strong>{bold[i]}</strong>"
        out.append(f"<p>{''.join(bold)}</p>")
    return "".join(out)


def _schema_text(schema: Mapping[str, Any]) -> str:
    return _e(json.dumps(schema, indent=2))


def render_docs(document: Mapping[str, Any]) -> str:
    """One self-contained HTML page (no script, no external resource)."""
    by_tag: dict[str, list[tuple[str, str, Mapping[str, Any]]]] = {}
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            by_tag.setdefault(op["tags"][0], []).append((method.upper(), path, op))
    nav: list[str] = []
    body: list[str] = []
    info = document["info"]
    body.append(f"<h1>{_e(info['title'])} <small>v{_e(info['version'])}</small></h1>")
    body.append(_md(info["description"]))
    for tag in sorted(by_tag):
        nav.append(f"<h2>{_e(tag)}</h2>")
        body.append(f'<h2 id="tag-{_e(tag)}">{_e(tag)}</h2>')
        for method, path, op in by_tag[tag]:
            anchor = _e(op["operationId"])
            nav.append(
                f'<a href="#{anchor}"><span class="m {method}">{method}</span>{_e(path)}</a>'
            )
            body.append(f'<section class="op" id="{anchor}" aria-labelledby="{anchor}-h">')
            body.append(
                f'<h3 id="{anchor}-h"><span class="m {method}">{method}</span>'
                f"<code>{_e(path)}</code> — {_e(op['summary'])}</h3>"
            )
            body.append(_md(op.get("description", "")))
            if op["parameters"]:
                body.append(
                    "<table><caption class='sr'>Parameters</caption><thead><tr><th scope='col'>"
                    "Parameter</th><th scope='col'>In</th><th scope='col'>Schema</th>"
                    "<th scope='col'>Description</th></tr></thead><tbody>"
                )
                for param in op["parameters"]:
                    required = " (required)" if param.get("required") else ""
                    body.append(
                        f"<tr><td><code>{_e(param['name'])}</code>{required}</td>"
                        f"<td>{_e(param['in'])}</td>"
                        f"<td><code>{_e(json.dumps(param['schema']))}</code></td>"
                        f"<td>{_e(param.get('description', ''))}</td></tr>"
                    )
                body.append("</tbody></table>")
            request_body = op.get("requestBody")
            if request_body:
                for content_type, media in request_body["content"].items():
                    body.append(
                        f"<details><summary>Request body ({_e(content_type)})</summary>"
                        f"<pre>{_schema_text(media['schema'])}</pre></details>"
                    )
            body.append(
                "<table><thead><tr><th scope='col'>Status</th><th scope='col'>"
                "Meaning</th></tr></thead><tbody>"
            )
            for status, answer in op["responses"].items():
                body.append(f"<tr><td>{_e(status)}</td><td>{_e(answer['description'])}</td></tr>")
            body.append("</tbody></table></section>")
    nav.append("<h2>Schemas</h2>")
    body.append('<h2 id="schemas">Schemas</h2>')
    for name, schema in document["components"]["schemas"].items():
        anchor = "schema-" + _e(name)
        nav.append(f'<a href="#{anchor}">{_e(name)}</a>')
        body.append(
            f'<details id="{anchor}"><summary><code>{_e(name)}</code></summary>'
            f"<pre>{_schema_text(schema)}</pre></details>"
        )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{_e(info['title'])} — reference</title><style>{_CSS}"
        ".sr{position:absolute;left:-9999px}</style></head><body>"
        f"<nav aria-label='Operations'>{''.join(nav)}</nav>"
        f"<main>{''.join(body)}</main></body></html>"
    )
