"""Property-based run of schemathesis over /openapi.json against the real gateway (a
listening server, real gRPC to the fakes, real PostgreSQL): no 5xx, and every answer
matches the document (status code, content type, headers, body schema)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from postd_gateway.adapters.postgres import TenantStore

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("POSTD_SCHEMATHESIS_EXAMPLES", "12"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def run(document: dict[str, Any], base_url: str, headers: dict[str, str]) -> list[str]:
    """Every operation, positive then negative examples; returns the failures."""
    schema = schemathesis.openapi.from_dict(document)
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failures.extend(_run_operation(operation, mode, base_url, headers))
    return failures


def _run_operation(
    operation: Any, mode: GenerationMode, base_url: str, headers: dict[str, str]
) -> list[str]:
    checks = [*CHECKS, negative_data_rejection] if mode is GenerationMode.NEGATIVE else CHECKS
    failures: list[str] = []
    if True:
        if True:

            @hypothesis.settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(hypothesis.HealthCheck),
                phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
            )
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def check(case: Any) -> None:
                response = case.call(base_url=base_url, headers=headers, timeout=30)
                case.validate_response(response, checks=checks, headers=headers)

            try:
                check()
            except hypothesis.errors.Unsatisfiable:
                return failures
            except Exception as exc:
                failures.append(f"{operation.label} [{mode}]: {str(exc)[:1500]}")
    return failures


async def test_schemathesis_finds_nothing(
    aiohttp_server, settings, gateway_schema, make_tenant, pg_pool, world
):
    from postd_gateway.app import SERVER_LIMITS, create_app

    server = await aiohttp_server(create_app(settings), **SERVER_LIMITS)
    tenant = await make_tenant("owner")
    world.seed_tenant(tenant.id)
    await TenantStore(pg_pool).set_tenant_options(
        tenant.id, rate_limit=1_000_000, early_access=False
    )
    document = await (await _get(server, "/openapi.json")).json()
    failures = await asyncio.to_thread(
        run, document, str(server.make_url("")).rstrip("/"), tenant.auth
    )
    assert not failures, "\n\n".join(failures)


async def _get(server, path):
    import aiohttp

    async with aiohttp.ClientSession() as session:
        response = await session.get(server.make_url(path))
        await response.read()
        return response
