"""What connectors does, over its ports: OAuth flows, connections, refresh,
publishing with reconciliation, validation. No transport is imported here; the
servicer maps requests in and results out, and domain errors to status codes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlsplit

from opentelemetry import trace

from postd_common.errors import (
    AlreadyExists,
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from postd_common.logging import get_logger
from postd_connectors import metrics
from postd_connectors.domain import oauth, pagination
from postd_connectors.domain.capabilities import PlatformCapabilities
from postd_connectors.domain.fingerprint import content_fingerprint
from postd_connectors.domain.model import (
    AuditEntry,
    Connection,
    ConnectionStatus,
    ErrorAction,
    ErrorCategory,
    MediaItem,
    PlatformError,
    PlatformFailure,
    PostContent,
    StatusChange,
    StoredBundle,
    TokenBundle,
)
from postd_connectors.domain.token_cache import TokenCache
from postd_connectors.domain.validation import Severity, Violation, validate
from postd_connectors.platforms.base import (
    AccountAnalytics,
    AccountContext,
    CodeGrant,
    Connector,
    FoundPost,
    HealthResult,
    LiveLimits,
    MatchKind,
    OAuthRequest,
    PlatformAccount,
    PostAnalytics,
    PostQuery,
    PublishOutcome,
    PublishRequest,
    PublishState,
    RateUsage,
    ReviewPage,
    ReviewSource,
    Unsupported,
)
from postd_connectors.ports import (
    ConnectionRepository,
    MediaInspector,
    PublishRecord,
    TokenConflict,
    TokenNotFound,
    TokenStore,
    UsageSeen,
)

log = get_logger(__name__)

_GENERIC_STATE_ERROR = (
    "This connection link is invalid, expired or was already used; start connecting again."
)
# The platform refused the token itself: a remembered bundle is not to be used again.
_TOKEN_REFUSED = frozenset(
    {ErrorCategory.AUTH_EXPIRED, ErrorCategory.AUTH_REVOKED, ErrorCategory.PERMISSION_MISSING}
)
_PASSING = frozenset(
    {ErrorCategory.TRANSIENT, ErrorCategory.PLATFORM_OUTAGE, ErrorCategory.RATE_LIMITED}
)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ServiceConfig:
    # Redirect URIs registered with the platform apps; empty accepts any https URI
    # (and http on loopback when ``allow_http_redirects``).
    redirect_uris: tuple[str, ...] = ()
    allow_http_redirects: bool = False
    state_ttl_seconds: float = oauth.STATE_TTL_SECONDS
    refresh_ahead_seconds: float = 300.0
    disabled_platforms: frozenset[str] = frozenset()
    # Where a person reconnects; {platform} and {connection_id} are filled in.
    reconnect_url: str = "/v1/connect/{platform}?reconnect={connection_id}"
    find_window: timedelta = timedelta(hours=24)


@dataclass(frozen=True)
class AuthStart:
    authorize_url: str
    state: str
    expires_at: datetime
    requested_scopes: tuple[str, ...]


@dataclass(frozen=True)
class AuthorizedConnection:
    connection: Connection
    created: bool


@dataclass(frozen=True)
class AuthResult:
    tenant_id: str
    user_id: str
    connections: tuple[AuthorizedConnection, ...]
    granted_scopes: tuple[str, ...]
    missing_scopes: tuple[str, ...]
    return_url: str


class RefreshOutcome:
    REFRESHED = "refreshed"
    NOT_DUE = "not_due"
    CHECKED = "checked"
    FAILED = "failed"


@dataclass(frozen=True)
class RefreshResult:
    outcome: str
    connection: Connection
    error: PlatformError | None = None
    check: HealthResult | None = None
    joined_in_flight: bool = False


@dataclass(frozen=True)
class PublishResult:
    status: str  # published | processing | failed
    fingerprint: str
    platform_post_id: str = ""
    url: str = ""
    error: PlatformError | None = None
    usage: tuple[RateUsage, ...] = ()
    published_at: datetime | None = None
    reconciled: bool = False
    platform_latency: float = 0.0


@dataclass(frozen=True)
class FindResult:
    found: bool
    lookup_supported: bool
    post: FoundPost | None = None
    error: PlatformError | None = None


@dataclass(frozen=True)
class TargetReport:
    connection_id: str
    platform: str
    violations: tuple[Violation, ...]

    @property
    def valid(self) -> bool:
        return not any(v.severity is Severity.ERROR for v in self.violations)


@dataclass(frozen=True)
class ValidationTarget:
    connection_id: str = ""
    platform: str = ""
    content: PostContent | None = None


@dataclass(frozen=True)
class Page:
    items: tuple[Connection, ...]
    next_token: str = ""


@dataclass(frozen=True)
class AuditPage:
    entries: tuple[AuditEntry, ...]
    next_token: str = ""


@dataclass(frozen=True)
class DisconnectResult:
    connection: Connection
    shredded: int
    revoked_at_platform: bool


@dataclass(frozen=True)
class StatusUpdate:
    connection: Connection
    previous: ConnectionStatus
    changed: bool


@dataclass
class _Flight:
    started: datetime
    done: asyncio.Event = field(default_factory=asyncio.Event)


def merge_content(base: PostContent, override: PostContent | None) -> PostContent:
    if override is None:
        return base
    return PostContent(
        text=override.text or base.text,
        link=override.link or base.link,
        media=override.media or base.media,
        title=override.title or base.title,
        options={**base.options, **override.options},
    )


class ConnectorsService:
    """The connectors domain. Raises postd_common domain errors; platform failures
    are returned in results, never raised."""

    def __init__(
        self,
        *,
        repo: ConnectionRepository,
        tokens: TokenStore,
        connectors: Mapping[str, Connector],
        config: ServiceConfig | None = None,
        inspector: MediaInspector | None = None,
        clock: Callable[[], datetime] = utcnow,
        token_cache: TokenCache | None = None,
    ) -> None:
        self.repo = repo
        self.tokens = tokens
        # Bundles read from the vault, valid while the connection's row is unchanged
        # (see token_cache); none kept unless one is given.
        self.token_cache = token_cache if token_cache is not None else TokenCache(0)
        self.connectors = dict(connectors)
        self.config = config or ServiceConfig()
        self.inspector = inspector
        self.now = clock
        # Which platform app each platform's usage is recorded under.
        self._apps = {platform: c.app for platform, c in self.connectors.items()}

    # ------------------------------------------------------------------ lookups

    def connector(self, platform: str) -> Connector:
        found = self.connectors.get(platform)
        if found is None:
            known = ", ".join(sorted(self.connectors))
            raise InvalidArgument(
                f"unknown platform {platform!r}; known platforms: {known}", field="platform"
            )
        return found

    def capabilities(self, platform: str) -> PlatformCapabilities:
        return self.connector(platform).capabilities

    async def get_connection(self, tenant_id: str, connection_id: str) -> Connection:
        _require(tenant_id, "tenant_id")
        _require_id(connection_id)
        found = await self.repo.get(tenant_id, connection_id)
        if found is None:
            raise NotFound("no such connection", field="connection_id")
        return found

    def _context(self, connection: Connection, bundle: TokenBundle) -> AccountContext:
        return AccountContext(
            connection_id=connection.id,
            tenant_id=connection.tenant_id,
            platform=connection.platform,
            external_id=connection.external_id,
            kind=connection.account_kind,
            account_name=connection.account_name,
            bundle=bundle,
            attributes=connection.attributes,
        )

    async def _bundle(self, connection: Connection, *, fresh: bool = False) -> StoredBundle:
        """The connection's tokens: remembered from an earlier read while its row
        (``connection``, read in this request) is unchanged, else from the vault.
        ``fresh`` reads the vault and keeps nothing (refreshes need the stored version)."""
        if not fresh:
            remembered = self.token_cache.get(connection)
            if remembered is not None:
                return remembered
        try:
            stored = await self.tokens.get(connection.tenant_id, connection.id)
        except TokenNotFound:
            raise FailedPrecondition(
                "no tokens are stored for this connection; reconnect it", code="no_tokens"
            ) from None
        if not fresh:
            self.token_cache.put(connection, stored)
        return stored

    # ------------------------------------------------------------------ OAuth

    def _check_redirect(self, redirect_uri: str) -> None:
        if not redirect_uri:
            raise InvalidArgument("redirect_uri is required", field="redirect_uri")
        if self.config.redirect_uris:
            if redirect_uri not in self.config.redirect_uris:
                raise InvalidArgument(
                    "redirect_uri is not registered exactly as given", field="redirect_uri"
                )
            return
        parts = urlsplit(redirect_uri)
        loopback = parts.hostname in {"127.0.0.1", "localhost", "::1"}
        if parts.fragment or not parts.hostname:
            raise InvalidArgument("redirect_uri must be an absolute URL", field="redirect_uri")
        if parts.scheme == "https" or (
            parts.scheme == "http" and (loopback or self.config.allow_http_redirects)
        ):
            return
        raise InvalidArgument("redirect_uri must use https", field="redirect_uri")

    async def start_auth(
        self,
        *,
        tenant_id: str,
        user_id: str,
        platform: str,
        capabilities: Sequence[str],
        redirect_uri: str,
        reconnect_connection_id: str = "",
        return_url: str = "",
    ) -> AuthStart:
        _require(tenant_id, "tenant_id")
        _require(user_id, "user_id")
        connector = self.connector(platform)
        if platform in self.config.disabled_platforms:
            raise FailedPrecondition(
                f"{connector.capabilities.display_name} is not configured on this installation",
                code="platform_disabled",
            )
        self._check_redirect(redirect_uri)
        caps = connector.capabilities
        wanted = list(dict.fromkeys(capabilities or caps.default_capabilities))
        extra_scopes: tuple[str, ...] = ()
        if reconnect_connection_id:
            existing = await self.get_connection(tenant_id, reconnect_connection_id)
            if existing.platform != platform:
                raise InvalidArgument(
                    "reconnect_connection_id belongs to another platform",
                    field="reconnect_connection_id",
                )
            wanted = list(dict.fromkeys([*existing.capabilities, *wanted]))
            extra_scopes = (*existing.scopes, *existing.missing_scopes)
        unknown = [c for c in wanted if c not in caps.capability_scopes]
        if unknown:
            raise InvalidArgument(
                f"{caps.display_name} has no capability {', '.join(unknown)}; it offers "
                f"{', '.join(sorted(caps.capability_scopes))}",
                field="capabilities",
            )
        scopes = tuple(dict.fromkeys([*caps.scopes_for(wanted), *extra_scopes]))
        state = oauth.new_state()
        verifier = oauth.new_verifier() if connector.supports_pkce else None
        url = connector.authorize_url(
            OAuthRequest(
                state=state,
                redirect_uri=redirect_uri,
                scopes=scopes,
                code_challenge=oauth.s256_challenge(verifier) if verifier else None,
            )
        )
        expires = self.now() + timedelta(seconds=self.config.state_ttl_seconds)
        await self.repo.insert_state(
            oauth.state_hash(state),
            oauth.AuthState(
                tenant_id=tenant_id,
                user_id=user_id,
                platform=platform,
                redirect_uri=redirect_uri,
                return_url=return_url,
                capabilities=tuple(wanted),
                requested_scopes=scopes,
                reconnect_id=reconnect_connection_id or None,
                sealed_verifier=oauth.seal_verifier(state, verifier) if verifier else None,
                expires_at=expires,
            ),
        )
        return AuthStart(url, state, expires, scopes)

    async def complete_auth(
        self,
        *,
        tenant_id: str,
        platform: str,
        state: str,
        code: str,
        error: str = "",
        error_description: str = "",
        params: Mapping[str, str] | None = None,
    ) -> AuthResult:
        connector = self.connector(platform)
        if not state:
            raise InvalidArgument(_GENERIC_STATE_ERROR, field="state", code="invalid_state")
        flow = await self.repo.consume_state(oauth.state_hash(state))
        if (
            flow is None
            or flow.expires_at <= self.now()
            or flow.platform != platform
            or (tenant_id and flow.tenant_id != tenant_id)
        ):
            raise InvalidArgument(_GENERIC_STATE_ERROR, field="state", code="invalid_state")
        if error:
            raise FailedPrecondition(
                connector.denial_message(error, error_description), code="consent_denied"
            )
        if not code:
            raise InvalidArgument("the callback carried neither a code nor an error", field="code")
        verifier = (
            oauth.open_verifier(state, flow.sealed_verifier) if flow.sealed_verifier else None
        )
        display = connector.capabilities.display_name
        try:
            grant = await connector.exchange_code(
                CodeGrant(
                    code=code,
                    redirect_uri=flow.redirect_uri,
                    code_verifier=verifier,
                    params=params or {},
                )
            )
            accounts = await connector.fetch_accounts(grant)
        except PlatformFailure as failure:
            raise _auth_failure(display, failure) from None
        if not accounts:
            raise FailedPrecondition(
                f"The {display} consent covers no {connector.capabilities.account_noun} POSTD can "
                "use; nothing was connected.",
                code="no_accounts",
            )
        requested = set(flow.requested_scopes)
        all_granted: dict[str, None] = {}
        all_missing: dict[str, None] = {}
        results: list[AuthorizedConnection] = []
        for account in accounts:
            granted = account.granted_scopes
            if granted is None:
                granted = (
                    grant.granted_scopes if grant.granted_scopes is not None else tuple(requested)
                )
            all_granted.update(dict.fromkeys(granted))
            missing = tuple(s for s in flow.requested_scopes if s not in set(granted))
            all_missing.update(dict.fromkeys(missing))
            results.append(
                await self._save_authorized(flow, account, tuple(granted), missing, connector)
            )
        return AuthResult(
            tenant_id=flow.tenant_id,
            user_id=flow.user_id,
            connections=tuple(results),
            granted_scopes=tuple(all_granted),
            missing_scopes=tuple(all_missing),
            return_url=flow.return_url,
        )

    async def _save_authorized(
        self,
        flow: oauth.AuthState,
        account: PlatformAccount,
        granted: tuple[str, ...],
        missing: tuple[str, ...],
        connector: Connector,
    ) -> AuthorizedConnection:
        display = connector.capabilities.display_name
        for attempt in range(2):
            try:
                return await self._upsert_account(flow, account, granted, missing, display)
            except AlreadyExists:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def _upsert_account(
        self,
        flow: oauth.AuthState,
        account: PlatformAccount,
        granted: tuple[str, ...],
        missing: tuple[str, ...],
        display: str,
    ) -> AuthorizedConnection:
        now = self.now()
        async with self.repo.transaction() as tx:
            existing = await tx.lock_account(flow.tenant_id, account.platform, account.external_id)
            connection_id = existing.id if existing else str(uuid.uuid4())
            # Tokens first: if the vault fails, the transaction rolls back and nothing
            # about this account changes. An empty refresh token keeps the stored one.
            stored = await self.tokens.store(flow.tenant_id, connection_id, account.bundle)
            self.token_cache.forget(flow.tenant_id, connection_id)
            status = ConnectionStatus.ATTENTION if missing else ConnectionStatus.HEALTHY
            reason = _connect_reason(display, account, missing, stored.has_refresh_token)
            bundle = account.bundle
            base = existing or Connection(
                id=connection_id,
                tenant_id=flow.tenant_id,
                platform=account.platform,
                external_id=account.external_id,
                status=status,
            )
            changed = existing is None or existing.status is not status
            connection = replace(
                base,
                account_kind=account.kind,
                account_name=account.name,
                username=account.username,
                avatar_url=account.avatar_url,
                scopes=granted,
                missing_scopes=missing,
                capabilities=flow.capabilities,
                status=status,
                status_reason=reason,
                status_changed_at=now if changed else base.status_changed_at,
                expires_at=bundle.expires_at,
                refresh_expires_at=bundle.refresh_expires_at
                if bundle.has_refresh_token or not stored.has_refresh_token
                else (existing.refresh_expires_at if existing else None),
                last_error=None,
                has_refresh_token=stored.has_refresh_token,
                connected_by=flow.user_id,
                attributes={**(existing.attributes if existing else {}), **account.attributes},
            )
            try:
                saved = await tx.save(connection, insert=existing is None)
            except AlreadyExists:
                # Another callback connected the same account meanwhile; its row wins
                # and the tokens just stored under our id would be orphans.
                await self.tokens.delete(flow.tenant_id, connection_id, "concurrent connect")
                raise
            previous = existing.status if existing else None
            details = {"scopes": " ".join(granted)}
            if missing:
                details["missing_scopes"] = " ".join(missing)
            if existing:
                added = sorted(set(granted) - set(existing.scopes))
                removed = sorted(set(existing.scopes) - set(granted))
                if added:
                    details["scopes_added"] = " ".join(added)
                if removed:
                    details["scopes_removed"] = " ".join(removed)
            await tx.audit(
                saved,
                action="reconnected" if existing else "connected",
                actor=f"user:{flow.user_id}",
                reason=reason,
                previous=previous,
                details=details,
            )
            if changed:
                await tx.announce(
                    saved,
                    StatusChange(
                        previous=previous,
                        status=status,
                        reason=reason,
                        source="reconnect" if existing else "connect",
                        category=ErrorCategory.PERMISSION_MISSING if missing else None,
                        reconnect_url=self._reconnect_url(saved) if missing else "",
                    ),
                )
        return AuthorizedConnection(saved, existing is None)

    def _reconnect_url(self, connection: Connection) -> str:
        return self.config.reconnect_url.format(
            platform=connection.platform, connection_id=connection.id
        )

    # ------------------------------------------------------------------ connections

    async def list_connections(
        self,
        tenant_id: str,
        *,
        platforms: Sequence[str] = (),
        statuses: Sequence[ConnectionStatus] = (),
        page_size: int = 0,
        page_token: str = "",
    ) -> Page:
        _require(tenant_id, "tenant_id")
        size = pagination.page_size(page_size)
        key = pagination.filter_key("list", tenant_id, platforms, [s.value for s in statuses])
        position = pagination.decode(page_token, key)
        after = _position(position)
        rows = await self.repo.list_connections(
            tenant_id, platforms=platforms, statuses=statuses, limit=size + 1, after=after
        )
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            last = rows[-1]
            assert last.created_at is not None
            token = pagination.encode({"t": last.created_at.isoformat(), "i": last.id}, key)
        return Page(tuple(rows), token)

    async def list_expiring(
        self,
        tenant_id: str,
        *,
        before: datetime,
        platforms: Sequence[str] = (),
        page_size: int = 0,
        page_token: str = "",
    ) -> Page:
        size = pagination.page_size(page_size)
        key = pagination.filter_key("expiring", tenant_id, before.isoformat(), platforms)
        after = _position(pagination.decode(page_token, key))
        rows = await self.repo.list_expiring(
            tenant_id or None, before=before, platforms=platforms, limit=size + 1, after=after
        )
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            last = rows[-1]
            soonest = min(d for d in (last.expires_at, last.refresh_expires_at) if d is not None)
            token = pagination.encode({"t": soonest.isoformat(), "i": last.id}, key)
        return Page(tuple(rows), token)

    async def list_audit(
        self, tenant_id: str, connection_id: str = "", *, page_size: int = 0, page_token: str = ""
    ) -> AuditPage:
        _require(tenant_id, "tenant_id")
        if connection_id:
            await self.get_connection(tenant_id, connection_id)
        size = pagination.page_size(page_size)
        key = pagination.filter_key("audit", tenant_id, connection_id)
        position = pagination.decode(page_token, key)
        before = int(position["s"]) if position else None
        rows = await self.repo.list_audit(
            tenant_id, connection_id or None, limit=size + 1, before_seq=before
        )
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = pagination.encode({"s": rows[-1][0]}, key)
        return AuditPage(tuple(entry for _, entry in rows), token)

    async def resolve_account(
        self, platform: str, external_account_id: str, *, include_disconnected: bool = False
    ) -> list[Connection]:
        _require(platform, "platform")
        _require(external_account_id, "external_account_id")
        return await self.repo.resolve_account(
            platform, external_account_id, include_disconnected=include_disconnected
        )

    async def update_status(
        self,
        *,
        tenant_id: str,
        connection_id: str,
        status: ConnectionStatus,
        reason: str,
        source: str,
        actor: str,
        category: ErrorCategory | None = None,
        error: PlatformError | None = None,
        expected_status: ConnectionStatus | None = None,
    ) -> StatusUpdate:
        if status is ConnectionStatus.DISCONNECTED:
            raise InvalidArgument("use DisconnectConnection to disconnect", field="status")
        await self.get_connection(tenant_id, connection_id)
        async with self.repo.transaction() as tx:
            current = await tx.lock(tenant_id, connection_id)
            if current is None:
                raise NotFound("no such connection", field="connection_id")
            if current.status is ConnectionStatus.DISCONNECTED:
                raise FailedPrecondition(
                    "this connection was disconnected; only reconnecting revives it",
                    code="disconnected",
                )
            if expected_status is not None and current.status is not expected_status:
                raise Conflict(
                    f"the status is {current.status.value}, not {expected_status.value}",
                    code="status_changed",
                )
            if current.status is status:
                return StatusUpdate(current, current.status, False)
            updated = replace(
                current,
                status=status,
                status_reason=reason,
                status_changed_at=self.now(),
                last_error=error or current.last_error,
            )
            saved = await tx.save(updated, insert=False)
            self.token_cache.forget(tenant_id, connection_id)
            await tx.audit(
                saved,
                action="status_changed",
                actor=actor,
                reason=reason,
                previous=current.status,
                details={"source": source} if source else None,
            )
            needs_person = status in (ConnectionStatus.REVOKED, ConnectionStatus.ATTENTION)
            await tx.announce(
                saved,
                StatusChange(
                    previous=current.status,
                    status=status,
                    reason=reason,
                    source=source,
                    category=category,
                    reconnect_url=self._reconnect_url(saved) if needs_person else "",
                ),
            )
        return StatusUpdate(saved, current.status, True)

    async def disconnect(
        self,
        *,
        tenant_id: str,
        connection_id: str,
        revoke_at_platform: bool,
        reason: str,
        actor: str,
    ) -> DisconnectResult:
        connection = await self.get_connection(tenant_id, connection_id)
        if connection.status is ConnectionStatus.DISCONNECTED:
            return DisconnectResult(connection, 0, False)
        revoked = False
        if revoke_at_platform:
            connector = self.connector(connection.platform)
            try:
                stored = await self.tokens.get(tenant_id, connection_id)
                revoked = await connector.revoke(self._context(connection, stored.bundle))
            except (TokenNotFound, PlatformFailure, Unsupported) as exc:
                log.info(
                    "revocation at the platform failed",
                    platform=connection.platform,
                    error=type(exc).__name__,
                )
        self.token_cache.forget(tenant_id, connection_id)
        shredded = await self.tokens.delete(tenant_id, connection_id, reason or "disconnected")
        why = reason or "Disconnected."
        async with self.repo.transaction() as tx:
            current = await tx.lock(tenant_id, connection_id)
            if current is None:
                raise NotFound("no such connection", field="connection_id")
            if current.status is ConnectionStatus.DISCONNECTED:
                return DisconnectResult(current, shredded, revoked)
            updated = replace(
                current,
                status=ConnectionStatus.DISCONNECTED,
                status_reason=why,
                status_changed_at=self.now(),
                has_refresh_token=False,
            )
            saved = await tx.save(updated, insert=False)
            await tx.audit(
                saved,
                action="disconnected",
                actor=actor,
                reason=why,
                previous=current.status,
                details={"shredded": str(shredded), "revoked_at_platform": str(revoked).lower()},
            )
            await tx.announce(
                saved,
                StatusChange(
                    previous=current.status,
                    status=ConnectionStatus.DISCONNECTED,
                    reason=why,
                    source="disconnect",
                ),
            )
        return DisconnectResult(saved, shredded, revoked)

    async def check(self, tenant_id: str, connection_id: str) -> HealthResult:
        connection = await self.get_connection(tenant_id, connection_id)
        if connection.status is ConnectionStatus.DISCONNECTED:
            raise FailedPrecondition("this connection was disconnected", code="disconnected")
        connector = self.connector(connection.platform)
        stored = await self._bundle(connection)
        return await connector.health_check(self._context(connection, stored.bundle))

    # ------------------------------------------------------------------ refresh

    def _due(self, bundle: TokenBundle) -> bool:
        if bundle.expires_at is None:
            return False
        return bundle.expires_at - self.now() <= timedelta(
            seconds=self.config.refresh_ahead_seconds
        )

    async def refresh(
        self,
        *,
        tenant_id: str,
        connection_id: str,
        force: bool,
        reason: str,
        actor: str,
    ) -> RefreshResult:
        connection = await self.get_connection(tenant_id, connection_id)
        if connection.status is ConnectionStatus.DISCONNECTED:
            raise FailedPrecondition("this connection was disconnected", code="disconnected")
        connector = self.connector(connection.platform)
        started = self.now()
        # Whatever happens next, tokens remembered from before are not to be used.
        self.token_cache.forget(tenant_id, connection_id)
        async with self.repo.refresh_lock(connection.id) as lock:
            current = await self.get_connection(tenant_id, connection_id)
            if lock.waited and current.updated_at is not None and current.updated_at >= started:
                # Another refresh of this connection ran while we waited: its outcome
                # is ours; spending a (possibly rotated) refresh token again is not.
                refreshed = (
                    current.last_refreshed_at is not None and current.last_refreshed_at >= started
                )
                return RefreshResult(
                    RefreshOutcome.REFRESHED if refreshed else RefreshOutcome.FAILED,
                    current,
                    error=None if refreshed else current.last_error,
                    joined_in_flight=True,
                )
            stored = await self._bundle(current, fresh=True)
            if not connector.can_refresh(stored.bundle):
                check = await connector.health_check(self._context(current, stored.bundle))
                return RefreshResult(
                    RefreshOutcome.CHECKED, current, error=check.error, check=check
                )
            if not force and not self._due(stored.bundle):
                return RefreshResult(RefreshOutcome.NOT_DUE, current)
            return await self._refresh_locked(
                current, stored, connector, reason=reason, actor=actor
            )

    async def _refresh_locked(
        self,
        connection: Connection,
        stored: StoredBundle,
        connector: Connector,
        *,
        reason: str,
        actor: str,
    ) -> RefreshResult:
        try:
            fresh = await connector.refresh(self._context(connection, stored.bundle))
        except PlatformFailure as failure:
            error = failure.error
            metrics.TOKEN_REFRESHES.labels(
                connection.platform, "failed", error.category.value
            ).inc()
            if error.category is ErrorCategory.AUTH_EXPIRED:
                # A refresh that is itself refused as expired cannot be retried.
                error = replace(error, action=ErrorAction.RECONNECT, retryable=False)
            async with self.repo.transaction() as tx:
                current = await tx.lock(connection.tenant_id, connection.id)
                if current is not None:
                    saved = await tx.save(replace(current, last_error=error), insert=False)
                    await tx.audit(
                        saved,
                        action="refresh_failed",
                        actor=actor,
                        reason=error.message,
                        previous=current.status,
                        details={"category": error.category.value, "why": reason},
                    )
                    connection = saved
            return RefreshResult(RefreshOutcome.FAILED, connection, error=error)
        replaced = await self._replace_tokens(connection, stored, fresh)
        metrics.TOKEN_REFRESHES.labels(
            connection.platform, "lost_race" if replaced is None else "refreshed", ""
        ).inc()
        if replaced is None:
            current = await self.get_connection(connection.tenant_id, connection.id)
            return RefreshResult(RefreshOutcome.REFRESHED, current, joined_in_flight=True)
        now = self.now()
        async with self.repo.transaction() as tx:
            current = await tx.lock(connection.tenant_id, connection.id) or connection
            updated = replace(
                current,
                expires_at=fresh.expires_at,
                refresh_expires_at=fresh.refresh_expires_at
                if fresh.has_refresh_token
                else current.refresh_expires_at,
                last_refreshed_at=now,
                last_error=None,
                has_refresh_token=replaced.has_refresh_token or fresh.has_refresh_token,
            )
            saved = await tx.save(updated, insert=False)
            await tx.audit(
                saved,
                action="refreshed",
                actor=actor,
                reason=reason or "token refreshed",
                previous=current.status,
                details={
                    "expires_at": fresh.expires_at.isoformat() if fresh.expires_at else "never",
                    "refresh_token_rotated": str(fresh.has_refresh_token).lower(),
                },
            )
        return RefreshResult(RefreshOutcome.REFRESHED, saved)

    async def _replace_tokens(
        self, connection: Connection, stored: StoredBundle, fresh: TokenBundle
    ) -> StoredBundle | None:
        """Compare-and-swap the refreshed bundle; None when someone else won."""
        delay = 0.2
        for attempt in range(4):
            try:
                return await self.tokens.replace(
                    connection.tenant_id,
                    connection.id,
                    fresh,
                    expected_version=stored.version,
                    expected_fingerprint=stored.refresh_token_fingerprint,
                )
            except TokenConflict:
                return None
            except Unavailable:
                # The platform may have rotated the refresh token already: losing the
                # new one would strand the connection, so insist a little.
                if attempt == 3:
                    raise
                await asyncio.sleep(delay)
                delay *= 3
        return None

    async def _fresh_context(
        self, connection: Connection, connector: Connector, *, force: bool, actor: str
    ) -> tuple[AccountContext, PlatformError | None]:
        stored = await self._bundle(connection)
        if connector.can_refresh(stored.bundle) and (force or self._due(stored.bundle)):
            result = await self.refresh(
                tenant_id=connection.tenant_id,
                connection_id=connection.id,
                force=force,
                reason="token expired" if force else "token near expiry before a call",
                actor=actor,
            )
            if result.outcome == RefreshOutcome.FAILED:
                return self._context(connection, stored.bundle), result.error
            # ``connection`` was read before the refresh: it cannot vouch for a
            # remembered bundle now.
            stored = await self._bundle(connection, fresh=True)
        return self._context(connection, stored.bundle), None

    async def _with_token(
        self,
        connection: Connection,
        connector: Connector,
        call: Callable[[AccountContext], Awaitable[object]],
        *,
        actor: str,
    ) -> object:
        """Run ``call`` with a fresh token; on AUTH_EXPIRED refresh once and retry once."""
        ctx, refresh_error = await self._fresh_context(
            connection, connector, force=False, actor=actor
        )
        if refresh_error is not None and _expired(ctx.bundle, self.now()):
            raise PlatformFailure(refresh_error)
        try:
            return await call(ctx)
        except PlatformFailure as failure:
            if failure.error.category in _TOKEN_REFUSED:
                self.token_cache.forget(connection.tenant_id, connection.id)
            if (
                failure.error.category is not ErrorCategory.AUTH_EXPIRED
                or not connector.can_refresh(ctx.bundle)
            ):
                if failure.error.category is ErrorCategory.AUTH_EXPIRED:
                    raise PlatformFailure(
                        replace(failure.error, action=ErrorAction.RECONNECT, retryable=False),
                        outcome_unknown=failure.outcome_unknown,
                    ) from None
                raise
            ctx, refresh_error = await self._fresh_context(
                connection, connector, force=True, actor=actor
            )
            if refresh_error is not None:
                raise PlatformFailure(refresh_error) from None
            return await call(ctx)

    # ------------------------------------------------------------------ capabilities

    async def get_capabilities(
        self, tenant_id: str, platforms: Sequence[str], connection_id: str = ""
    ) -> list[PlatformCapabilities]:
        if connection_id:
            connection = await self.get_connection(tenant_id, connection_id)
            connector = self.connector(connection.platform)
            limits = await self._live_limits(connection, connector)
            return [_narrow(connector.capabilities, limits)]
        names = list(platforms) or sorted(self.connectors)
        return [self.capabilities(name) for name in sorted(names)]

    async def _live_limits(self, connection: Connection, connector: Connector) -> LiveLimits:
        try:
            stored = await self._bundle(connection)
            return await connector.live_limits(self._context(connection, stored.bundle))
        except (PlatformFailure, FailedPrecondition, Unsupported) as exc:
            log.info(
                "live limits unavailable", platform=connection.platform, error=type(exc).__name__
            )
            return LiveLimits()

    async def validate_post(
        self, tenant_id: str, targets: Sequence[ValidationTarget], content: PostContent
    ) -> list[TargetReport]:
        _require(tenant_id, "tenant_id")
        if not targets:
            raise InvalidArgument("give at least one target", field="targets")
        inspected: dict[str, MediaItem | Violation] = {}
        reports: list[TargetReport] = []
        for index, target in enumerate(targets):
            effective = merge_content(content, target.content)
            where = (
                f"targets[{index}].content"
                if target.content and target.content.media
                else "content"
            )
            if target.connection_id:
                connection = await self.get_connection(tenant_id, target.connection_id)
                connector = self.connector(connection.platform)
                caps = _narrow(
                    connector.capabilities, await self._live_limits(connection, connector)
                )
                platform = connection.platform
            elif target.platform:
                caps = self.capabilities(target.platform)
                platform = target.platform
            else:
                raise InvalidArgument(
                    f"targets[{index}] needs a connection_id or a platform",
                    field=f"targets[{index}]",
                )
            media_problems: list[Violation] = []
            if self.inspector is not None and effective.media:
                items: list[MediaItem] = []
                for m_index, item in enumerate(effective.media):
                    path = f"{where}.media[{m_index}]"
                    if item.url not in inspected:
                        inspected[item.url] = await self.inspector.inspect(item, path)
                    outcome = inspected[item.url]
                    if isinstance(outcome, Violation):
                        media_problems.append(replace(outcome, field=path))
                        items.append(item)
                    else:
                        items.append(outcome)
                effective = replace(effective, media=tuple(items))
            # A file the pre-flight could not read has only the pre-flight's finding;
            # guesses about its kind would just repeat it less clearly.
            unreadable = {v.field for v in media_problems}
            found = [
                v
                for v in validate(caps, effective, where)
                if not any(v.field == u or v.field.startswith(u + ".") for u in unreadable)
            ] + media_problems
            found.sort(key=lambda v: v.severity is not Severity.ERROR)
            reports.append(TargetReport(target.connection_id, platform, tuple(found)))
        return reports

    # ------------------------------------------------------------------ publishing

    def fingerprint(self, platform: str, content: PostContent) -> str:
        caps = self.capabilities(platform)
        keeps_link = any(f.supports_link for f in caps.formats) and not content.media
        return content_fingerprint(content.text, content.link if keeps_link else "")

    async def publish(
        self,
        *,
        tenant_id: str,
        connection_id: str,
        idempotency_key: str,
        content: PostContent,
        attempt: int = 1,
        job_id: str = "",
    ) -> PublishResult:
        _require(idempotency_key, "idempotency_key")
        _require(tenant_id, "tenant_id")
        _require_id(connection_id)
        # The connection, this key's record and any usage block, in one read.
        view = await self.repo.publish_view(
            tenant_id, connection_id, idempotency_key, apps=self._apps
        )
        if view is None:
            raise NotFound("no such connection", field="connection_id")
        connection, record = view.connection, view.record
        connector = self.connector(connection.platform)
        trace.get_current_span().set_attribute("postd.platform", connection.platform)
        fingerprint = self.fingerprint(connection.platform, content)
        display = connector.capabilities.display_name
        if connection.status in (ConnectionStatus.DISCONNECTED, ConnectionStatus.REVOKED):
            return PublishResult(
                "failed",
                fingerprint,
                error=_connection_unusable(connection, display),
            )
        if record is not None and record.status == "published":
            return PublishResult(
                "published",
                record.fingerprint,
                platform_post_id=record.platform_post_id,
                url=record.url,
                published_at=record.published_at,
                reconciled=True,
            )
        blocked = view.blocked_until
        if blocked is not None:
            wait = max(1.0, (blocked - self.now()).total_seconds())
            return PublishResult(
                "failed", fingerprint, error=_usage_blocked(connection, display, wait)
            )
        if record is not None and record.status in ("unknown", "pending") and record.attempts > 0:
            found = await self._reconcile(connection, connector, record)
            if isinstance(found, PlatformError):
                return PublishResult("failed", fingerprint, error=found)
            if found is not None:
                return PublishResult(
                    "published" if found.state is PublishState.PUBLISHED else "processing",
                    record.fingerprint,
                    platform_post_id=found.platform_post_id,
                    url=found.url,
                    published_at=found.published_at,
                    reconciled=True,
                )
        progress = dict(record.progress) if record else {}
        attempts = (record.attempts if record else 0) + 1
        await self.repo.save_record(
            PublishRecord(
                tenant_id=tenant_id,
                connection_id=connection_id,
                idempotency_key=idempotency_key,
                status="pending",
                fingerprint=fingerprint,
                progress=progress,
                attempts=attempts,
                created_at=record.created_at if record else None,
            ),
            job_id=job_id,
        )

        async def checkpoint(values: Mapping[str, str]) -> None:
            progress.update(values)
            await self.repo.save_progress(tenant_id, connection_id, idempotency_key, values)

        request = PublishRequest(
            content=content,
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
            progress=progress,
            checkpoint=checkpoint,
        )
        started = asyncio.get_running_loop().time()

        async def call(ctx: AccountContext) -> PublishOutcome:
            return await connector.publish(ctx, replace(request, progress=dict(progress)))

        try:
            outcome = await self._with_token(connection, connector, call, actor="service:publisher")
        except PlatformFailure as failure:
            latency = asyncio.get_running_loop().time() - started
            return await self._publish_failed(
                connection, idempotency_key, fingerprint, progress, attempts, failure, latency
            )
        assert isinstance(outcome, PublishOutcome)
        latency = asyncio.get_running_loop().time() - started
        published = outcome.state is PublishState.PUBLISHED
        await self.repo.save_outcome(
            PublishRecord(
                tenant_id=tenant_id,
                connection_id=connection_id,
                idempotency_key=idempotency_key,
                status="published" if published else "processing",
                fingerprint=fingerprint,
                platform_post_id=outcome.platform_post_id,
                url=outcome.url,
                progress={**progress, **outcome.progress},
                attempts=attempts,
                published_at=(outcome.published_at or self.now()) if published else None,
            ),
            usage=UsageSeen(connector.app, connection.external_id, outcome.usage)
            if outcome.usage
            else None,
            set_last_error=connection.last_error is not None,
        )
        return PublishResult(
            outcome.state.value,
            fingerprint,
            platform_post_id=outcome.platform_post_id,
            url=outcome.url,
            usage=outcome.usage,
            published_at=outcome.published_at or (self.now() if published else None),
            platform_latency=latency,
        )

    async def _publish_failed(
        self,
        connection: Connection,
        key: str,
        fingerprint: str,
        progress: Mapping[str, str],
        attempts: int,
        failure: PlatformFailure,
        latency: float,
    ) -> PublishResult:
        error = failure.error
        status = "unknown" if failure.outcome_unknown else "failed"
        usage = None
        if error.category is ErrorCategory.RATE_LIMITED and error.retry_after:
            usage = UsageSeen(
                self.connector(connection.platform).app,
                connection.external_id,
                [
                    RateUsage(
                        name="rate_limited",
                        scope="account",
                        used_percent=100,
                        retry_after=error.retry_after,
                    )
                ],
            )
        await self.repo.save_outcome(
            PublishRecord(
                tenant_id=connection.tenant_id,
                connection_id=connection.id,
                idempotency_key=key,
                status=status,
                fingerprint=fingerprint,
                progress=progress,
                error=error,
                attempts=attempts,
            ),
            usage=usage,
            set_last_error=True,
            last_error=error,
        )
        if failure.outcome_unknown:
            raise Unavailable(
                "the platform may have published this post although no answer arrived; "
                "call FindPost before publishing again",
                code="outcome_unknown",
            )
        return PublishResult("failed", fingerprint, error=error, platform_latency=latency)

    async def _reconcile(
        self, connection: Connection, connector: Connector, record: PublishRecord
    ) -> FoundPost | PlatformError | None:
        """Look for the post an earlier attempt may have made."""
        since = (record.created_at or self.now()) - timedelta(minutes=10)
        query = PostQuery(
            fingerprint=record.fingerprint,
            since=since,
            until=self.now() + timedelta(minutes=5),
            idempotency_key=record.idempotency_key,
            progress=record.progress,
        )
        if not connector.capabilities.supports_post_lookup:
            return None

        async def call(ctx: AccountContext) -> FoundPost | None:
            return await connector.find_post(ctx, query)

        try:
            found = await self._with_token(connection, connector, call, actor="service:publisher")
        except PlatformFailure as failure:
            return failure.error
        if isinstance(found, FoundPost):
            await self._mark_found(connection, record.idempotency_key, record.fingerprint, found)
            return found
        return None

    async def _mark_found(
        self, connection: Connection, key: str, fingerprint: str, found: FoundPost
    ) -> None:
        existing = await self.repo.get_record(connection.tenant_id, connection.id, key)
        await self.repo.save_record(
            PublishRecord(
                tenant_id=connection.tenant_id,
                connection_id=connection.id,
                idempotency_key=key,
                status="published" if found.state is PublishState.PUBLISHED else "processing",
                fingerprint=fingerprint,
                platform_post_id=found.platform_post_id,
                url=found.url,
                progress=existing.progress if existing else {},
                attempts=existing.attempts if existing else 0,
                published_at=found.published_at or self.now(),
            )
        )

    async def find_post(
        self,
        *,
        tenant_id: str,
        connection_id: str,
        idempotency_key: str = "",
        fingerprint: str = "",
        content: PostContent | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> FindResult:
        connection = await self.get_connection(tenant_id, connection_id)
        connector = self.connector(connection.platform)
        has_content = content is not None and (content.text or content.link or content.media)
        if not idempotency_key and not fingerprint and not has_content:
            raise InvalidArgument("give an idempotency key, a fingerprint or the content")
        record = (
            await self.repo.get_record(tenant_id, connection_id, idempotency_key)
            if idempotency_key
            else None
        )
        if record is not None and record.status == "published":
            return FindResult(
                True,
                True,
                FoundPost(
                    record.platform_post_id,
                    MatchKind.IDEMPOTENCY_KEY,
                    PublishState.PUBLISHED,
                    record.url,
                    record.published_at,
                ),
            )
        if not fingerprint:
            if content is not None and has_content:
                fingerprint = self.fingerprint(connection.platform, content)
            elif record is not None:
                fingerprint = record.fingerprint
        now = self.now()
        start = since or (now - self.config.find_window)
        end = until or (now + timedelta(minutes=5))
        if fingerprint:
            local = await self.repo.find_record_by_fingerprint(
                tenant_id, connection_id, fingerprint, start
            )
            if local is not None and local.platform_post_id:
                return FindResult(
                    True,
                    True,
                    FoundPost(
                        local.platform_post_id,
                        MatchKind.CONTENT_FINGERPRINT,
                        PublishState.PUBLISHED,
                        local.url,
                        local.published_at,
                    ),
                )
        if not connector.capabilities.supports_post_lookup:
            return FindResult(False, False)
        query = PostQuery(
            fingerprint=fingerprint,
            since=start,
            until=end,
            idempotency_key=idempotency_key,
            progress=record.progress if record else {},
        )

        async def call(ctx: AccountContext) -> FoundPost | None:
            return await connector.find_post(ctx, query)

        try:
            found = await self._with_token(connection, connector, call, actor="service:publisher")
        except PlatformFailure as failure:
            return FindResult(False, True, error=failure.error)
        if not isinstance(found, FoundPost):
            return FindResult(False, True)
        if record is not None:
            await self._mark_found(connection, idempotency_key, record.fingerprint, found)
        return FindResult(True, True, found)

    async def delete_post(
        self, *, tenant_id: str, connection_id: str, platform_post_id: str
    ) -> tuple[bool, PlatformError | None]:
        _require(platform_post_id, "platform_post_id")
        connection = await self.get_connection(tenant_id, connection_id)
        connector = self.connector(connection.platform)
        if not connector.capabilities.supports_delete:
            raise FailedPrecondition(
                f"{connector.capabilities.display_name} does not let apps delete posts",
                code="delete_unsupported",
            )

        async def call(ctx: AccountContext) -> bool:
            return await connector.delete_post(ctx, platform_post_id)

        try:
            deleted = await self._with_token(connection, connector, call, actor="service:publisher")
        except PlatformFailure as failure:
            if failure.error.category is ErrorCategory.NOT_FOUND:
                return True, None
            return False, failure.error
        return bool(deleted), None

    async def analytics(
        self, *, tenant_id: str, connection_id: str, post_ids: Sequence[str]
    ) -> list[PostAnalytics]:
        if len(post_ids) > 100:
            raise InvalidArgument("at most 100 post ids per call", field="platform_post_ids")
        connection = await self.get_connection(tenant_id, connection_id)
        connector = self.connector(connection.platform)
        if not post_ids:
            return []

        async def call(ctx: AccountContext) -> list[PostAnalytics]:
            return await connector.analytics(ctx, post_ids)

        try:
            result = await self._with_token(connection, connector, call, actor="service:analytics")
        except PlatformFailure as failure:
            return [PostAnalytics(pid, error=failure.error) for pid in post_ids]
        assert isinstance(result, list)
        return result

    async def account_analytics(
        self, *, tenant_id: str, connection_id: str, since: date, until: date
    ) -> tuple[AccountAnalytics, PlatformError | None]:
        """An account's own figures per day; a platform failure comes back as the
        second value, with no figures."""
        if until < since or (until - since).days > 90:
            raise InvalidArgument("the window is at most 90 days", field="window")
        connection = await self.get_connection(tenant_id, connection_id)
        connector = self.connector(connection.platform)

        async def call(ctx: AccountContext) -> AccountAnalytics:
            return await connector.account_analytics(ctx, since, until)

        try:
            result = await self._with_token(connection, connector, call, actor="service:analytics")
        except PlatformFailure as failure:
            return AccountAnalytics(), failure.error
        assert isinstance(result, AccountAnalytics)
        return result, None

    # ------------------------------------------------------------------ reviews

    def _reviews(self, connection: Connection) -> ReviewSource:
        connector = self.connector(connection.platform)
        if not isinstance(connector, ReviewSource):
            raise FailedPrecondition(
                f"{connector.capabilities.display_name} has no reviews", code="no_reviews"
            )
        return connector

    async def list_reviews(
        self, *, tenant_id: str, connection_id: str, page_token: str = ""
    ) -> ReviewPage:
        connection = await self.get_connection(tenant_id, connection_id)
        source = self._reviews(connection)
        connector = self.connector(connection.platform)

        async def call(ctx: AccountContext) -> ReviewPage:
            return await source.list_reviews(ctx, page_token=page_token)

        try:
            page = await self._with_token(connection, connector, call, actor="service:gateway")
        except PlatformFailure as failure:
            return ReviewPage((), error=failure.error)
        assert isinstance(page, ReviewPage)
        return page

    async def reply_to_review(
        self, *, tenant_id: str, connection_id: str, review_id: str, comment: str
    ) -> PlatformError | None:
        _require(review_id, "review_id")
        if not comment.strip():
            raise InvalidArgument("the reply is empty", field="comment")
        connection = await self.get_connection(tenant_id, connection_id)
        source = self._reviews(connection)
        connector = self.connector(connection.platform)

        async def call(ctx: AccountContext) -> None:
            await source.reply_to_review(ctx, review_id, comment)

        try:
            await self._with_token(connection, connector, call, actor="service:gateway")
        except PlatformFailure as failure:
            return failure.error
        return None


# ---------------------------------------------------------------------- helpers


def _require_id(connection_id: str) -> None:
    try:
        uuid.UUID(connection_id)
    except ValueError:
        raise InvalidArgument("connection_id is not a valid id", field="connection_id") from None


def _require(value: str, name: str) -> None:
    if not value:
        raise InvalidArgument(f"{name} is required", field=name)


def _position(position: Mapping[str, object] | None) -> tuple[datetime, str] | None:
    if position is None:
        return None
    try:
        return datetime.fromisoformat(str(position["t"])), str(uuid.UUID(str(position["i"])))
    except (KeyError, ValueError) as exc:
        raise InvalidArgument("page_token is malformed", field="page_token") from exc


def _expired(bundle: TokenBundle, now: datetime) -> bool:
    return bundle.expires_at is not None and bundle.expires_at <= now


def _narrow(caps: PlatformCapabilities, limits: LiveLimits) -> PlatformCapabilities:
    if (
        limits.max_video_duration is None
        and limits.publish_remaining is None
        and not limits.options
    ):
        return caps
    return caps.narrowed(
        max_video_duration=limits.max_video_duration,
        publish_remaining=limits.publish_remaining,
        options=limits.options,
    )


def _auth_failure(display: str, failure: PlatformFailure) -> Exception:
    error = failure.error
    if error.category in _PASSING:
        return Unavailable(
            f"{display} could not be reached to finish connecting; start connecting again.",
            retry_after=error.retry_after,
        )
    text = error.message
    if error.action_message:
        text = f"{text} {error.action_message}"
    return FailedPrecondition(f"{text} Nothing was connected.", code="authorization_refused")


def _connect_reason(
    display: str, account: PlatformAccount, missing: tuple[str, ...], has_refresh: bool
) -> str:
    name = account.name or account.external_id
    if missing:
        return (
            f"Connected {display} {name}, but {display} did not grant: {', '.join(missing)}. "
            "Reconnect and allow them."
        )
    expires = account.bundle.expires_at
    if expires is not None and not has_refresh:
        return (
            f"Connected {display} {name}. {display} gives no refresh for this app: reconnect "
            f"before {expires.date().isoformat()}."
        )
    return f"Connected {display} {name}."


def _connection_unusable(connection: Connection, display: str) -> PlatformError:
    what = "disconnected" if connection.status is ConnectionStatus.DISCONNECTED else "revoked"
    return PlatformError(
        category=ErrorCategory.AUTH_REVOKED,
        platform=connection.platform,
        message=f"The {display} connection {connection.account_name or connection.external_id} "
        f"is {what}.",
        action=ErrorAction.RECONNECT,
        action_message=f"Reconnect {connection.account_name or 'the account'}.",
        retryable=False,
    )


def _usage_blocked(connection: Connection, display: str, wait: float) -> PlatformError:
    return PlatformError(
        category=ErrorCategory.RATE_LIMITED,
        platform=connection.platform,
        message=f"{display} asked POSTD to slow down; waiting {int(wait)} seconds before "
        "calling again.",
        action=ErrorAction.RETRY_LATER,
        retryable=True,
        retry_after=wait,
    )
