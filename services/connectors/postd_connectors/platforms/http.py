"""Platform HTTP over aiohttp: timeouts, and every failure categorised by the catalogue.

A connector hands this client a function that reads its platform's error body into
a :class:`RawFailure`; everything else (timeouts, resets, Retry-After, logging
without secrets) is the same for all platforms.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from yarl import URL

from postd_common.logging import get_logger
from postd_connectors import metrics
from postd_connectors.domain.catalogue import ErrorCatalogue, RawFailure
from postd_connectors.domain.model import PlatformError, PlatformFailure

log = get_logger(__name__)
tracer = trace.get_tracer("postd_connectors.platforms")

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class PlatformResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes
    elapsed: float

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}

    def header(self, name: str) -> str:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return ""


ErrorReader = Callable[[PlatformResponse], RawFailure]


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


class PlatformHttp:
    """One platform's HTTP client. Raises :class:`PlatformFailure` and nothing else
    for platform or network failures; never logs a query string or a body."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        platform: str,
        display_name: str,
        catalogue: ErrorCatalogue,
        read_error: ErrorReader,
        timeout: aiohttp.ClientTimeout,
    ) -> None:
        self.session = session
        self.platform = platform
        self.display_name = display_name
        self.catalogue = catalogue
        self._read_error = read_error
        self.timeout = timeout

    def failure(
        self, raw: RawFailure, *, account: str = "", outcome_unknown: bool = False
    ) -> PlatformFailure:
        error = self.catalogue.classify(
            raw, platform=self.platform, display_name=self.display_name, account=account
        )
        return PlatformFailure(error, outcome_unknown=outcome_unknown)

    def error(self, raw: RawFailure, *, account: str = "") -> PlatformError:
        return self.failure(raw, account=account).error

    async def call(
        self,
        method: str,
        url: str | URL,
        *,
        params: Mapping[str, str] | None = None,
        data: Any = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
        account: str = "",
        ok: Callable[[int], bool] | None = None,
    ) -> PlatformResponse:
        # A client span per call, with the platform, method, host and path only: query
        # strings and bodies (codes, tokens) stay out, and no trace header goes to the
        # platform (it is not part of our traces). Exceptions are not recorded on the
        # span: a platform's error text is not ours to keep.
        parts = urlsplit(str(url))
        with tracer.start_as_current_span(
            f"{method.upper()} {self.platform}",
            kind=SpanKind.CLIENT,
            attributes={
                "postd.platform": self.platform,
                "http.request.method": method.upper(),
                "server.address": parts.hostname or "",
                "url.path": parts.path,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            return await self._call(
                span,
                method,
                url,
                params=params,
                data=data,
                json_body=json_body,
                headers=headers,
                timeout=timeout,
                account=account,
                ok=ok,
            )

    def _observe(self, span: trace.Span, outcome: str, status: int, started: float) -> None:
        metrics.PLATFORM_REQUESTS.labels(self.platform, outcome).inc()
        metrics.PLATFORM_SECONDS.labels(self.platform).observe(time.perf_counter() - started)
        span.set_attribute("postd.outcome", outcome)
        if status:
            span.set_attribute("http.response.status_code", status)
        if outcome != "ok":
            span.set_status(Status(StatusCode.ERROR, outcome))

    async def _call(
        self,
        span: trace.Span,
        method: str,
        url: str | URL,
        *,
        params: Mapping[str, str] | None,
        data: Any,
        json_body: Any,
        headers: Mapping[str, str] | None,
        timeout: aiohttp.ClientTimeout | None,
        account: str,
        ok: Callable[[int], bool] | None,
    ) -> PlatformResponse:
        started = time.perf_counter()
        path = urlsplit(str(url)).path
        try:
            async with self.session.request(
                method,
                url,
                params=params,
                data=data,
                json=json_body,
                headers=headers,
                timeout=timeout or self.timeout,
                allow_redirects=False,
            ) as resp:
                body = await resp.read()
                response = PlatformResponse(
                    status=resp.status,
                    headers={k: v for k, v in resp.headers.items()},
                    body=body,
                    elapsed=time.perf_counter() - started,
                )
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # Nothing reached the platform: safe to retry, and no write happened.
            self._observe(span, _lost(exc), 0, started)
            log.warning(
                "platform unreachable",
                platform=self.platform,
                method=method,
                path=path,
                error=type(exc).__name__,
            )
            raise self.failure(
                RawFailure(0, platform_message=type(exc).__name__), account=account
            ) from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            # The request may have been acted on: a write's outcome is unknown.
            unknown = method.upper() not in _SAFE_METHODS
            self._observe(span, _lost(exc), 0, started)
            log.warning(
                "platform call lost",
                platform=self.platform,
                method=method,
                path=path,
                error=type(exc).__name__,
                outcome_unknown=unknown,
            )
            raise self.failure(
                RawFailure(0, platform_message=type(exc).__name__ or "timeout"),
                account=account,
                outcome_unknown=unknown,
            ) from exc
        accepted = ok(response.status) if ok else 200 <= response.status < 300
        if accepted:
            self._observe(span, "ok", response.status, started)
            return response
        self._observe(span, metrics.outcome_of_status(response.status), response.status, started)
        raw = self._read_error(response)
        # Retry-After, when sent, is the most precise hint; body hints come second.
        header = parse_retry_after(response.header("Retry-After"))
        if header is not None:
            raw = dataclasses.replace(raw, retry_after=header)
        failure = self.failure(raw, account=account)
        log.info(
            "platform refused",
            platform=self.platform,
            method=method,
            path=path,
            status=response.status,
            platform_code=raw.code,  # "code" alone is redacted (OAuth codes)
            subcode=raw.subcode,
            category=failure.error.category.value,
        )
        raise failure


def _lost(exc: BaseException) -> str:
    """The ``outcome`` label of a call that got no answer."""
    return "timeout" if isinstance(exc, TimeoutError) else "network"


def utc_from_timestamp(value: float | int | str | None) -> datetime | None:
    if value in (None, "", 0, "0"):
        return None
    try:
        return datetime.fromtimestamp(float(str(value)), UTC)
    except (TypeError, ValueError, OverflowError):
        return None


def parse_iso(value: str | None) -> datetime | None:
    """ISO 8601 as the platforms write it (``Z``, ``+0000`` or ``+00:00``)."""
    if not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    if len(text) > 5 and text[-5] in "+-" and text[-3] != ":":
        text = text[:-2] + ":" + text[-2:]
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def sleep_backoff(attempt: int, *, base: float, cap: float) -> None:
    await asyncio.sleep(min(cap, base * (1.5**attempt)))
