"""What every sandboxed platform provides, and the helpers they share."""

from __future__ import annotations

import abc
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from aiohttp import web

from postd_sandbox import errors, metrics
from postd_sandbox.clock import IdSource
from postd_sandbox.config import AppCredentials, SandboxSettings
from postd_sandbox.errors import ApiError, ErrorSpec
from postd_sandbox.faults import FaultKind
from postd_sandbox.keys import STATE_KEY
from postd_sandbox.oauth import AuthorizationCode, OAuthProfile, PendingAuthorization
from postd_sandbox.state import RecordedPost, SandboxState, TokenRecord

logger = logging.getLogger(__name__)

# Which error-table entry a fault answers with, unless a platform says otherwise.
DEFAULT_FAULT_ERRORS: Mapping[FaultKind, str] = {
    FaultKind.RATE_LIMIT: errors.RATE_LIMIT,
    FaultKind.SERVER_ERROR: errors.SERVER_ERROR,
    FaultKind.TIMEOUT: errors.TIMEOUT,
    FaultKind.TOKEN_EXPIRED: errors.EXPIRED_TOKEN,
    FaultKind.TOKEN_REVOKED: errors.REVOKED_TOKEN,
    FaultKind.PERMISSION_REMOVED: errors.PERMISSION,
    FaultKind.OUTAGE: errors.OUTAGE,
}


class SeedError(ValueError):
    """A seed request for the platform's directory is malformed."""


@dataclass(frozen=True)
class Person:
    """Someone who can log in on the consent page."""

    id: str
    label: str


class Directory(abc.ABC):
    """A platform's users and the things they own (pages, orgs, locations, ...)."""

    @abc.abstractmethod
    def people(self) -> list[Person]:
        """Who can log in, in a stable order (the first is the default)."""

    @abc.abstractmethod
    def seed(self, payload: Mapping[str, Any], ids: IdSource) -> dict[str, Any]:
        """Add records from a control-API payload; returns what was created."""

    @abc.abstractmethod
    def to_json(self) -> dict[str, Any]:
        """Everything in the directory, for the control API."""

    def accounts_of(self, subject: str) -> set[str]:
        """External ids a logged-in subject acts for (used to aim faults)."""
        return {subject}


@dataclass(frozen=True)
class Handshake:
    """A verification GET: the query to send and how to check the answer."""

    params: dict[str, str]
    # The exact body a correct endpoint answers with.
    expected_body: str
    expect_json: bool = False


@dataclass
class WebhookDelivery:
    """A webhook ready to POST: body bytes exactly as signed, and headers."""

    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"


class Platform(abc.ABC):
    """One sandboxed platform: routes, OAuth profile, error table, webhooks."""

    name: ClassVar[str]
    prefix: ClassVar[str]
    oauth: ClassVar[OAuthProfile]
    errors: ClassVar[Mapping[str, ErrorSpec]]
    fault_errors: ClassVar[Mapping[FaultKind, str]] = DEFAULT_FAULT_ERRORS
    # Error-table keys used when a fault hits the token endpoint.
    token_endpoint_fault_errors: ClassVar[Mapping[FaultKind, str]] = {}
    token_paths: ClassVar[tuple[str, ...]] = ()
    error_content_type: ClassVar[str] = "application/json"

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings

    # -- pieces each platform defines -------------------------------------------------

    @abc.abstractmethod
    def new_directory(self, ids: IdSource) -> Directory:
        """A directory seeded with the platform's default accounts."""

    @abc.abstractmethod
    def routes(self) -> list[web.RouteDef]:
        """The platform's HTTP routes, all under `prefix`."""

    @abc.abstractmethod
    def error_body(self, spec: ErrorSpec, err: ApiError, request: web.Request) -> Any:
        """The JSON body the platform sends for an error."""

    # Header carrying the webhook signature (tampered with on request).
    signature_header: ClassVar[str | None] = None

    def webhook(
        self,
        state: SandboxState,
        event: str,
        account: str,
        payload: Any | None,
        timestamp: int,
        audience: str,
    ) -> WebhookDelivery:
        """Build (and sign) one of the platform's webhooks.

        `audience` is who the delivery is for (the target URL unless the caller names
        another); Google puts it in the push request's OIDC token. Raises ValueError
        for an event the platform does not send.
        """
        raise ValueError(f"{self.name} sends no webhooks")

    def handshake(self, state: SandboxState, url: str) -> Handshake | None:
        """The endpoint-verification request the platform makes before delivering
        webhooks (None when it makes none)."""
        return None

    def post_metrics(self, state: SandboxState, post: RecordedPost) -> dict[str, Any]:
        """The normalised figures the platform's analytics report for a post now
        (what a test can expect the analytics endpoints to agree with)."""
        age = state.clock.now() - post.created_at
        seed = str(post.extra.get("video_id") or post.id)
        return {
            name: metrics.cumulative(seed, name, age, kind=post.kind)
            for name in (
                "impressions",
                "reach",
                "engagements",
                "likes",
                "comments",
                "shares",
                "saves",
                "clicks",
                "video_views",
            )
        }

    def authorize_redirect_params(
        self, pending: PendingAuthorization, code: AuthorizationCode
    ) -> dict[str, str]:
        """Extra query parameters the platform adds to the redirect with the code."""
        return {}

    def decorate(
        self, request: web.Request, response: web.StreamResponse, token: TokenRecord | None
    ) -> None:
        """Add per-response headers (usage headers and the like)."""
        return None

    def control_routes(self) -> list[web.RouteDef]:
        """Platform-specific control routes under `/_sandbox/` (e.g. Slack messages)."""
        return []

    def extra_accounts(self, request: web.Request, state: SandboxState) -> set[str]:
        """More external ids a request concerns (e.g. the owner of an upload URL)."""
        return set()

    async def access_token(self, request: web.Request) -> str | None:
        """The access token a request carries (Bearer by default)."""
        return bearer_token(request)

    # -- shared behaviour -------------------------------------------------------------

    @property
    def app(self) -> AppCredentials:
        return self.settings.app(self.name)

    def state(self, request: web.Request) -> SandboxState:
        return request.app[STATE_KEY]

    def url(self, path: str) -> str:
        return self.settings.public_url + self.prefix + path

    def is_token_endpoint(self, path: str) -> bool:
        return any(path == self.prefix + p for p in self.token_paths)

    def fault_error_key(self, kind: FaultKind, path: str) -> str | None:
        if self.is_token_endpoint(path) and kind in self.token_endpoint_fault_errors:
            return self.token_endpoint_fault_errors[kind]
        return self.fault_errors.get(kind)

    def error_response(self, request: web.Request, err: ApiError) -> web.Response:
        spec = self.errors.get(err.key)
        if spec is None:
            logger.warning("no %s error named %s; answering server_error", self.name, err.key)
            spec = self.errors[errors.SERVER_ERROR]
        status = err.status or spec.status
        body = self.error_body(spec, err, request)
        headers = dict(spec.headers)
        if err.retry_after is not None:
            headers["Retry-After"] = str(err.retry_after)
        raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        return web.Response(
            status=status, body=raw, content_type=self.error_content_type, headers=headers
        )

    async def authenticate(
        self,
        request: web.Request,
        *,
        scopes: Sequence[str] = (),
        any_scope: Sequence[str] = (),
    ) -> TokenRecord:
        """The valid token behind a request, or ApiError with the platform's error."""
        value = await self.access_token(request)
        state = self.state(request)
        record = state.tokens.get(value)
        if record is None or record.platform != self.name or record.kind == "refresh":
            raise ApiError(errors.INVALID_TOKEN)
        status = record.status(state.clock.now())
        if status == "revoked":
            raise ApiError(errors.REVOKED_TOKEN)
        if status == "expired":
            raise ApiError(errors.EXPIRED_TOKEN, expired_at=record.expires_at or 0)
        missing = [s for s in scopes if s not in record.scopes]
        if any_scope and not any(s in record.scopes for s in any_scope):
            missing.append(" or ".join(any_scope))
        if missing:
            raise ApiError(errors.PERMISSION, scope=",".join(missing))
        return record


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() in {"bearer", "oauth"} and value.strip():
        return value.strip()
    return None


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body, or INVALID_PARAM."""
    try:
        payload = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(errors.INVALID_PARAM, detail="request body is not valid JSON") from exc
    if not isinstance(payload, dict):
        raise ApiError(errors.INVALID_PARAM, detail="request body must be a JSON object")
    return payload


async def read_params(request: web.Request) -> dict[str, str]:
    """Query string merged with a form body (form wins), as Graph-style APIs read them."""
    params = {k: v for k, v in request.query.items()}
    if request.method in {"POST", "PUT", "DELETE"} and request.content_type in {
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    }:
        form = await request.post()
        for key, value in form.items():
            if isinstance(value, str):
                params[key] = value
    elif request.method == "POST" and request.content_type == "application/json":
        try:
            payload = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            payload = None
        if isinstance(payload, dict):
            for key, value in payload.items():
                params[key] = value if isinstance(value, str) else json.dumps(value)
    return params
