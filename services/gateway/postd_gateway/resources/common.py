"""Helpers the resource modules share: enum and page parameters, backend calls."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from google.protobuf import descriptor as _d
from google.protobuf.message import Message

from postd_gateway.backends import rpc
from postd_gateway.problems import bad_request
from postd_gateway.protojson import SchemaRegistry, enum_from_json, enum_names, from_json
from postd_gateway.routing import NAME_SCHEMA, Answer, Call, Param

M = TypeVar("M", bound=Message)
R = TypeVar("R")


def enum_param(
    name: str, enum: _d.EnumDescriptor, description: str, *, repeated: bool = True
) -> Param:
    values = [v for v in enum_names(enum) if v != "unspecified"]
    item = {"type": "string", "enum": values}
    if repeated:
        return Param(
            name,
            {"type": "array", "items": item, "maxItems": len(values), "uniqueItems": True},
            description + " Repeat the parameter for several.",
            repeated=True,
        )
    return Param(name, item, description)


def string_param(name: str, description: str, *, repeated: bool = False) -> Param:
    item = dict(NAME_SCHEMA)
    if repeated:
        return Param(
            name,
            {"type": "array", "items": item, "maxItems": 50},
            description + " Repeat the parameter for several.",
            repeated=True,
        )
    return Param(name, item, description)


def enums(values: Sequence[str] | None, enum: _d.EnumDescriptor) -> list[Any]:
    """Enum numbers for a request (typed Any: each proto enum has its own ValueType)."""
    return [enum_from_json(enum, v) for v in values or ()]


def page_args(call: Call) -> dict[str, Any]:
    return {
        "page_size": int(call.query.get("limit", 50)),
        "page_token": call.query.get("cursor", ""),
    }


async def call_backend(
    call: Call,
    method: Callable[..., Awaitable[R]],
    request: Any,
    *,
    fields: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> R:
    return await rpc(
        method,
        request,
        timeout=timeout or call.ports.settings.backend_timeout_seconds,
        fields=fields,
    )


def message_input(data: Mapping[str, Any] | None, cls: type[M], field: str) -> M:
    """A message from a validated JSON part; a value protobuf refuses is a 400."""
    if data is None:
        return cls()
    try:
        return from_json(data, cls)
    except (ValueError, TypeError):
        raise bad_request("holds a value that is not valid", field=field) from None


def ok(
    reg: SchemaRegistry, descriptor: _d.Descriptor, description: str, status: int = 200
) -> Answer:
    return Answer(status, description, reg.ref(descriptor))


def no_content(description: str) -> Answer:
    return Answer(204, description)
