"""Strict JSON parsing and field-naming validation."""

from __future__ import annotations

import pytest

from postd_gateway.jsonbody import BodyValidator, check_content_type, field_path, parse_object
from postd_gateway.problems import Problem


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":1,"a":2}',
        b"[]",
        b'"x"',
        b"{'a':1}",
        b'{"a": Infinity}',
        b"\xff\xfe",
        b'{"a":"\\udc00"}',
        b"",
    ],
)
def test_refused_bodies(raw):
    with pytest.raises(Problem) as refused:
        parse_object(raw)
    assert refused.value.status == 400


def test_accepted_body():
    assert parse_object('{"a": [1, {"b": "é"}]}'.encode()) == {"a": [1, {"b": "é"}]}


def test_content_types():
    check_content_type("application/json", None)
    check_content_type("application/json", "UTF-8")
    for kind, charset in (("text/plain", None), ("application/json", "latin-1")):
        with pytest.raises(Problem) as refused:
            check_content_type(kind, charset)
        assert refused.value.status == 415


def test_errors_name_the_field_without_echoing_values():
    schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "name": {"type": "string"},
            "items": {"type": "array", "items": {"type": "integer"}},
        },
    }
    errors = BodyValidator(schema, {}).errors({"items": [1, "secret-value"], "extra": True})
    fields = {e.field for e in errors}
    assert fields == {"name", "items[1]", "extra"}
    assert all("secret-value" not in e.message for e in errors)
    assert field_path(["a", 0, "b"]) == "a[0].b"


def test_apps_share_one_compiled_validator_per_schema():
    # Every app of a process (a test run makes hundreds) validates a route's body
    # with the same compiled validator: each holds a copy of the components it uses.
    components = {"Name": {"type": "string", "minLength": 1}}
    schema = {"type": "object", "properties": {"name": {"$ref": "#/components/schemas/Name"}}}
    first = BodyValidator(schema, components)
    again = BodyValidator(dict(schema), dict(components))
    assert first._validator is again._validator
    assert [e.field for e in again.errors({"name": ""})] == ["name"]
    # A schema that refers to no component does not carry them.
    plain = BodyValidator({"type": "integer"}, components)
    assert plain._validator is BodyValidator({"type": "integer"}, {})._validator
    assert plain.errors(3) == []
    assert len(plain.errors("x")) == 1
