"""Opaque page tokens (common.proto conventions): base64 JSON carrying the position
and a hash of the filters, so a token reused with other filters is refused."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from postd_common.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size must not be negative", field="page_size")
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


def filter_key(*parts: str | Sequence[str] | None) -> str:
    material = json.dumps([p if isinstance(p, str | None) else sorted(p) for p in parts])
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def encode(position: Mapping[str, Any], filters: str) -> str:
    raw = json.dumps({"p": dict(position), "f": filters}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(token: str, filters: str) -> dict[str, Any] | None:
    """The position in ``token`` (None for an empty token); InvalidArgument when it is
    malformed or was issued for other filters."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        raw = json.loads(base64.urlsafe_b64decode(padded.encode()))
        position = raw["p"]
        issued_for = raw["f"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument("page_token is malformed", field="page_token") from exc
    if issued_for != filters or not isinstance(position, dict):
        raise InvalidArgument("page_token was issued for other filters", field="page_token")
    return position
