"""Strict JSON request bodies: one parser, one validator, errors that name the field.

Refused: another content type (415), bytes that are not UTF-8, duplicate keys,
NaN/Infinity, lone surrogates, a top level that is not an object (400), and anything
the route's JSON Schema does not allow (400, one entry per offending field). Messages
never echo the values sent, so a secret pasted in the wrong field is not reflected.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

import jsonschema_rs

from postd_gateway.problems import FieldError, Problem, bad_request

JSON_TYPES = ("application/json",)


def check_content_type(content_type: str, charset: str | None) -> None:
    if content_type not in JSON_TYPES:
        raise Problem(
            415,
            "unsupported_media_type",
            "Send the body as application/json.",
            headers={"Accept": "application/json"},
        )
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise Problem(415, "unsupported_media_type", "Send the body encoded as UTF-8.")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise bad_request(f"The key {key!r} appears twice.", field=key, code="malformed_json")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise bad_request(f"{name} is not valid JSON.", code="malformed_json")


def parse_object(raw: bytes) -> dict[str, Any]:
    """Parse a request body that must be one JSON object."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("The body is not valid UTF-8.", code="malformed_json") from None
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise bad_request(
            f"The body is not valid JSON (line {exc.lineno}, column {exc.colno}).",
            code="malformed_json",
        ) from None
    except RecursionError:
        raise bad_request("The body is nested too deeply.", code="malformed_json") from None
    if not isinstance(value, dict):
        raise bad_request("The body must be a JSON object.", code="malformed_json")
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request(
            "The body contains an unpaired surrogate escape.", code="malformed_json"
        ) from None
    return value


@functools.lru_cache(maxsize=1024)
def _compiled(schema: str, components: str) -> jsonschema_rs.Draft202012Validator:
    """One compiled validator per distinct schema (and the components it may refer
    to), shared by every app in the process: a compiled validator holds its own copy
    of the components, so one per route and app would cost tens of MB per app."""
    root = json.loads(schema)
    if components:
        root["components"] = {"schemas": json.loads(components)}
    return jsonschema_rs.Draft202012Validator(root, validate_formats=True)


class BodyValidator:
    """Validates bodies against a schema that may reference the OpenAPI components."""

    def __init__(self, schema: Mapping[str, Any], components: Mapping[str, Any]) -> None:
        text = json.dumps(schema, sort_keys=True)
        # Only a schema that refers to components carries them.
        referred = json.dumps(components, sort_keys=True) if "#/components/" in text else ""
        self._validator = _compiled(text, referred)

    def errors(self, value: Any) -> list[FieldError]:
        found = [_describe(error) for error in self._validator.iter_errors(value)]
        return found[:20]

    def check(self, value: Any, *, what: str = "The body") -> None:
        errors = self.errors(value)
        if errors:
            raise Problem(
                400,
                "invalid_body",
                f"{what} does not match the schema; see errors.",
                tuple(errors),
            )


def field_path(parts: list[str | int]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _describe(error: jsonschema_rs.ValidationError) -> FieldError:
    path = list(error.instance_path)
    kind = error.kind
    message: str
    match kind:
        case jsonschema_rs.ValidationErrorKind.Required(property=prop):
            path.append(prop)
            message = "is required"
        case jsonschema_rs.ValidationErrorKind.AdditionalProperties(unexpected=names):
            path.append(names[0] if names else "?")
            message = "is not a known field"
        case jsonschema_rs.ValidationErrorKind.Type(types=types):
            message = "must be " + " or ".join(types)
        case jsonschema_rs.ValidationErrorKind.Enum(options=options):
            message = "must be one of " + ", ".join(json.dumps(o) for o in options[:20])
        case jsonschema_rs.ValidationErrorKind.MinLength(limit=limit):
            message = f"must have at least {limit} characters"
        case jsonschema_rs.ValidationErrorKind.MaxLength(limit=limit):
            message = f"must have at most {limit} characters"
        case jsonschema_rs.ValidationErrorKind.MinItems(limit=limit):
            message = f"must have at least {limit} items"
        case jsonschema_rs.ValidationErrorKind.MaxItems(limit=limit):
            message = f"must have at most {limit} items"
        case jsonschema_rs.ValidationErrorKind.Minimum(limit=limit):
            message = f"must be at least {limit}"
        case jsonschema_rs.ValidationErrorKind.Maximum(limit=limit):
            message = f"must be at most {limit}"
        case jsonschema_rs.ValidationErrorKind.Pattern(pattern=pattern):
            message = f"must match {pattern}"
        case jsonschema_rs.ValidationErrorKind.Format(format=fmt):
            message = f"must be a valid {fmt}"
        case jsonschema_rs.ValidationErrorKind.UniqueItems():
            message = "must not repeat items"
        case jsonschema_rs.ValidationErrorKind.MinProperties(limit=limit):
            message = f"must have at least {limit} fields"
        case jsonschema_rs.ValidationErrorKind.MaxProperties(limit=limit):
            message = f"must have at most {limit} fields"
        case (
            jsonschema_rs.ValidationErrorKind.OneOfNotValid()
            | jsonschema_rs.ValidationErrorKind.AnyOf()
        ):
            message = "does not match any allowed shape"
        case jsonschema_rs.ValidationErrorKind.OneOfMultipleValid():
            message = "matches more than one allowed shape; give only one"
        case _:
            message = f"is not valid ({kind.name})"
    return FieldError(field_path(path) or "body", message)
