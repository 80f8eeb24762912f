"""RFC 9457 problem documents: the one shape of every error the gateway answers.

``code`` is stable and machine-readable; ``title`` is fixed per code; ``detail`` is
written for a person and never carries a secret or a stack trace; ``errors`` names
each offending field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final

PROBLEM_JSON: Final = "application/problem+json"
TYPE_BASE: Final = "https://docs.postd.dev/problems/"


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


@dataclass
class Problem(Exception):
    """Raise anywhere in a request to answer with this problem."""

    status: int
    code: str
    detail: str
    errors: Sequence[FieldError] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    title: str | None = None

    def __post_init__(self) -> None:
        super().__init__(f"{self.status} {self.code}: {self.detail}")

    def document(
        self, *, instance: str | None = None, trace_id: str | None = None
    ) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": TYPE_BASE + self.code.replace("_", "-"),
            "title": self.title or _title(self.status),
            "status": self.status,
            "code": self.code,
            "detail": self.detail,
        }
        if self.errors:
            doc["errors"] = [{"field": e.field, "message": e.message} for e in self.errors]
        if instance:
            doc["instance"] = instance
        if trace_id:
            doc["trace_id"] = trace_id
        return doc

    def body(self, *, instance: str | None = None, trace_id: str | None = None) -> bytes:
        return json.dumps(self.document(instance=instance, trace_id=trace_id)).encode()


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def bad_request(detail: str, *, field: str | None = None, code: str = "invalid_request") -> Problem:
    errors = (FieldError(field, detail),) if field else ()
    return Problem(400, code, detail, errors)


def not_found(what: str = "resource") -> Problem:
    return Problem(404, "not_found", f"No such {what}.")


def unauthenticated(detail: str) -> Problem:
    return Problem(
        401, "unauthenticated", detail, headers={"WWW-Authenticate": 'Bearer realm="postd"'}
    )


def forbidden(detail: str) -> Problem:
    return Problem(403, "forbidden", detail)


# The JSON Schema of a problem document, as published in the OpenAPI components.
PROBLEM_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["type", "title", "status", "code", "detail"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "trace_id": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}
