"""TokenStore over the vault's gRPC contract (postd.vault.v1.VaultService).

The only place token values leave this process: in the requests to the vault.
"""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from postd.vault.v1 import vault_pb2, vault_pb2_grpc
from postd_common.errors import FailedPrecondition, Unavailable
from postd_common.secrets import Secret
from postd_connectors.domain.model import StoredBundle, TokenBundle
from postd_connectors.ports import TokenConflict, TokenNotFound

_UNAVAILABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def _ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def _dt(message: vault_pb2.TokenBundle | vault_pb2.TokenBundleInfo, name: str) -> datetime | None:
    if not message.HasField(name):  # type: ignore[arg-type]
        return None
    stamp: Timestamp = getattr(message, name)
    return stamp.ToDatetime(tzinfo=UTC)


def to_proto(bundle: TokenBundle) -> vault_pb2.TokenBundle:
    message = vault_pb2.TokenBundle(
        access_token=bundle.access_token.reveal(),
        refresh_token=bundle.refresh_token.reveal(),
        token_type=bundle.token_type,
        scopes=list(bundle.scopes),
        extra={k: v.reveal() for k, v in bundle.extra.items()},
    )
    for name in ("expires_at", "refresh_expires_at", "issued_at"):
        stamp = _ts(getattr(bundle, name))
        if stamp is not None:
            getattr(message, name).CopyFrom(stamp)
    return message


def from_proto(message: vault_pb2.TokenBundle) -> TokenBundle:
    return TokenBundle(
        access_token=Secret(message.access_token),
        refresh_token=Secret(message.refresh_token),
        token_type=message.token_type or "Bearer",
        expires_at=_dt(message, "expires_at"),
        refresh_expires_at=_dt(message, "refresh_expires_at"),
        scopes=tuple(message.scopes),
        extra={k: Secret(v) for k, v in message.extra.items()},
        issued_at=_dt(message, "issued_at"),
    )


def _fail(exc: grpc.aio.AioRpcError) -> Exception:
    code = exc.code()
    if code == grpc.StatusCode.NOT_FOUND:
        return TokenNotFound("no tokens are stored for this connection")
    if code == grpc.StatusCode.ABORTED:
        return TokenConflict("the stored tokens changed meanwhile")
    if code == grpc.StatusCode.DATA_LOSS:
        return FailedPrecondition(
            "the stored tokens of this connection cannot be read; reconnect it",
            code="token_unreadable",
        )
    if code in _UNAVAILABLE:
        return Unavailable("the vault is unreachable; retry shortly", retry_after=2.0)
    return Unavailable(f"the vault refused the call ({code.name})")


class VaultTokenStore:
    def __init__(self, channel: grpc.aio.Channel, *, timeout: float = 5.0) -> None:
        self._stub = vault_pb2_grpc.VaultServiceStub(channel)
        self._timeout = timeout

    async def store(self, tenant_id: str, connection_id: str, bundle: TokenBundle) -> StoredBundle:
        try:
            reply = await self._stub.StoreTokenBundle(
                vault_pb2.StoreTokenBundleRequest(
                    tenant_id=tenant_id, connection_id=connection_id, bundle=to_proto(bundle)
                ),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise _fail(exc) from None
        return StoredBundle(
            bundle,
            reply.info.version,
            reply.info.refresh_token_fingerprint,
            reply.info.has_refresh_token,
        )

    async def get(self, tenant_id: str, connection_id: str) -> StoredBundle:
        try:
            reply = await self._stub.GetTokenBundle(
                vault_pb2.GetTokenBundleRequest(tenant_id=tenant_id, connection_id=connection_id),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise _fail(exc) from None
        return StoredBundle(
            from_proto(reply.bundle),
            reply.info.version,
            reply.info.refresh_token_fingerprint,
            reply.info.has_refresh_token,
        )

    async def replace(
        self,
        tenant_id: str,
        connection_id: str,
        bundle: TokenBundle,
        *,
        expected_version: int = 0,
        expected_fingerprint: str = "",
    ) -> StoredBundle:
        try:
            reply = await self._stub.ReplaceTokenBundle(
                vault_pb2.ReplaceTokenBundleRequest(
                    tenant_id=tenant_id,
                    connection_id=connection_id,
                    bundle=to_proto(bundle),
                    expected_version=expected_version,
                    expected_refresh_token_fingerprint=expected_fingerprint,
                ),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise _fail(exc) from None
        return StoredBundle(
            bundle,
            reply.info.version,
            reply.info.refresh_token_fingerprint,
            reply.info.has_refresh_token,
        )

    async def delete(self, tenant_id: str, connection_id: str, reason: str) -> int:
        try:
            reply = await self._stub.DeleteConnectionSecrets(
                vault_pb2.DeleteConnectionSecretsRequest(
                    tenant_id=tenant_id, connection_id=connection_id, reason=reason
                ),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise _fail(exc) from None
        return int(reply.shredded_count)
