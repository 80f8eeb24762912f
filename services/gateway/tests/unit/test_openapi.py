"""The generated document: complete, consistent with the route table, self-contained docs."""

from __future__ import annotations

import re

import schemathesis

from postd_gateway.openapi import build_document, render_docs
from postd_gateway.protojson import SchemaRegistry
from postd_gateway.resources import all_routes


def document():
    reg = SchemaRegistry()
    routes = all_routes(reg)
    return routes, build_document(routes, reg, "https://api.example")


def test_every_route_is_documented_once():
    routes, doc = document()
    ids = [r.operation_id for r in routes]
    assert len(ids) == len(set(ids))
    for route in routes:
        operation = doc["paths"][route.path][route.method.lower()]
        assert operation["operationId"] == route.operation_id
        if route.access == "tenant":
            assert {"401", "403"} <= set(operation["responses"])
            assert operation["security"]
        if route.creates:
            assert any(
                p["name"] == "Idempotency-Key" and p["required"] for p in operation["parameters"]
            )


def test_schemathesis_loads_every_operation():
    _, doc = document()
    schema = schemathesis.openapi.from_dict(doc)
    results = list(schema.get_all_operations())
    assert results
    assert all(r.ok() for r in results)  # type: ignore[union-attr]


def test_shown_once_fields_are_nullable_in_answers():
    routes, doc = document()
    components = doc["components"]["schemas"]
    for route in routes:
        if not route.shown_once:
            continue
        answer = next(a for a in route.answers if 200 <= a.status < 300)
        schema = answer.schema
        assert schema is not None
        if "$ref" in schema:
            schema = components[schema["$ref"].rsplit("/", 1)[-1]]
        for field in route.shown_once:
            prop = schema["properties"][field]
            allowed = str(prop)
            assert "null" in allowed, (route.operation_id, field)


def test_docs_page_is_self_contained():
    routes, doc = document()
    page = render_docs(doc)
    assert "<script" not in page
    assert not re.search(r"""(src|href)=["']https?://""", page)
    for route in routes:
        assert route.operation_id in page
