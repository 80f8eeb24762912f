"""Problem documents for every failure: strict JSON, limits, backend failures mapped
from gRPC status and POSTD trailing metadata, and nothing internal ever leaked."""

from __future__ import annotations

import pytest

from postd_common import errors
from postd_gateway.resources import connections

pytestmark = pytest.mark.integration

SECRET = "EAAB" + "x" * 40  # shaped like a Meta token


def is_problem(answer) -> bool:
    return answer.headers["Content-Type"].startswith("application/problem+json")


@pytest.fixture
async def editor(make_tenant, world):
    tenant = await make_tenant("editor")
    tenant_ids = world.seed_tenant(tenant.id)
    return tenant, tenant_ids


@pytest.mark.parametrize(
    ("raw", "content_type", "status", "code"),
    [
        (b'{"reason": "a"}', "text/plain", 415, "unsupported_media_type"),
        (b'{"reason": "a"}', "application/json; charset=latin-1", 415, "unsupported_media_type"),
        (b'{"reason": "a", "reason": "b"}', "application/json", 400, "malformed_json"),
        (b'["reason"]', "application/json", 400, "malformed_json"),
        (b'{"reason": NaN}', "application/json", 400, "malformed_json"),
        (b'{"reason": "\xff"}', "application/json", 400, "malformed_json"),
        (b'{"reason": "\\ud800"}', "application/json", 400, "malformed_json"),
        (b'{"reason": ', "application/json", 400, "malformed_json"),
        (b'{"reason": 5}', "application/json", 400, "invalid_body"),
        (b'{"why": "a"}', "application/json", 400, "invalid_body"),
    ],
)
async def test_strict_json(client, editor, raw, content_type, status, code):
    tenant, ids = editor
    answer = await client.post(
        f"/v1/posts/{ids['post_id']}/cancel",
        data=raw,
        headers={**tenant.auth, "Content-Type": content_type},
    )
    problem = await answer.json()
    assert answer.status == status, problem
    assert is_problem(answer)
    assert problem["code"] == code
    assert problem["status"] == status
    assert problem["title"]


async def test_schema_errors_name_each_field(client, editor):
    tenant, _ = editor
    answer = await client.post(
        "/v1/posts/validate",
        json={"content": {"text": 5}, "targets": [{"connection_id": ""}], "extra": 1},
        headers=tenant.auth,
    )
    problem = await answer.json()
    assert answer.status == 400
    fields = {e["field"] for e in problem["errors"]}
    assert {"content.text", "targets[0].connection_id", "extra"} <= fields


async def test_values_sent_are_never_echoed(client, editor):
    tenant, ids = editor
    answer = await client.post(
        f"/v1/posts/{ids['post_id']}/cancel",
        json={"reason": 1, "job_ids": [SECRET]},
        headers=tenant.auth,
    )
    assert answer.status == 400
    assert SECRET not in await answer.text()


async def test_body_size_limit(make_client, editor):
    client = await make_client(max_body_bytes=1024)
    tenant, ids = editor
    answer = await client.post(
        f"/v1/posts/{ids['post_id']}/cancel", json={"reason": "x" * 4000}, headers=tenant.auth
    )
    assert answer.status == 413
    assert (await answer.json())["code"] == "payload_too_large"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("limit=501", "limit"),
        ("colour=red", "colour"),
        ("status=fine", "status"),
        ("limit=1&limit=2", "limit"),
    ],
)
async def test_query_parameters_are_checked(client, editor, query, field):
    tenant, _ = editor
    answer = await client.get(f"/v1/connections?{query}", headers=tenant.auth)
    problem = await answer.json()
    assert answer.status == 400, problem
    assert problem["errors"][0]["field"] == field


async def test_unknown_routes_and_methods(client, editor):
    tenant, _ = editor
    missing = await client.get("/v1/nothing-here", headers=tenant.auth)
    assert missing.status == 404
    assert is_problem(missing)
    wrong = await client.put("/v1/connections", headers=tenant.auth)
    assert wrong.status == 405
    assert is_problem(wrong)
    assert "GET" in wrong.headers["Allow"]


async def test_an_unexpected_error_is_a_500_with_a_trace_id_only(client, editor, monkeypatch):
    tenant, _ = editor

    def explode(message):
        raise RuntimeError(f"decoder broke on access_token={SECRET}")

    monkeypatch.setattr(connections, "to_json", explode)
    answer = await client.get("/v1/connections", headers=tenant.auth)
    problem = await answer.json()
    assert answer.status == 500
    assert problem["code"] == "internal_error"
    assert len(problem["trace_id"]) == 32
    text = await answer.text()
    assert SECRET not in text
    assert "Traceback" not in text
    assert "RuntimeError" not in text


@pytest.mark.parametrize(
    ("fault", "status", "code", "headers"),
    [
        (
            errors.Unavailable("the database is down", retry_after=7),
            503,
            "unavailable",
            {"Retry-After": "7"},
        ),
        (
            errors.ResourceExhausted("slow down", retry_after=3),
            429,
            "resource_exhausted",
            {"Retry-After": "3"},
        ),
        (
            errors.InvalidArgument("page_token is malformed", field="page_token"),
            400,
            "invalid_argument",
            {},
        ),
        (
            errors.FailedPrecondition("disabled for this tenant", code="platform_disabled"),
            409,
            "platform_disabled",
            {},
        ),
        (errors.PermissionDenied(f"gateway may not {SECRET}"), 502, "backend_refused", {}),
        (RuntimeError(f"boom {SECRET}"), 502, "backend_error", {}),
    ],
)
async def test_backend_failures_become_problems(
    client, editor, world, fault, status, code, headers
):
    tenant, _ = editor
    world.faults[tenant.id] = fault
    try:
        answer = await client.get("/v1/connections", headers=tenant.auth)
    finally:
        del world.faults[tenant.id]
    problem = await answer.json()
    assert answer.status == status, problem
    assert problem["code"] == code
    for name, value in headers.items():
        assert answer.headers[name] == value
    assert SECRET not in await answer.text()
    if code == "invalid_argument":
        assert problem["errors"] == [{"field": "cursor", "message": "page_token is malformed"}]


async def test_backend_timeout_is_a_504(make_client, editor, world):
    client = await make_client(backend_timeout_seconds=0.2)
    tenant, _ = editor
    world.delays[tenant.id] = 2.0
    try:
        answer = await client.get("/v1/connections", headers=tenant.auth)
    finally:
        del world.delays[tenant.id]
    assert answer.status == 504
    assert (await answer.json())["code"] == "backend_timeout"


async def test_backend_down_is_a_503(make_client, settings, editor):
    from postd_common.devinfra import free_port

    dead = {name: f"127.0.0.1:{free_port()}" for name in settings.backends}
    client = await make_client(backends=dead, backend_timeout_seconds=2.0)
    tenant, _ = editor
    answer = await client.get("/v1/connections", headers=tenant.auth)
    assert answer.status == 503
    assert int(answer.headers["Retry-After"]) >= 1
