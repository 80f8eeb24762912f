"""The error catalogue: platform failures mapped to categories and actions, as data.

Each platform has ``data/errors/<platform>.toml``: entries matched on HTTP status,
the platform's code and sub-code (and optionally a phrase of its message); the most
specific match wins; ``data/errors/common.toml`` holds the fallbacks by status.

One rule is code, not data, because it must hold whatever a data file says: a
failure without an HTTP answer (timeout, reset) or with a 5xx is never an
authentication or permission problem. Passing network errors read as revoked tokens
are what send accounts into endless "reconnect" loops.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from postd_connectors.domain.model import ErrorAction, ErrorCategory, PlatformError

_AUTH_LIKE = frozenset(
    {ErrorCategory.AUTH_REVOKED, ErrorCategory.AUTH_EXPIRED, ErrorCategory.PERMISSION_MISSING}
)


class CatalogueDataError(Exception):
    """An error catalogue file is malformed."""


@dataclass(frozen=True)
class RawFailure:
    """What a connector read from a failed platform answer (or from no answer)."""

    http_status: int
    code: str = ""
    subcode: str = ""
    platform_message: str = ""
    # The platform's own words meant for end users (Meta error_user_msg), if any.
    user_message: str = ""
    retry_after: float | None = None
    request_id: str = ""
    missing_scopes: tuple[str, ...] = ()


@dataclass(frozen=True)
class CatalogueEntry:
    category: ErrorCategory
    action: ErrorAction
    message: str
    action_message: str = ""
    retryable: bool | None = None
    http_status: tuple[int, ...] = ()
    status_from: int | None = None
    status_to: int | None = None
    code: str | None = None
    subcode: str | None = None
    message_contains: str | None = None
    default_retry_after: float | None = None

    def matches(self, raw: RawFailure) -> int:
        """0 when it does not apply, else how specific the match is."""
        score = 1
        if self.http_status:
            if raw.http_status not in self.http_status:
                return 0
            score += 2
        if self.status_from is not None and raw.http_status < self.status_from:
            return 0
        if self.status_to is not None and raw.http_status > self.status_to:
            return 0
        if self.code is not None:
            if raw.code != self.code:
                return 0
            score += 4
        if self.subcode is not None:
            if raw.subcode != self.subcode:
                return 0
            score += 8
        if self.message_contains is not None:
            if self.message_contains.lower() not in raw.platform_message.lower():
                return 0
            score += 8
        return score


_DEFAULT_RETRYABLE = {
    ErrorCategory.TRANSIENT: True,
    ErrorCategory.PLATFORM_OUTAGE: True,
    ErrorCategory.RATE_LIMITED: True,
    ErrorCategory.QUOTA_EXCEEDED: True,
    ErrorCategory.AUTH_EXPIRED: True,
}


class _Blank(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


def _fill(template: str, values: Mapping[str, str]) -> str:
    text = template.format_map(_Blank(values))
    return " ".join(text.split())


def retry_text(seconds: float | None) -> str:
    if seconds is None:
        return "a while"
    if seconds < 90:
        return f"{round(seconds)} seconds"
    if seconds < 5400:
        return f"{round(seconds / 60)} minutes"
    return f"{round(seconds / 3600, 1):g} hours"


@dataclass(frozen=True)
class ErrorCatalogue:
    platform: str
    entries: tuple[CatalogueEntry, ...]
    fallbacks: tuple[CatalogueEntry, ...] = ()

    def classify(
        self,
        raw: RawFailure,
        *,
        platform: str,
        display_name: str,
        account: str = "",
    ) -> PlatformError:
        entry = self._best(self.entries, raw) or self._best(self.fallbacks, raw)
        if entry is None:
            entry = CatalogueEntry(
                category=ErrorCategory.UNKNOWN,
                action=ErrorAction.CONTACT_SUPPORT,
                message="{platform} refused the request for a reason POSTD does not know yet.",
            )
        category = entry.category
        action = entry.action
        message_template = entry.message
        if (raw.http_status == 0 or raw.http_status >= 500) and category in _AUTH_LIKE:
            category, action = ErrorCategory.TRANSIENT, ErrorAction.RETRY
            message_template = "{platform} did not answer properly; POSTD will try again."
        retry_after = raw.retry_after if raw.retry_after is not None else entry.default_retry_after
        reason = raw.user_message or raw.platform_message
        values = {
            "platform": display_name,
            "account": account or f"this {display_name} account",
            "reason": reason.rstrip(".") if reason else "no reason given",
            "retry": retry_text(retry_after),
            "scopes": ", ".join(raw.missing_scopes),
        }
        retryable = (
            entry.retryable
            if entry.retryable is not None and category is entry.category
            else _DEFAULT_RETRYABLE.get(category, False)
        )
        return PlatformError(
            category=category,
            platform=platform,
            message=_fill(message_template, values),
            action=action,
            action_message=_fill(entry.action_message, values) if entry.action_message else "",
            retryable=retryable,
            http_status=raw.http_status,
            platform_code=raw.code,
            platform_subcode=raw.subcode,
            platform_message=raw.platform_message[:500],
            retry_after=retry_after,
            missing_scopes=raw.missing_scopes,
            platform_request_id=raw.request_id,
        )

    @staticmethod
    def _best(entries: Sequence[CatalogueEntry], raw: RawFailure) -> CatalogueEntry | None:
        best: CatalogueEntry | None = None
        best_score = 0
        for entry in entries:
            score = entry.matches(raw)
            if score > best_score:
                best, best_score = entry, score
        return best

    def with_fallbacks(self, fallbacks: Sequence[CatalogueEntry]) -> ErrorCatalogue:
        return replace(self, fallbacks=tuple(fallbacks))


def _entry(raw: Mapping[str, Any], where: str) -> CatalogueEntry:
    try:
        category = ErrorCategory(raw["category"])
        action = ErrorAction(raw["action"])
        message = str(raw["message"])
    except (KeyError, ValueError) as exc:
        raise CatalogueDataError(f"{where}: {exc}") from exc
    status = raw.get("http_status", ())
    statuses = (status,) if isinstance(status, int) else tuple(int(s) for s in status)
    code = raw.get("code")
    subcode = raw.get("subcode")
    return CatalogueEntry(
        category=category,
        action=action,
        message=message,
        action_message=str(raw.get("action_message", "")),
        retryable=raw.get("retryable"),
        http_status=statuses,
        status_from=raw.get("status_from"),
        status_to=raw.get("status_to"),
        code=str(code) if code is not None else None,
        subcode=str(subcode) if subcode is not None else None,
        message_contains=raw.get("message_contains"),
        default_retry_after=raw.get("default_retry_after"),
    )


def parse_entries(raw: Mapping[str, Any], source: str) -> tuple[CatalogueEntry, ...]:
    items = raw.get("errors", [])
    if not isinstance(items, list):
        raise CatalogueDataError(f"{source}: errors must be an array of tables")
    return tuple(_entry(item, f"{source}.errors[{i}]") for i, item in enumerate(items))


def load_catalogues(directory: Path) -> dict[str, ErrorCatalogue]:
    """``<name>.toml`` -> catalogue ``name``; ``common.toml`` supplies every fallback."""
    common_path = directory / "common.toml"
    fallbacks: tuple[CatalogueEntry, ...] = ()
    if common_path.exists():
        fallbacks = parse_entries(tomllib.loads(common_path.read_text()), common_path.name)
    found: dict[str, ErrorCatalogue] = {}
    for path in sorted(directory.glob("*.toml")):
        if path.name == "common.toml":
            continue
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise CatalogueDataError(f"{path.name}: {exc}") from exc
        found[path.stem] = ErrorCatalogue(path.stem, parse_entries(raw, path.name), fallbacks)
    return found
