"""Server spans carry the tenant and the route, never an OAuth code or a credential."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from postd_common.telemetry import setup_tracing

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    setup_tracing("gateway-tests", None, extra_processors=[SimpleSpanProcessor(exporter)])
    return exporter


def attributes_of(spans, route: str) -> list[dict]:
    return [
        dict(s.attributes or {})
        for s in spans.get_finished_spans()
        if (s.attributes or {}).get("http.route") == route
    ]


async def test_spans_have_the_tenant(client, make_tenant, spans):
    tenant = await make_tenant()
    spans.clear()
    assert (await client.get("/v1/connections", headers=tenant.auth)).status == 200
    found = attributes_of(spans, "/v1/connections")
    assert found, [s.name for s in spans.get_finished_spans()]
    assert found[-1]["postd.tenant_id"] == tenant.id
    assert tenant.key not in str(found)


async def test_oauth_codes_stay_out_of_spans(client, make_tenant, spans):
    tenant = await make_tenant("editor")
    started = await client.post("/v1/connect/facebook", json={}, headers=tenant.auth)
    state = (await started.json())["state"]
    spans.clear()
    code = "AQD-secret-authorization-code-123"
    answer = await client.get(
        f"/oauth/callback/facebook?state={state}&code={code}", allow_redirects=False
    )
    assert answer.status == 302
    found = attributes_of(spans, "/oauth/callback/{platform}")
    assert found
    assert code not in str(found)
    assert state not in str(found)


async def test_a_500_carries_the_spans_trace_id(client, make_tenant, spans, monkeypatch, world):
    from postd_gateway.resources import connections

    def explode(message):
        raise RuntimeError("boom")

    monkeypatch.setattr(connections, "to_json", explode)
    tenant = await make_tenant()
    world.add_connection(tenant.id)
    spans.clear()
    problem = await (await client.get("/v1/connections", headers=tenant.auth)).json()
    assert problem["status"] == 500, problem
    trace_ids = {f"{s.context.trace_id:032x}" for s in spans.get_finished_spans()}
    assert problem["trace_id"] in trace_ids
