"""SecretVault over ``postd.vault.v1.VaultService`` (platform secrets)."""

from __future__ import annotations

import grpc

from postd.vault.v1 import vault_pb2, vault_pb2_grpc
from postd_common.secrets import Secret
from postd_webhook_router.ports import VaultUnavailable


class GrpcSecretVault:
    def __init__(self, channel: grpc.aio.Channel, timeout: float = 5.0) -> None:
        self._stub = vault_pb2_grpc.VaultServiceStub(channel)
        self._timeout = timeout

    async def store(
        self, tenant_id: str, name: str, kind: str, value: Secret, connection_id: str = ""
    ) -> None:
        try:
            await self._stub.StorePlatformSecret(
                vault_pb2.StorePlatformSecretRequest(
                    tenant_id=tenant_id,
                    name=name,
                    kind=kind,
                    value=value.reveal_bytes(),
                    connection_id=connection_id,
                ),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise VaultUnavailable(
                f"the vault refused to store a secret: {exc.code().name}"
            ) from exc

    async def get(self, tenant_id: str, name: str) -> Secret | None:
        try:
            reply = await self._stub.GetPlatformSecret(
                vault_pb2.GetPlatformSecretRequest(tenant_id=tenant_id, name=name),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise VaultUnavailable(f"the vault did not serve a secret: {exc.code().name}") from exc
        return Secret(reply.value.decode())

    async def delete(self, tenant_id: str, name: str) -> None:
        try:
            await self._stub.DeletePlatformSecret(
                vault_pb2.DeletePlatformSecretRequest(
                    tenant_id=tenant_id, name=name, reason="webhook endpoint deleted"
                ),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise VaultUnavailable(f"the vault did not delete a secret: {exc.code().name}") from exc
