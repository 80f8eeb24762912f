"""The gRPC face of the vault: ``postd.vault.v1.VaultService``.

Translates messages to domain calls and back; domain errors become status codes
through :func:`~postd_common.grpcutil.map_domain_errors`. Who may call what is the
:data:`POLICY` below, enforced by the server's identity interceptor before a method
runs; anything not listed is refused.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from postd.vault.v1 import vault_pb2, vault_pb2_grpc
from postd_common import errors, identity
from postd_common.grpcutil import AccessPolicy, map_domain_errors
from postd_common.secrets import Secret
from postd_vault.domain.model import (
    AuditAction,
    AuditEntry,
    AuditEvent,
    AuditQuery,
    BundleInfo,
    KeyVersionRecord,
    SealedSecret,
    TokenBundle,
)
from postd_vault.domain.vault import Vault

SERVICE_NAME: Final = vault_pb2.DESCRIPTOR.services_by_name["VaultService"].full_name
CONNECTORS: Final = "connectors"
WEBHOOK_ROUTER: Final = "webhook-router"
OPERATOR: Final = "operator"


def _method(name: str) -> str:
    return f"/{SERVICE_NAME}/{name}"


_ONLY_CONNECTORS = frozenset({CONNECTORS})
_PLATFORM_SECRET_CALLERS = frozenset({CONNECTORS, WEBHOOK_ROUTER})
_OPERATORS = frozenset({OPERATOR})

POLICY: Final = AccessPolicy(
    methods={
        _method("StoreTokenBundle"): _ONLY_CONNECTORS,
        _method("GetTokenBundle"): _ONLY_CONNECTORS,
        _method("ReplaceTokenBundle"): _ONLY_CONNECTORS,
        _method("DeleteConnectionSecrets"): _ONLY_CONNECTORS,
        _method("StorePlatformSecret"): _PLATFORM_SECRET_CALLERS,
        _method("GetPlatformSecret"): _PLATFORM_SECRET_CALLERS,
        _method("DeletePlatformSecret"): _PLATFORM_SECRET_CALLERS,
        _method("RotateKey"): _OPERATORS,
        _method("GetRotationStatus"): _OPERATORS,
        _method("RunRewrap"): _OPERATORS,
        _method("DisableKeyVersion"): _OPERATORS,
        _method("ListKeyVersions"): _OPERATORS,
        _method("ListAuditEvents"): frozenset({OPERATOR, CONNECTORS}),
    },
    default=frozenset(),  # a method nobody listed is callable by nobody
)

_AUDIT_TO_PROTO: Final[Mapping[AuditAction, int]] = {
    AuditAction.STORE_TOKEN_BUNDLE: vault_pb2.AUDIT_ACTION_STORE_TOKEN_BUNDLE,
    AuditAction.READ_TOKEN_BUNDLE: vault_pb2.AUDIT_ACTION_READ_TOKEN_BUNDLE,
    AuditAction.REPLACE_TOKEN_BUNDLE: vault_pb2.AUDIT_ACTION_REPLACE_TOKEN_BUNDLE,
    AuditAction.DELETE_CONNECTION_SECRETS: vault_pb2.AUDIT_ACTION_DELETE_CONNECTION_SECRETS,
    AuditAction.STORE_PLATFORM_SECRET: vault_pb2.AUDIT_ACTION_STORE_PLATFORM_SECRET,
    AuditAction.READ_PLATFORM_SECRET: vault_pb2.AUDIT_ACTION_READ_PLATFORM_SECRET,
    AuditAction.DELETE_PLATFORM_SECRET: vault_pb2.AUDIT_ACTION_DELETE_PLATFORM_SECRET,
    AuditAction.ROTATE_KEY: vault_pb2.AUDIT_ACTION_ROTATE_KEY,
    AuditAction.REWRAP: vault_pb2.AUDIT_ACTION_REWRAP,
    AuditAction.DISABLE_KEY_VERSION: vault_pb2.AUDIT_ACTION_DISABLE_KEY_VERSION,
    AuditAction.ACCESS_DENIED: vault_pb2.AUDIT_ACTION_ACCESS_DENIED,
    AuditAction.DECRYPT_FAILED: vault_pb2.AUDIT_ACTION_DECRYPT_FAILED,
}
_AUDIT_FROM_PROTO: Final = {v: k for k, v in _AUDIT_TO_PROTO.items()}
_MAX_PAGE: Final = 500
_DEFAULT_PAGE: Final = 50


def refusal_auditor(vault: Vault) -> Callable[[str, str, Any], Awaitable[None]]:
    """The server's ``on_refused`` hook: a verified caller refused by :data:`POLICY` is
    audited as ACCESS_DENIED with the ids it asked for (unverified, so bounded)."""

    async def record(method: str, caller: str, request: Any) -> None:
        def field(name: str) -> str:
            return str(getattr(request, name, "") or "")[:200]

        await vault.record_audit(
            AuditEntry(
                AuditAction.ACCESS_DENIED,
                caller,
                tenant_id=field("tenant_id"),
                connection_id=field("connection_id"),
                secret_name=field("name"),
                success=False,
                detail=f"PERMISSION_DENIED {method.rsplit('/', 1)[-1]}",
            )
        )

    return record


def _actor() -> str:
    return identity.caller() or "anonymous"


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _ts(moment: datetime | None) -> Timestamp | None:
    # Exact, and cheaper than Timestamp.FromDatetime (a Get builds five of these).
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return Timestamp(seconds=delta.days * 86400 + delta.seconds, nanos=delta.microseconds * 1000)


def _from_ts(message: Any, field: str) -> datetime | None:
    if not message.HasField(field):
        return None
    stamp: Timestamp = getattr(message, field)
    return stamp.ToDatetime(tzinfo=UTC)


def bundle_from_proto(message: vault_pb2.TokenBundle) -> TokenBundle:
    return TokenBundle(
        access_token=Secret(message.access_token),
        refresh_token=Secret(message.refresh_token),
        token_type=message.token_type or "Bearer",
        expires_at=_from_ts(message, "expires_at"),
        refresh_expires_at=_from_ts(message, "refresh_expires_at"),
        scopes=tuple(message.scopes),
        extra={k: Secret(v) for k, v in message.extra.items()},
        issued_at=_from_ts(message, "issued_at"),
    )


def bundle_to_proto(bundle: TokenBundle) -> vault_pb2.TokenBundle:
    # The one place plaintext tokens enter a message: GetTokenBundle's response.
    return vault_pb2.TokenBundle(
        access_token=bundle.access_token.reveal(),
        refresh_token=bundle.refresh_token.reveal(),
        token_type=bundle.token_type,
        expires_at=_ts(bundle.expires_at),
        refresh_expires_at=_ts(bundle.refresh_expires_at),
        scopes=list(bundle.scopes),
        extra={k: v.reveal() for k, v in bundle.extra.items()},
        issued_at=_ts(bundle.issued_at),
    )


def _info(sealed: SealedSecret) -> vault_pb2.TokenBundleInfo:
    info = BundleInfo.of(sealed)
    return vault_pb2.TokenBundleInfo(
        connection_id=info.connection_id,
        version=info.version,
        key_version=info.key_version,
        refresh_token_fingerprint=info.refresh_token_fingerprint,
        has_refresh_token=info.has_refresh_token,
        expires_at=_ts(info.expires_at),
        refresh_expires_at=_ts(info.refresh_expires_at),
        scopes=list(info.scopes),
        created_at=_ts(info.created_at),
        updated_at=_ts(info.updated_at),
    )


def _key_version(record: KeyVersionRecord) -> vault_pb2.KeyVersion:
    return vault_pb2.KeyVersion(
        key_version=record.key_version,
        provider=record.provider,
        state=vault_pb2.KEY_VERSION_STATE_ENABLED
        if record.enabled
        else vault_pb2.KEY_VERSION_STATE_DISABLED,
        primary=record.primary,
        data_key_count=record.data_key_count,
        created_at=_ts(record.created_at),
        promoted_at=_ts(record.promoted_at),
        disabled_at=_ts(record.disabled_at),
    )


def _audit_event(event: AuditEvent) -> vault_pb2.AuditEvent:
    entry = event.entry
    return vault_pb2.AuditEvent(
        id=event.id,
        tenant_id=entry.tenant_id,
        connection_id=entry.connection_id,
        secret_name=entry.secret_name,
        action=_AUDIT_TO_PROTO[entry.action],  # type: ignore[arg-type]
        actor=entry.actor,
        key_version=entry.key_version,
        success=entry.success,
        detail=entry.detail,
        occurred_at=_ts(event.occurred_at),
    )


def _page_size(requested: int) -> int:
    if requested < 0:
        raise errors.InvalidArgument("page_size must not be negative", field="page_size")
    return min(requested or _DEFAULT_PAGE, _MAX_PAGE)


def _encode_cursor(event: AuditEvent) -> str:
    raw = f"{event.occurred_at.isoformat()}|{event.id}".encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_cursor(token: str) -> tuple[datetime, str] | None:
    if not token:
        return None
    try:
        moment, _, event_id = base64.urlsafe_b64decode(token.encode()).decode().partition("|")
        return datetime.fromisoformat(moment), event_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise errors.InvalidArgument("page_token is not valid", field="page_token") from None


class VaultServicer(vault_pb2_grpc.VaultServiceServicer):
    def __init__(self, vault: Vault) -> None:
        self._vault = vault

    # ------------------------------------------------------------------ token bundles

    @map_domain_errors
    async def StoreTokenBundle(
        self, request: vault_pb2.StoreTokenBundleRequest, context: grpc.aio.ServicerContext
    ) -> vault_pb2.StoreTokenBundleResponse:
        result = await self._vault.store_token_bundle(
            _actor(), request.tenant_id, request.connection_id, bundle_from_proto(request.bundle)
        )
        return vault_pb2.StoreTokenBundleResponse(
            key_version=result.stored.key_version, info=_info(result.stored)
        )

    @map_domain_errors
    async def GetTokenBundle(
        self, request: vault_pb2.GetTokenBundleRequest, context: grpc.aio.ServicerContext
    ) -> vault_pb2.GetTokenBundleResponse:
        bundle, sealed = await self._vault.get_token_bundle(
            _actor(), request.tenant_id, request.connection_id
        )
        return vault_pb2.GetTokenBundleResponse(bundle=bundle_to_proto(bundle), info=_info(sealed))

    @map_domain_errors
    async def ReplaceTokenBundle(
        self, request: vault_pb2.ReplaceTokenBundleRequest, context: grpc.aio.ServicerContext
    ) -> vault_pb2.ReplaceTokenBundleResponse:
        result = await self._vault.replace_token_bundle(
            _actor(),
            request.tenant_id,
            request.connection_id,
            bundle_from_proto(request.bundle),
            expected_fingerprint=request.expected_refresh_token_fingerprint,
            expected_version=request.expected_version,
        )
        return vault_pb2.ReplaceTokenBundleResponse(
            key_version=result.stored.key_version,
            info=_info(result.stored),
            refresh_token_kept=result.refresh_token_kept,
        )

    @map_domain_errors
    async def DeleteConnectionSecrets(
        self,
        request: vault_pb2.DeleteConnectionSecretsRequest,
        context: grpc.aio.ServicerContext,
    ) -> vault_pb2.DeleteConnectionSecretsResponse:
        count = await self._vault.delete_connection_secrets(
            _actor(), request.tenant_id, request.connection_id, request.reason
        )
        return vault_pb2.DeleteConnectionSecretsResponse(shredded_count=count)

    # ------------------------------------------------------------------ platform secrets

    @map_domain_errors
    async def StorePlatformSecret(
        self, request: vault_pb2.StorePlatformSecretRequest, context: grpc.aio.ServicerContext
    ) -> vault_pb2.StorePlatformSecretResponse:
        stored = await self._vault.store_platform_secret(
            _actor(),
            request.tenant_id,
            request.name,
            request.kind,
            request.value,
            request.connection_id,
        )
        return vault_pb2.StorePlatformSecretResponse(
            key_version=stored.key_version, version=stored.version
        )

    @map_domain_errors
    async def GetPlatformSecret(
        self, request: vault_pb2.GetPlatformSecretRequest, context: grpc.aio.ServicerContext
    ) -> vault_pb2.GetPlatformSecretResponse:
        found = await self._vault.get_platform_secret(_actor(), request.tenant_id, request.name)
        return vault_pb2.GetPlatformSecretResponse(
            name=found.name,
            kind=found.kind,
            value=found.value,
            connection_id=found.connection_id,
            version=found.version,
            key_version=found.key_version,
            updated_at=_ts(found.updated_at),
        )

    @map_domain_errors
    async def DeletePlatformSecret(
        self, request: vault_pb2.DeletePlatformSecretRequest, context: grpc.aio.ServicerContext
    ) -> vault_pb2.DeletePlatformSecretResponse:
        count = await self._vault.delete_platform_secret(
            _actor(), request.tenant_id, request.name, request.reason
        )
        return vault_pb2.DeletePlatformSecretResponse(shredded_count=count)

    # ------------------------------------------------------------------ key management

    @map_domain_errors
    async def RotateKey(
        self, request: vault_pb2.RotateKeyRequest, context: grpc.aio.ServicerContext
    ) -> vault_pb2.RotateKeyResponse:
        new, previous = await self._vault.rotate(_actor(), request.reason)
        return vault_pb2.RotateKeyResponse(
            primary=_key_version(new), previous=_key_version(previous)
        )

    @map_domain_errors
    async def GetRotationStatus(
        self, request: vault_pb2.GetRotationStatusRequest, context: grpc.aio.ServicerContext
    ) -> vault_pb2.GetRotationStatusResponse:
        status = await self._vault.rotation_status()
        if status.running:
            state = vault_pb2.REWRAP_STATE_RUNNING
        elif status.complete:
            state = vault_pb2.REWRAP_STATE_COMPLETE
        else:
            state = vault_pb2.REWRAP_STATE_PENDING
        return vault_pb2.GetRotationStatusResponse(
            primary_key_version=status.primary_key_version,
            total=status.total,
            rewrapped=status.rewrapped,
            remaining=status.remaining,
            by_key_version=[
                vault_pb2.KeyVersionUsage(key_version=v, data_key_count=n)
                for v, n in status.by_key_version
            ],
            state=state,
            last_batch_at=_ts(status.last_batch_at),
        )

    @map_domain_errors
    async def RunRewrap(
        self, request: vault_pb2.RunRewrapRequest, context: grpc.aio.ServicerContext
    ) -> vault_pb2.RunRewrapResponse:
        result = await self._vault.run_rewrap(
            _actor(), batch_size=request.batch_size, max_batches=request.max_batches
        )
        return vault_pb2.RunRewrapResponse(
            rewrapped=result.rewrapped,
            remaining=result.remaining,
            batches=result.batches,
            complete=result.complete,
        )

    @map_domain_errors
    async def DisableKeyVersion(
        self, request: vault_pb2.DisableKeyVersionRequest, context: grpc.aio.ServicerContext
    ) -> vault_pb2.DisableKeyVersionResponse:
        record = await self._vault.disable_key_version(
            _actor(), request.key_version, request.reason
        )
        return vault_pb2.DisableKeyVersionResponse(key_version=_key_version(record))

    @map_domain_errors
    async def ListKeyVersions(
        self, request: vault_pb2.ListKeyVersionsRequest, context: grpc.aio.ServicerContext
    ) -> vault_pb2.ListKeyVersionsResponse:
        size = _page_size(request.page_size)
        start = 0
        if request.page_token:
            if not request.page_token.isdigit():
                raise errors.InvalidArgument("page_token is not valid", field="page_token")
            start = int(request.page_token)
        records = await self._vault.list_key_versions()
        page = records[start : start + size]
        more = start + size < len(records)
        return vault_pb2.ListKeyVersionsResponse(
            key_versions=[_key_version(r) for r in page],
            next_page_token=str(start + size) if more else "",
        )

    @map_domain_errors
    async def ListAuditEvents(
        self, request: vault_pb2.ListAuditEventsRequest, context: grpc.aio.ServicerContext
    ) -> vault_pb2.ListAuditEventsResponse:
        if _actor() != OPERATOR and not request.tenant_id:
            raise errors.PermissionDenied(
                "only the operator may list audit events across tenants; set tenant_id"
            )
        unknown = [a for a in request.actions if a not in _AUDIT_FROM_PROTO]
        if unknown:
            raise errors.InvalidArgument(f"unknown audit actions {unknown}", field="actions")
        query = AuditQuery(
            tenant_id=request.tenant_id,
            connection_id=request.connection_id,
            actions=tuple(_AUDIT_FROM_PROTO[a] for a in request.actions),
            since=_from_ts(request, "since"),
            page_size=_page_size(request.page_size),
            after=_decode_cursor(request.page_token),
        )
        events = await self._vault.list_audit(query)
        page = events[: query.page_size]
        more = len(events) > query.page_size
        return vault_pb2.ListAuditEventsResponse(
            events=[_audit_event(e) for e in page],
            next_page_token=_encode_cursor(page[-1]) if more and page else "",
        )
