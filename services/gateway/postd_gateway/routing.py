"""The route table: what each operation is, who may call it, what it takes and answers.

One :class:`Route` per operation, declared next to its handler with its JSON Schemas.
The request pipeline enforces it and the OpenAPI document is generated from it, so
the two cannot disagree.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from aiohttp import web

    from postd_gateway.domain import Principal
    from postd_gateway.ports import Ports

Access = Literal["tenant", "public"]
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
# Ids are opaque to the gateway; anything else cannot name an object, so it is a 404.
ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
# An id or a short name in a query or body: ASCII, so a URL stays well inside limits.
ID_SCHEMA: Final = {"type": "string", "pattern": ID_PATTERN}
NAME_SCHEMA: Final = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"}
PLATFORM_PATTERN: Final = r"^[a-z][a-z0-9_]{0,39}$"
# A webhook path key as the router issues it: URL-safe base64, which may begin with
# "-" or "_" (an id may not).
PATH_KEY_PATTERN: Final = r"^[A-Za-z0-9_-]{1,128}$"
_PATH_PATTERNS: Final = {"platform": PLATFORM_PATTERN, "key": PATH_KEY_PATTERN}


def path_pattern(name: str) -> str:
    """What a path parameter may hold: the one rule for the OpenAPI document and the
    check of each request (anything else names nothing: 404)."""
    return _PATH_PATTERNS.get(name, ID_PATTERN)


_PATH_PARAM = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class Param:
    """A query parameter. ``repeated``: ``?platform=a&platform=b`` -> a list."""

    name: str
    schema: Mapping[str, Any]
    description: str
    required: bool = False
    repeated: bool = False


@dataclass(frozen=True)
class Body:
    schema: Mapping[str, Any]
    description: str = ""
    required: bool = True


@dataclass(frozen=True)
class Answer:
    """A documented success response. ``schema`` None: no body."""

    status: int
    description: str
    schema: Mapping[str, Any] | None = None
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Cookie:
    name: str
    value: str
    max_age: int | None
    http_only: bool
    secure: bool
    same_site: str = "Lax"
    path: str = "/"


@dataclass
class Reply:
    """What a handler answers: JSON (``body``), a redirect or an empty response."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    cookies: list[Cookie] = field(default_factory=list)

    @classmethod
    def redirect(cls, location: str) -> Reply:
        return cls(302, None, {"Location": location, "Cache-Control": "no-store"})


@dataclass
class Call:
    """One request as a handler sees it, after authentication and validation."""

    principal: Principal | None
    path: dict[str, str]
    query: dict[str, Any]
    body: dict[str, Any] | None
    ports: Ports
    request: web.Request

    @property
    def tenant(self) -> Principal:
        """The authenticated caller; only routes with tenant access use this."""
        assert self.principal is not None, "route is not tenant-authenticated"
        return self.principal


Handler = Callable[[Call], Awaitable["Reply | web.StreamResponse"]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    answers: Sequence[Answer]
    access: Access = "tenant"
    role: str = "viewer"
    query: Sequence[Param] = ()
    body: Body | None = None
    # A creating request: Idempotency-Key required, the 2xx answer replayed.
    creates: bool = False
    # Fields of the answer that are shown once and so never stored for replays.
    shown_once: Sequence[str] = ()
    description: str = ""
    # Raw routes (webhooks) read the body themselves and are not JSON.
    raw: bool = False
    # Query parameters beyond those declared are passed on (OAuth callbacks).
    open_query: bool = False
    rate_limited: bool = True

    @property
    def path_params(self) -> list[str]:
        return _PATH_PARAM.findall(self.path)

    @property
    def scope(self) -> str:
        """The API-key scope the route needs, e.g. ``posts:read``, ``posts:write``."""
        action = "read" if self.method in SAFE_METHODS else "write"
        return f"{self.tag}:{action}"

    @property
    def needs_csrf(self) -> bool:
        return self.method not in SAFE_METHODS


def page_query(extra: Sequence[Param] = ()) -> tuple[Param, ...]:
    return (
        *extra,
        Param(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
            "Most items to return.",
        ),
        Param(
            "cursor",
            {"type": "string", "pattern": "^[A-Za-z0-9._~:=+/-]{1,1024}$"},
            "next_cursor of the previous page.",
        ),
    )


def page_schema(item: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "next_cursor"],
        "additionalProperties": False,
        "properties": {
            "items": {"type": "array", "items": dict(item)},
            "next_cursor": {
                "type": ["string", "null"],
                "description": "Pass as `cursor` for the next page; null on the last page.",
            },
        },
    }


def page(items: list[Any], next_token: str) -> dict[str, Any]:
    return {"items": items, "next_cursor": next_token or None}
